//! [`BearerVerifyLayer`]: configuration.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use baton_token::{NoCustomClaims, TokenCache, Verifier};
use tower_layer::Layer;

use crate::{BearerVerify, BuildRejection, CheckRevocation, JsonRejection};

/// A configuration that would produce challenges browsers or clients cannot parse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The realm must be printable ASCII without `"` or `\`.
    InvalidRealm,
    /// A scope must be a non-empty RFC 6749 scope-token (printable ASCII without space, `"`
    /// or `\`).
    InvalidScope(String),
    /// A role must be non-empty, without control characters or surrounding white space.
    InvalidRole(String),
    /// A cookie name must be an RFC 6265 token.
    InvalidCookieName(String),
    /// An `acr` value must be printable ASCII without space, `"` or `\`.
    InvalidAcr(String),
    /// A public origin must be an `http` or `https` origin without a path.
    InvalidOrigin(String),
    /// DPoP nonces need a secret of at least 32 bytes and a period of at least a second.
    InvalidNonces(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidRealm => {
                f.write_str("realm must be printable ASCII without '\"' or '\\'")
            }
            ConfigError::InvalidScope(s) => write!(f, "invalid scope {s:?}"),
            ConfigError::InvalidRole(s) => write!(f, "invalid role {s:?}"),
            ConfigError::InvalidCookieName(s) => write!(f, "invalid cookie name {s:?}"),
            ConfigError::InvalidAcr(s) => write!(f, "invalid acr value {s:?}"),
            ConfigError::InvalidOrigin(s) => write!(f, "invalid public origin {s:?}"),
            ConfigError::InvalidNonces(s) => write!(f, "invalid DPoP nonces: {s}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) verifier: Verifier,
    pub(crate) cookie: Option<Box<str>>,
    pub(crate) optional: bool,
    pub(crate) realm: Arc<str>,
    pub(crate) scopes: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) scope_challenge: Option<Arc<str>>,
    pub(crate) recent_login: Option<crate::RecentLogin>,
    pub(crate) dpop: Option<crate::Dpop>,
    pub(crate) revocation: Option<Arc<dyn CheckRevocation>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("verifier", &self.verifier)
            .field("cookie", &self.cookie)
            .field("optional", &self.optional)
            .field("realm", &self.realm)
            .field("scopes", &self.scopes)
            .field("recent_login", &self.recent_login)
            .field("dpop", &self.dpop)
            .field("roles", &self.roles)
            .field("revocation", &self.revocation.as_ref().map(|_| DebugHook))
            .finish()
    }
}

fn is_quoted_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// A non-empty run of printable ASCII without space, `"` or `\`: an RFC 6749 scope-token,
/// and what a challenge's `acr_values` member carries.
pub(crate) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Verifies the bearer token of every request and puts the verified claims into the request's
/// extensions, shared: as an `Arc<`[`Claims<C>`](baton_token::Claims)`>`, which every clone
/// (an extractor's, a handler's) only counts, and which a [`TokenCache`](baton_token::TokenCache)
/// hit hands out without copying.
///
/// See the [crate docs](crate) for an example and the responses it gives.
#[must_use]
pub struct BearerVerifyLayer<C = NoCustomClaims, R = JsonRejection> {
    pub(crate) config: Arc<Config>,
    pub(crate) rejection: R,
    pub(crate) _claims: PhantomData<fn() -> C>,
}

impl<C, R: Clone> Clone for BearerVerifyLayer<C, R> {
    fn clone(&self) -> Self {
        BearerVerifyLayer {
            config: self.config.clone(),
            rejection: self.rejection.clone(),
            _claims: PhantomData,
        }
    }
}

impl<C, R: fmt::Debug> fmt::Debug for BearerVerifyLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerVerifyLayer")
            .field("config", &self.config)
            .field("rejection", &self.rejection)
            .field("claims", &std::any::type_name::<C>())
            .finish()
    }
}

impl BearerVerifyLayer {
    /// A layer that requires a valid bearer token on every request, verified by `verifier`,
    /// realm `"baton"`, JSON rejections, and no application claims (see
    /// [`with_claims`](Self::with_claims)).
    pub fn new(verifier: Verifier) -> Self {
        BearerVerifyLayer {
            config: Arc::new(Config {
                verifier,
                cookie: None,
                optional: false,
                realm: Arc::from("baton"),
                scopes: Vec::new(),
                roles: Vec::new(),
                scope_challenge: None,
                recent_login: None,
                dpop: None,
                revocation: None,
            }),
            rejection: JsonRejection,
            _claims: PhantomData,
        }
    }
}

impl<C, R> BearerVerifyLayer<C, R> {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Deserializes the application's claims as `C2` (flattened into
    /// [`Claims`](baton_token::Claims)); a token whose claims do not fit is refused.
    pub fn with_claims<C2>(self) -> BearerVerifyLayer<C2, R> {
        BearerVerifyLayer {
            config: self.config,
            rejection: self.rejection,
            _claims: PhantomData,
        }
    }

    /// Also reads the token from the cookie `name` (cookie-mode apps). A request carrying the
    /// token in both the header and the cookie must carry the same token in both.
    ///
    /// # Errors
    /// [`ConfigError::InvalidCookieName`].
    pub fn with_cookie(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        if !is_cookie_name(&name) {
            return Err(ConfigError::InvalidCookieName(name));
        }
        self.config().cookie = Some(name.into_boxed_str());
        Ok(self)
    }

