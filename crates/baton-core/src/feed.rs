//! What every shared revocation feed (Redis, PostgreSQL) says about itself: [`FeedStatus`],
//! what it does while it cannot hear: [`DisconnectPolicy`], and the state it keeps in the
//! process: [`FeedState`].

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{CheckRevocation as _, Clock, Revocation, RevocationList, TokenIdentity};

/// What an instance does while it cannot read the revocation log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectPolicy {
    /// Keep serving with the revocations known so far (availability first). A feed that has
    /// not read the log once yet knows none, so it refuses (as [`RefuseAll`](Self::RefuseAll)
    /// does) until its first read or until [`FeedState::STARTUP`] has passed since it
    /// started: a fresh instance never takes a token another one revoked before it started.
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

/// What every shared revocation feed (Redis, PostgreSQL) keeps in the process: the
/// revocations known here, the ones whose durable write failed and wait for a retry, and when
/// the shared log was last read (so whether the feed is hearing revocations). The feed
/// crates own the log, its reading and their logging; this holds the rest, once.
pub struct FeedState {
    list: Arc<RevocationList>,
    policy: DisconnectPolicy,
    pending: Mutex<VecDeque<Pending>>,
    next_seq: AtomicU64,
    last_read_ms: AtomicU64,
    started_ms: u64,
    keep_ms: u64,
    window_ms: u64,
    clock: Arc<dyn Clock>,
}

struct Pending {
    seq: u64,
    revocation: Revocation,
    since_ms: u64,
}

/// Revocations waiting for a retry of their write, at most (the oldest goes first).
pub const MAX_PENDING: usize = 10_000;

