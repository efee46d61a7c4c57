//! DPoP (RFC 9449) in the verify layer: `Authorization: DPoP <token>` with a proof from the
//! key the token is bound to, and the replay cache that refuses a proof seen before.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_core::{ReplayCache, ReplayCheck, ReplayKey, ReplayUnknown};
use baton_token::{DpopError, DpopVerifier, ProofRequest, VerifiedProof, normalize_htu};
use http::{HeaderValue, Request};

use crate::ConfigError;

/// A bounded replay cache in this process's memory. At most `max_entries` proofs are
/// remembered, each until its window ends: the 16-byte key and 8-byte deadline in a hash table
/// and again in a queue in arrival order, both grown by doubling, so about 80 bytes per proof
/// at the bound (the default 250,000 take about 19 MiB and, with the 120 s window, carry about
/// 2,000 proofs a second). Expired entries leave from the front of the queue, a few at each
/// insert, never by a scan; as deadlines follow the proofs' `iat`, which may differ from the
/// arrival order by up to the window, an expired entry can wait behind a live one and count
/// toward the bound a little longer (near the bound, the 503 comes that much earlier).
/// When every entry is still live, new proofs are refused with 503 rather than remembered
/// badly.
///
/// It holds for one instance only: behind a load balancer, share one cache between the
/// instances (`baton_redis::RedisReplayCache`) or a proof replayed to another instance is
/// accepted there.
///
/// ```
/// use baton_bearer::{MemoryReplayCache, ReplayCache, ReplayCheck};
/// let cache = MemoryReplayCache::new(2);
/// let ready = |check| match check {
///     ReplayCheck::Ready(answer) => answer,
///     ReplayCheck::Pending(_) => unreachable!("a memory cache answers at once"),
/// };
/// assert_eq!(ready(cache.first_use([1; 16], 1_000, 0)), Ok(true));
/// assert_eq!(ready(cache.first_use([1; 16], 1_000, 500)), Ok(false));
/// assert_eq!(ready(cache.first_use([2; 16], 1_000, 500)), Ok(true));
/// assert!(ready(cache.first_use([3; 16], 1_000, 500)).is_err(), "full of live entries");
/// assert_eq!(ready(cache.first_use([3; 16], 2_000, 1_000)), Ok(true), "the others expired");
/// ```
pub struct MemoryReplayCache {
    max_entries: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    until: HashMap<ReplayKey, u64>,
    /// The same entries by deadline (proofs arrive with deadlines in about that order; one
    /// that arrives out of order only leaves a little late).
    order: VecDeque<(u64, ReplayKey)>,
}

impl Seen {
    /// Drops entries whose deadline passed, oldest first, stopping at the first live one.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(until, key)) = self.order.front() {
            if until > now_ms {
                break;
            }
            self.order.pop_front();
            if self.until.get(&key) == Some(&until) {
                self.until.remove(&key);
            }
        }
    }
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl MemoryReplayCache {
    /// The default size: 250,000 proofs.
    pub const DEFAULT_ENTRIES: usize = 250_000;

    /// A cache of at most `max_entries` proofs (at least 1).
    pub fn new(max_entries: usize) -> Self {
        MemoryReplayCache {
            max_entries: max_entries.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Proofs remembered now (live or not yet swept).
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .until
            .len()
    }

    /// `true` when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        MemoryReplayCache::new(Self::DEFAULT_ENTRIES)
    }
}

impl ReplayCache for MemoryReplayCache {
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> ReplayCheck {
        ReplayCheck::Ready(self.remember(key, until_ms, now_ms))
    }
}

impl MemoryReplayCache {
    fn remember(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> Result<bool, ReplayUnknown> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.expire(now_ms);
        if let Some(until) = seen.until.get(&key)
            && *until > now_ms
        {
            return Ok(false);
        }
        if seen.until.len() >= self.max_entries {
            return Err(ReplayUnknown("the in-memory replay cache is full"));
        }
        seen.until.insert(key, until_ms);
        seen.order.push_back((until_ms, key));
        Ok(true)
    }
}

