//! Store errors and rotation outcomes.

use crate::SessionId;

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend is down, too slow, or answered with an error: nothing was changed, or the
    /// change cannot be confirmed. Retry later.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The input cannot be stored (a user id with control characters, say).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// Stored data could not be read back, or another internal failure.
    #[error("session store internal error: {0}")]
    Internal(String),
}

/// A session named in an outcome: which one, and whose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRef {
    /// The session.
    pub id: SessionId,
    /// Its user.
    pub user_id: String,
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
    /// The session expired (idle or absolute lifetime).
    #[error("session expired")]
    Expired,
    /// The session was revoked: earlier (logout, reuse, eviction) with `None`, or by this call
    /// (user agent changed under [`UserAgentChange::Revoke`](crate::UserAgentChange)) with
    /// the session.
    #[error("session revoked")]
    Revoked(Option<SessionRef>),
    /// The store is down or too slow: nothing was rotated.
    #[error(transparent)]
    Unavailable(StoreError),
}

impl From<StoreError> for RotateError {
    fn from(e: StoreError) -> Self {
        RotateError::Unavailable(e)
    }
}
