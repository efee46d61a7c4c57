//! `RevocationList`: an in-memory [`CheckRevocation`] fed by the application (or a feed).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::Duration;

use crate::{Clock, SystemClock};

use crate::{CheckRevocation, TokenIdentity};

#[derive(Debug, Default)]
struct Lists {
    /// Revoked session id -> forget after (s).
    sessions: HashMap<String, u64>,
    /// User -> tokens issued before this time (s) are revoked; forget after (s).
    users: HashMap<String, (u64, u64)>,
    /// When expired entries were last dropped (s).
    pruned: u64,
}

/// How much longer than `keep` a revocation recorded by another instance is remembered, for
/// the difference between its clock and ours.
const CLOCK_MARGIN_SECS: u64 = 60;

/// Revoked sessions and "revoked before" cut-offs per user, kept in memory only as long as
/// an access token could still be valid (the access-token lifetime plus the leeway).
///
/// Reads take a read lock and two hash look-ups; no I/O. Memory is bounded by the number of
/// revocations within one access-token lifetime; expired entries are dropped at most once a
/// second, by writes.
///
/// ```
/// use baton_core::{CheckRevocation, RevocationList, TokenIdentity};
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

    /// Drops expired entries, at most once a second. Keeping one a second longer refuses
    /// only tokens that have expired anyway.
    fn prune(lists: &mut Lists, now: u64) {
        if now == lists.pruned {
            return;
        }
        lists.pruned = now;
        lists.sessions.retain(|_, until| *until > now);
        lists.users.retain(|_, (_, until)| *until > now);
    }

    fn insert(lists: &mut Lists, revocation: &Revocation, until: u64) {
        match revocation {
            Revocation::Session(sid) => {
                let entry = lists.sessions.entry(sid.clone()).or_insert(until);
                *entry = (*entry).max(until);
            }
            Revocation::UserBefore { sub, before } => {
                let entry = lists.users.entry(sub.clone()).or_insert((*before, until));
                if *before > entry.0 {
                    *entry = (*before, entry.1.max(until));
                } else if *before == entry.0 {
                    entry.1 = entry.1.max(until);
                }
            }
        }
    }

    /// Refuses the access tokens of session `sid` from now on.
    pub fn revoke_session(&self, sid: &str) {
        self.apply(&Revocation::session(sid));
    }

    /// Refuses every access token of `sub` issued before now (logout everywhere).
    pub fn revoke_user(&self, sub: &str) {
        self.revoke_user_before(sub, self.clock.now());
    }

    /// Refuses every access token of `sub` issued before `before` (seconds since the epoch),
    /// as reported by another instance.
    pub fn revoke_user_before(&self, sub: &str, before: u64) {
        self.apply(&Revocation::user_before(sub, before));
    }

    /// Applies one revocation made now.
    pub fn apply(&self, revocation: &Revocation) {
        let now = self.clock.now();
        let mut lists = self.write();
        Self::prune(&mut lists, now);
        Self::insert(&mut lists, revocation, now.saturating_add(self.keep));
    }

    /// Applies revocations recorded elsewhere, each with the time it was recorded (ms since the
    /// epoch, by the recorder's clock), under one lock: each is remembered until that time plus
    /// `keep` (and a margin for clock differences), so reading the same record again never
    /// makes it last longer.
    pub fn apply_recorded(&self, revocations: &[(Revocation, u64)]) {
        if revocations.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut lists = self.write();
        Self::prune(&mut lists, now);
        for (revocation, at_ms) in revocations {
            let until = (at_ms / 1000)
                .saturating_add(self.keep)
                .saturating_add(CLOCK_MARGIN_SECS);
            if until > now {
                Self::insert(&mut lists, revocation, until);
            }
        }
    }

    /// `true` when the access tokens of session `sid` are refused.
    pub fn is_session_revoked(&self, sid: &str) -> bool {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lists.sessions.contains_key(sid)
    }

    /// `true` when `revocation` is in the list (a user cut-off at least as late).
    pub fn contains(&self, revocation: &Revocation) -> bool {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match revocation {
            Revocation::Session(sid) => lists.sessions.contains_key(sid),
            Revocation::UserBefore { sub, before } => {
                lists.users.get(sub).is_some_and(|(b, _)| b >= before)
            }
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
        // fresh login made in the same second as a logout-all would be worse. The sessions a
        // logout-all revoked are recorded one by one, which covers their same-second tokens.
        lists
            .users
            .get(token.sub)
            .is_some_and(|(before, _)| token.iat.is_none_or(|iat| iat < *before))
    }
}

