//! The baton login app, as a library so tests can start it in-process.
//!
//! `cargo run -p login-app` serves it on 127.0.0.1:3000 with the in-memory stores; see the
//! package README for the flags.

mod hashing;
pub mod keys;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use baton::bearer::Authenticated;
use baton::store::{MemoryStore, NetworkChange, Policy, RefreshStore, ReuseDetection};
use baton::token::{Algorithm, KeyRing, KeySet};
use baton::{Baton, RateLimiter, RenderError};

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Request, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use users::{AppClaims, Users};

/// The app's settings (the command line's flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Redis for sessions and users; in memory when absent.
    pub redis_url: Option<String>,
    /// PostgreSQL for users, sessions, the revocation feed and the limits (instead of Redis).
    pub database_url: Option<String>,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Refresh-token (session idle) lifetime.
    pub refresh_ttl: Duration,
    /// Grace window for concurrent refreshes.
    pub refresh_grace: Duration,
    /// Clock skew tolerated on access tokens.
    pub leeway: Duration,
    /// Signing algorithm.
    pub alg: Algorithm,
    /// Where the signing key lives.
    pub key_file: Option<PathBuf>,
    /// Login and refresh rate limits (shared through Redis in Redis mode).
    pub rate_limits: baton::RateLimits,
    /// When a spent refresh token counts as stolen.
    pub reuse_detection: ReuseDetection,
    /// Registrations per client network (an IPv4 address, an IPv6 /64); shared through Redis
    /// in Redis mode. `None`: no limit.
    pub register_limit: Option<baton::Rule>,
    /// Cache verified access tokens (on by default; `--no-token-cache` turns it off).
    pub token_cache: bool,
    /// How the client address is found: the TCP peer, or behind trusted proxies the header
    /// they write (limits, the device list).
    pub client_ip: baton::ClientIp,
    /// What a refresh from another network (/16, /48) does: record it, flag the session, or
    /// revoke it.
    pub network_change: NetworkChange,
    /// Signing out other devices and ending another device's session need a login (or a
    /// password entered again) within this long; `None`: no such requirement.
    pub recent_login: Option<Duration>,
    /// The origins browsers reach the app at (`http://127.0.0.1:3000`): DPoP proofs must name
    /// one of them. Empty: DPoP off.
    pub public_urls: Vec<String>,
    /// Refuse clients without DPoP (bearer-only).
    pub require_dpop: bool,
    /// The access tokens' `iss`, required on the ones it verifies. An origin
    /// (`https://login.example.com`) is also published at
    /// `/.well-known/openid-configuration` with its `jwks_uri`, so other services verify the
    /// app's tokens from this URL alone. `None`: no `iss`.
    pub issuer: Option<String>,
    /// DPoP proofs must carry a server nonce (`DPoP-Nonce`) of this period or the one
    /// before; `None`: no nonces. In Redis mode every instance shares the nonce secret.
    pub dpop_nonces: Option<Duration>,
    /// OpenID Connect providers to sign in with (a "Sign in with ..." button each). Their
    /// redirect URI is `{first public URL}/auth/oidc/{id}/callback`.
    pub oidc: Vec<OidcProvider>,
    /// Certificate authorities (DER) trusted for reaching the providers instead of the
    /// platform's roots (a private provider). Empty: the platform's roots.
    pub oidc_roots: Vec<Vec<u8>>,
}

/// One OpenID Connect provider of the login app.
#[derive(Clone)]
pub struct OidcProvider {
    /// The name on its button ("Google"); its id in URLs is made from it (`google`).
    pub name: String,
    /// Its issuer URL (`https://accounts.google.com`).
    pub issuer: String,
    /// This app's client id there.
    pub client_id: String,
    /// This app's client secret there.
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// The provider's id in URLs: its name in lower case, every run of other characters
    /// than `a-z` and `0-9` a `-` ("Kakao Login" is `kakao-login`), at most 32.
    pub fn id(&self) -> String {
        let mut id = String::new();
        for c in self.name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                id.push(c);
            } else if !id.is_empty() && !id.ends_with('-') {
                id.push('-');
            }
        }
        let id = id.trim_end_matches('-');
        id.chars()
            .take(32)
            .collect::<String>()
            .trim_end_matches('-')
            .to_owned()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis_url: None,
            database_url: None,
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(1_209_600),
            refresh_grace: Duration::from_secs(10),
            leeway: Duration::ZERO,
            alg: Algorithm::ES256,
            key_file: None,
            rate_limits: baton::RateLimits::default(),
            reuse_detection: ReuseDetection::Strict,
            register_limit: Some(baton::Rule::new(5, 5)),
            token_cache: true,
            client_ip: baton::ClientIp::new(),
            network_change: NetworkChange::Record,
            recent_login: Some(Duration::from_secs(300)),
            public_urls: Vec::new(),
            require_dpop: false,
            issuer: None,
            dpop_nonces: None,
            oidc: Vec::new(),
            oidc_roots: Vec::new(),
        }
    }
}

