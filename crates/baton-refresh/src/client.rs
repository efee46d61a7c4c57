//! `HttpRefresher`: the client side. Logs in, keeps the access token in a shared holder and
//! the refresh cookie in its own jar, and calls `POST /auth/refresh` when asked.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, request};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

use crate::{Refreshed, Refresher};

/// The largest token-endpoint response read, in bytes.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// The wait when a 503 gives no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The delay a `Retry-After` header asks for (delay-seconds or an HTTP date), if it has one.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// How a refresh the server cannot do now (503) is retried.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    attempts: u32,
    max_wait: Duration,
}

#[derive(Default)]
struct Holder {
    access: RwLock<Option<(String, Option<Instant>)>>,
    /// The current access token is DPoP-bound (the server said `token_type` `DPoP`).
    bound: std::sync::atomic::AtomicBool,
    jar: Mutex<cookie_store::CookieStore>,
    refreshes: AtomicU64,
    /// A failed refresh and until when it stands for the next ones (no request meanwhile).
    failed: Mutex<Option<(Instant, Refreshed<String>)>>,
    /// The origin's latest DPoP nonce (`DPoP-Nonce`), put in every proof.
    #[cfg(feature = "dpop")]
    dpop_nonce: Mutex<Option<String>>,
}

/// How long a refused refresh stands: until a new login, or this long.
const REFUSED_BACKOFF: Duration = Duration::from_secs(30);

/// `scheme://host:port` of a URI (the default port spelled out), `None` for a relative one.
fn origin(uri: &Uri) -> Option<(String, String, u16)> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some((scheme, host, port))
}

fn url_of(uri: &Uri) -> Option<url::Url> {
    url::Url::parse(&uri.to_string()).ok()
}

/// Why a login failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoginError {
    /// The request could not be sent or the response not read.
    Transport(String),
    /// The server refused (status and body).
    Refused(u16, String),
    /// The response was not `{"access_token": ..., "expires_in": ...}`.
    BadResponse(String),
}

impl std::error::Error for LoginError {}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Transport(e) => write!(f, "login request failed: {e}"),
            LoginError::Refused(status, body) => write!(f, "login refused with {status}: {body}"),
            LoginError::BadResponse(e) => write!(f, "unexpected login response: {e}"),
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
}

/// The client-side [`Refresher`]: an HTTP client `C` (any `tower::Service`, such as
/// hyper-util's `Client`) used for `POST /auth/refresh`, an access-token holder shared by
/// clones, and a cookie store (the `cookie_store` crate, as reqwest uses: `Domain`, `Path`,
/// `Secure` and `Expires` honoured) for the refresh cookie.
///
/// It speaks for one origin, the refresh URI's (`scheme://host:port`): only requests to that
/// origin get `Authorization: Bearer <current token>`, and only that origin's 401 triggers a
/// refresh; a request to any other host goes out as it came, so the token never leaks there.
///
/// A refused refresh (the session is over) stands for 30 s or until the next
/// [`login`](Self::login): calls meanwhile get their 401 without another refresh request.
///
/// A refresh answered 503 (the server's store is down or slow) or 429 (a rate limit), or that
/// cannot reach the server, is not a sign-out: it is tried again after the server's `Retry-After` (3 attempts
/// in all by default, each wait capped at 5 s), the access token and the cookies are kept, and
/// a 503 that carries a new refresh cookie updates the jar.
#[derive(Clone)]
pub struct HttpRefresher<C> {
    client: C,
    refresh_uri: Uri,
    holder: Arc<Holder>,
    retry: RetryPolicy,
    #[cfg(feature = "dpop")]
    dpop: Option<Arc<baton_token::DpopKey>>,
}

impl<C> fmt::Debug for HttpRefresher<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRefresher")
            .field("refresh_uri", &self.refresh_uri)
            .field("refreshes", &self.refreshes())
            .finish_non_exhaustive()
    }
}

impl<C> HttpRefresher<C> {
    /// A refresher that refreshes at `refresh_uri` through `client`.
    pub fn new(client: C, refresh_uri: Uri) -> Self {
        HttpRefresher {
            client,
            refresh_uri,
            holder: Arc::default(),
            retry: RetryPolicy {
                attempts: 3,
                max_wait: Duration::from_secs(5),
            },
            #[cfg(feature = "dpop")]
            dpop: None,
        }
    }

