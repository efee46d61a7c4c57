//! Session lifetime and rotation policies.

use std::time::Duration;

use crate::StoreError;

/// What to do when a refresh comes with another user agent than the session's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserAgentChange {
    /// Record the new user agent and carry on (browsers update themselves).
    #[default]
    Record,
    /// Treat it as a stolen token: revoke the session.
    Revoke,
}

/// Lifetimes and limits of sessions. IP changes are always recorded, never punished.
///
/// ```
/// use baton_store::Policy;
/// use std::time::Duration;
///
/// let policy = Policy::new().with_idle_lifetime(Duration::from_secs(3600)).unwrap();
/// assert_eq!(policy.grace_window(), Duration::from_secs(10));
/// assert!(Policy::new().with_max_sessions_per_user(0).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    idle: Duration,
    absolute: Duration,
    grace: Duration,
    max_sessions: usize,
    user_agent_change: UserAgentChange,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

impl Policy {
    /// Idle lifetime 14 days (sliding: each rotation resets it), absolute cap 90 days, grace
    /// window 10 s, 20 sessions per user, user-agent changes recorded.
    pub fn new() -> Self {
        Policy {
            idle: Duration::from_secs(14 * 24 * 3600),
            absolute: Duration::from_secs(90 * 24 * 3600),
            grace: Duration::from_secs(10),
            max_sessions: 20,
            user_agent_change: UserAgentChange::Record,
        }
    }

    /// Sets the idle lifetime (at least one second, at most the absolute cap).
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`].
    pub fn with_idle_lifetime(mut self, idle: Duration) -> Result<Self, StoreError> {
        if idle < Duration::from_secs(1) || idle > self.absolute {
            return Err(StoreError::InvalidInput(
                "idle lifetime must be 1 s up to the absolute cap",
            ));
        }
        self.idle = idle;
        Ok(self)
    }

    /// Sets the absolute lifetime cap (at least the idle lifetime).
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`].
    pub fn with_absolute_lifetime(mut self, absolute: Duration) -> Result<Self, StoreError> {
        if absolute < self.idle {
            return Err(StoreError::InvalidInput(
                "absolute lifetime must be at least the idle lifetime",
            ));
        }
        self.absolute = absolute;
        Ok(self)
    }

    /// Sets the grace window: how long after a rotation the previous token still gets the
    /// same successor (0 turns it off; at most 5 minutes).
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`].
    pub fn with_grace_window(mut self, grace: Duration) -> Result<Self, StoreError> {
        if grace > Duration::from_secs(300) {
            return Err(StoreError::InvalidInput(
                "grace window must be at most 5 minutes",
            ));
        }
        self.grace = grace;
        Ok(self)
    }

    /// Sets how many sessions one user may have; creating one more evicts the least
    /// recently used.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for 0 or more than 1000.
    pub fn with_max_sessions_per_user(mut self, max: usize) -> Result<Self, StoreError> {
        if max == 0 || max > 1000 {
            return Err(StoreError::InvalidInput(
                "max sessions per user must be 1 to 1000",
            ));
        }
        self.max_sessions = max;
        Ok(self)
    }

    /// Sets what a changed user agent does.
    #[must_use]
    pub fn with_user_agent_change(mut self, action: UserAgentChange) -> Self {
        self.user_agent_change = action;
        self
    }

    /// The idle lifetime.
    pub fn idle_lifetime(&self) -> Duration {
        self.idle
    }

    /// The absolute lifetime cap.
    pub fn absolute_lifetime(&self) -> Duration {
        self.absolute
    }

    /// The grace window.
    pub fn grace_window(&self) -> Duration {
        self.grace
    }

    /// Sessions per user.
    pub fn max_sessions_per_user(&self) -> usize {
        self.max_sessions
    }

    /// What a changed user agent does.
    pub fn user_agent_change(&self) -> UserAgentChange {
        self.user_agent_change
    }

    pub(crate) fn idle_ms(&self) -> u64 {
        millis(self.idle)
    }

    pub(crate) fn absolute_ms(&self) -> u64 {
        millis(self.absolute)
    }

    pub(crate) fn grace_ms(&self) -> u64 {
        millis(self.grace)
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
