#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc = include_str!("../WIRE.md")]
pub mod wire {}

mod agent;
mod audit;
mod auth;
mod cookie_mode;
mod device;
mod endpoints;
mod errors;
mod limit;
mod username;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use baton_bearer::{BearerVerifyLayer, CheckRevocation, RecentLogin, RevocationList, Revoke};
use baton_cookie::{CookieError, CookiePolicyLayer, CookieSpec, OriginGuardLayer};
use baton_refresh::RefreshOn401Layer;
use baton_store::RefreshStore;
use baton_token::{Clock, Issuer, KeyRing, SystemClock, TokenCache};

pub use agent::{DeviceInfo, DeviceKind};
pub use audit::{AuditEvent, AuditRecord, AuditSink, RevokeReason, TracingAudit};
pub use auth::{AuthUnavailable, Authenticator, LoginRequest, Principal, UsernamePassword};
pub use cookie_mode::{CookieCredentials, CookieRefresher};
pub use device::{ClientIp, ForwardedHeader, PeerAddr, network_key};
pub use endpoints::AuthEndpoints;
pub use errors::{JsonErrors, Refusal, RenderError, RenderRejection};
pub use limit::{LimitFuture, MemoryLimiter, RateLimiter, RateLimits, Rule};
pub use username::canonical_username;

/// Sign-in with OpenID Connect providers (feature `oidc`).
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub use baton_oidc as oidc;
/// The Redis store (feature `redis`).
#[cfg(feature = "redis")]
pub use baton_redis as redis;
pub use {baton_bearer as bearer, baton_cookie as cookie, baton_refresh as refresh};
pub use {baton_core as core, baton_store as store, baton_token as token};

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A cookie spec is unsafe or would be rejected by browsers.
    #[error(transparent)]
    Cookie(#[from] CookieError),
    /// The bearer layer refused the realm or cookie name.
    #[error(transparent)]
    Bearer(#[from] baton_bearer::ConfigError),
    /// A trusted origin or exempt path the cross-site guard refuses.
    #[error(transparent)]
    Origin(#[from] baton_cookie::OriginGuardError),
    /// The base path must start with `/`, not end with one, and not be `/` alone.
    #[error("the base path must look like /auth")]
    BasePath,
    /// The device-id header name is not a valid HTTP header name.
    #[error("invalid device id header name {0:?}")]
    DeviceIdHeader(String),
    /// Per-network rate limits are on, but the configuration does not say where a request's
    /// client address comes from: every client would share one bucket.
    #[error(
        "per-network rate limits need each request's client address: serve with axum's \
         into_make_service_with_connect_info::<SocketAddr>() (or insert baton::PeerAddr) and \
         call .client_addr_from_peer(), or .trusted_proxy(..) behind a reverse proxy; \
         .no_client_addr() turns the per-network limits off instead"
    )]
    ClientAddress,
    /// The store is shared with other instances, but revocations would be recorded in this
    /// process only: a logout would refuse the session's access tokens on this instance and
    /// no other.
    #[error(
        "the store is shared with other instances but revocations are not: give every \
         instance the same feed (Baton::redis(..), or .revocations(feed)), or say this is \
         the only instance with .single_instance()"
    )]
    NoRevocationFeed,
    /// `no_client_addr` says the server cannot tell client addresses, and another setting
    /// says where they come from.
    #[error(
        ".no_client_addr() and .client_addr_from_peer() / .trusted_proxy(..) / .client_ip(..) \
         contradict each other: keep the one that says where client addresses come from"
    )]
    ClientAddressConflict,
    /// The Redis feed's tasks need a Tokio runtime, and `build` ran outside one.
    #[error(
        "Baton::redis(..).build() must run inside a Tokio runtime (the revocation feed reads in the background)"
    )]
    NoRuntime,
}

