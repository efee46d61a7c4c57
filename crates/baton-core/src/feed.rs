//! What every shared revocation feed (Redis, PostgreSQL) says about itself: [`FeedStatus`],
//! and what it does while it cannot hear: [`DisconnectPolicy`].

/// What an instance does while it cannot read the revocation log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectPolicy {
    /// Keep serving with the revocations known so far (availability first).
    #[default]
    KeepServing,
    /// Refuse every access token until the log can be read again and is caught up (safety
    /// first: any token may have been revoked meanwhile). The bearer layer answers 503 with
    /// `Retry-After` meanwhile (not 401: clients wait rather than refresh or sign out).
    RefuseAll,
}

/// Whether the feed is hearing revocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedStatus {
    /// The log was read within the last four poll periods (at least 1 s).
    Connected,
    /// The log has not been read since this time (ms since the epoch).
    Disconnected {
        /// The last successful read, or when the feed started.
        since_ms: u64,
    },
}
