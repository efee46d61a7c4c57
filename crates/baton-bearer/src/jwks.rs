//! `RemoteJwks` (feature `jwks`): verification keys fetched from an issuer's JWKS endpoint.
//!
//! For services that verify tokens another service issues. The keys are fetched from one
//! configured URL (never from a URL found in a token) over HTTPS (rustls, the platform's
//! roots or the ones configured; plain `http://` is refused unless
//! [`JwksOptions::dangerous_allow_http`] says otherwise, since anyone on the path could swap
//! in their own keys), cached, and refetched every `ttl`; a token with an unknown `kid`
//! triggers a refetch, at most once per `min_refetch` interval with one fetch in flight, and
//! the same unknown `kid` is not asked about again for `miss_ttl`, so attackers cannot drive
//! fetch storms; junk `kid`s cannot use up the budget either (the oldest is forgotten when
//! 1,024 are remembered), so a real rotation is found within `min_refetch`. A failed fetch
//! keeps the cached keys.
//! Requests read the keys through a [`KeyRing`]: no lock.
//!
//! The request that meets a key before the refetch is refused; issuers avoid that by
//! publishing the next key before signing with it ([`KeySet::with_next`](baton_token::KeySet::with_next)),
//! which verifiers learn at their next periodic fetch.
//!
//! The periodic fetch goes on for as long as the [`RemoteJwks`] or any verifier made from it
//! lives: `RemoteJwks::start(..).await?.verifier()` keeps its keys fresh on its own. A bare
//! [`keys`](RemoteJwks::keys) ring does not keep it going.
//!
//! [`RemoteJwks::discover`] finds the JWKS address in an issuer's OpenID discovery document
//! (`{issuer}/.well-known/openid-configuration`, its `jwks_uri`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use baton_token::{KeyRing, KeySet, Verifier};
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How a [`RemoteJwks`] fetches and caches.
#[derive(Clone, Debug)]
pub struct JwksOptions {
    ttl: Duration,
    min_refetch: Duration,
    miss_ttl: Duration,
    timeout: Duration,
    max_body: usize,
    roots: Vec<Vec<u8>>,
    allow_http: bool,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions::new()
    }
}

impl JwksOptions {
    /// Refetch every 5 minutes; on unknown keys at most every 30 s; remember a missing `kid`
    /// for 60 s; 5 s per fetch; documents up to 64 KiB.
    pub fn new() -> Self {
        JwksOptions {
            ttl: Duration::from_secs(300),
            min_refetch: Duration::from_secs(30),
            miss_ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            max_body: 64 * 1024,
            roots: Vec::new(),
            allow_http: false,
        }
    }

    /// Trusts this certificate authority (DER) instead of the platform's roots: a private CA,
    /// or a test's.
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.push(der.into());
        self
    }

    /// Accepts a plain `http://` endpoint (development only).
    ///
    /// # Security
    /// Anyone on the path can then serve their own keys and mint tokens this service accepts.
    #[must_use]
    pub fn dangerous_allow_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// How often the keys are refetched.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(10));
        self
    }

    /// The shortest time between two fetches triggered by unknown keys.
    #[must_use]
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    /// How long a missing `kid` is remembered (and not asked about again).
    #[must_use]
    pub fn with_miss_ttl(mut self, ttl: Duration) -> Self {
        self.miss_ttl = ttl;
        self
    }

    /// How long one fetch may take.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why a fetch failed (the cached keys stay in use).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// The endpoint could not be reached or did not answer in time.
    Unreachable(String),
    /// It answered with another status than 200.
    Status(u16),
    /// The document is not a usable JWKS.
    Invalid(String),
    /// A plain `http://` endpoint, not allowed ([`JwksOptions::dangerous_allow_http`]), or a
    /// TLS configuration that cannot be built (a bad root certificate).
    Insecure(String),
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::Unreachable(e) => write!(f, "JWKS endpoint unreachable: {e}"),
            JwksError::Status(s) => write!(f, "JWKS endpoint answered {s}"),
            JwksError::Invalid(e) => write!(f, "invalid JWKS: {e}"),
            JwksError::Insecure(e) => write!(f, "JWKS endpoint refused: {e}"),
        }
    }
}

impl std::error::Error for JwksError {}

