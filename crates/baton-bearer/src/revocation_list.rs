//! `RevocationList`: an in-memory [`CheckRevocation`] fed by the application (or a feed).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use baton_token::{Clock, SystemClock};

use crate::{CheckRevocation, TokenIdentity};

#[derive(Debug, Default)]
struct Lists {
    /// Revoked session id -> forget after (s).
    sessions: HashMap<String, u64>,
    /// User -> tokens issued before this time (s) are revoked; forget after (s).
    users: HashMap<String, (u64, u64)>,
}

/// Revoked sessions and "revoked before" cut-offs per user, kept in memory only as long as
/// an access token could still be valid (the access-token lifetime plus the leeway).
///
/// Reads take a read lock and two hash look-ups; no I/O. Memory is bounded by the number of
/// revocations within one access-token lifetime.
///
/// ```
/// use baton_bearer::{CheckRevocation, RevocationList, TokenIdentity};
/// use std::time::Duration;
///
/// let list = RevocationList::new(Duration::from_secs(900));
/// list.revoke_session("s1");
/// assert!(list.is_revoked(&TokenIdentity::new("alice").with_sid("s1")));
/// assert!(!list.is_revoked(&TokenIdentity::new("alice").with_sid("s2")));
/// ```
#[derive(Debug)]
pub struct RevocationList {
    lists: RwLock<Lists>,
    keep: u64,
    clock: Box<dyn Clock>,
}

impl RevocationList {
    /// A list that remembers each revocation for `keep` (the longest an access token lives,
    /// leeway included).
    pub fn new(keep: Duration) -> Self {
        RevocationList {
            lists: RwLock::default(),
            keep: keep.as_secs().max(1),
            clock: Box::new(SystemClock),
        }
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.lists
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn prune(lists: &mut Lists, now: u64) {
        lists.sessions.retain(|_, until| *until > now);
        lists.users.retain(|_, (_, until)| *until > now);
    }

    /// Refuses the access tokens of session `sid` from now on.
    pub fn revoke_session(&self, sid: &str) {
        let now = self.clock.now();
        let mut lists = self.write();
        Self::prune(&mut lists, now);
        lists.sessions.insert(sid.to_owned(), now + self.keep);
    }

    /// Refuses every access token of `sub` issued before now (logout everywhere).
    pub fn revoke_user(&self, sub: &str) {
        self.revoke_user_before(sub, self.clock.now());
    }

    /// Refuses every access token of `sub` issued before `before` (seconds since the epoch),
    /// as reported by another instance.
    pub fn revoke_user_before(&self, sub: &str, before: u64) {
        let now = self.clock.now();
        let mut lists = self.write();
        Self::prune(&mut lists, now);
        let entry = lists
            .users
            .entry(sub.to_owned())
            .or_insert((before, now + self.keep));
        if before >= entry.0 {
            *entry = (before, now + self.keep);
        }
    }

    /// How many revocations are remembered.
    pub fn len(&self) -> usize {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lists.sessions.len() + lists.users.len()
    }

    /// `true` when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CheckRevocation for RevocationList {
    fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lists.sessions.is_empty() && lists.users.is_empty() {
            return false;
        }
        if token
            .sid
            .is_some_and(|sid| lists.sessions.contains_key(sid))
        {
            return true;
        }
        // Same-second tokens stay valid: the cut-off is whole seconds (`iat`), and refusing a
        // fresh login made in the same second as a logout-all would be worse.
        lists
            .users
            .get(token.sub)
            .is_some_and(|(before, _)| token.iat.is_none_or(|iat| iat < *before))
    }
}

/// Where revocations are recorded: in this process, and, for a feed, on every instance.
pub trait Revoke: Send + Sync + 'static {
    /// Refuses the access tokens of session `sid` from now on.
    fn revoke_session(&self, sid: &str);
    /// Refuses every access token of `sub` issued before now.
    fn revoke_user(&self, sub: &str);
}

impl Revoke for RevocationList {
    fn revoke_session(&self, sid: &str) {
        RevocationList::revoke_session(self, sid);
    }

    fn revoke_user(&self, sub: &str) {
        RevocationList::revoke_user(self, sub);
    }
}