pub(crate) struct Inner<S, A: Authenticator> {
    pub(crate) store: S,
    pub(crate) auth: A,
    pub(crate) issuer: Issuer,
    pub(crate) bearer: BearerVerifyLayer<A::Claims, RenderRejection>,
    /// The bearer check of sensitive actions: `bearer` with the recent-login requirement.
    pub(crate) bearer_sensitive: BearerVerifyLayer<A::Claims, RenderRejection>,
    pub(crate) device_id_header: http::HeaderName,
    pub(crate) dpop: Option<baton_bearer::Dpop>,
    pub(crate) refresh_cookie: CookieSpec,
    pub(crate) device_cookie: CookieSpec,
    pub(crate) access_cookie: Option<CookieSpec>,
    pub(crate) base: String,
    pub(crate) origin: OriginGuardLayer,
    pub(crate) revocations: Arc<dyn Revocations>,
    pub(crate) client_ip: ClientIp,
    /// Per-network limits are on and the application said the address comes from the peer:
    /// a request without one is the server's misconfiguration (500, logged).
    pub(crate) client_addr_required: bool,
    /// `GET /.well-known/openid-configuration`, when the issuer is an origin.
    pub(crate) discovery: Option<bytes::Bytes>,
    pub(crate) max_body: usize,
    pub(crate) errors: Arc<dyn RenderError>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) limits: RateLimits,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) clock: Arc<dyn Clock>,
    #[cfg(feature = "oidc")]
    pub(crate) oidc: Option<endpoints::oidc::OidcSetup>,
}

/// Where revocations go and are checked: this process's [`RevocationList`] by default, or a
/// feed shared by every instance (`baton::redis::RevocationFeed`).
pub trait Revocations: Revoke + CheckRevocation {}

impl<T: Revoke + CheckRevocation> Revocations for T {}

/// The configured login system: hands out the layers and the endpoints. Cheap to clone.
pub struct Baton<S, A: Authenticator> {
    inner: Arc<Inner<S, A>>,
}

impl<S, A: Authenticator> Clone for Baton<S, A> {
    fn clone(&self) -> Self {
        Baton {
            inner: self.inner.clone(),
        }
    }
}