const INDEX: &str = include_str!("../static/index.html");
const SCRIPT: &str = include_str!("../static/app.js");
const STYLE: &str = include_str!("../static/style.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Registration {
    username: String,
    password: String,
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    let r = baton::JsonErrors.render(status, error, description);
    let (parts, body) = r.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// What the app's own routes need.
#[derive(Clone)]
struct AppState {
    users: Users,
    limiter: Arc<dyn RateLimiter>,
    register_limit: Option<baton::Rule>,
    client_ip: baton::ClientIp,
}

fn with_retry_after(mut res: Response, secs: u64) -> Response {
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<axum::body::Body>,
) -> Response {
    use axum::extract::FromRequest as _;
    // Counted before anything else: a flood costs this check, never a hash.
    if let Some(rule) = state.register_limit
        && let Err(wait) = state
            .limiter
            .check(
                "register-net",
                &baton::network_key(state.client_ip.resolve(req.headers(), peer)),
                rule,
            )
            .await
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return with_retry_after(
            json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many registrations from your network; retry later",
            ),
            secs,
        );
    }
    let users = state.users;
    // axum's own JSON extractor, after the count: 415 for another content type, 413 only for
    // a body over the limit, 400 for anything that is not the expected JSON.
    let reg = match axum::Json::<Registration>::from_request(req, &()).await {
        Ok(axum::Json(reg)) => reg,
        Err(rejection) => {
            let status = match rejection.status() {
                s @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => s,
                _ => StatusCode::BAD_REQUEST,
            };
            let description = match status {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "the body must be application/json",
                StatusCode::PAYLOAD_TOO_LARGE => "the body is too large",
                _ => "expected {\"username\": string, \"password\": string}",
            };
            return json_error(status, "invalid_request", description);
        }
    };
    // Names are compared in their canonical form (NFKC, case folded): `ALICE` is `alice`.
    let canonical = baton::canonical_username(&reg.username);
    let name_ok = canonical.as_deref().is_some_and(|name| {
        (1..=64).contains(&name.chars().count())
            && name.len() <= 256
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || "._-".contains(c))
    });
    if !name_ok {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
            "1 to 64 letters, digits, '.', '_' or '-'",
        );
    }
    if reg.password.chars().count() < 8 || reg.password.len() > 1024 {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
            "the password must be 8 to 1024 characters",
        );
    }
    match users.register(&reg.username, &reg.password).await {
        Ok(id) => {
            tracing::info!(target: "login_app", user = %id, "registered");
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "id": id, "username": reg.username })),
            )
                .into_response()
        }
        Err(users::RegisterError::Taken) => json_error(
            StatusCode::CONFLICT,
            "username_taken",
            "that username is taken",
        ),
        Err(users::RegisterError::Unavailable) => with_retry_after(
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the user store is unavailable",
            ),
            1,
        ),
        Err(users::RegisterError::Busy) => with_retry_after(
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many passwords are being checked; retry shortly",
            ),
            1,
        ),
    }
}

async fn me(Authenticated(claims): Authenticated<AppClaims>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "sub": claims.sub, "username": claims.custom.username }))
}

/// The app's router around `baton`: its own routes limit registrations with `limiter`.
fn router<S: RefreshStore + Clone>(
    baton: &Baton<S, Users>,
    users: Users,
    limiter: Arc<dyn RateLimiter>,
    config: &Config,
) -> Router {
    let api = Router::new()
        .route("/api/me", get(me))
        .layer(baton.bearer_layer());
    let pages = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/auth/register", post(register))
        .with_state(AppState {
            users,
            limiter,
            register_limit: config.register_limit,
            client_ip: config.client_ip.clone(),
        });
    let header = |name, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    pages.merge(api).merge(baton.router()).layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .layer(SetSensitiveHeadersLayer::new([
                AUTHORIZATION,
                COOKIE,
                SET_COOKIE,
            ]))
            .layer(TraceLayer::new_for_http())
            // Bodies are read through limits that answer in the app's JSON: axum's for the
            // app's routes, baton's own (16 KiB) for the auth endpoints.
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(10),
            ))
            .layer(header(CONTENT_SECURITY_POLICY, CSP))
            .layer(header(X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(header(X_FRAME_OPTIONS, "DENY"))
            .layer(header(REFERRER_POLICY, "no-referrer")),
    )
}

