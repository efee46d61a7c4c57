//! Verifying access tokens.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Header;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use serde::de::DeserializeOwned;

use crate::cache::Lookup;
use header::{HeaderMemo, header_error, is_critical};
use segment::{Path, with_decoded};

mod header;
mod segment;
use crate::{Claims, Clock, ErrorKind, Key, KeyRing, KeySet, SystemClock, TokenCache, VerifyError};

/// Verifies access tokens against a [`KeyRing`].
///
/// What it checks, in order:
/// 1. the size (default cap 8 KiB), before any decoding;
/// 2. the header: well-formed, no `crit`, no `b64` but `true`; `jku`, `x5u`, `jwk` and `x5c` are ignored, never
///    fetched or trusted;
/// 3. the `kid` names a key of the set (a token without `kid` is accepted only when the set
///    holds exactly one key), and `alg` is the algorithm pinned for that key, so the token never
///    chooses the key type and `none` never verifies;
/// 4. the signature;
/// 5. the claims: `sub` and `exp` present and of the right JSON types; `exp` and, when present,
///    `nbf` against the clock with the leeway; `nbf` present when required; `iss` and `aud`
///    when configured.
///
/// ```
/// use baton_token::{Algorithm, ErrorKind, Issuer, Key, KeySet, NoCustomClaims, TestClock, Verifier};
/// use std::time::Duration;
///
/// let clock = TestClock::at_secs(1_700_000_000);
/// let keys = KeySet::new(Key::generate("k1", Algorithm::HS256).unwrap()).unwrap();
/// let issuer = Issuer::new(keys).with_clock(clock.clone()).with_ttl(Duration::from_secs(60));
/// let verifier = issuer.verifier().with_leeway(Duration::ZERO);
///
/// let token = issuer.issue("alice", None, NoCustomClaims {}).unwrap().token;
/// assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());
///
/// clock.advance(Duration::from_secs(60));
/// let err = verifier.verify::<NoCustomClaims>(&token).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Expired);
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierConfig>,
}

/// Called with the `kid` of a token whose key is not in the set (see
/// [`Verifier::on_unknown_key`]).
pub type UnknownKeyHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
struct VerifierConfig {
    /// Tags cache entries: a new one for every configuration change.
    id: u64,
    cache: Option<TokenCache>,
    /// Shared by clones of a configuration: it depends on the keys only.
    header_memo: Arc<ArcSwapOption<HeaderMemo>>,
    keys: KeyRing,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: u64,
    require_nbf: bool,
    max_len: usize,
    clock: Arc<dyn Clock>,
    unknown_key: Option<UnknownKeyHook>,
    routes: Vec<Verifier>,
}

#[derive(serde::Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner;
        f.debug_struct("Verifier")
            .field("keys", &c.keys)
            .field("issuers", &c.issuers)
            .field("audiences", &c.audiences)
            .field("leeway", &c.leeway)
            .field("require_nbf", &c.require_nbf)
            .field("max_len", &c.max_len)
            .field("clock", &c.clock)
            .field("routes", &c.routes.len())
            .finish()
    }
}

impl Verifier {
    /// The default leeway for `exp` and `nbf`: 30 seconds, for tokens another service
    /// issued (its clock and this one's may differ). A service's own tokens are verified
    /// without leeway ([`Issuer::verifier`](crate::Issuer::verifier), the facade).
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// The default size cap: 8 KiB.
    pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

    /// A verifier for tokens signed by `keys`, with the default leeway and size cap, and no
    /// `iss`/`aud` requirement.
    pub fn new(keys: impl Into<KeyRing>) -> Self {
        Verifier {
            inner: Arc::new(VerifierConfig {
                id: next_config_id(),
                cache: None,
                header_memo: Arc::new(ArcSwapOption::empty()),
                keys: keys.into(),
                issuers: Vec::new(),
                audiences: Vec::new(),
                leeway: Self::DEFAULT_LEEWAY.as_secs(),
                require_nbf: false,
                max_len: Self::DEFAULT_MAX_TOKEN_LEN,
                clock: Arc::new(SystemClock),
                unknown_key: None,
                routes: Vec::new(),
            }),
        }
    }