    /// Proves `key` on every request (feature `dpop`, RFC 9449): login and refresh carry a
    /// `DPoP` proof, so the server binds the session and its tokens to the key; requests to
    /// this origin then carry `Authorization: DPoP <token>` and a fresh proof bound to it. A
    /// stolen token or refresh cookie is useless without the key, which never leaves the
    /// process.
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn with_dpop_key(mut self, key: baton_token::DpopKey) -> Self {
        self.dpop = Some(Arc::new(key));
        self
    }

    /// A `DPoP` header for `method` on `uri`, bound to `token` when given.
    #[cfg(feature = "dpop")]
    fn proof(&self, method: &Method, uri: &Uri, token: Option<&str>) -> Option<HeaderValue> {
        let key = self.dpop.as_ref()?;
        let nonce = self.holder.dpop_nonce.lock().ok()?.clone();
        let proof = key
            .proof(method.as_str(), &uri.to_string(), token, nonce.as_deref())
            .ok()?;
        HeaderValue::try_from(proof).ok()
    }

    /// Keeps the `DPoP-Nonce` a response from this origin hands out; `true` when there was
    /// one.
    #[cfg(feature = "dpop")]
    fn keep_nonce(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if self.dpop.is_none() || !self.is_own_origin(uri) {
            return false;
        }
        if let Ok(mut kept) = self.holder.dpop_nonce.lock() {
            *kept = Some(nonce.to_owned());
        }
        true
    }

    /// How often a refresh answered 503 or 429 (or not answered at all) is tried in all (at least
    /// once), and the longest wait between two tries whatever `Retry-After` says.
    #[must_use]
    pub fn with_unavailable_retries(mut self, attempts: u32, max_wait: Duration) -> Self {
        self.retry = RetryPolicy {
            attempts: attempts.max(1),
            max_wait,
        };
        self
    }

    /// The current access token.
    pub fn access_token(&self) -> Option<String> {
        self.holder
            .access
            .read()
            .ok()?
            .as_ref()
            .map(|(t, _)| t.clone())
    }

    /// Replaces the access token (lifetime in seconds, when known); a refresh refused before
    /// no longer stands.
    pub fn set_access_token(&self, token: impl Into<String>, expires_in: Option<u64>) {
        let expires = expires_in.map(|s| Instant::now() + Duration::from_secs(s));
        if let Ok(mut access) = self.holder.access.write() {
            *access = Some((token.into(), expires));
        }
        if let Ok(mut failed) = self.holder.failed.lock() {
            *failed = None;
        }
    }

    /// `true` when `uri` is on this refresher's origin.
    pub fn is_own_origin(&self, uri: &Uri) -> bool {
        origin(uri).is_some_and(|o| Some(o) == origin(&self.refresh_uri))
    }

    /// How many refreshes this refresher (and its clones) ran.
    pub fn refreshes(&self) -> u64 {
        self.holder.refreshes.load(Ordering::Relaxed)
    }

    fn cookie_header(&self, uri: &Uri) -> Option<HeaderValue> {
        let url = url_of(uri)?;
        let jar = self.holder.jar.lock().ok()?;
        let line = jar
            .get_request_values(&url)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if line.is_empty() {
            return None;
        }
        HeaderValue::try_from(line).ok()
    }

    fn store_cookies(&self, uri: &Uri, headers: &HeaderMap) {
        let Some(url) = url_of(uri) else {
            return;
        };
        let Ok(mut jar) = self.holder.jar.lock() else {
            return;
        };
        let cookies = headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| cookie::Cookie::parse(value.to_owned()).ok());
        jar.store_response_cookies(cookies, &url);
    }
}