struct Shared {
    uri: Uri,
    ring: KeyRing,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    options: JwksOptions,
    started: Instant,
    fetching: AtomicBool,
    last_fetch_ms: AtomicU64,
    fetches: AtomicU64,
    misses: Mutex<HashMap<String, Instant>>,
}

/// Keys fetched from an issuer's JWKS endpoint (see the [module docs](self)).
#[derive(Clone)]
pub struct RemoteJwks {
    shared: Arc<Shared>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("uri", &self.shared.uri)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

/// An HTTPS client (or HTTP, when allowed) with the options' roots.
fn client(
    options: &JwksOptions,
) -> Result<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, JwksError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(options)?)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Refuses an address that is not `https://` (or `http://` when allowed).
fn check_scheme(uri: &Uri, options: &JwksOptions) -> Result<(), JwksError> {
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if options.allow_http => Ok(()),
        _ => Err(JwksError::Insecure(format!(
            "{uri} is not https (JwksOptions::dangerous_allow_http allows http)"
        ))),
    }
}

/// GETs `uri` as JSON: the body, bounded in time and size.
async fn get_json(
    client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    uri: &Uri,
    options: &JwksOptions,
) -> Result<Bytes, JwksError> {
    let request = Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| JwksError::Unreachable(e.to_string()))?;
    let response = tokio::time::timeout(options.timeout, client.request(request))
        .await
        .map_err(|_| JwksError::Unreachable("timed out".into()))?
        .map_err(|e| JwksError::Unreachable(e.to_string()))?;
    if response.status() != StatusCode::OK {
        return Err(JwksError::Status(response.status().as_u16()));
    }
    Ok(tokio::time::timeout(
        options.timeout,
        Limited::new(response.into_body(), options.max_body).collect(),
    )
    .await
    .map_err(|_| JwksError::Unreachable("timed out".into()))?
    .map_err(|e| JwksError::Invalid(e.to_string()))?
    .to_bytes())
}

impl Shared {
    fn since_start_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn fetch(&self) -> Result<(), JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.last_fetch_ms
            .store(self.since_start_ms(), Ordering::Release);
        let body = get_json(&self.client, &self.uri, &self.options).await?;
        let text = std::str::from_utf8(&body).map_err(|e| JwksError::Invalid(e.to_string()))?;
        let set = KeySet::from_jwks_json(text).map_err(|e| JwksError::Invalid(e.to_string()))?;
        self.ring.store(set);
        if let Ok(mut misses) = self.misses.lock() {
            misses.clear();
        }
        Ok(())
    }

    async fn fetch_logged(&self) {
        if let Err(_e) = self.fetch().await {
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "baton::bearer", error = %_e, "JWKS fetch failed; keeping the cached keys");
        }
    }

    /// A token named `kid`, which the set lacks: maybe refetch. Each `kid` gets at most one
    /// refetch per `miss_ttl`, and all of them together one per `min_refetch`; a `kid` is
    /// remembered only when it did get its refetch, so one that came while a refetch was not
    /// allowed is asked about again later.
    fn missed(self: &Arc<Self>, kid: &str) {
        let now = Instant::now();
        let since_last = self
            .since_start_ms()
            .saturating_sub(self.last_fetch_ms.load(Ordering::Acquire));
        if u128::from(since_last) < self.options.min_refetch.as_millis() {
            return;
        }
        if let Ok(mut misses) = self.misses.lock() {
            let ttl = self.options.miss_ttl;
            misses.retain(|_, at| now.duration_since(*at) < ttl);
            if misses.contains_key(kid) {
                return;
            }
            if self.fetching.swap(true, Ordering::AcqRel) {
                return;
            }
            // Full of junk: forget the oldest rather than refuse the new one, which may be a
            // real rotation.
            if misses.len() >= 1024
                && let Some(oldest) = misses
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                misses.remove(&oldest);
            }
            misses.insert(kid.to_owned(), now);
        } else {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            shared.fetch_logged().await;
            shared.fetching.store(false, Ordering::Release);
        });
    }
}

