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

/// When a spent refresh token counts as stolen.
///
/// Both policies give the immediate parent of the live token the *same* successor (never a
/// sibling), and both revoke the session when an older token comes back. They differ in how
/// long the parent stays usable:
///
/// | | [`Strict`](Self::Strict) (default) | [`AfterSuccessorUse`](Self::AfterSuccessorUse) |
/// |---|---|---|
/// | parent presented within the grace window | same successor | same successor |
/// | parent presented after the grace window, successor never used | **reuse: session revoked** | same successor |
/// | parent presented after the successor was used | reuse: session revoked | reuse: session revoked |
///
/// `Strict` detects a thief who replays a spent token more than the grace window after the
/// victim's refresh, even if the victim has not refreshed since; its cost is that a client
/// which lost a refresh reply (a timeout, a dropped connection, a closed laptop) and comes
/// back after the window loses its session. `AfterSuccessorUse` (the rule SuperTokens uses)
/// never costs a session for a lost reply: the parent stays usable until its successor is
/// presented once. Theft is still detected once both holders use the family: whoever falls
/// two rotations behind presents a grandparent and the session is revoked; a thief holding
/// only the parent can obtain the live token while the victim has not refreshed since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReuseDetection {
    /// The parent is graced only within the grace window.
    #[default]
    Strict,
    /// The parent stays usable until its successor has been presented once.
    AfterSuccessorUse,
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
    reuse_detection: ReuseDetection,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

impl Policy {
    /// Idle lifetime 14 days (sliding: each rotation resets it), absolute cap 90 days, grace
    /// window 10 s, 20 sessions per user, user-agent changes recorded, [`ReuseDetection::Strict`].
    pub fn new() -> Self {
        Policy {
            idle: Duration::from_secs(14 * 24 * 3600),
            absolute: Duration::from_secs(90 * 24 * 3600),
            grace: Duration::from_secs(10),
            max_sessions: 20,
            user_agent_change: UserAgentChange::Record,
            reuse_detection: ReuseDetection::Strict,
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

    /// Sets when a spent token counts as stolen (see [`ReuseDetection`]).
    #[must_use]
    pub fn with_reuse_detection(mut self, detection: ReuseDetection) -> Self {
        self.reuse_detection = detection;
        self
    }

    /// When a spent token counts as stolen.
    pub fn reuse_detection(&self) -> ReuseDetection {
        self.reuse_detection
    }

    /// `true` when the parent of the live token, last rotated `since_rotation_ms` ago, gets the
    /// live token again rather than counting as reuse.
    pub fn graces_parent(&self, since_rotation_ms: u64) -> bool {
        match self.reuse_detection {
            ReuseDetection::Strict => since_rotation_ms < self.grace_ms(),
            ReuseDetection::AfterSuccessorUse => true,
        }
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
