//! Time as an injectable dependency, so expiry is tested without sleeping.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time.
///
/// Everything in baton that compares against "now" (token expiry, `nbf`, refresh-token
/// lifetimes, grace windows) reads it from a `Clock`, so tests move time by hand.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// Whole seconds since the Unix epoch (JWT `NumericDate`).
    fn now(&self) -> u64 {
        self.now_millis() / 1000
    }
}

impl Clock for Arc<dyn Clock> {
    fn now_millis(&self) -> u64 {
        (**self).now_millis()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        // A clock set before 1970 reads as the epoch: every token then looks not yet expired
        // only if its `exp` is in the future, so this can not make an expired token valid.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