/// Server nonces (RFC 9449 section 8 and 9): every proof must carry one the server handed
/// out recently, so a proof cannot be made ahead of time and its useful life is at most two
/// periods whatever its `iat` says.
///
/// A nonce is an HMAC of the current period's number under a secret, so instances sharing the
/// secret hand out and accept the same nonces with no state and no timer: the nonce rotates
/// when the period does. The current period's nonce and the previous one are accepted (a
/// client that fetched one just before the turn is not refused); a proof carrying the previous
/// one is answered with the current one in `DPoP-Nonce`, so clients move on without a refusal.
///
/// ```
/// use baton_bearer::DpopNonces;
/// use std::time::Duration;
///
/// let nonces = DpopNonces::new(&[7; 32], Duration::from_secs(60))?;
/// let now_ms = 1_699_999_980_000; // a period starts here
/// let nonce = nonces.nonce_at(now_ms);
/// assert!(nonces.accepts(&nonce, now_ms + 59_000));
/// assert!(nonces.accepts(&nonce, now_ms + 119_000), "the previous period's is still good");
/// assert!(!nonces.accepts(&nonce, now_ms + 200_000), "two periods on, it is not");
/// # Ok::<(), baton_bearer::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct DpopNonces {
    key: hmac::Key,
    period_ms: u64,
}

impl fmt::Debug for DpopNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopNonces")
            .field("period_ms", &self.period_ms)
            .finish_non_exhaustive()
    }
}

/// How a proof's nonce stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NonceAge {
    Current,
    Previous,
    Refused,
}

impl DpopNonces {
    /// Nonces made with `secret` (at least 32 bytes, the same on every instance), rotating
    /// every `period` (at least one second; a minute or a few are usual).
    ///
    /// # Errors
    /// [`ConfigError::InvalidNonces`] for a short secret or a period under a second.
    pub fn new(secret: &[u8], period: Duration) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(ConfigError::InvalidNonces(
                "the nonce secret must be at least 32 bytes",
            ));
        }
        if period < Duration::from_secs(1) {
            return Err(ConfigError::InvalidNonces(
                "the nonce period must be at least one second",
            ));
        }
        Ok(DpopNonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Nonces with a random secret, for a single instance (others would not accept them).
    ///
    /// # Errors
    /// [`ConfigError::InvalidNonces`] when the random generator fails or the period is under
    /// a second.
    pub fn random(period: Duration) -> Result<Self, ConfigError> {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| ConfigError::InvalidNonces("the random generator failed"))?;
        Self::new(&secret, period)
    }

    /// The nonce handed out at `now_ms` (milliseconds since the epoch).
    pub fn nonce_at(&self, now_ms: u64) -> String {
        self.of_period(now_ms / self.period_ms)
    }

    /// `true` when `nonce` is the nonce of the period of `now_ms` or of the one before.
    pub fn accepts(&self, nonce: &str, now_ms: u64) -> bool {
        self.age(Some(nonce), now_ms) != NonceAge::Refused
    }

    fn of_period(&self, period: u64) -> String {
        let tag = hmac::sign(&self.key, &period.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..18])
    }

    fn age(&self, nonce: Option<&str>, now_ms: u64) -> NonceAge {
        let Some(nonce) = nonce else {
            return NonceAge::Refused;
        };
        let period = now_ms / self.period_ms;
        // The values compared are public once handed out; the HMAC keeps them unforgeable.
        if nonce == self.of_period(period) {
            NonceAge::Current
        } else if period > 0 && nonce == self.of_period(period - 1) {
            NonceAge::Previous
        } else {
            NonceAge::Refused
        }
    }
}

/// What the verify layer needs for DPoP: the public origin proofs must name in `htu`, the
/// proof checks, the replay cache and, optionally, server nonces. Given to
/// [`BearerVerifyLayer::with_dpop`](crate::BearerVerifyLayer::with_dpop).
#[derive(Clone)]
pub struct Dpop {
    origin: Arc<str>,
    other_origins: Vec<Arc<str>>,
    verifier: DpopVerifier,
    replay: Arc<dyn ReplayCache>,
    nonces: Option<DpopNonces>,
    required: bool,
}

