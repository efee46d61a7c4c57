//! `cargo run -p login-app`: the baton login app on http://127.0.0.1:3000.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton::store::{NetworkChange, ReuseDetection};
use baton::token::Algorithm;
use clap::Parser;
use login_app::Config;

/// Command-line flags; each is also an environment variable `BATON_<FLAG>` (`REDIS_URL` for
/// the Redis URL).
#[derive(Debug, Parser)]
#[command(version, about = "The baton login app")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BATON_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Redis for sessions and users (absent: in memory).
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// PostgreSQL for users, sessions, revocations and limits (`postgres://user@host/db`),
    /// instead of Redis.
    #[arg(long, env = "DATABASE_URL", conflicts_with = "redis_url")]
    database_url: Option<String>,
    /// Access-token lifetime, seconds.
    #[arg(long, env = "BATON_ACCESS_TTL", default_value_t = 900)]
    access_ttl: u64,
    /// Refresh-token (session idle) lifetime, seconds.
    #[arg(long, env = "BATON_REFRESH_TTL", default_value_t = 1_209_600)]
    refresh_ttl: u64,
    /// Grace window for two tabs refreshing at once, seconds.
    #[arg(long, env = "BATON_REFRESH_GRACE", default_value_t = 10)]
    refresh_grace: u64,
    /// Clock skew tolerated on access tokens, seconds (0: the app verifies its own tokens).
    #[arg(long, env = "BATON_LEEWAY", default_value_t = 0)]
    leeway: u64,
    /// Signing algorithm: HS256, ES256, EdDSA or RS256.
    #[arg(long, env = "BATON_ALG", default_value = "ES256", value_parser = ["HS256", "ES256", "EdDSA", "RS256"])]
    alg: String,
    /// Signing key file: read when it exists, else generated and written with mode 0600.
    #[arg(long, env = "BATON_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Logins per minute per client IP (0: no limit).
    #[arg(long, env = "BATON_LOGIN_RATE_PER_IP", default_value_t = 10)]
    login_rate_per_ip: u32,
    /// Failed logins per minute per username and client network (0: no limit).
    #[arg(long, env = "BATON_LOGIN_RATE_PER_USER", default_value_t = 5)]
    login_rate_per_user: u32,
    /// Failed logins per minute per username from browsers that never logged in as that user,
    /// every network together (0: no limit).
    #[arg(long, env = "BATON_LOGIN_FAILURES_PER_USER", default_value_t = 30)]
    login_failures_per_user: u32,
    /// Refreshes per minute per client IP (0: no limit).
    #[arg(long, env = "BATON_REFRESH_RATE_PER_IP", default_value_t = 60)]
    refresh_rate_per_ip: u32,
    /// Registrations per minute per client network: an IPv4 address, an IPv6 /64 (0: no limit).
    #[arg(long, env = "BATON_REGISTER_RATE_PER_NET", default_value_t = 5)]
    register_rate_per_net: u32,
    /// A reverse proxy in front of the app (an address or a CIDR range; repeat for several):
    /// when it is the peer, the client address comes from `--client-ip-header`.
    #[arg(long = "trusted-proxy", env = "BATON_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The header the trusted proxies write: `x-forwarded-for` (they append), `forwarded`
    /// (RFC 7239), or a single-address header they set (`x-real-ip`, `cf-connecting-ip`).
    #[arg(
        long,
        env = "BATON_CLIENT_IP_HEADER",
        default_value = "x-forwarded-for"
    )]
    client_ip_header: String,
    /// When a spent refresh token counts as stolen: `strict` (after the grace window) or
    /// `after-successor-use` (once its successor has been used; a lost reply never costs a
    /// session).
    #[arg(long, env = "BATON_REUSE_DETECTION", default_value = "strict", value_parser = ["strict", "after-successor-use"])]
    reuse_detection: String,
    /// Verify every access token's signature on every request instead of caching verified
    /// tokens (the cache still checks expiry, key and revocation each time).
    #[arg(long, env = "BATON_NO_TOKEN_CACHE")]
    no_token_cache: bool,
    /// Serve the counters in Prometheus text at `http://<addr>/metrics` (an address of its
    /// own, e.g. 127.0.0.1:9100; keep it off the public network).
    #[arg(long, env = "BATON_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// What a refresh from another network (another IPv4 /16 or IPv6 /48) does: `record` it,
    /// `flag` the session (shown in the device list), or `revoke` the session.
    #[arg(long, env = "BATON_NETWORK_CHANGE", default_value = "record", value_parser = ["record", "flag", "revoke"])]
    network_change: String,
    /// Signing out other devices and ending another device's session need a login (or the
    /// password entered again) within this many seconds; 0 turns the requirement off.
    #[arg(long, env = "BATON_RECENT_LOGIN", default_value_t = 300)]
    recent_login: u64,
    /// The origin browsers reach the app at (`https://login.example.com`), which DPoP proofs
    /// must name; repeat for several. Default: `http://` and the listen address (and
    /// `http://localhost:<port>` for a loopback address).
    #[arg(long = "public-url", env = "BATON_PUBLIC_URLS", value_delimiter = ',')]
    public_urls: Vec<String>,
    /// The access tokens' `iss` (default: the first public URL). An origin is published at
    /// `/.well-known/openid-configuration` with the `jwks_uri`, so another service verifies
    /// the app's tokens from this URL alone.
    #[arg(long, env = "BATON_ISSUER")]
    issuer: Option<String>,
    /// Refuse clients without DPoP (bearer-only): every login, refresh and API call must
    /// carry a proof from the client's key.
    #[arg(long, env = "BATON_REQUIRE_DPOP")]
    require_dpop: bool,
    /// DPoP proofs must carry a server nonce (`DPoP-Nonce`) that turns every this many
    /// seconds (RFC 9449 section 8); 0: no nonces. On Redis every instance shares them.
    #[arg(long, env = "BATON_DPOP_NONCES", default_value_t = 0)]
    dpop_nonces: u64,
    /// The name on a "Sign in with ..." button (`Google`); give one per provider, in the same
    /// order as its `--oidc-issuer`, `--oidc-client-id` and `--oidc-client-secret-file`.
    #[arg(long = "oidc-name")]
    oidc_names: Vec<String>,
    /// An OpenID Connect provider's issuer URL (`https://accounts.google.com`); repeat per
    /// provider.
    #[arg(long = "oidc-issuer")]
    oidc_issuers: Vec<String>,
    /// This app's client id at the provider; repeat per provider.
    #[arg(long = "oidc-client-id")]
    oidc_client_ids: Vec<String>,
    /// A file holding this app's client secret at the provider (one line; not group- or
    /// world-readable); repeat per provider.
    #[arg(long = "oidc-client-secret-file")]
    oidc_secret_files: Vec<PathBuf>,
    /// A certificate authority (PEM) to trust for the providers instead of the platform's
    /// roots (a provider with a private certificate).
    #[arg(long, env = "BATON_OIDC_CA_FILE")]
    oidc_ca_file: Option<PathBuf>,
}

