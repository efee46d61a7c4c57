//! Audit events: one typed stream of what happened to whose session, for an application's
//! own sink (a security log, a SIEM, a user's "recent activity" page).

use std::net::IpAddr;

use baton_store::SessionId;

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeReason {
    /// Its device logged out (`POST {base}/logout`).
    Logout,
    /// The user ended it from another device (`DELETE {base}/sessions/{id}`).
    EndedByUser,
    /// The user signed out every other device (`POST {base}/logout-others`).
    OtherDevicesSignedOut,
    /// The user logged out everywhere (`POST {base}/logout-all`).
    LogoutEverywhere,
    /// A spent refresh token came back: taken as theft.
    ReuseDetected,
    /// A refresh came with another user agent, under `UserAgentChange::Revoke`.
    UserAgentChanged,
    /// A refresh came from another network, under `NetworkChange::Revoke`.
    NetworkChanged,
    /// A new login from the same device (the same device identifier) took its place.
    Replaced,
    /// A new login went over the user's session cap: the least recently used one went.
    Evicted,
    /// The user is gone from the directory.
    UserGone,
}

/// What happened. Never a token, a password or a cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A login with the right password: a new session.
    LoginSucceeded {
        /// The user.
        user: String,
        /// The new session.
        session: SessionId,
    },
    /// A login with a wrong password or an unknown name.
    LoginFailed {
        /// The name tried, in its canonical form (at most 64 characters kept).
        username: String,
    },
    /// A refresh token rotated (or, inside the grace window, got its successor again).
    Refreshed {
        /// The user.
        user: String,
        /// The session.
        session: SessionId,
        /// `true` when the successor was handed out again (a repeat inside the grace window).
        graced: bool,
    },
    /// A session ended.
    SessionRevoked {
        /// The user.
        user: String,
        /// The session.
        session: SessionId,
        /// Why.
        reason: RevokeReason,
    },
    /// A refresh came from outside the session's network (`NetworkChange`): under `Flag` the
    /// session is now marked, under `Record` only reported here.
    NetworkChanged {
        /// The user.
        user: String,
        /// The session.
        session: SessionId,
        /// `true` when the session was marked (`NetworkChange::Flag`).
        flagged: bool,
    },
    /// The user proved who they are again (`POST {base}/reauthenticate`): the session's
    /// `auth_time` is now.
    Reauthenticated {
        /// The user.
        user: String,
        /// The session.
        session: SessionId,
    },
    /// A re-authentication with a wrong password.
    ReauthenticationFailed {
        /// The user.
        user: String,
        /// The session.
        session: SessionId,
    },
    /// A request was over a rate limit (429).
    RateLimited {
        /// The limit: `login-ip`, `login-fail-net`, `login-fail-user`, `refresh-ip`,
        /// `reauth-fail`.
        bucket: &'static str,
    },
}

/// One audit event with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditRecord {
    /// What happened.
    pub event: AuditEvent,
    /// The client address, as the facade resolved it (trusted proxies included).
    pub ip: Option<IpAddr>,
    /// The request's user agent (at most 256 bytes kept).
    pub user_agent: Option<String>,
    /// When, in milliseconds since the epoch (the facade's clock).
    pub at_ms: u64,
}

/// Where audit records go: set with [`BatonBuilder::audit`](crate::BatonBuilder::audit).
/// Called on the request path, after the outcome is decided: keep it fast (hand the record to
/// a channel for anything slow). A closure `Fn(&AuditRecord)` is a sink.
///
/// ```
/// use baton::{AuditEvent, AuditRecord};
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::<AuditEvent>::new()));
/// let sink = {
///     let seen = seen.clone();
///     move |record: &AuditRecord| seen.lock().unwrap().push(record.event.clone())
/// };
/// # fn takes(_: impl baton::AuditSink) {}
/// takes(sink);
/// ```
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one record.
    fn record(&self, record: &AuditRecord);
}

impl<F: Fn(&AuditRecord) + Send + Sync + 'static> AuditSink for F {
    fn record(&self, record: &AuditRecord) {
        self(record)
    }
}

/// The default sink: `tracing` events at target `baton::audit` (info; reuse at warn).
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record(&self, _record: &AuditRecord) {
        #[cfg(feature = "tracing")]
        match &_record.event {
            AuditEvent::SessionRevoked {
                reason: RevokeReason::ReuseDetected,
                ..
            } => {
                tracing::warn!(target: "baton::audit", event = ?_record.event, ip = ?_record.ip, "audit");
            }
            event => {
                tracing::info!(target: "baton::audit", ?event, ip = ?_record.ip, "audit");
            }
        }
    }
}

/// Keeps at most `max` bytes of `s`, on a character boundary.
pub(crate) fn capped(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