impl fmt::Debug for Dpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("origin", &self.origin)
            .field("other_origins", &self.other_origins)
            .field("verifier", &self.verifier)
            .field("nonces", &self.nonces)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Dpop {
    /// DPoP for a service reached at `public_origin` (`https://api.example.com`, as clients
    /// see it: behind a proxy, the proxy's), with the default proof checks and an in-memory
    /// replay cache of [`MemoryReplayCache::DEFAULT_ENTRIES`].
    ///
    /// # Errors
    /// [`ConfigError::InvalidOrigin`] unless it is an `http` or `https` origin (no path).
    pub fn new(public_origin: &str) -> Result<Self, ConfigError> {
        Ok(Dpop {
            origin: origin_of(public_origin)?,
            other_origins: Vec::new(),
            verifier: DpopVerifier::new(),
            replay: Arc::new(MemoryReplayCache::default()),
            nonces: None,
            required: false,
        })
    }

    /// Also accepts proofs naming `origin` (the service reached under another name, such as
    /// `http://localhost:3000` beside `http://127.0.0.1:3000`).
    ///
    /// # Errors
    /// [`ConfigError::InvalidOrigin`] unless it is an `http` or `https` origin (no path).
    pub fn with_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        self.other_origins.push(origin_of(origin)?);
        Ok(self)
    }

    /// Checks proofs with `verifier` (its window, its clock).
    #[must_use]
    pub fn with_verifier(mut self, verifier: DpopVerifier) -> Self {
        self.verifier = verifier;
        self
    }

    /// Remembers proofs in `cache`: one shared by every instance behind a load balancer
    /// (`baton_redis::RedisReplayCache`), so a proof replayed to another instance is refused
    /// there too. A cache that cannot answer gets the request a 503, never a pass.
    #[must_use]
    pub fn with_replay_cache(mut self, cache: impl ReplayCache) -> Self {
        self.replay = Arc::new(cache);
        self
    }

    /// Requires every proof to carry a recent server nonce; a proof without one (or with an
    /// old one) is answered `use_dpop_nonce` with the nonce to use in `DPoP-Nonce`, and the
    /// client sends its request again with it.
    #[must_use]
    pub fn with_nonces(mut self, nonces: DpopNonces) -> Self {
        self.nonces = Some(nonces);
        self
    }

    /// Refuses tokens that are not DPoP-bound (bearer-only clients).
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// `true` when tokens that are not DPoP-bound are refused.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// The proof checks.
    pub fn verifier(&self) -> &DpopVerifier {
        &self.verifier
    }

    /// The server nonces, when proofs must carry one.
    pub fn nonces(&self) -> Option<&DpopNonces> {
        self.nonces.as_ref()
    }

    /// The `DPoP-Nonce` value to send now, when the server hands out nonces.
    pub fn current_nonce(&self) -> Option<HeaderValue> {
        let nonces = self.nonces.as_ref()?;
        HeaderValue::try_from(nonces.nonce_at(self.verifier.clock().now_millis())).ok()
    }

    /// The `DPoP-Nonce` to answer an accepted proof with: the current nonce when the proof
    /// carried the previous period's (so the client moves on before it is refused), else
    /// `None`.
    pub fn next_nonce(&self, proof: &VerifiedProof) -> Option<HeaderValue> {
        let nonces = self.nonces.as_ref()?;
        let now = self.verifier.clock().now_millis();
        (nonces.age(proof.nonce.as_deref(), now) == NonceAge::Previous)
            .then(|| HeaderValue::try_from(nonces.nonce_at(now)).ok())
            .flatten()
    }

    /// Checks the request's one `DPoP` header as a proof for this request, bound to
    /// `access_token` when given (its `ath`), and records it in the replay cache. `Ok(None)`
    /// when the request carries no proof.
    ///
    /// # Errors
    /// [`DpopCheckError`]: a bad or replayed proof, or a replay cache that cannot answer.
    pub fn check<B>(
        &self,
        req: &Request<B>,
        access_token: Option<&str>,
    ) -> impl Future<Output = Result<Option<VerifiedProof>, DpopCheckError>> + Send + use<'_, B>
    {
        // Verified now: the future holds nothing of the request (its body need not be `Sync`).
        let verified = self.verify(req, access_token);
        async move {
            let Some(proof) = verified? else {
                return Ok(None);
            };
            self.record(&proof).await?;
            Ok(Some(proof))
        }
    }

    /// [`check`](Self::check) without the replay cache: for a caller that records the proof
    /// only once the rest of the request is good (a login, after the password), so requests
    /// that fail anyway spend no place in the cache. Record it with [`record`](Self::record)
    /// before acting on it.
    ///
    /// # Errors
    /// [`DpopCheckError::Proof`] for a bad proof (or one without a current nonce, when the
    /// server hands them out).
    pub fn verify<B>(
        &self,
        req: &Request<B>,
        access_token: Option<&str>,
    ) -> Result<Option<VerifiedProof>, DpopCheckError> {
        let mut values = req.headers().get_all("dpop").iter();
        let Some(proof) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(DpopCheckError::Proof(DpopError::Invalid(
                "more than one DPoP header",
            )));
        }
        let proof = proof.to_str().map_err(|_| {
            DpopCheckError::Proof(DpopError::Invalid("the DPoP proof is not a compact JWS"))
        })?;
        let path = req.uri().path();
        let uri = format!("{}{path}", self.origin);
        let others: Vec<String> = self
            .other_origins
            .iter()
            .map(|o| format!("{o}{path}"))
            .collect();
        let mut request = ProofRequest::new(req.method().as_str(), &uri).with_other_uris(&others);
        if let Some(token) = access_token {
            request = request.with_access_token(token);
        }
        let proof = self
            .verifier
            .verify(proof, &request)
            .map_err(DpopCheckError::Proof)?;
        if let Some(nonces) = &self.nonces
            && nonces.age(proof.nonce.as_deref(), self.verifier.clock().now_millis())
                == NonceAge::Refused
        {
            return Err(DpopCheckError::Proof(DpopError::UseNonce));
        }
        Ok(Some(proof))
    }

    /// Records `verified` in the replay cache: `Ok` the first time.
    ///
    /// # Errors
    /// [`DpopCheckError::Proof`] for a proof used before, [`DpopCheckError::ReplayUnknown`]
    /// when the cache cannot tell.
    pub async fn record(&self, verified: &VerifiedProof) -> Result<(), DpopCheckError> {
        replay_outcome(self.first_use(verified).resolve().await)
    }

    /// Asks the replay cache about `verified` (the answer, or its future).
    pub(crate) fn first_use(&self, verified: &VerifiedProof) -> ReplayCheck {
        let mut hasher = digest::Context::new(&digest::SHA256);
        hasher.update(verified.jkt.as_bytes());
        hasher.update(&[0x1f]);
        hasher.update(verified.jti.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&hasher.finish().as_ref()[..16]);
        let window_ms =
            u64::try_from(self.verifier.replay_window().as_millis()).unwrap_or(u64::MAX);
        let until = verified.iat.saturating_mul(1000).saturating_add(window_ms);
        let now = self.verifier.clock().now_millis();
        self.replay.first_use(key, until, now)
    }
}

/// The replay cache's answer as a check's outcome.
pub(crate) fn replay_outcome(answer: Result<bool, ReplayUnknown>) -> Result<(), DpopCheckError> {
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => Err(DpopCheckError::Proof(DpopError::Invalid(
            "the DPoP proof was used before",
        ))),
        Err(unknown) => Err(DpopCheckError::ReplayUnknown(unknown)),
    }
}

/// An origin as proofs name it: normalised, without the trailing `/`.
fn origin_of(origin: &str) -> Result<Arc<str>, ConfigError> {
    normalize_htu(origin)
        .filter(|o| o.ends_with('/') && o.matches('/').count() == 3)
        .map(|o| Arc::from(o.trim_end_matches('/')))
        .ok_or_else(|| ConfigError::InvalidOrigin(origin.to_owned()))
}

/// Why [`Dpop::check`] refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopCheckError {
    /// The proof is bad or was used before (401 `invalid_dpop_proof` or `use_dpop_nonce`).
    #[error(transparent)]
    Proof(DpopError),
    /// The replay cache could not tell (503).
    #[error(transparent)]
    ReplayUnknown(#[from] ReplayUnknown),
}