/// The providers the `--oidc-*` flags describe: one of each flag per provider, in order.
fn oidc_providers(args: &Args) -> Result<Vec<login_app::OidcProvider>, String> {
    let n = args.oidc_issuers.len();
    if args.oidc_names.len() != n
        || args.oidc_client_ids.len() != n
        || args.oidc_secret_files.len() != n
    {
        return Err(format!(
            "give --oidc-name, --oidc-issuer, --oidc-client-id and --oidc-client-secret-file \
             once per provider (got {}, {n}, {} and {})",
            args.oidc_names.len(),
            args.oidc_client_ids.len(),
            args.oidc_secret_files.len()
        ));
    }
    let mut providers = Vec::new();
    for (((name, issuer), client_id), file) in args
        .oidc_names
        .iter()
        .zip(&args.oidc_issuers)
        .zip(&args.oidc_client_ids)
        .zip(&args.oidc_secret_files)
    {
        let secret = login_app::keys::read_secret_file(file)
            .map_err(|e| format!("--oidc-client-secret-file {}: {e}", file.display()))?;
        providers.push(login_app::OidcProvider {
            name: name.clone(),
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: Some(secret),
        });
    }
    Ok(providers)
}

/// The certificate authorities in a PEM file, as DER.
fn pem_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let blocks = pem::parse_many(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in it", path.display()));
    }
    Ok(certs)
}

