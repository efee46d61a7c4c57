//! Issuing access tokens with the active key of a [`KeyRing`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde::Serialize;

use crate::{Audience, Claims, Clock, IssueError, KeyRing, SystemClock, Verifier};

/// Signs access tokens with the key ring's active key, filling `iss`, `aud`, `iat`, `exp` (from
/// the configured lifetime) and a random `jti`.
///
/// ```
/// use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};
/// use std::time::Duration;
///
/// let keys = KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap();
/// let issuer = Issuer::new(keys)
///     .with_iss("https://auth.example")
///     .with_aud("api")
///     .with_ttl(Duration::from_secs(300));
/// let token = issuer.issue("user-1", Some("session-9"), NoCustomClaims {}).unwrap();
/// assert_eq!(token.expires_in, 300);
///
/// let claims = issuer.verifier().verify::<NoCustomClaims>(&token.token).unwrap();
/// assert_eq!(claims.sub, "user-1");
/// assert_eq!(claims.sid.as_deref(), Some("session-9"));
/// ```
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<IssuerConfig>,
}

#[derive(Clone)]
struct IssuerConfig {
    keys: KeyRing,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("keys", &self.inner.keys)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

/// A freshly issued access token. It serializes as an OAuth 2.0 token response (RFC 6749
/// section 5.1), ready to be a handler's JSON answer; its `Debug` leaves the token out.
///
/// ```
/// use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};
///
/// let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
/// let access = issuer.issue("alice", None, NoCustomClaims {}).unwrap();
/// let json = serde_json::to_value(&access).unwrap();
/// assert_eq!(json["access_token"], access.token.as_str());
/// assert_eq!(json["token_type"], "Bearer");
/// assert_eq!(json["expires_in"], 900);
/// assert!(!format!("{access:?}").contains(&access.token));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// Seconds from issue to expiry (for an OAuth `expires_in`).
    pub expires_in: u64,
    /// The token's `jti`.
    pub jti: String,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("expires_in", &self.expires_in)
            .field("jti", &self.jti)
            .finish()
    }
}

impl serde::Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut response = serializer.serialize_struct("AccessToken", 3)?;
        response.serialize_field("access_token", &self.token)?;
        response.serialize_field("token_type", "Bearer")?;
        response.serialize_field("expires_in", &self.expires_in)?;
        response.end()
    }
}

impl Issuer {
    /// The default access-token lifetime: 15 minutes.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

    /// An issuer signing with `keys`' active key, 15-minute tokens, no `iss` or `aud`.
    pub fn new(keys: impl Into<KeyRing>) -> Self {
        Issuer {
            inner: Arc::new(IssuerConfig {
                keys: keys.into(),
                issuer: None,
                audience: None,
                ttl: Self::DEFAULT_TTL,
                clock: Arc::new(SystemClock),
            }),
        }
    }

    fn config(&mut self) -> &mut IssuerConfig {
        Arc::make_mut(&mut self.inner)
    }

    /// Sets `iss`.
    #[must_use]
    pub fn with_iss(mut self, issuer: impl Into<String>) -> Self {
        self.config().issuer = Some(issuer.into());
        self
    }

    /// Sets `aud`.
    #[must_use]
    pub fn with_aud(mut self, audience: impl Into<String>) -> Self {
        self.config().audience = Some(audience.into());
        self
    }

    /// Sets the access-token lifetime (whole seconds; at least one).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.config().ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Reads time from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.config().clock = Arc::new(clock);
        self
    }

    /// The access-token lifetime.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The key ring tokens are signed from.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// A verifier for this issuer's tokens: same keys, clock, `iss` and `aud`, and no leeway:
    /// the tokens are this service's own, read against the clock that stamped them, so an
    /// expired token is refused at once (as the facade's layers do). A service verifying
    /// another's tokens starts from [`Verifier::new`], which allows
    /// [`Verifier::DEFAULT_LEEWAY`] for the clocks' difference.
    pub fn verifier(&self) -> Verifier {
        let c = &self.inner;
        let mut v = Verifier::new(c.keys.clone())
            .with_shared_clock(c.clock.clone())
            .with_leeway(std::time::Duration::ZERO);
        if let Some(iss) = &c.issuer {
            v = v.with_iss(iss.clone());
        }
        if let Some(aud) = &c.audience {
            v = v.with_aud(aud.clone());
        }
        v
    }

    /// Claims for `sub` as this issuer fills them: `iss`, `aud`, `iat` now, `exp` now + ttl, and
    /// a random 128-bit `jti`. Adjust them, then [`Issuer::sign`].
    ///
    /// # Errors
    /// [`IssueError::Random`].
    pub fn claims<C>(&self, sub: impl Into<String>, custom: C) -> Result<Claims<C>, IssueError> {
        let c = &self.inner;
        let now = c.clock.now();
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| IssueError::Random)?;
        let mut claims = Claims::new(sub, now.saturating_add(c.ttl.as_secs()), custom);
        claims.iss.clone_from(&c.issuer);
        claims.aud = c.audience.as_deref().map(Audience::from);
        claims.iat = Some(now);
        claims.jti = Some(URL_SAFE_NO_PAD.encode(jti));
        Ok(claims)
    }

    /// Signs `claims` with the active key (header `alg` and `kid` from the key).
    ///
    /// # Errors
    /// [`IssueError::NoSigningKey`], [`IssueError::Signing`].
    pub fn sign<C: Serialize>(&self, claims: &Claims<C>) -> Result<String, IssueError> {
        let keys = self.inner.keys.load();
        let key = keys.active().ok_or(IssueError::NoSigningKey)?;
        key.signer().ok_or(IssueError::NoSigningKey)?.sign(claims)
    }

    /// Signs `claims` as [`Issuer::sign`] does, but through `jsonwebtoken::encode`, which
    /// builds its signer from the key's bytes on every call.
    ///
    /// This is the reference the prepared signer is held to: `tests/sign_differential.rs`
    /// checks that both give the same token for every deterministic algorithm, and tokens that
    /// verify alike for the randomized ones (ECDSA, RSA-PSS). Use [`Issuer::sign`].
    ///
    /// # Errors
    /// As [`Issuer::sign`].
    pub fn sign_reference<C: Serialize>(&self, claims: &Claims<C>) -> Result<String, IssueError> {
        let keys = self.inner.keys.load();
        let key = keys.active().ok_or(IssueError::NoSigningKey)?;
        let encoding = key.encoding_key().ok_or(IssueError::NoSigningKey)?;
        let mut header = Header::new(key.algorithm().to_jwt());
        header.kid = Some(key.kid().to_owned());
        jsonwebtoken::encode(&header, claims, encoding)
            .map_err(|e| IssueError::Signing(e.to_string()))
    }

    /// Issues a token for `sub`, bound to the session `sid` when given, with the application's
    /// claims.
    ///
    /// # Errors
    /// As [`Issuer::claims`] and [`Issuer::sign`].
    pub fn issue<C: Serialize>(
        &self,
        sub: impl Into<String>,
        sid: Option<&str>,
        custom: C,
    ) -> Result<AccessToken, IssueError> {
        let mut claims = self.claims(sub, custom)?;
        claims.sid = sid.map(str::to_owned);
        let token = self.sign(&claims)?;
        let iat = claims.iat.unwrap_or_default();
        Ok(AccessToken {
            token,
            expires_at: claims.exp,
            expires_in: claims.exp.saturating_sub(iat),
            jti: claims.jti.unwrap_or_default(),
        })
    }
}