/// The app, built: its router, its signing key ring (to rotate keys at run time: the JWKS
/// endpoint publishes what the ring holds), and, on Redis, the one connection everything
/// shares (for its counters).
#[derive(Debug)]
#[non_exhaustive]
pub struct Built {
    /// The router.
    pub router: Router,
    /// The signing key ring.
    pub keys: KeyRing,
    /// The shared Redis connection, in Redis mode.
    pub redis: Option<baton::redis::RedisConnection>,
}

/// Builds the app for `config`.
///
/// # Errors
/// A message when the key file or Redis cannot be used.
pub async fn app(config: &Config) -> Result<Router, String> {
    build(config).await.map(|built| built.router)
}

/// Builds the app for `config`, and hands back its signing key ring.
///
/// # Errors
/// As [`app`].
pub async fn app_with_keys(config: &Config) -> Result<(Router, KeyRing), String> {
    build(config).await.map(|built| (built.router, built.keys))
}

/// Builds the app for `config` (see [`Built`]).
///
/// # Errors
/// As [`app`].
pub async fn build(config: &Config) -> Result<Built, String> {
    let keys = keys::load_or_create(config.alg, config.key_file.as_deref())?;
    let ring = KeyRing::new(KeySet::new(keys.signing).map_err(|e| e.to_string())?);
    let handle = ring.clone();
    let policy = Policy::builder()
        .idle_lifetime(config.refresh_ttl)
        .absolute_lifetime(config.refresh_ttl.max(Duration::from_secs(90 * 24 * 3600)))
        .grace_window(config.refresh_grace)
        .reuse_detection(config.reuse_detection)
        .network_change(config.network_change)
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(url) = &config.database_url {
        if config.redis_url.is_some() {
            return Err("give --database-url or --redis-url, not both".to_owned());
        }
        let router = on_postgres(url, keys.refresh, policy, ring, config).await?;
        return Ok(Built {
            router,
            keys: handle,
            redis: None,
        });
    }
    match &config.redis_url {
        None => {
            let users = Users::memory();
            let store = MemoryStore::new(keys.refresh, policy);
            let shared = Shared {
                replay: None,
                nonce_secret: None,
                oidc: oidc(config, &random_secret()?).await?,
            };
            let baton = configure(
                Baton::builder(store, users.clone(), ring),
                config,
                shared,
                &users,
            )?;
            let limiter: Arc<dyn RateLimiter> = Arc::new(baton::MemoryLimiter::new());
            Ok(Built {
                router: router(&baton, users, limiter, config),
                keys: handle,
                redis: None,
            })
        }
        Some(url) => {
            use baton::redis::{RedisConnection, RedisGcra, RedisOptions, RedisStore};
            // One connection for sessions, users, revocations and limits.
            let options = RedisOptions::new();
            let redis = RedisConnection::connect(url, &options)
                .await
                .map_err(|e| format!("redis: {}", baton::core::ErrorChain(&e)))?;
            let store = RedisStore::new(redis.clone(), keys.refresh, policy, &options);
            let users = Users::redis(redis.clone());
            // Revocations reach every instance sharing this Redis within a second: the feed
            // on the store's connection, kept as long as an access token lives.
            let limiter = RedisGcra::new(redis.clone(), "baton-app:");
            let builder = Baton::redis(store, users.clone(), ring).rate_limiter(limiter.clone());
            // DPoP proofs are seen once by all instances, and their nonces are the same.
            // Sign-in flows started on one instance finish on any.
            let shared = Shared {
                replay: Some(baton::redis::RedisReplayCache::new(
                    redis.clone(),
                    "baton-app:",
                )),
                nonce_secret: match config.dpop_nonces {
                    Some(_) => Some(shared_nonce_secret(&redis).await?),
                    None => None,
                },
                oidc: if config.oidc.is_empty() {
                    None
                } else {
                    oidc(config, &shared_secret(&redis, "oidc-flow").await?).await?
                },
            };
            let baton = configure(builder, config, shared, &users)?;
            // Serve once the feed has read the shared log (at most 2 s; until then the
            // bearer layer would answer 503).
            for _ in 0..100 {
                if baton.is_ready() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Built {
                router: router(&baton, users, Arc::new(limiter), config),
                keys: handle,
                redis: Some(redis),
            })
        }
    }
}