impl<S, A: Authenticator> fmt::Debug for Baton<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Baton")
            .field("base", &self.inner.base)
            .field("issuer", &self.inner.issuer)
            .field("refresh_cookie", &self.inner.refresh_cookie)
            .field("access_cookie", &self.inner.access_cookie)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Baton`]; see [`Baton::builder`].
#[must_use]
pub struct BatonBuilder<S, A> {
    store: S,
    auth: A,
    keys: KeyRing,
    access_ttl: Duration,
    leeway: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    base: String,
    refresh_cookie_path: Option<String>,
    cookie_mode: bool,
    insecure_http: bool,
    trusted_origins: Vec<String>,
    client_ip: Option<ClientIp>,
    no_client_addr: bool,
    single_instance: bool,
    #[cfg(feature = "redis")]
    redis: Option<(baton_redis::RedisConnection, String)>,
    max_body: usize,
    realm: String,
    errors: Arc<dyn RenderError>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    revocations: Option<Arc<dyn Revocations>>,
    limits: RateLimits,
    limiter: Option<Arc<dyn RateLimiter>>,
    token_cache: Option<TokenCache>,
    recent_login: Option<RecentLogin>,
    device_id_header: String,
    dpop: Option<baton_bearer::Dpop>,
    #[cfg(feature = "oidc")]
    oidc: Option<endpoints::oidc::OidcSetup>,
}

impl<S, A> fmt::Debug for BatonBuilder<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatonBuilder")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl<S: RefreshStore, A: Authenticator> Baton<S, A> {
    /// Starts a configuration: sessions in `store`, credentials checked by `auth`, access
    /// tokens signed with `keys`. Defaults: 15-minute access tokens, no leeway (this service
    /// verifies the tokens it issues), endpoints under `/auth`, 16 KiB request bodies.
    pub fn builder(store: S, auth: A, keys: impl Into<KeyRing>) -> BatonBuilder<S, A> {
        BatonBuilder {
            store,
            auth,
            keys: keys.into(),
            access_ttl: Issuer::DEFAULT_TTL,
            leeway: Duration::ZERO,
            issuer: None,
            audience: None,
            base: "/auth".to_owned(),
            refresh_cookie_path: None,
            cookie_mode: false,
            insecure_http: false,
            trusted_origins: Vec::new(),
            client_ip: None,
            no_client_addr: false,
            single_instance: false,
            #[cfg(feature = "redis")]
            redis: None,
            max_body: 16 * 1024,
            realm: "baton".to_owned(),
            errors: Arc::new(JsonErrors),
            audit: Arc::new(TracingAudit),
            clock: Arc::new(SystemClock),
            revocations: None,
            limits: RateLimits::default(),
            limiter: None,
            token_cache: Some(TokenCache::new(
                BatonBuilder::<S, A>::DEFAULT_TOKEN_CACHE,
                BatonBuilder::<S, A>::DEFAULT_TOKEN_CACHE_BYTES,
            )),
            recent_login: None,
            device_id_header: BatonBuilder::<S, A>::DEFAULT_DEVICE_ID_HEADER.to_owned(),
            dpop: None,
            #[cfg(feature = "oidc")]
            oidc: None,
        }
    }

    /// The bearer layer for API routes: same keys, leeway and revocations as the endpoints.
    pub fn bearer_layer(&self) -> BearerVerifyLayer<A::Claims, RenderRejection> {
        self.inner.bearer.clone()
    }

    /// The bearer layer for the application's sensitive routes: [`bearer_layer`](
    /// Self::bearer_layer) with the [`recent_login`](BatonBuilder::recent_login)
    /// requirement (the same as `bearer_layer` when none is set).
    pub fn sensitive_bearer_layer(&self) -> BearerVerifyLayer<A::Claims, RenderRejection> {
        self.inner.bearer_sensitive.clone()
    }

    /// The cookie policy: enforces the token cookies' attributes on every response.
    pub fn cookie_policy(&self) -> CookiePolicyLayer {
        let layer = CookiePolicyLayer::new()
            .enforce(&self.inner.refresh_cookie)
            .enforce(&self.inner.device_cookie);
        match &self.inner.access_cookie {
            Some(access) => layer.enforce(access),
            None => layer,
        }
    }

    /// The cross-site guard the endpoints apply, for the application's own cookie routes.
    pub fn origin_guard(&self) -> OriginGuardLayer {
        self.inner.origin.clone()
    }

    /// The auth endpoints as a tower `Service`.
    pub fn endpoints(&self) -> AuthEndpoints<S, A> {
        AuthEndpoints {
            inner: self.inner.clone(),
        }
    }

    /// The server-side refresh layer for cookie-mode apps: wrap it around
    /// [`bearer_layer`](Self::bearer_layer); on an expired access cookie it rotates the
    /// refresh cookie through the store, re-runs the request, and sets both cookies anew.
    /// The refresh cookie's path must cover the wrapped routes
    /// ([`BatonBuilder::refresh_cookie_path`]).
    pub fn cookie_refresh_layer(&self) -> RefreshOn401Layer<CookieRefresher<S, A>> {
        RefreshOn401Layer::new(CookieRefresher {
            inner: self.inner.clone(),
        })
    }

    /// `true` when the bearer layer can tell revoked tokens now: always with this process's
    /// own list; with a feed, once it has read the shared log (a fresh [`Baton::redis`]
    /// instance is not ready until its first read, at most 2 s). A readiness probe's answer;
    /// while it is `false`, access tokens are answered 503 with `Retry-After`.
    pub fn is_ready(&self) -> bool {
        self.inner.revocations.is_known()
    }

    /// The revocations the endpoints record and the bearer layer consults.
    pub fn revocations(&self) -> &Arc<dyn Revocations> {
        &self.inner.revocations
    }

    /// The issuer of access tokens.
    pub fn issuer(&self) -> &Issuer {
        &self.inner.issuer
    }

    /// The session store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The refresh cookie's spec.
    pub fn refresh_cookie(&self) -> &CookieSpec {
        &self.inner.refresh_cookie
    }

    /// The client address of a request, as the endpoints and limits see it (`None` when the
    /// server gave no peer address).
    pub fn client_addr<B>(&self, req: &http::Request<B>) -> Option<std::net::IpAddr> {
        device::client_ip(req.headers(), req.extensions(), &self.inner.client_ip)
    }

    /// The access cookie's spec, in cookie mode.
    pub fn access_cookie(&self) -> Option<&CookieSpec> {
        self.inner.access_cookie.as_ref()
    }

    /// An axum `Router` serving the endpoints (under the base path, plus
    /// `/.well-known/jwks.json` and, with an [`iss`](BatonBuilder::iss) URL,
    /// `/.well-known/openid-configuration`) behind the cookie policy (feature `axum`).
    #[cfg(feature = "axum")]
    pub fn router<St>(&self) -> axum::Router<St>
    where
        St: Clone + Send + Sync + 'static,
    {
        let endpoints = self.endpoints();
        axum::Router::new()
            .route_service(&format!("{}/{{*rest}}", self.inner.base), endpoints.clone())
            .route_service("/.well-known/jwks.json", endpoints.clone())
            .route_service(endpoints::DISCOVERY_PATH, endpoints)
            .layer(self.cookie_policy())
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl<A: Authenticator> Baton<baton_redis::RedisStore, A> {
    /// Starts a configuration on Redis, every part on the store's one connection and key
    /// prefix: sessions in `store`, revocations in a
    /// [`RevocationFeed`](baton_redis::RevocationFeed) every instance hears (kept as long as
    /// an access token lives: the [access lifetime](BatonBuilder::access_ttl) plus the
    /// [leeway](BatonBuilder::leeway)), and rate limits in
    /// [`RedisGcra`](baton_redis::RedisGcra), counted once across instances. An explicit
    /// [`revocations`](BatonBuilder::revocations) or
    /// [`rate_limiter`](BatonBuilder::rate_limiter) replaces its part. `build` must run
    /// inside a Tokio runtime; the feed reads the log in the background from then on, and
    /// until its first read (at most 2 s, then the feed's disconnect policy decides) access
    /// tokens are answered 503 with `Retry-After`: a fresh instance never takes a token
    /// another one revoked before it started.
    ///
    /// ```no_run
    /// # use baton::{Authenticator, AuthUnavailable, Baton, Principal, UsernamePassword};
    /// # use baton_token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
    /// # struct Demo;
    /// # impl Authenticator for Demo {
    /// #     type Claims = NoCustomClaims;
    /// #     type Credentials = UsernamePassword;
    /// #     async fn authenticate(&self, _: &UsernamePassword) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> { Ok(None) }
    /// #     async fn check_password(&self, _: &str, _: &str) -> Result<bool, AuthUnavailable> { Ok(false) }
    /// #     async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> { Ok(None) }
    /// # }
    /// use baton::redis::{RedisConnection, RedisOptions, RedisStore};
    /// use baton::store::{Policy, RefreshKeys};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256)?)?);
    /// let options = RedisOptions::new();
    /// let redis = RedisConnection::connect("redis://127.0.0.1:6379/", &options).await?;
    /// let refresh_keys = RefreshKeys::new(1, std::env::var("REFRESH_KEY")?.as_bytes())?;
    /// let store = RedisStore::new(redis, refresh_keys, Policy::new(), &options);
    /// let baton = Baton::redis(store, Demo, keys).client_addr_from_peer().build()?;
    /// # let _ = baton; Ok(()) }
    /// ```
    pub fn redis(
        store: baton_redis::RedisStore,
        auth: A,
        keys: impl Into<KeyRing>,
    ) -> BatonBuilder<baton_redis::RedisStore, A> {
        let shared = (store.connection().clone(), store.prefix().to_owned());
        let mut builder = Baton::builder(store, auth, keys);
        builder.redis = Some(shared);
        builder
    }
}

