//! The DPoP replay cache's contract: each proof is accepted once, by one instance or by all of
//! them when the cache is shared.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A proof's identity in a replay cache: SHA-256 of its key thumbprint and `jti`, cut to 16
/// bytes (a collision needs 2^64 proofs).
pub type ReplayKey = [u8; 16];

/// The replay cache could not tell whether a proof was seen before (full of live entries, or a
/// shared cache that is down): the request is refused with 503, never let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayUnknown(pub &'static str);

impl fmt::Display for ReplayUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the DPoP replay cache cannot answer: {}", self.0)
    }
}

impl std::error::Error for ReplayUnknown {}

/// The future of a shared cache's answer.
pub type ReplayFuture = Pin<Box<dyn Future<Output = Result<bool, ReplayUnknown>> + Send>>;

/// A replay cache's answer: at once (an in-memory cache, no allocation), or later (a shared
/// cache asked over the network). Await it with `.await` or [`ReplayCheck::resolve`].
pub enum ReplayCheck {
    /// Decided already: `Ok(true)` the first time, `Ok(false)` for a replay.
    Ready(Result<bool, ReplayUnknown>),
    /// To be awaited.
    Pending(ReplayFuture),
}

impl fmt::Debug for ReplayCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayCheck::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            ReplayCheck::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

impl ReplayCheck {
    /// The answer, awaited when it is not ready.
    ///
    /// # Errors
    /// [`ReplayUnknown`] when the cache cannot tell.
    pub async fn resolve(self) -> Result<bool, ReplayUnknown> {
        match self {
            ReplayCheck::Ready(r) => r,
            ReplayCheck::Pending(f) => f.await,
        }
    }
}

/// Remembers the DPoP proofs seen, so each is accepted once. One kept in a process's memory
/// answers at once ([`ReplayCheck::Ready`]); one shared by several instances (on Redis, say)
/// answers for all of them, later ([`ReplayCheck::Pending`]).
///
/// ```
/// use baton_core::{ReplayCache, ReplayCheck, ReplayKey};
/// use std::collections::HashSet;
/// use std::sync::Mutex;
///
/// /// Remembers forever: a sketch, not a cache to use.
/// struct Forever(Mutex<HashSet<ReplayKey>>);
///
/// impl ReplayCache for Forever {
///     fn first_use(&self, key: ReplayKey, _until_ms: u64, _now_ms: u64) -> ReplayCheck {
///         ReplayCheck::Ready(Ok(self.0.lock().unwrap().insert(key)))
///     }
/// }
///
/// let cache = Forever(Mutex::new(HashSet::new()));
/// assert!(matches!(cache.first_use([1; 16], 10, 0), ReplayCheck::Ready(Ok(true))));
/// assert!(matches!(cache.first_use([1; 16], 10, 0), ReplayCheck::Ready(Ok(false))));
/// ```
pub trait ReplayCache: Send + Sync + 'static {
    /// Records `key` as seen until `until_ms` (milliseconds since the epoch; `now_ms` is the
    /// caller's now): `Ok(true)` the first time, `Ok(false)` for a replay. Asked again after
    /// a lost reply, a shared cache must answer `Ok(true)` again for the same call, never
    /// call its own first answer a replay.
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> ReplayCheck;
}

impl<T: ReplayCache + ?Sized> ReplayCache for Arc<T> {
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> ReplayCheck {
        (**self).first_use(key, until_ms, now_ms)
    }
}