    /// A verifier accepting tokens from several issuers, each checked by its own verifier
    /// (its own keys, audience, leeway). The token's `iss` picks the verifier, which then
    /// checks everything, `iss` included; a token from no listed issuer is refused.
    ///
    /// # Errors
    /// [`ErrorKind::WrongIssuer`] as a configuration error when a verifier has no issuer.
    pub fn any_of(verifiers: impl IntoIterator<Item = Verifier>) -> Result<Self, VerifyError> {
        let routes: Vec<Verifier> = verifiers.into_iter().collect();
        if routes.is_empty() || routes.iter().any(|v| v.inner.issuers.is_empty()) {
            return Err(VerifyError::new(
                ErrorKind::WrongIssuer,
                "every verifier needs an issuer",
            ));
        }
        let keys = routes[0].inner.keys.clone();
        let mut router = Verifier::new(keys);
        router.config().routes = routes;
        Ok(router)
    }

    /// Calls `hook` with the `kid` of every token whose key is unknown (a remote key source
    /// uses it to refetch, rate-limited). The token is refused all the same.
    #[must_use]
    pub fn on_unknown_key(mut self, hook: UnknownKeyHook) -> Self {
        self.config().unknown_key = Some(hook);
        self
    }

    fn config(&mut self) -> &mut VerifierConfig {
        let config = Arc::make_mut(&mut self.inner);
        // Tokens cached under the old configuration must not pass the new one.
        config.id = next_config_id();
        config
    }

    /// Caches verified tokens in `cache` for [`Verifier::verify_cached`] (which the bearer
    /// layer uses): see [`TokenCache`] for what is still checked on every request.
    #[must_use]
    pub fn with_cache(mut self, cache: TokenCache) -> Self {
        self.config().cache = Some(cache);
        self
    }

    /// The verified-token cache, if any.
    pub fn cache(&self) -> Option<&TokenCache> {
        self.inner.cache.as_ref()
    }