/// One revocation: what is recorded, and what travels between instances.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Revocation {
    /// Every access token of this session (`sid`).
    Session(String),
    /// Every access token of `sub` issued before `before` (seconds since the epoch, compared
    /// with `iat`): logout everywhere. Tokens issued in that very second stay valid (a login
    /// right after the logout would otherwise be refused); the sessions revoked by the logout
    /// are recorded one by one as well, which covers their tokens of that second.
    UserBefore {
        /// The user.
        sub: String,
        /// The cut-off, seconds since the epoch.
        before: u64,
    },
}

impl Revocation {
    /// Revokes the tokens of session `sid`.
    pub fn session(sid: impl Into<String>) -> Self {
        Revocation::Session(sid.into())
    }

    /// Revokes the tokens of `sub` issued before `before` (seconds since the epoch).
    pub fn user_before(sub: impl Into<String>, before: u64) -> Self {
        Revocation::UserBefore {
            sub: sub.into(),
            before,
        }
    }
}

/// A revocation could not be recorded where every instance will find it (the shared store is
/// down or too slow). The instance that tried refuses the tokens already; the others may not
/// until it is recorded.
#[derive(Debug)]
pub struct RevokeError {
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl RevokeError {
    /// Wraps the cause.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        RevokeError {
            source: source.into(),
        }
    }
}

impl std::fmt::Display for RevokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("revocation not recorded")
    }
}

impl std::error::Error for RevokeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The future of [`Revoke::revoke`].
pub type RevokeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RevokeError>> + Send + 'a>>;

/// Where revocations are recorded: in this process (a [`RevocationList`]) and, for a feed,
/// where every instance finds them.
///
/// Two entry points, for the two kinds of revocation:
/// - [`revoke`](Self::revoke): a revocation the caller will acknowledge (a logout). It answers
///   `Ok` only once the revocation is recorded durably (for a feed: in the shared log that every
///   instance reads) and applied here, so an endpoint answers 2xx only when no instance will
///   accept the tokens past the feed's delivery delay. On `Err` the caller answers 503 and the
///   client retries; nothing is kept for later.
/// - [`revoked`](Self::revoked): a revocation the session store already made (theft detected,
///   a session evicted, a user gone). It applies here at once and records; when the write
///   fails, a feed retries it in the background until it lands or every token it covers has
///   expired (a bounded queue in memory: what it holds is lost if the process exits first, or
///   when it overflows, which is logged and counted).
pub trait Revoke: Send + Sync + 'static {
    /// Records `revocations`, then applies them here (see the trait docs).
    fn revoke<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a>;

    /// Applies `revocations` here, then records them, retrying in the background on failure
    /// (see the trait docs). By default the same as [`revoke`](Self::revoke).
    fn revoked<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a> {
        self.revoke(revocations)
    }

    /// `true` when `revocation` is known to be recorded already (so recording it again can be
    /// skipped). By default `false`.
    fn is_recorded(&self, _revocation: &Revocation) -> bool {
        false
    }
}

impl Revoke for RevocationList {
    fn revoke<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a> {
        for revocation in revocations {
            self.apply(revocation);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_recorded(&self, revocation: &Revocation) -> bool {
        self.contains(revocation)
    }
}