    /// Lets requests without any token through, with no claims in their extensions. A token
    /// that is present but bad is still refused.
    pub fn optional(mut self) -> Self {
        self.config().optional = true;
        self
    }

    /// The realm of the challenge.
    ///
    /// # Errors
    /// [`ConfigError::InvalidRealm`].
    pub fn with_realm(mut self, realm: impl AsRef<str>) -> Result<Self, ConfigError> {
        let realm = realm.as_ref();
        if !is_quoted_safe(realm) {
            return Err(ConfigError::InvalidRealm);
        }
        self.config().realm = Arc::from(realm);
        Ok(self)
    }

    /// Requires `scope` in the token's `scope` claim (403 `insufficient_scope` otherwise).
    ///
    /// # Errors
    /// [`ConfigError::InvalidScope`].
    pub fn require_scope(mut self, scope: impl Into<String>) -> Result<Self, ConfigError> {
        let scope = scope.into();
        if !is_scope_token(&scope) {
            return Err(ConfigError::InvalidScope(scope));
        }
        let config = self.config();
        config.scopes.push(scope);
        config.scope_challenge = Some(Arc::from(config.scopes.join(" ")));
        Ok(self)
    }

    /// Requires `role` in the token's `roles` claim (403 `insufficient_scope` otherwise).
    ///
    /// # Errors
    /// [`ConfigError::InvalidRole`] for an empty role, or one with control characters or
    /// surrounding white space (a typo more likely than a role).
    pub fn require_role(mut self, role: impl Into<String>) -> Result<Self, ConfigError> {
        let role = role.into();
        if role.is_empty() || role.trim() != role || role.chars().any(char::is_control) {
            return Err(ConfigError::InvalidRole(role));
        }
        self.config().roles.push(role);
        Ok(self)
    }

    /// Requires a recent enough (or strong enough) authentication: a valid token that does not
    /// meet `requirement` gets 401 `insufficient_user_authentication` with `max_age` (and
    /// `acr_values`) in the challenge (RFC 9470). Put a layer with it on the sensitive routes
    /// only (axum's `route_layer`), after or instead of the general one.
    ///
    /// ```
    /// use baton_bearer::{BearerVerifyLayer, RecentLogin};
    /// use baton_token::{Algorithm, Issuer, Key, KeySet};
    /// use std::time::Duration;
    ///
    /// let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    /// let sensitive = BearerVerifyLayer::new(issuer.verifier())
    ///     .require_recent_login(RecentLogin::within(Duration::from_secs(300)));
    /// # let _ = sensitive;
    /// ```
    pub fn require_recent_login(mut self, requirement: crate::RecentLogin) -> Self {
        self.config().recent_login = Some(requirement);
        self
    }

    /// Accepts DPoP (RFC 9449): `Authorization: DPoP <token>` with a `DPoP` proof from the
    /// key the token names in `cnf.jkt`, checked by `dpop` (every check of section 4.3, the
    /// replay cache included). A DPoP-bound token sent as `Bearer` is refused (no
    /// downgrade); unbound bearer tokens keep working unless `dpop` is
    /// [required](crate::Dpop::required). The proof is checked on every request; the token
    /// itself may still come from the verified-token cache.
    pub fn with_dpop(mut self, dpop: crate::Dpop) -> Self {
        self.config().dpop = Some(dpop);
        self
    }

    /// Consults `hook` for every verified token; a revoked one gets 401 `invalid_token`.
    pub fn with_revocation(mut self, hook: impl CheckRevocation) -> Self {
        self.config().revocation = Some(Arc::new(hook));
        self
    }

    /// Consults a shared hook (for example one fed by a revocation feed).
    pub fn with_shared_revocation(mut self, hook: Arc<dyn CheckRevocation>) -> Self {
        self.config().revocation = Some(hook);
        self
    }

    /// Replaces the responder that builds HTTP rejections.
    pub fn with_rejection<R2: BuildRejection>(self, rejection: R2) -> BearerVerifyLayer<C, R2> {
        BearerVerifyLayer {
            config: self.config,
            rejection,
            _claims: PhantomData,
        }
    }

    /// Caches verified tokens: a token seen before skips the signature check, while `exp`,
    /// `nbf`, its key and the revocation hook are still checked on every request. Pays for
    /// ECDSA, EdDSA and RSA keys (tens of microseconds per check); see [`TokenCache`].
    ///
    /// ```
    /// use baton_bearer::BearerVerifyLayer;
    /// use baton_token::{Algorithm, Issuer, Key, KeySet, TokenCache};
    ///
    /// let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    /// let layer = BearerVerifyLayer::new(issuer.verifier())
    ///     .with_cache(TokenCache::new(100_000, 64 << 20));
    /// assert!(layer.verifier().cache().is_some());
    /// ```
    pub fn with_cache(mut self, cache: TokenCache) -> Self {
        let verifier = self.config.verifier.clone().with_cache(cache);
        self.config().verifier = verifier;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.config.verifier
    }
}

impl<S, C, R: Clone> Layer<S> for BearerVerifyLayer<C, R> {
    type Service = BearerVerify<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerVerify::from_layer(inner, self)
    }
}

struct DebugHook;

impl fmt::Debug for DebugHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckRevocation")
    }
}