    /// Accepts tokens whose `iss` is `issuer` (call again to accept several). Once an issuer
    /// is configured, a token without `iss` is refused.
    #[must_use]
    pub fn with_iss(mut self, issuer: impl Into<String>) -> Self {
        self.config().issuers.push(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` lists `audience` (call again to accept several). Once an
    /// audience is configured, a token without `aud` is refused.
    #[must_use]
    pub fn with_aud(mut self, audience: impl Into<String>) -> Self {
        self.config().audiences.push(audience.into());
        self
    }

    /// The clock skew tolerated on `exp` and `nbf` (whole seconds).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.config().leeway = leeway.as_secs();
        self
    }

    /// Refuses tokens without `nbf`. (`nbf` is always checked when a token has it.)
    #[must_use]
    pub fn require_nbf(mut self, required: bool) -> Self {
        self.config().require_nbf = required;
        self
    }

    /// The largest token accepted, in bytes; larger ones are refused before any decoding.
    #[must_use]
    pub fn with_max_token_len(mut self, max: usize) -> Self {
        self.config().max_len = max;
        self
    }

    /// Reads time from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.with_shared_clock(Arc::new(clock))
    }

    /// Reads time from a shared clock.
    #[must_use]
    pub fn with_shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config().clock = clock;
        self
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    /// The size cap in bytes.
    pub fn max_token_len(&self) -> usize {
        self.inner.max_len
    }

    /// Verifies `token` and returns its claims.
    ///
    /// Each key's HMAC key or public key is prepared once, when the key is built; the token is
    /// split once and each segment decoded once, into stack buffers when small.
    ///
    /// # Errors
    /// A [`VerifyError`] whose [`kind`](VerifyError::kind) says why; see the type's docs for
    /// the order of checks. Never panics, whatever the input.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<Claims<C>, VerifyError> {
        self.verify_in(token, Path::Prepared)
    }

    /// Verifies `token` as [`Verifier::verify`] does, but checks the signature with
    /// `jsonwebtoken::crypto::verify`, which rebuilds the key from its bytes on every call, and
    /// decodes every segment into a fresh allocation.
    ///
    /// This is the reference the fast path is held to: the differential tests and the
    /// differential fuzz target check that both accept and refuse exactly the same tokens, with
    /// the same [`ErrorKind`]. It is slower; use [`Verifier::verify`].
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_reference<C: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Claims<C>, VerifyError> {
        self.verify_in(token, Path::Reference)
    }

    fn verify_in<C: DeserializeOwned>(
        &self,
        token: &str,
        path: Path,
    ) -> Result<Claims<C>, VerifyError> {
        self.check_size(token)?;
        if !self.inner.routes.is_empty() {
            return self.route(token, path)?.verify_in(token, path);
        }
        let keys = self.inner.keys.load();
        self.verify_with(token, path, &keys).map(|v| v.claims)
    }

    /// Verifies `token` as [`Verifier::verify`] does, through the verifier's [`TokenCache`]
    /// when it has one (see [`Verifier::with_cache`]): a token equal to one verified before
    /// (the whole token, compared in constant time) has only its `exp`/`nbf` checked again
    /// (and that its key is still in the set). Without a cache, or for a verifier of HMAC keys
    /// only when the cache [excludes them](TokenCache::include_hmac), this is
    /// [`Verifier::verify`] with the claims put in an [`Arc`] (one allocation more). A verifier
    /// of several issuers ([`Verifier::any_of`]) verifies through the chosen issuer's cache, or
    /// else its own.
    ///
    /// The claims come shared: every request presenting the same token gets the cache entry's
    /// claims, and cloning them (into a request's extensions, out of them in a handler) counts
    /// a reference instead of copying their strings. So application claims `C` with interior
    /// mutability (an atomic, a `Mutex`, a `OnceLock`) are shared too: what one request writes
    /// there, later requests with the same token see, until the entry goes. Keep `C` plain
    /// data.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_cached<C>(&self, token: &str) -> Result<Arc<Claims<C>>, VerifyError>
    where
        C: DeserializeOwned + Send + Sync + 'static,
    {
        let c = &*self.inner;
        self.check_size(token)?;
        if !c.routes.is_empty() {
            // The issuer's verifier checks everything, through its own cache or, failing
            // that, the router's (entries carry the issuer verifier's configuration id).
            let route = self.route(token, Path::Prepared)?;
            route.check_size(token)?;
            return route.verify_through(route.inner.cache.as_ref().or(c.cache.as_ref()), token);
        }
        self.verify_through(c.cache.as_ref(), token)
    }

    /// Steps 2 to 5 of a sized token, through `cache` when there is one and it applies.
    fn verify_through<C>(
        &self,
        cache: Option<&TokenCache>,
        token: &str,
    ) -> Result<Arc<Claims<C>>, VerifyError>
    where
        C: DeserializeOwned + Send + Sync + 'static,
    {
        let c = &*self.inner;
        let keys = c.keys.load();
        let Some(cache) = cache.filter(|cache| cache.applies_to(&keys)) else {
            return self
                .verify_with(token, Path::Prepared, &keys)
                .map(|v| Arc::new(v.claims));
        };
        let probe = cache.probe(token);
        match cache.get::<C>(probe, c.id, &keys, |claims| self.check_claims(claims)) {
            Lookup::Hit(claims) => return Ok(claims),
            Lookup::Refused(e) => return Err(e),
            Lookup::Miss => {}
        }
        let verified = self.verify_with::<C>(token, Path::Prepared, &keys)?;
        let expires_at = verified.claims.exp.saturating_add(c.leeway);
        let claims = Arc::new(verified.claims);
        cache.insert(
            probe,
            c.id,
            Arc::clone(verified.key),
            verified.kid_less,
            Arc::clone(&claims),
            verified.payload_len,
            expires_at,
            c.clock.now(),
        );
        Ok(claims)
    }

    /// Step 1: the size, before any decoding.
    fn check_size(&self, token: &str) -> Result<(), VerifyError> {
        if token.len() > self.inner.max_len {
            return Err(VerifyError::new(
                ErrorKind::TooLarge,
                "token exceeds the size limit",
            ));
        }
        if token.is_empty() {
            return Err(VerifyError::new(ErrorKind::Malformed, "empty token"));
        }
        Ok(())
    }

    /// Steps 2 to 5 against one snapshot of the key set.
    fn verify_with<'k, C: DeserializeOwned>(
        &self,
        token: &str,
        path: Path,
        keys: &'k KeySet,
    ) -> Result<Verified<'k, C>, VerifyError> {
        // Split once: exactly three segments.
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::new(
                ErrorKind::Malformed,
                "token header is not valid",
            ));
        };
        let (key, kid_less) = match path {
            Path::Prepared => match self.remembered_header(header_b64, keys) {
                Some(selected) => Ok(selected),
                None => self.read_header(header_b64, keys),
            },
            Path::Reference => {
                let header = path.decode::<Header>(header_b64).map_err(header_error)?;
                self.select_key(
                    keys,
                    header.alg,
                    header.kid.as_deref(),
                    is_critical(&header),
                )
            }
        }?;
        // The signature covers the first two segments exactly as sent.
        let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let valid = match path {
            Path::Prepared => with_decoded(signature_b64, |signature| {
                key.prepared().verify(message, signature)
            })
            .map_err(|e| {
                VerifyError::new(ErrorKind::Malformed, "token is not a well-formed JWT")
                    .with_source(e)
            })?,
            Path::Reference => jsonwebtoken::crypto::verify(
                signature_b64,
                message,
                key.decoding_key(),
                key.algorithm().to_jwt(),
            )
            .map_err(jwt_error)?,
        };
        if !valid {
            return Err(VerifyError::new(
                ErrorKind::BadSignature,
                "signature does not match",
            ));
        }
        let claims = path.decode::<Claims<C>>(payload_b64).map_err(|e| {
            VerifyError::new(ErrorKind::Malformed, "token claims are not valid").with_source(e)
        })?;
        self.check_claims(&claims)?;
        Ok(Verified {
            claims,
            key,
            kid_less,
            payload_len: payload_b64.len(),
        })
    }

    /// Picks the issuer's verifier by the (not yet verified) `iss`, which then verifies all.
    fn route(&self, token: &str, path: Path) -> Result<&Verifier, VerifyError> {
        let payload = token.split('.').nth(1).unwrap_or("");
        let iss = path
            .decode::<IssuerOnly>(payload)
            .map_err(|e| {
                VerifyError::new(ErrorKind::Malformed, "token claims are not valid").with_source(e)
            })?
            .iss;
        let iss =
            iss.ok_or_else(|| VerifyError::new(ErrorKind::WrongIssuer, "issuer not accepted"))?;
        self.inner
            .routes
            .iter()
            .find(|v| v.inner.issuers.contains(&iss))
            .ok_or_else(|| VerifyError::new(ErrorKind::WrongIssuer, "issuer not accepted"))
    }

    fn check_claims<C>(&self, claims: &Claims<C>) -> Result<(), VerifyError> {
        let c = &*self.inner;
        let now = c.clock.now();
        if now >= claims.exp.saturating_add(c.leeway) {
            return Err(VerifyError::new(ErrorKind::Expired, "token expired"));
        }
        match claims.nbf {
            Some(nbf) if nbf > now.saturating_add(c.leeway) => {
                return Err(VerifyError::new(
                    ErrorKind::NotYetValid,
                    "token not yet valid",
                ));
            }
            None if c.require_nbf => {
                return Err(VerifyError::new(
                    ErrorKind::Malformed,
                    "token has no nbf claim",
                ));
            }
            _ => {}
        }
        if !c.issuers.is_empty()
            && !claims
                .iss
                .as_ref()
                .is_some_and(|iss| c.issuers.iter().any(|i| i == iss))
        {
            return Err(VerifyError::new(
                ErrorKind::WrongIssuer,
                "issuer not accepted",
            ));
        }
        if !c.audiences.is_empty()
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.iter().any(|a| c.audiences.iter().any(|x| x == a)))
        {
            return Err(VerifyError::new(
                ErrorKind::WrongAudience,
                "audience not accepted",
            ));
        }
        Ok(())
    }
}

/// A verified token, with what the cache records about it.
struct Verified<'k, C> {
    claims: Claims<C>,
    key: &'k Arc<Key>,
    kid_less: bool,
    payload_len: usize,
}

static NEXT_CONFIG_ID: AtomicU64 = AtomicU64::new(1);

fn next_config_id() -> u64 {
    NEXT_CONFIG_ID.fetch_add(1, Ordering::Relaxed)
}

fn jwt_error(e: jsonwebtoken::errors::Error) -> VerifyError {
    let (kind, description) = match e.kind() {
        JwtErrorKind::InvalidSignature => (ErrorKind::BadSignature, "signature does not match"),
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::MissingAlgorithm => (
            ErrorKind::WrongAlgorithm,
            "algorithm does not match the signing key",
        ),
        JwtErrorKind::Json(_) => (ErrorKind::Malformed, "token claims are not valid"),
        JwtErrorKind::InvalidToken | JwtErrorKind::Base64(_) | JwtErrorKind::Utf8(_) => {
            (ErrorKind::Malformed, "token is not a well-formed JWT")
        }
        _ => (ErrorKind::BadSignature, "signature could not be verified"),
    };
    VerifyError::new(kind, description).with_source(e)
}
