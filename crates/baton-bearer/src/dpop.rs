//! DPoP (RFC 9449) in the verify layer: `Authorization: DPoP <token>` with a proof from the
//! key the token is bound to, and the replay cache that refuses a proof seen before.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use baton_token::{DpopError, DpopVerifier, ProofRequest, VerifiedProof, normalize_htu};
use http::Request;

use crate::ConfigError;

/// A proof's identity in a replay cache: SHA-256 of its key thumbprint and `jti`, cut to 16
/// bytes (a collision needs 2^64 proofs).
pub type ReplayKey = [u8; 16];

/// The replay cache could not tell whether a proof was seen before (a shared cache that is
/// down): the request is refused with 503, never let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the DPoP replay cache cannot answer: {0}")]
pub struct ReplayUnknown(pub &'static str);

/// Remembers the proofs seen, so each is accepted once. The cache decides synchronously; one
/// shared by several instances answers for all of them.
pub trait ReplayCache: Send + Sync + 'static {
    /// Records `key` as seen until `until_ms` (milliseconds since the epoch): `Ok(true)` the
    /// first time, `Ok(false)` for a replay.
    ///
    /// # Errors
    /// [`ReplayUnknown`] when the cache cannot tell (full of live entries, or unreachable).
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> Result<bool, ReplayUnknown>;
}

impl<T: ReplayCache> ReplayCache for Arc<T> {
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> Result<bool, ReplayUnknown> {
        (**self).first_use(key, until_ms, now_ms)
    }
}

/// A bounded replay cache in this process's memory. At most `max_entries` proofs are
/// remembered, each until its window ends (about 64 bytes each: the 16-byte key and 8-byte
/// deadline in a table and again in a queue ordered by deadline, with their overhead;
/// the default 250,000 take about 16 MiB and, with the 120 s window, carry about 2,000 proofs a
/// second). Expired entries leave in deadline order, a few at each insert, never by a scan.
/// When every entry is still live, new proofs are refused with 503 rather than remembered
/// badly.
///
/// It holds for one instance only: behind a load balancer, share one cache between the
/// instances (a Redis one) or a proof replayed to another instance is accepted there.
///
/// ```
/// use baton_bearer::{MemoryReplayCache, ReplayCache};
/// let cache = MemoryReplayCache::new(2);
/// assert_eq!(cache.first_use([1; 16], 1_000, 0), Ok(true));
/// assert_eq!(cache.first_use([1; 16], 1_000, 500), Ok(false));
/// assert_eq!(cache.first_use([2; 16], 1_000, 500), Ok(true));
/// assert!(cache.first_use([3; 16], 1_000, 500).is_err(), "full of live entries");
/// assert_eq!(cache.first_use([3; 16], 2_000, 1_000), Ok(true), "the others expired");
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
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> Result<bool, ReplayUnknown> {
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

/// What the verify layer needs for DPoP: the public origin proofs must name in `htu`, the
/// proof checks, and the replay cache. Given to
/// [`BearerVerifyLayer::with_dpop`](crate::BearerVerifyLayer::with_dpop).
#[derive(Clone)]
pub struct Dpop {
    origin: Arc<str>,
    other_origins: Vec<Arc<str>>,
    verifier: DpopVerifier,
    replay: Arc<dyn ReplayCache>,
    required: bool,
}

impl fmt::Debug for Dpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("origin", &self.origin)
            .field("other_origins", &self.other_origins)
            .field("verifier", &self.verifier)
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

    /// Remembers proofs in `cache` (one shared by every instance, say).
    #[must_use]
    pub fn with_replay_cache(mut self, cache: impl ReplayCache) -> Self {
        self.replay = Arc::new(cache);
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
    ) -> Result<Option<VerifiedProof>, DpopCheckError> {
        let Some(proof) = self.verify(req, access_token)? else {
            return Ok(None);
        };
        self.record(&proof)?;
        Ok(Some(proof))
    }

    /// [`check`](Self::check) without the replay cache: for a caller that records the proof
    /// only once the rest of the request is good (a login, after the password), so requests
    /// that fail anyway spend no place in the cache. Record it with [`record`](Self::record)
    /// before acting on it.
    ///
    /// # Errors
    /// [`DpopCheckError::Proof`] for a bad proof.
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
        self.verifier
            .verify(proof, &request)
            .map(Some)
            .map_err(DpopCheckError::Proof)
    }

    /// Records `verified` in the replay cache: `Ok` the first time.
    ///
    /// # Errors
    /// [`DpopCheckError::Proof`] for a proof used before, [`DpopCheckError::ReplayUnknown`]
    /// when the cache cannot tell.
    pub fn record(&self, verified: &VerifiedProof) -> Result<(), DpopCheckError> {
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
        match self.replay.first_use(key, until, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(DpopCheckError::Proof(DpopError::Invalid(
                "the DPoP proof was used before",
            ))),
            Err(unknown) => Err(DpopCheckError::ReplayUnknown(unknown)),
        }
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
    ReplayUnknown(ReplayUnknown),
}