impl RemoteJwks {
    /// Reads `issuer`'s OpenID discovery document (`{issuer}/.well-known/openid-configuration`)
    /// and starts on its `jwks_uri` (see [`start`](Self::start)). The document must name
    /// `issuer` itself (a document for another issuer is refused), and its `jwks_uri` must be
    /// `https://` like the issuer (or `http://` when allowed).
    ///
    /// ```no_run
    /// use baton_bearer::jwks::{JwksOptions, RemoteJwks};
    ///
    /// # async fn run() -> Result<(), baton_bearer::jwks::JwksError> {
    /// let jwks = RemoteJwks::discover("https://login.example.com", JwksOptions::new()).await?;
    /// let verifier = jwks.verifier().with_iss("https://login.example.com");
    /// # let _ = verifier;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`JwksError::Insecure`] as for [`start`](Self::start); the document's fetch error;
    /// [`JwksError::Invalid`] naming what is wrong with the document (not JSON, no
    /// `jwks_uri`, another issuer).
    pub async fn discover(issuer: &str, options: JwksOptions) -> Result<Self, JwksError> {
        let issuer = issuer.trim_end_matches('/');
        let document: Uri = format!("{issuer}/.well-known/openid-configuration")
            .parse()
            .map_err(|e| JwksError::Invalid(format!("issuer {issuer:?} is not a URL: {e}")))?;
        check_scheme(&document, &options)?;
        let body = get_json(&client(&options)?, &document, &options).await?;
        let invalid =
            |why: String| JwksError::Invalid(format!("discovery document of {issuer}: {why}"));
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("not JSON ({e})")))?;
        let named = value
            .get("issuer")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("no \"issuer\"".to_owned()))?;
        if named.trim_end_matches('/') != issuer {
            return Err(invalid(format!("it names another issuer, {named:?}")));
        }
        let jwks_uri: Uri = value
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("no \"jwks_uri\"".to_owned()))?
            .parse()
            .map_err(|e| invalid(format!("jwks_uri is not a URL ({e})")))?;
        Self::start(jwks_uri, options).await
    }

    /// Fetches the keys at `uri` (`https://`), then refetches them in the background
    /// every `ttl` for as long as this value, a clone, or a verifier made from it lives.
    ///
    /// # Errors
    /// [`JwksError::Insecure`] for a plain `http://` URI not allowed, or a bad root
    /// certificate; the first fetch's error: a verifier with no keys would refuse everything.
    pub async fn start(uri: Uri, options: JwksOptions) -> Result<Self, JwksError> {
        check_scheme(&uri, &options)?;
        let client = client(&options)?;
        let shared = Arc::new(Shared {
            uri,
            ring: KeyRing::new(KeySet::default()),
            client,
            options,
            started: Instant::now(),
            fetching: AtomicBool::new(false),
            last_fetch_ms: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            misses: Mutex::new(HashMap::new()),
        });
        shared.fetch().await?;
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let ttl = shared.options.ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl).await;
                let Some(shared) = weak.upgrade() else { break };
                shared.fetch_logged().await;
            }
        });
        Ok(RemoteJwks { shared })
    }

    /// The fetched keys, as a ring a [`Verifier`] reads without locking.
    pub fn keys(&self) -> KeyRing {
        self.shared.ring.clone()
    }

    /// A verifier over the fetched keys that asks for a refetch on unknown keys, and keeps
    /// the periodic fetch going for as long as it (or a clone) lives, with or without this
    /// handle. Add the issuer and audience to accept.
    pub fn verifier(&self) -> Verifier {
        let shared = self.shared.clone();
        Verifier::new(self.keys()).on_unknown_key(Arc::new(move |kid: &str| {
            shared.missed(kid);
        }))
    }

    /// Fetches now, whatever the intervals say.
    ///
    /// # Errors
    /// The fetch's error; the cached keys stay.
    pub async fn refetch(&self) -> Result<(), JwksError> {
        self.shared.fetch().await
    }

    /// How many fetches were made.
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::Relaxed)
    }
}

/// TLS for the fetches: the configured roots, or the platform's.
fn tls_config(options: &JwksOptions) -> Result<rustls::ClientConfig, JwksError> {
    let mut roots = rustls::RootCertStore::empty();
    if options.roots.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "baton::bearer", "no platform root certificates found: JWKS fetches over https will fail");
        }
    } else {
        for der in &options.roots {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| JwksError::Insecure(format!("bad root certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksError::Insecure(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
