//! `TestClock`: time that moves only when a test says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Clock, SystemClock};

/// A clock that only moves when told to; clones share the same time (feature `test-util`).
///
/// ```
/// use baton_core::{Clock, TestClock};
/// use std::time::Duration;
///
/// let clock = TestClock::at_secs(1_000);
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), 1_005);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TestClock {
    millis: Arc<AtomicU64>,
}

impl TestClock {
    /// A clock reading `secs` seconds after the epoch.
    pub fn at_secs(secs: u64) -> Self {
        Self::at_millis(secs.saturating_mul(1000))
    }

    /// A clock reading `millis` milliseconds after the epoch.
    pub fn at_millis(millis: u64) -> Self {
        TestClock {
            millis: Arc::new(AtomicU64::new(millis)),
        }
    }

    /// A clock starting at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::at_millis(SystemClock.now_millis())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `secs` seconds after the epoch.
    pub fn set_secs(&self, secs: u64) {
        self.millis
            .store(secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_millis(&self) -> u64 {
        self.millis.load(Ordering::SeqCst)
    }
}