impl<S: RefreshStore, A: Authenticator> BatonBuilder<S, A> {
    /// Entries of the default token cache (see [`token_cache`](Self::token_cache)).
    pub const DEFAULT_TOKEN_CACHE: usize = 16_384;
    /// Bytes the default token cache's entries may hold in all: room for every entry with
    /// RS256 tokens of about 600 bytes (an entry is charged for its token, its claims and
    /// about 460 bytes of bookkeeping; see [`TokenCache`]).
    pub const DEFAULT_TOKEN_CACHE_BYTES: usize = 24 << 20;

    /// The access-token lifetime (at least one second).
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The clock skew tolerated on `exp`/`nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// `iss` of issued tokens, required on verified ones. When it is an `https` (or `http`)
    /// origin with no path (`https://login.example`), the endpoints also serve
    /// `GET /.well-known/openid-configuration`, naming the issuer and its `jwks_uri`
    /// (`{issuer}/.well-known/jwks.json`), so another service verifies this one's tokens
    /// from the issuer URL alone (`baton_bearer::jwks::RemoteJwks::discover`).
    pub fn iss(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// `aud` of issued tokens, required on verified ones.
    pub fn aud(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Where the endpoints live (default `/auth`); the refresh cookie's path.
    pub fn base_path(mut self, base: impl Into<String>) -> Self {
        self.base = base.into();
        self
    }

    /// The refresh cookie's path when it must cover more than the endpoints (cookie-mode
    /// apps that refresh on API routes); never `/`.
    pub fn refresh_cookie_path(mut self, path: impl Into<String>) -> Self {
        self.refresh_cookie_path = Some(path.into());
        self
    }

    /// Cookie mode: the access token also travels in an `HttpOnly` `__Host-access` cookie,
    /// which the bearer layer reads.
    pub fn cookie_mode(mut self) -> Self {
        self.cookie_mode = true;
        self
    }

    /// Drops `Secure` from the cookies and their prefixes, for plain HTTP on hosts other
    /// than localhost.
    ///
    /// # Security
    /// Tokens then cross the network in clear text. Browsers accept `Secure` cookies on
    /// `http://localhost`; development does not need this.
    pub fn dangerous_insecure_http(mut self) -> Self {
        self.insecure_http = true;
        self
    }

    /// Accepts cross-site requests to the endpoints from `origin`, exactly as a browser sends
    /// it (`https://host[:port]`, no path, no trailing slash); checked by
    /// [`build`](Self::build), which refuses a malformed one with [`ConfigError::Origin`].
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// Each request's client address is its TCP peer, which the server hands the endpoints:
    /// axum's `into_make_service_with_connect_info::<SocketAddr>()`, or a [`PeerAddr`]
    /// extension a hyper or tonic server inserts. One of this,
    /// [`trusted_proxy`](Self::trusted_proxy), [`client_ip`](Self::client_ip) or
    /// [`no_client_addr`](Self::no_client_addr) is needed while per-network
    /// [rate limits](Self::rate_limits) are on (they are by default): [`build`](Self::build)
    /// refuses otherwise ([`ConfigError::ClientAddress`]), and a request that comes without
    /// a peer address then answers 500 with an error logged, rather than every client
    /// sharing one bucket.
    ///
    /// ```no_run
    /// # use baton::{Authenticator, AuthUnavailable, Baton, Principal, UsernamePassword};
    /// # use baton_store::{MemoryStore, Policy, RefreshKeys};
    /// # use baton_token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
    /// # struct Demo;
    /// # impl Authenticator for Demo {
    /// #     type Claims = NoCustomClaims;
    /// #     type Credentials = UsernamePassword;
    /// #     async fn authenticate(&self, _: &UsernamePassword) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> { Ok(None) }
    /// #     async fn check_password(&self, _: &str, _: &str) -> Result<bool, AuthUnavailable> { Ok(false) }
    /// #     async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> { Ok(None) }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256)?)?);
    /// # let store = MemoryStore::new(RefreshKeys::generate()?, Policy::new());
    /// let baton = Baton::builder(store, Demo, keys).client_addr_from_peer().build()?;
    /// let app = baton.router::<()>();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
    /// # Ok(()) }
    /// ```
    pub fn client_addr_from_peer(mut self) -> Self {
        self.client_ip = Some(self.client_ip.unwrap_or_default());
        self
    }

    /// Trusts the reverse proxy at `proxy` (an address or a CIDR range, as an
    /// [`ipnet::IpNet`]): when it is the peer, the client address comes from the forwarding
    /// header (see [`ClientIp`]; `X-Forwarded-For` unless [`client_ip`](Self::client_ip) says
    /// otherwise). The server must still hand the endpoints the peer address (see
    /// [`client_addr_from_peer`](Self::client_addr_from_peer)).
    pub fn trusted_proxy(mut self, proxy: impl Into<ipnet::IpNet>) -> Self {
        self.client_ip = Some(self.client_ip.unwrap_or_default().trust_proxy(proxy.into()));
        self
    }

    /// How the client address is found (trusted proxies and the one header they write),
    /// from the peer address the server hands the endpoints (see
    /// [`client_addr_from_peer`](Self::client_addr_from_peer)).
    pub fn client_ip(mut self, client_ip: ClientIp) -> Self {
        self.client_ip = Some(client_ip);
        self
    }

    /// This server cannot tell clients' addresses apart: the limits keyed by client network
    /// are off (`login_per_ip`, `refresh_per_ip`, and `login_per_username`, whose key is a
    /// name and a network: with one network for all, any stranger could spend any name's
    /// budget), whatever [`rate_limits`](Self::rate_limits) says. Failed logins still count
    /// per name for browsers without that name's device cookie
    /// (`login_failures_per_username`), so a stranger's failures never lock out a browser
    /// that logged in before. Contradicts [`client_addr_from_peer`](Self::client_addr_from_peer),
    /// [`trusted_proxy`](Self::trusted_proxy) and [`client_ip`](Self::client_ip)
    /// ([`ConfigError::ClientAddressConflict`]).
    pub fn no_client_addr(mut self) -> Self {
        self.no_client_addr = true;
        self
    }

    /// Says this is the only instance using the store: revocations are kept in this
    /// process. Needed to build on a store other instances could share (Redis, PostgreSQL)
    /// without a revocation feed; with a second instance, a logout on one would not refuse
    /// the session's access tokens on the other until they expire.
    pub fn single_instance(mut self) -> Self {
        self.single_instance = true;
        self
    }

    /// The largest request body the endpoints read (default 16 KiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The realm of bearer challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Sends audit events (logins, refreshes, revoked sessions and why, rate limits) to
    /// `sink` instead of the default [`TracingAudit`].
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// Renders error bodies (default [`JsonErrors`]), for the endpoints and the bearer layer.
    pub fn errors(mut self, errors: impl RenderError) -> Self {
        self.errors = Arc::new(errors);
        self
    }

    /// Records and checks revocations in `revocations` (a feed shared by every instance)
    /// instead of this process's own list.
    pub fn revocations<R: Revocations>(mut self, revocations: Arc<R>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Which rate limits apply to login and refresh (default [`RateLimits::default`]).
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Where requests are counted (default: a [`MemoryLimiter`] of this process).
    pub fn rate_limiter(mut self, limiter: impl RateLimiter) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// Caches verified access tokens in `cache` (see [`TokenCache`]) instead of the default
    /// one: the bearer layer and the endpoints' own bearer checks skip the signature of a
    /// token seen before, while `exp`, `nbf`, the key and revocations are still checked on
    /// every request. On by default, with [`BatonBuilder::DEFAULT_TOKEN_CACHE`] entries in
    /// at most [`BatonBuilder::DEFAULT_TOKEN_CACHE_BYTES`].
    pub fn token_cache(mut self, cache: TokenCache) -> Self {
        self.token_cache = Some(cache);
        self
    }

    /// Verifies every access token's signature on every request (no [`TokenCache`]).
    pub fn no_token_cache(mut self) -> Self {
        self.token_cache = None;
        self
    }

    /// Sensitive actions (signing out other devices, ending another device's session) require
    /// an authentication that meets `requirement` (RFC 9470; by default none): otherwise they
    /// answer 401 `insufficient_user_authentication` with `max_age` in the challenge, and
    /// the client has the user enter the password at `POST {base}/reauthenticate`, then
    /// retries. The application's own sensitive routes take
    /// [`sensitive_bearer_layer`](Baton::sensitive_bearer_layer).
    ///
    /// ```
    /// # use baton::{Authenticator, AuthUnavailable, Baton, Principal, UsernamePassword};
    /// # use baton_store::{MemoryStore, Policy, RefreshKeys};
    /// # use baton_token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
    /// # struct Demo;
    /// # impl Authenticator for Demo {
    /// #     type Claims = NoCustomClaims;
    /// #     type Credentials = UsernamePassword;
    /// #     async fn authenticate(&self, _: &UsernamePassword) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> { Ok(None) }
    /// #     async fn check_password(&self, _: &str, _: &str) -> Result<bool, AuthUnavailable> { Ok(false) }
    /// #     async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> { Ok(None) }
    /// # }
    /// use baton::bearer::RecentLogin;
    /// use std::time::Duration;
    ///
    /// # let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    /// # let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    /// let baton = Baton::builder(store, Demo, keys)
    ///     .client_addr_from_peer()
    ///     .recent_login(RecentLogin::within(Duration::from_secs(300)))
    ///     .build()
    ///     .unwrap();
    /// # let _ = baton;
    /// ```
    pub fn recent_login(mut self, requirement: RecentLogin) -> Self {
        self.recent_login = Some(requirement);
        self
    }

    /// Turns DPoP on (RFC 9449): a login or refresh with a valid `DPoP` proof binds the
    /// session and its access tokens to the proof's key (`token_type` `DPoP`, `cnf.jkt`);
    /// the session's later refreshes need a proof from that key (a stolen refresh cookie
    /// alone is useless), and the bearer layer takes its tokens only as
    /// `Authorization: DPoP` with a fresh proof. Without a proof the bearer flow is as before,
    /// unless `dpop` is [required](baton_bearer::Dpop::required).
    pub fn dpop(mut self, dpop: baton_bearer::Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Sign-in with OpenID Connect providers (feature `oidc`): `GET {base}/oidc/providers`
    /// lists them, `GET {base}/oidc/{id}/start?return_to=/path` sends the browser to the
    /// provider, and `GET {base}/oidc/{id}/callback` (the redirect URI to register) opens an
    /// ordinary session for the user `accounts` links the identity to (the refresh cookie, as
    /// a login sets it; the page then refreshes for an access token) and sends the browser to
    /// `return_to`. Every failure sends it to `/?oidc_error=<code>`. The authenticator's
    /// `claims` must know the users `accounts` names. A signed-in user links another
    /// provider's identity with `POST {base}/oidc/{id}/link?return_to=/path` (its bearer
    /// token, with the [recent login](Self::recent_login) the facade asks for): the answer is
    /// `{"redirect": "<provider URL>"}` for the page to go to, and the callback links the
    /// identity (never one linked to another user: `?oidc_error=identity_taken`) instead of
    /// opening a session.
    #[cfg(feature = "oidc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
    pub fn oidc(mut self, oidc: baton_oidc::Oidc, accounts: impl baton_oidc::Accounts) -> Self {
        self.oidc = Some(endpoints::oidc::OidcSetup::new(oidc, accounts));
        self
    }

    /// The default header a native app sends its stable device identifier in.
    pub const DEFAULT_DEVICE_ID_HEADER: &'static str = "x-device-id";

    /// The header a client sends its stable device identifier in (default `X-Device-Id`):
    /// a login carrying one replaces that device's earlier session of the same user instead
    /// of adding one. Its value must pass [`baton_store::check_device_id`] (400 otherwise).
    pub fn device_id_header(mut self, name: impl Into<String>) -> Self {
        self.device_id_header = name.into();
        self
    }

    /// Reads time from `clock` (the store keeps its own).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration and builds.
    ///
    /// # Errors
    /// [`ConfigError`] for a bad base path, realm, or cookie spec.
    pub fn build(self) -> Result<Baton<S, A>, ConfigError> {
        if !self.base.starts_with('/') || self.base.ends_with('/') || self.base.len() < 2 {
            return Err(ConfigError::BasePath);
        }
        let device_id_header = http::HeaderName::from_bytes(self.device_id_header.as_bytes())
            .map_err(|_| ConfigError::DeviceIdHeader(self.device_id_header.clone()))?;
        if self.no_client_addr && self.client_ip.is_some() {
            return Err(ConfigError::ClientAddressConflict);
        }
        let mut limits = self.limits;
        if self.no_client_addr {
            // Every client would share one network: the limits keyed by network would let
            // any stranger spend any name's budget. What remains is the per-name failure
            // limit that a browser's device cookie is exempt from.
            limits.login_per_ip = None;
            limits.refresh_per_ip = None;
            limits.login_per_username = None;
        }
        let per_network = limits.login_per_ip.is_some()
            || limits.refresh_per_ip.is_some()
            || limits.login_per_username.is_some();
        if per_network && !self.no_client_addr && self.client_ip.is_none() {
            return Err(ConfigError::ClientAddress);
        }
        let client_addr_required = per_network && !self.no_client_addr;
        #[cfg(feature = "redis")]
        let redis = self.redis;
        #[cfg(not(feature = "redis"))]
        let redis: Option<()> = None;
        if self.store.is_shared()
            && self.revocations.is_none()
            && redis.is_none()
            && !self.single_instance
        {
            return Err(ConfigError::NoRevocationFeed);
        }
        let mut issuer = Issuer::new(self.keys)
            .with_ttl(self.access_ttl)
            .with_clock(self.clock.clone());
        if let Some(iss) = &self.issuer {
            issuer = issuer.with_iss(iss.clone());
        }
        if let Some(aud) = &self.audience {
            issuer = issuer.with_aud(aud.clone());
        }
        let mut verifier = issuer.verifier().with_leeway(self.leeway);
        if let Some(cache) = self.token_cache {
            verifier = verifier.with_cache(cache);
        }

        let idle = self.store.policy().idle_lifetime();
        let mut refresh = CookieSpec::refresh(
            self.refresh_cookie_path
                .clone()
                .unwrap_or_else(|| self.base.clone()),
        )
        .with_max_age(idle);
        let mut access = CookieSpec::access().with_max_age(self.access_ttl);
        if self.insecure_http {
            refresh = refresh.with_name("refresh").dangerous_insecure_http();
            access = access.with_name("access").dangerous_insecure_http();
        }
        // A browser that logged in before: exempt from failures made elsewhere (see
        // `RateLimits`). Sent to the endpoints only.
        let mut device = CookieSpec::refresh(self.base.clone())
            .with_name("__Secure-device")
            .with_max_age(Duration::from_secs(180 * 24 * 3600));
        if self.insecure_http {
            device = device.with_name("device").dangerous_insecure_http();
        }
        let device_cookie = device.build()?;
        let refresh_cookie = refresh.build()?;
        let access_cookie = if self.cookie_mode {
            Some(access.build()?)
        } else {
            None
        };

        // Set below when the `redis` feature wires them.
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut limiter = self.limiter;
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut revocations = self.revocations;
        #[cfg(feature = "redis")]
        if let Some((conn, prefix)) = redis {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(ConfigError::NoRuntime);
            }
            if revocations.is_none() {
                // Kept as long as an access token can be accepted.
                let options = baton_redis::FeedOptions::new(self.access_ttl + self.leeway)
                    .with_prefix(prefix.clone());
                // Until its first read the feed refuses tokens (503): see `DisconnectPolicy`.
                revocations = Some(baton_redis::RevocationFeed::spawn_on_with_clock(
                    conn.clone(),
                    options,
                    self.clock.clone(),
                ));
            }
            if limiter.is_none() {
                limiter = Some(Arc::new(
                    baton_redis::RedisGcra::new(conn, &prefix).with_clock(self.clock.clone()),
                ));
            }
        }
        let revocations: Arc<dyn Revocations> = match revocations {
            Some(shared) => shared,
            None => Arc::new(
                RevocationList::new(self.access_ttl + self.leeway).with_clock(self.clock.clone()),
            ),
        };
        let mut bearer = BearerVerifyLayer::new(verifier)
            .with_claims::<A::Claims>()
            .with_realm(&self.realm)?
            .with_shared_revocation(revocations.clone() as Arc<dyn CheckRevocation>)
            .with_rejection(RenderRejection::shared(self.errors.clone()));
        if let Some(access) = &access_cookie {
            bearer = bearer.with_cookie(access.name())?;
        }
        if let Some(dpop) = &self.dpop {
            bearer = bearer.with_dpop(dpop.clone());
        }
        let bearer_sensitive = match self.recent_login {
            Some(requirement) => bearer.clone().require_recent_login(requirement),
            None => bearer.clone(),
        };
        let origin = self.trusted_origins.iter().try_fold(
            OriginGuardLayer::new().with_shared_errors(self.errors.clone()),
            |g, o| g.trust_origin(o),
        )?;
        Ok(Baton {
            inner: Arc::new(Inner {
                store: self.store,
                auth: self.auth,
                issuer,
                bearer,
                bearer_sensitive,
                device_id_header,
                dpop: self.dpop,
                #[cfg(feature = "oidc")]
                oidc: self.oidc,
                refresh_cookie,
                device_cookie,
                access_cookie,
                base: self.base,
                origin,
                revocations,
                client_ip: self.client_ip.unwrap_or_default(),
                client_addr_required,
                discovery: self
                    .issuer
                    .as_deref()
                    .and_then(endpoints::discovery_document),
                max_body: self.max_body,
                errors: self.errors,
                audit: self.audit,
                limits,
                limiter: limiter.unwrap_or_else(|| Arc::new(MemoryLimiter::new())),
                clock: self.clock,
            }),
        })
    }
}