impl<C, RB> HttpRefresher<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: fmt::Display,
    RB: Body + Send,
    RB::Data: Send,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// `POST` to a token endpoint, with a proof when there is a key; sent once more with the
    /// server's nonce when it asks for one (`use_dpop_nonce`, RFC 9449 section 8).
    async fn post(
        &self,
        uri: Uri,
        body: Bytes,
        json: bool,
    ) -> Result<(u16, HeaderMap, Bytes), LoginError> {
        let answer = self.post_once(uri.clone(), body.clone(), json).await?;
        #[cfg(feature = "dpop")]
        if self.keep_nonce(&uri, &answer.1)
            && answer.0 == 400
            && serde_json::from_slice::<serde_json::Value>(&answer.2)
                .is_ok_and(|v| v["error"] == "use_dpop_nonce")
        {
            return self.post_once(uri, body, json).await;
        }
        Ok(answer)
    }

    async fn post_once(
        &self,
        uri: Uri,
        body: Bytes,
        json: bool,
    ) -> Result<(u16, HeaderMap, Bytes), LoginError> {
        let cookies = self.cookie_header(&uri);
        let mut req = Request::builder().method(Method::POST).uri(uri);
        if json {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(cookies) = cookies {
            req = req.header(COOKIE, cookies);
        }
        #[cfg(feature = "dpop")]
        if let Some(uri) = req.uri_ref().cloned()
            && let Some(proof) = self.proof(&Method::POST, &uri, None)
        {
            req = req.header("dpop", proof);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| LoginError::Transport(e.to_string()))?;
        let res = self
            .client
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| LoginError::Transport(e.to_string()))?;
        let (parts, body) = res.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_TOKEN_RESPONSE);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| LoginError::Transport(e.to_string()))?
            .to_bytes();
        Ok((parts.status.as_u16(), parts.headers, bytes))
    }

    fn accept_tokens(
        &self,
        uri: &Uri,
        status: u16,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), LoginError> {
        if status != 200 {
            return Err(LoginError::Refused(
                status,
                String::from_utf8_lossy(body).into_owned(),
            ));
        }
        let tokens: TokenResponse =
            serde_json::from_slice(body).map_err(|e| LoginError::BadResponse(e.to_string()))?;
        self.store_cookies(uri, headers);
        let bound = tokens
            .token_type
            .is_some_and(|t| t.eq_ignore_ascii_case("dpop"));
        // The scheme before the token: a bound token never goes out as Bearer.
        self.holder.bound.store(bound, Ordering::SeqCst);
        self.set_access_token(tokens.access_token, tokens.expires_in);
        Ok(())
    }

    /// Logs in: `POST` of `credentials` as JSON to `login_uri`; keeps the access token and
    /// the refresh cookie.
    ///
    /// # Errors
    /// [`LoginError`] when the request fails or the server refuses.
    pub async fn login(
        &self,
        login_uri: Uri,
        credentials: &serde_json::Value,
    ) -> Result<(), LoginError> {
        let body = Bytes::from(credentials.to_string());
        let (status, headers, body) = self.post(login_uri.clone(), body, true).await?;
        self.accept_tokens(&login_uri, status, &headers, &body)
    }
    /// One refresh, with the tries a 503 allows.
    async fn refresh_now(&self) -> Refreshed<String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.holder.refreshes.fetch_add(1, Ordering::Relaxed);
            let uri = self.refresh_uri.clone();
            let wait = match self.post(uri.clone(), Bytes::new(), false).await {
                Ok((200, headers, body)) => {
                    return match self.accept_tokens(&uri, 200, &headers, &body) {
                        Ok(()) => self
                            .access_token()
                            .map_or(Refreshed::Refused, Refreshed::Fresh),
                        Err(_e) => {
                            #[cfg(feature = "tracing")]
                            tracing::debug!(target: "baton::refresh", error = %_e, "refresh answer unreadable");
                            Refreshed::Refused
                        }
                    };
                }
                Ok((status, headers, _))
                    if status == StatusCode::SERVICE_UNAVAILABLE.as_u16()
                        || status == StatusCode::TOO_MANY_REQUESTS.as_u16() =>
                {
                    // A 503 may carry the successor of a rotation that happened: keep it.
                    self.store_cookies(&uri, &headers);
                    parse_retry_after(&headers).unwrap_or(DEFAULT_RETRY_AFTER)
                }
                Ok((_status, headers, _)) => {
                    // A refused refresh may clear the refresh cookie; keep the jar in step.
                    self.store_cookies(&uri, &headers);
                    #[cfg(feature = "tracing")]
                    tracing::debug!(target: "baton::refresh", status = _status, "refresh refused");
                    return Refreshed::Refused;
                }
                Err(_e) => {
                    #[cfg(feature = "tracing")]
                    tracing::debug!(target: "baton::refresh", error = %_e, "refresh request failed");
                    DEFAULT_RETRY_AFTER
                }
            };
            let wait = wait.min(self.retry.max_wait);
            if attempt >= self.retry.attempts {
                #[cfg(feature = "tracing")]
                tracing::debug!(target: "baton::refresh", attempts = attempt, "refresh unavailable; credentials kept");
                return Refreshed::Unavailable {
                    retry_after: wait,
                    partial: None,
                };
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl<C, RB> Refresher for HttpRefresher<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: fmt::Display,
    RB: Body + Send,
    RB::Data: Send,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Credentials = String;

    /// One flight for the whole client, for requests to its origin only: another host's 401
    /// never triggers a refresh.
    fn flight_key(&self, parts: &request::Parts) -> Option<String> {
        self.is_own_origin(&parts.uri).then(String::new)
    }

    async fn refresh(&self, _parts: &request::Parts) -> Refreshed<String> {
        // A failure that still stands answers without another request.
        if let Ok(failed) = self.holder.failed.lock()
            && let Some((until, outcome)) = failed.as_ref()
        {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return match outcome {
                    Refreshed::Unavailable { .. } => Refreshed::Unavailable {
                        retry_after: left,
                        partial: None,
                    },
                    other => other.clone(),
                };
            }
        }
        let outcome = self.refresh_now().await;
        let stands = match &outcome {
            Refreshed::Refused => Some(REFUSED_BACKOFF),
            Refreshed::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        if let (Some(period), Ok(mut failed)) = (stands, self.holder.failed.lock()) {
            *failed = Some((Instant::now() + period, outcome.clone()));
        }
        outcome
    }

    fn prepare(&self, parts: &mut request::Parts) {
        if let Some(token) = self.access_token() {
            self.apply(&token, parts);
        }
    }

    /// Keeps the nonce a response from this origin hands out (`DPoP-Nonce`), and asks for
    /// the request to be sent again with it when the server refused the proof for the lack
    /// of it (401 `use_dpop_nonce`, RFC 9449 section 9).
    fn resend(&self, uri: &Uri, status: StatusCode, headers: &HeaderMap) -> bool {
        #[cfg(feature = "dpop")]
        {
            self.keep_nonce(uri, headers)
                && status == StatusCode::UNAUTHORIZED
                && headers
                    .get_all(http::header::WWW_AUTHENTICATE)
                    .iter()
                    .any(|v| {
                        v.to_str()
                            .is_ok_and(|v| v.contains("error=\"use_dpop_nonce\""))
                    })
        }
        #[cfg(not(feature = "dpop"))]
        {
            let _ = (uri, status, headers);
            false
        }
    }

    fn expires_within(&self, _parts: &request::Parts, margin: Duration) -> bool {
        let Ok(access) = self.holder.access.read() else {
            return false;
        };
        access
            .as_ref()
            .and_then(|(_, expires)| *expires)
            .is_some_and(|e| e.saturating_duration_since(Instant::now()) < margin)
    }

    fn apply(&self, token: &String, parts: &mut request::Parts) {
        // The token goes to this origin only.
        if !self.is_own_origin(&parts.uri) {
            return;
        }
        #[cfg(feature = "dpop")]
        if self.holder.bound.load(Ordering::SeqCst) {
            let proof = self.proof(&parts.method, &parts.uri, Some(token));
            if let (Some(proof), Ok(value)) =
                (proof, HeaderValue::try_from(format!("DPoP {token}")))
            {
                parts.headers.insert(AUTHORIZATION, value);
                parts.headers.insert("dpop", proof);
            }
            return;
        }
        if let Ok(value) = HeaderValue::try_from(format!("Bearer {token}")) {
            parts.headers.insert(AUTHORIZATION, value);
        }
    }
}