/// A CIDR range, or one address (a /32 or /128).
fn parse_net(value: &str) -> Result<ipnet::IpNet, String> {
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is neither an address nor a CIDR range"))
}

/// A limit of `per_minute` with a burst of the same size; 0 turns it off.
fn rule(per_minute: u32) -> Option<baton::Rule> {
    (per_minute > 0).then(|| baton::Rule::new(per_minute, per_minute))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!(target: "login_app", "shutting down: finishing in-flight requests");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,baton=debug,tower_http=info".into()),
        )
        .init();
    let args = Args::parse();
    let oidc = oidc_providers(&args)?;
    let mut config = Config {
        redis_url: args.redis_url,
        database_url: args.database_url,
        access_ttl: Duration::from_secs(args.access_ttl),
        refresh_ttl: Duration::from_secs(args.refresh_ttl),
        refresh_grace: Duration::from_secs(args.refresh_grace),
        leeway: Duration::from_secs(args.leeway),
        alg: args.alg.parse::<Algorithm>()?,
        key_file: args.key_file,
        rate_limits: baton::RateLimits::default()
            .with_login_per_ip(rule(args.login_rate_per_ip))
            .with_login_per_username(rule(args.login_rate_per_user))
            .with_login_failures_per_username(rule(args.login_failures_per_user))
            .with_refresh_per_ip(rule(args.refresh_rate_per_ip)),
        register_limit: rule(args.register_rate_per_net),
        token_cache: !args.no_token_cache,
        client_ip: args.trusted_proxies.iter().fold(
            baton::ClientIp::new().with_header(
                baton::ForwardedHeader::parse(&args.client_ip_header).map_err(|_| {
                    format!(
                        "--client-ip-header: {:?} is not a header name",
                        args.client_ip_header
                    )
                })?,
            ),
            |client_ip, net| client_ip.trust_proxy(*net),
        ),
        reuse_detection: if args.reuse_detection == "after-successor-use" {
            ReuseDetection::AfterSuccessorUse
        } else {
            ReuseDetection::Strict
        },
        network_change: match args.network_change.as_str() {
            "flag" => NetworkChange::Flag,
            "revoke" => NetworkChange::Revoke,
            _ => NetworkChange::Record,
        },
        recent_login: (args.recent_login > 0).then(|| Duration::from_secs(args.recent_login)),
        public_urls: if args.public_urls.is_empty() {
            let mut urls = vec![format!("http://{}", args.addr)];
            if args.addr.ip().is_loopback() {
                urls.push(format!("http://localhost:{}", args.addr.port()));
            }
            urls
        } else {
            args.public_urls.clone()
        },
        require_dpop: args.require_dpop,
        issuer: None,
        dpop_nonces: (args.dpop_nonces > 0).then(|| Duration::from_secs(args.dpop_nonces)),
        oidc,
        oidc_roots: match &args.oidc_ca_file {
            Some(path) => pem_certificates(path).map_err(|e| format!("--oidc-ca-file {e}"))?,
            None => Vec::new(),
        },
    };
    config.issuer = args
        .issuer
        .clone()
        .or_else(|| config.public_urls.first().cloned());
    if let Some(addr) = args.metrics_addr {
        let metrics = login_app::metrics_router()?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, metrics).await {
                tracing::error!(target: "login_app", error = %e, "the metrics listener stopped");
            }
        });
    }
    let built = login_app::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let store = if config.redis_url.is_some() {
        "Redis"
    } else if config.database_url.is_some() {
        "PostgreSQL"
    } else {
        "in-memory"
    };
    println!(
        "baton login app on http://{} ({store} store)",
        listener.local_addr()?
    );
    login_app::serve(listener, built.router, shutdown_signal()).await?;
    if let Some(redis) = &built.redis {
        let stats = redis.stats();
        tracing::info!(
            target: "login_app",
            retried = stats.retried,
            late = stats.late,
            failed = stats.failed,
            "redis connection at shutdown"
        );
    }
    Ok(())
}