/// The app on PostgreSQL: one pool for users, sessions, revocations and limits.
async fn on_postgres(
    url: &str,
    refresh: baton::store::RefreshKeys,
    policy: Policy,
    ring: KeyRing,
    config: &Config,
) -> Result<Router, String> {
    use baton_postgres::{
        PgFeedOptions, PgLimiter, PgRevocationFeed, PostgresOptions, PostgresStore,
    };
    let error =
        |e: baton_postgres::PostgresError| format!("postgres: {}", baton::core::ErrorChain(&e));
    let store = PostgresStore::connect(url, refresh, policy, PostgresOptions::new())
        .await
        .map_err(error)?;
    // The store holds its pool's connections between statements: the feed, the limits and
    // the app's own statements get a pool of their own, which checks a connection before
    // handing it out (the store retries on a fresh connection by itself; these do not).
    let users_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|e| format!("postgres: {}", baton::core::ErrorChain(&e)))?;
    let users = Users::postgres(users_pool.clone()).await?;
    // Revocations reach every instance on this database within a second.
    let feed = PgRevocationFeed::start_on(
        users_pool.clone(),
        PgFeedOptions::new(config.access_ttl + config.leeway),
    )
    .await
    .map_err(error)?;
    let limiter = PgLimiter::new(users_pool.clone(), "baton_")
        .await
        .map_err(error)?;
    let builder = Baton::builder(store, users.clone(), ring)
        .revocations(feed)
        .rate_limiter(limiter.clone());
    let shared = Shared {
        // DPoP proofs are remembered per instance (a shared replay cache needs Redis); the
        // nonces and the sign-in flows are the same everywhere.
        replay: None,
        nonce_secret: match config.dpop_nonces {
            Some(_) => Some(
                users::shared_secret_pg(&users_pool, "dpop-nonce")
                    .await?
                    .to_vec(),
            ),
            None => None,
        },
        oidc: if config.oidc.is_empty() {
            None
        } else {
            oidc(
                config,
                &users::shared_secret_pg(&users_pool, "oidc-flow").await?,
            )
            .await?
        },
    };
    let baton = configure(builder, config, shared, &users)?;
    Ok(router(&baton, users, Arc::new(limiter), config))
}

/// What the instances of one deployment share: the DPoP replay cache and nonce secret
/// (`None`: this instance's own), and the sign-in providers with their flow key.
struct Shared {
    replay: Option<baton::redis::RedisReplayCache>,
    nonce_secret: Option<Vec<u8>>,
    oidc: Option<baton::oidc::Oidc>,
}

/// The DPoP nonce secret every instance on this Redis uses: the first instance to start
/// writes a random one, the others read it.
async fn shared_nonce_secret(redis: &baton::redis::RedisConnection) -> Result<Vec<u8>, String> {
    let fresh: String = random_secret()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = &fresh;
    let secret: String = redis
        .read("DPoP nonce secret", move |mut c| async move {
            redis::cmd("SET")
                .arg("baton-app:dpop-nonce-secret")
                .arg(fresh)
                .arg("NX")
                .query_async::<()>(&mut c)
                .await?;
            redis::cmd("GET")
                .arg("baton-app:dpop-nonce-secret")
                .query_async(&mut c)
                .await
        })
        .await
        .map_err(|e| format!("redis: {}", baton::core::ErrorChain(&e)))?;
    Ok(secret.into_bytes())
}

fn random_secret() -> Result<[u8; 32], String> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut fresh = [0u8; 32];
    SystemRandom::new()
        .fill(&mut fresh)
        .map_err(|_| "the random generator failed".to_owned())?;
    Ok(fresh)
}

/// The secret `name` every instance on this Redis uses (`baton-app:secret:{name}`): the first
/// instance to start writes a random one, the others read it.
async fn shared_secret(
    redis: &baton::redis::RedisConnection,
    name: &str,
) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let fresh = b64.encode(random_secret()?);
    let key = format!("baton-app:secret:{name}");
    let (fresh, key) = (&fresh, &key);
    let secret: String = redis
        .read("shared secret", move |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(fresh)
                .arg("NX")
                .query_async::<()>(&mut c)
                .await?;
            redis::cmd("GET").arg(key).query_async(&mut c).await
        })
        .await
        .map_err(|e| format!("redis: {}", baton::core::ErrorChain(&e)))?;
    b64.decode(&secret)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("redis: {key} is not 32 bytes in base64; delete it"))
}

