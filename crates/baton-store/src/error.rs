//! Store errors and rotation outcomes.

use std::fmt;
use std::sync::Arc;

use crate::SessionId;

/// A store operation failed.
///
/// The variants say whose trouble it is: [`Unavailable`](Self::Unavailable) is the backend's
/// (answer 503 with `Retry-After`; the cause is kept as the error's [`source`](
/// std::error::Error::source)), [`InvalidInput`](Self::InvalidInput) the caller's (4xx),
/// [`Corrupted`](Self::Corrupted) and [`Internal`](Self::Internal) a fault that retrying will
/// not fix (log it, answer 500 with a body that says nothing more).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend is down, too slow, or answered with an error: nothing was changed, or the
    /// change cannot be confirmed. Retry later. The backend's error is the
    /// [`source`](std::error::Error::source) (a `baton_redis::RedisFailure`, say).
    Unavailable(Cause),
    /// The input cannot be stored (a user id with control characters, say).
    InvalidInput(&'static str),
    /// Stored data could not be read back: it was not written by this version of the store,
    /// or was changed behind its back.
    Corrupted(&'static str),
    /// Another internal failure (the random generator failed).
    Internal(&'static str),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(_) => f.write_str("session store unavailable"),
            StoreError::InvalidInput(what) => write!(f, "invalid input: {what}"),
            StoreError::Corrupted(what) => write!(f, "stored session data is corrupted: {what}"),
            StoreError::Internal(what) => write!(f, "session store internal error: {what}"),
        }
    }
}

impl std::error::Error for StoreError {
    /// The backend's own error, for [`Unavailable`](Self::Unavailable): the chain goes
    /// straight to it, so a search of the chain by type finds it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Unavailable(cause) => Some(cause.get_ref()),
            _ => None,
        }
    }
}

impl StoreError {
    /// The backend is unavailable because of `cause`.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Unavailable(Cause::new(cause))
    }

    /// `true` for the backend's trouble, which a retry may fix (503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Equal when of the same kind with the same detail; two `Unavailable` are equal when their
/// causes are the same error (one `Cause` and its clones), not merely the same message.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StoreError::Unavailable(a), StoreError::Unavailable(b)) => Arc::ptr_eq(&a.0, &b.0),
            (StoreError::InvalidInput(a), StoreError::InvalidInput(b))
            | (StoreError::Corrupted(a), StoreError::Corrupted(b))
            | (StoreError::Internal(a), StoreError::Internal(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// The backend's own error behind a [`StoreError::Unavailable`], shared so the error stays
/// `Clone`. Its `Display` is the cause's; [`get_ref`](Self::get_ref) and
/// [`downcast_ref`](Self::downcast_ref) reach the original (a `redis::RedisError`, say).
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps `cause`.
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Cause(Arc::from(cause.into()))
    }

    /// The original error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The original error, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A configuration that cannot work (a policy out of range, a refresh key too short, a key
/// prefix a cluster cannot route): found when it is built, before any request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(&'static str);

impl ConfigError {
    /// A configuration error saying what is wrong.
    pub fn new(what: &'static str) -> Self {
        ConfigError(what)
    }

    /// What is wrong.
    pub fn what(&self) -> &'static str {
        self.0
    }
}

/// A session named in an outcome: which one, and whose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRef {
    /// The session.
    pub id: SessionId,
    /// Its user.
    pub user_id: String,
}

/// What about a device changed between refreshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceChange {
    /// The user agent.
    UserAgent,
    /// The network (see [`NetworkChange`](crate::NetworkChange)).
    Network,
}

impl fmt::Display for DeviceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChange::UserAgent => "user agent changed",
            DeviceChange::Network => "network changed",
        })
    }
}

/// Why a refresh token did not rotate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// Unknown, malformed or forged: nothing was looked up or changed.
    #[error("invalid refresh token")]
    Invalid,
    /// A genuine but spent token, outside the grace window: theft. The whole session was
    /// revoked by this call.
    #[error("refresh token reuse detected; session revoked")]
    Reused(SessionRef),
    /// The session is bound to a DPoP key and the request did not prove it (a refresh token
    /// stolen without its key): nothing was looked at or changed, the session stays.
    #[error("the refresh token is bound to a DPoP key the request did not prove")]
    DpopKeyMismatch,
    /// The session expired (idle or absolute lifetime).
    #[error("session expired")]
    Expired,
    /// The session was revoked earlier (logout, reuse, eviction, a device change).
    #[error("session revoked")]
    Revoked,
    /// The refresh came from a changed device under a policy that revokes for it
    /// ([`UserAgentChange::Revoke`](crate::UserAgentChange::Revoke),
    /// [`NetworkChange::Revoke`](crate::NetworkChange::Revoke)): this call revoked the session.
    #[error("session revoked: {change}")]
    DeviceChanged {
        /// The session.
        session: SessionRef,
        /// What changed.
        change: DeviceChange,
    },
    /// The store failed (down, too slow, or its data is corrupted): nothing was rotated.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RotateError {
    fn from(e: StoreError) -> Self {
        RotateError::Store(e)
    }
}

impl RotateError {
    /// The refusal a store's server-side rotation names by `code`, for stores that decide in
    /// one script or function (the Redis and PostgreSQL stores share these codes): `reused`,
    /// `ua_revoked`, `net_revoked` (the revoked session comes from `session`), `revoked`,
    /// `dpop_mismatch`, `expired`, `invalid`. `None` for any other code.
    ///
    /// ```
    /// use baton_store::{RotateError, SessionId, SessionRef};
    /// let id = SessionId::generate("alice").unwrap();
    /// let session = || Ok(SessionRef { id, user_id: "alice".to_owned() });
    /// assert!(matches!(RotateError::refused("reused", session), Some(RotateError::Reused(_))));
    /// assert_eq!(RotateError::refused("expired", session), Some(RotateError::Expired));
    /// assert_eq!(RotateError::refused("rotated", session), None);
    /// ```
    pub fn refused(
        code: &str,
        session: impl FnOnce() -> Result<SessionRef, StoreError>,
    ) -> Option<RotateError> {
        let revoked = |change: Option<DeviceChange>| match (session(), change) {
            (Ok(session), None) => RotateError::Reused(session),
            (Ok(session), Some(change)) => RotateError::DeviceChanged { session, change },
            (Err(e), _) => RotateError::Store(e),
        };
        Some(match code {
            "reused" => revoked(None),
            "ua_revoked" => revoked(Some(DeviceChange::UserAgent)),
            "net_revoked" => revoked(Some(DeviceChange::Network)),
            "revoked" => RotateError::Revoked,
            "dpop_mismatch" => RotateError::DpopKeyMismatch,
            "expired" => RotateError::Expired,
            "invalid" => RotateError::Invalid,
            _ => return None,
        })
    }
}