impl fmt::Debug for FeedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedState")
            .field("policy", &self.policy)
            .field("status", &self.status())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl FeedState {
    /// Revocations kept for `keep` (the longest an access token lives), the log read every
    /// `poll` (the feed counts as hearing while it was read within four of them, at least
    /// 1 s), `policy` while it is not, time from `clock`.
    pub fn new(
        keep: Duration,
        poll: Duration,
        policy: DisconnectPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        FeedState {
            list: Arc::new(RevocationList::new(keep).with_clock(clock.clone())),
            policy,
            pending: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            started_ms: clock.now_millis(),
            keep_ms: u64::try_from(keep.as_millis()).unwrap_or(u64::MAX),
            window_ms: u64::try_from((poll * 4).as_millis())
                .unwrap_or(u64::MAX)
                .max(1000),
            clock,
        }
    }

    /// The revocations known here.
    pub fn list(&self) -> &RevocationList {
        &self.list
    }

    /// The retention, in ms.
    pub fn keep_ms(&self) -> u64 {
        self.keep_ms
    }

    /// Notes that the log was read now.
    pub fn log_read(&self) {
        self.last_read_ms
            .store(self.clock.now_millis(), Ordering::Release);
    }

    /// `true` while the log was read recently enough.
    pub fn connected(&self) -> bool {
        self.clock
            .now_millis()
            .saturating_sub(self.last_read_ms.load(Ordering::Acquire))
            <= self.window_ms
    }

    /// Whether the feed is hearing revocations.
    pub fn status(&self) -> FeedStatus {
        if self.connected() {
            FeedStatus::Connected
        } else {
            FeedStatus::Disconnected {
                since_ms: self
                    .last_read_ms
                    .load(Ordering::Acquire)
                    .max(self.started_ms),
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Revocations whose write failed and that wait for a retry.
    pub fn pending(&self) -> usize {
        self.queue().len()
    }

    /// Queues `revocations` for a retry of their write; returns how many of the oldest were
    /// dropped to stay within [`MAX_PENDING`].
    pub fn defer(&self, revocations: &[Revocation]) -> usize {
        let now = self.clock.now_millis();
        let mut pending = self.queue();
        let mut dropped = 0;
        for revocation in revocations {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
                dropped += 1;
            }
            pending.push_back(Pending {
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                revocation: revocation.clone(),
                since_ms: now,
            });
        }
        dropped
    }

    /// Up to `max` queued revocations, oldest first, with their queue numbers; those older
    /// than the retention (they cover expired tokens only) are dropped.
    pub fn due(&self, max: usize) -> Vec<(u64, Revocation)> {
        let now = self.clock.now_millis();
        let mut pending = self.queue();
        pending.retain(|p| now.saturating_sub(p.since_ms) < self.keep_ms);
        pending
            .iter()
            .take(max)
            .map(|p| (p.seq, p.revocation.clone()))
            .collect()
    }

    /// Removes the queued revocations whose write succeeded (the queue may have moved).
    pub fn recorded(&self, written: &[(u64, Revocation)]) {
        let seqs: std::collections::HashSet<u64> = written.iter().map(|(seq, _)| *seq).collect();
        self.queue().retain(|p| !seqs.contains(&p.seq));
    }

    /// A revocation made here (a logout): recorded by `record` first, then applied here;
    /// `Err` when the write failed (the endpoint answers 503 and nothing is applied).
    ///
    /// # Errors
    /// The write's error.
    pub async fn revoke<E>(
        &self,
        revocations: &[Revocation],
        record: impl Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        record.await?;
        for revocation in revocations {
            self.list.apply(revocation);
        }
        Ok(())
    }

    /// `true` when `revocation` is known here and not waiting for a retry of its write.
    pub fn is_recorded(&self, revocation: &Revocation) -> bool {
        self.list.contains(revocation) && !self.queue().iter().any(|p| &p.revocation == revocation)
    }

    /// As [`CheckRevocation::is_revoked`](crate::CheckRevocation::is_revoked).
    pub fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool {
        self.list.is_revoked(token)
    }

    /// How long a feed that has never read the log refuses under
    /// [`DisconnectPolicy::KeepServing`] before serving anyway.
    pub const STARTUP: Duration = Duration::from_secs(2);

    /// As [`CheckRevocation::is_known`](crate::CheckRevocation::is_known): under
    /// [`DisconnectPolicy::RefuseAll`], only while the log is being read; under
    /// [`DisconnectPolicy::KeepServing`], once it has been read (or [`STARTUP`](Self::STARTUP)
    /// has passed without a read).
    pub fn is_known(&self) -> bool {
        if self.connected() {
            return true;
        }
        match self.policy {
            DisconnectPolicy::RefuseAll => false,
            DisconnectPolicy::KeepServing => {
                self.last_read_ms.load(Ordering::Acquire) != 0
                    || self.clock.now_millis().saturating_sub(self.started_ms)
                        >= u64::try_from(Self::STARTUP.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::TestClock;

    fn state(policy: DisconnectPolicy, clock: &TestClock) -> FeedState {
        FeedState::new(
            Duration::from_secs(900),
            Duration::from_millis(250),
            policy,
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn keep_serving_waits_for_the_first_read_or_the_startup_window() {
        let clock = TestClock::at_secs(1_800_000_000);
        let fresh = state(DisconnectPolicy::KeepServing, &clock);
        assert!(!fresh.is_known(), "nothing read yet: nothing known");
        fresh.log_read();
        assert!(fresh.is_known());
        // Once read, a later disconnection keeps serving.
        clock.advance(Duration::from_secs(60));
        assert!(!fresh.connected());
        assert!(fresh.is_known());

        // Never read: refused for the start-up window, then served.
        let unread = state(DisconnectPolicy::KeepServing, &clock);
        clock.advance(FeedState::STARTUP - Duration::from_millis(1));
        assert!(!unread.is_known());
        clock.advance(Duration::from_millis(1));
        assert!(unread.is_known());

        // Refuse-all knows only while it reads.
        let strict = state(DisconnectPolicy::RefuseAll, &clock);
        clock.advance(FeedState::STARTUP * 2);
        assert!(!strict.is_known());
        strict.log_read();
        assert!(strict.is_known());
        clock.advance(Duration::from_secs(60));
        assert!(!strict.is_known());
    }
}