/// The sign-in providers, discovered (their documents and keys fetched) for callbacks at the
/// first public URL; `None` when there are none.
async fn oidc(config: &Config, flow_key: &[u8; 32]) -> Result<Option<baton::oidc::Oidc>, String> {
    use baton::oidc::{Oidc, OidcOptions, ProviderConfig};
    if config.oidc.is_empty() {
        return Ok(None);
    }
    let origin = config.public_urls.first().ok_or(
        "signing in with a provider needs the app's public URL (--public-url), which the \
         provider sends the browser back to",
    )?;
    let providers = config
        .oidc
        .iter()
        .map(|p| {
            let config = ProviderConfig::new(p.id(), &p.name, &p.issuer, &p.client_id);
            match &p.client_secret {
                Some(secret) => config.with_secret(secret),
                None => config,
            }
        })
        .collect();
    let options = config
        .oidc_roots
        .iter()
        .fold(OidcOptions::new(), |options, der| {
            options.with_root_certificate(der.clone())
        });
    let oidc = Oidc::discover(origin, "/auth", providers, flow_key, options)
        .await
        .map_err(|e| baton::core::ErrorChain(&e).to_string())?;
    for (id, _) in oidc.providers() {
        tracing::info!(
            target: "login_app",
            provider = id,
            redirect_uri = %format!("{}/auth/oidc/{id}/callback", origin.trim_end_matches('/')),
            "sign-in provider ready"
        );
    }
    Ok(Some(oidc))
}

fn configure<S: RefreshStore>(
    builder: baton::BatonBuilder<S, Users>,
    config: &Config,
    shared: Shared,
    users: &Users,
) -> Result<Baton<S, Users>, String> {
    let builder = match shared.oidc {
        Some(oidc) => builder.oidc(oidc, users.clone()),
        None => builder,
    };
    let builder = match &config.issuer {
        Some(issuer) => builder.iss(issuer.clone()),
        None => builder,
    };
    let builder = builder
        .client_ip(config.client_ip.clone())
        .access_ttl(config.access_ttl)
        .leeway(config.leeway)
        .rate_limits(config.rate_limits);
    let builder = if config.token_cache {
        builder
    } else {
        builder.no_token_cache()
    };
    let builder = match config.public_urls.split_first() {
        Some((first, others)) => {
            let mut dpop =
                baton::bearer::Dpop::new(first).map_err(|e| format!("--public-url: {e}"))?;
            for other in others {
                dpop = dpop
                    .with_origin(other)
                    .map_err(|e| format!("--public-url: {e}"))?;
            }
            if config.require_dpop {
                dpop = dpop.required();
            }
            if let Some(replay) = shared.replay {
                dpop = dpop.with_replay_cache(replay);
            }
            if let Some(period) = config.dpop_nonces {
                let nonces = match &shared.nonce_secret {
                    Some(secret) => baton::bearer::DpopNonces::new(secret, period),
                    None => baton::bearer::DpopNonces::random(period),
                };
                dpop = dpop.with_nonces(nonces.map_err(|e| format!("--dpop-nonces: {e}"))?);
            }
            builder.dpop(dpop)
        }
        None if config.require_dpop => {
            return Err("--require-dpop needs the public URL (--public-url)".to_owned());
        }
        None => builder,
    };
    let builder = match config.recent_login {
        Some(max_age) => builder.recent_login(baton::bearer::RecentLogin::within(max_age)),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| baton::core::ErrorChain(&e).to_string())
}

/// The Prometheus text of the process's counters (`baton_login_total`,
/// `baton_refresh_total`, `baton_rate_limited_total`, the Redis connection's retries and
/// failures, ...): installs a Prometheus recorder as the process's `metrics` recorder (once
/// per process) and answers `GET /metrics` with what it holds. Serve it on an address of its
/// own (`--metrics-addr`), not the public one.
///
/// # Errors
/// A message when a recorder is installed already.
pub fn metrics_router() -> Result<Router, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    Ok(Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    ))
}

/// Serves `router` on `listener` until `shutdown` completes; in-flight requests finish.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
