//! A bounded cache of verified tokens, for verifiers of ECDSA, EdDSA and RSA tokens.

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use zeroize::Zeroizing;

use crate::{Claims, Key, KeySet, VerifyError};

/// A bounded cache of verified tokens, for [`Verifier::with_cache`](crate::Verifier::with_cache).
///
/// A client sends the same access token many times in its lifetime, and checking an ECDSA,
/// EdDSA or RSA signature costs tens of microseconds. With a cache,
/// [`Verifier::verify_cached`](crate::Verifier::verify_cached) verifies a token once and then
/// serves its claims to a request whose token equals the *whole* token verified (never a
/// prefix, never the claims; compared in constant time), and still, on every request:
/// - checks `exp` and `nbf` against the clock (an expired token is refused and evicted; the
///   entries of tokens nobody presents again are taken over once they expire, or evicted when
///   the byte budget needs room);
/// - checks that the key that verified the token is still in the key set (a removed key's
///   tokens stop verifying at once, as without a cache);
/// - leaves the revocation hook to the caller, which runs it on cached claims too (the
///   bearer layer does).
///
/// A token's set of slots is chosen by a keyed hash of the token's end (its signature's last
/// characters), with `std`'s `RandomState` (keys drawn at random for the process, distinct
/// per cache), so where a token goes cannot be computed outside; the hash only places
/// entries, the whole token decides a hit.
///
/// The entries hold the tokens themselves: live credentials until they expire, in this
/// process's memory as its request buffers hold them (an entry's token is wiped when the entry
/// is dropped). Comparing the bytes costs less than hashing the whole token would: a hit
/// took about 0.2 µs for tokens of 300 to 700 bytes (HS256 to RS256) in the benchmarks; the
/// comparison grows with the length. A hit shares the entry's claims (an [`Arc`], so a
/// reference count, not a copy of their strings).
///
/// Bounded twice: a fixed number of slots (`max_entries`, rounded up to a power of two, two
/// ways per set) and a byte budget for what the entries hold. Each entry is charged for its
/// token, its claims segment and about 460 bytes of bookkeeping (for the registered claims):
/// about 1 KiB for a typical ES256 token, 1.3 KiB for RS256. The claims segment stands for
/// the heap the claims hold: close for strings, low for long arrays of short strings or
/// application claims holding JSON values, so the budget is an estimate of the memory, not a
/// measure. Lookups and inserts take no lock: each slot is an atomic pointer (`arc-swap`), so
/// cores never wait on each other; a hit counts one reference to the entry's claims (and the
/// request's end one less), so cores serving one hot token share that count's cache line. An
/// insert takes an empty slot of its set or one whose token has expired; a full set replaces
/// one of its two entries. Over the byte budget, an insert evicts expired entries, then live
/// ones, sweeping the table a few dozen slots at a time, and gives up when that does not make
/// room, so the budget is never exceeded and new tokens keep finding places once it is full.
///
/// HMAC tokens are cached too: an HS256 check costs about 1.4 µs and a hit about 0.2 µs, so a
/// token used more than once pays for its miss (the insert, about 0.3 µs); through axum the
/// cache takes an HS256 server from about 0.72x to 0.90-0.92x the requests per second of bare
/// axum (`tests/peers/BENCHMARKS.md`). [`TokenCache::include_hmac`]`(false)`
/// skips the cache for verifiers whose keys are all HMAC keys (tokens used once each).
///
/// Entries are tagged with the verifier's configuration, so one cache may serve several
/// verifiers (with different audiences, say) without one's tokens passing the other.
///
/// ```
/// use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims, TokenCache};
///
/// let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::EdDSA).unwrap()).unwrap());
/// let verifier = issuer.verifier().with_cache(TokenCache::new(10_000, 8 << 20));
/// let token = issuer.issue("alice", None, NoCustomClaims {}).unwrap().token;
///
/// let first = verifier.verify_cached::<NoCustomClaims>(&token).unwrap(); // verifies, caches
/// let again = verifier.verify_cached::<NoCustomClaims>(&token).unwrap(); // from the cache
/// assert_eq!(first, again);
/// assert_eq!(verifier.cache().unwrap().len(), 1);
/// ```
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
    include_hmac: bool,
}

struct Inner {
    slots: Box<[ArcSwapOption<Entry>]>,
    /// The keyed hash that places tokens in sets (keys random per process, distinct per cache).
    hasher: RandomState,
    /// `slots.len() / 2 - 1`: sets are pairs of slots.
    set_mask: usize,
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Where the next sweep for room starts (wraps around the slots).
    hand: AtomicUsize,
}

/// One verified token.
pub(crate) struct Entry {
    /// The whole token that verified: a credential, wiped when the entry goes.
    token: Zeroizing<Box<str>>,
    /// The configuration of the verifier that verified it.
    verifier: u64,
    /// The key that verified it; the entry is only served while the key set holds this key.
    key: Arc<Key>,
    /// The token had no `kid`, so it verified because the set held exactly one key.
    kid_less: bool,
    /// When the verifier that verified it would refuse it as expired (`exp` + leeway): from
    /// then on the slot is free for another token.
    expires_at: u64,
    /// The verified claims (a `Claims<C>`), shared with every request the entry serves.
    claims: Arc<dyn Any + Send + Sync>,
    cost: usize,
}

/// What [`TokenCache::get`] found.
pub(crate) enum Lookup<C> {
    /// Not cached (or cached for a key no longer in the set): verify it.
    Miss,
    /// Cached and still within its times: the entry's claims, shared.
    Hit(Arc<Claims<C>>),
    /// Cached, but the clock check refused it (and it was evicted).
    Refused(VerifyError),
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("slots", &self.inner.slots.len())
            .field("bytes", &self.bytes())
            .field("max_bytes", &self.inner.max_bytes)
            .field("include_hmac", &self.include_hmac)
            .finish()
    }
}

/// How many of a token's last bytes place it in the cache.
const PLACED_BY: usize = 32;

/// How many slots an insert over the byte budget looks through for entries to evict, from
/// where the last such sweep stopped: bounded work, on inserts only.
const SWEEP_SLOTS: usize = 64;

/// Where a token is looked for in one cache: the token and its keyed hash, computed once for
/// the lookup and, on a miss, the insert.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'t> {
    token: &'t str,
    hash: u64,
}

/// Whether an entry holds exactly `token`: constant time in the bytes of both (the lengths,
/// which every token of one issuer nearly shares, may show).
fn same_token(entry: &Entry, token: &str) -> bool {
    verify_slices_are_equal(entry.token.as_bytes(), token.as_bytes()).is_ok()
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens (rounded up to a power of two, at least 2, at
    /// most 2^24 = 16,777,216) whose entries hold at most `max_bytes` in all. The slots
    /// themselves take 8 bytes each, allocated up front.
    pub fn new(max_entries: usize, max_bytes: usize) -> TokenCache {
        let slots = max_entries.clamp(2, 1 << 24).next_power_of_two();
        TokenCache {
            inner: Arc::new(Inner {
                slots: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
                hasher: RandomState::new(),
                set_mask: slots / 2 - 1,
                bytes: AtomicUsize::new(0),
                max_bytes,
                hand: AtomicUsize::new(0),
            }),
            include_hmac: true,
        }
    }

    /// Whether to cache tokens of verifiers whose keys are all HMAC keys (on by default: see
    /// the type's docs for when it pays). A setting of this handle: clones share the entries
    /// and keep their own setting.
    #[must_use]
    pub fn include_hmac(mut self, include: bool) -> TokenCache {
        self.include_hmac = include;
        self
    }

    /// How many tokens the cache holds now (counts every slot: for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|slot| slot.load().is_some())
            .count()
    }

    /// `true` when the cache holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the entries account for now (at most the budget given to
    /// [`TokenCache::new`]).
    pub fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Empties the cache.
    pub fn clear(&self) {
        for slot in &*self.inner.slots {
            self.release(slot.swap(None));
        }
    }

    pub(crate) fn applies_to(&self, keys: &KeySet) -> bool {
        self.include_hmac || !keys.all_symmetric()
    }

    /// The token's place in this cache: a keyed hash of its last [`PLACED_BY`] bytes, which
    /// lie in the signature (43 characters for HS256, 86 for ES256 and EdDSA, 342 for RS256):
    /// the signatures of different verified tokens differ there, and whole tokens are compared
    /// anyway, so hashing the rest would only cost time (SipHash over a 300-byte token takes
    /// about five times as long).
    pub(crate) fn probe<'t>(&self, token: &'t str) -> Probe<'t> {
        let bytes = token.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(PLACED_BY)..];
        Probe {
            token,
            hash: self.inner.hasher.hash_one(tail),
        }
    }

    fn ways(&self, probe: Probe<'_>) -> [&ArcSwapOption<Entry>; 2] {
        // The low bits choose the set (the top bit chooses the way an insert replaces).
        let set = (probe.hash as usize) & self.inner.set_mask;
        [&self.inner.slots[2 * set], &self.inner.slots[2 * set + 1]]
    }

    /// Looks the token up. A hit is served only while the key that verified it is still in
    /// `keys` and `check` (the clock checks) passes; an entry that fails `check` is evicted.
    /// The entry is read under an `arc-swap` guard, so a lookup touches no reference count
    /// but, on a hit, the claims' own (one atomic increment: they are shared, not copied).
    pub(crate) fn get<C: Send + Sync + 'static>(
        &self,
        probe: Probe<'_>,
        verifier: u64,
        keys: &KeySet,
        check: impl FnOnce(&Claims<C>) -> Result<(), VerifyError>,
    ) -> Lookup<C> {
        for slot in self.ways(probe) {
            let guard = slot.load();
            let Some(entry) = &*guard else { continue };
            // An entry of another claims type may hold the same token (one per way).
            let Some(claims) = entry.claims.downcast_ref::<Claims<C>>() else {
                continue;
            };
            if entry.verifier != verifier || !same_token(entry, probe.token) {
                continue;
            }
            if keys.reselect(&entry.key, entry.kid_less).is_none() {
                // Its key left the set: the entry can never be served again.
                self.remove(slot, &guard);
                return Lookup::Miss;
            }
            return match check(claims) {
                // The downcast of the reference just succeeded, so this one does too.
                Ok(()) => match Arc::clone(&entry.claims).downcast::<Claims<C>>() {
                    Ok(claims) => Lookup::Hit(claims),
                    Err(_) => Lookup::Miss,
                },
                Err(e) => {
                    self.remove(slot, &guard);
                    Lookup::Refused(e)
                }
            };
        }
        Lookup::Miss
    }

    /// Caches verified `claims` of the probed token (shared with the caller, who returns
    /// them). `payload_len` (the claims segment's length) stands for the heap the claims
    /// hold. `expires_at` is when the verifier would refuse the token as expired, `now` the
    /// verifier's clock.
    // One call site, each argument a different fact about the verified token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert<C: Send + Sync + 'static>(
        &self,
        probe: Probe<'_>,
        verifier: u64,
        key: Arc<Key>,
        kid_less: bool,
        claims: Arc<Claims<C>>,
        payload_len: usize,
        expires_at: u64,
        now: u64,
    ) {
        let cost =
            size_of::<Entry>() + size_of::<Claims<C>>() + probe.token.len() + payload_len + 64;
        if cost > self.inner.max_bytes {
            return;
        }
        let [first, second] = self.ways(probe);
        // Free for this token: empty, expired, or this very entry (a racing insert of it).
        let free = |slot: &ArcSwapOption<Entry>| match &*slot.load() {
            None => true,
            Some(e) => {
                e.expires_at <= now
                    || (e.verifier == verifier
                        && e.claims.is::<Claims<C>>()
                        && same_token(e, probe.token))
            }
        };
        let slot = if free(first) {
            first
        } else if free(second) {
            second
        } else if probe.hash >> 63 == 0 {
            first
        } else {
            second
        };
        if !self.make_room(cost, slot, now) {
            return;
        }
        let entry = Arc::new(Entry {
            token: Zeroizing::new(probe.token.into()),
            verifier,
            key,
            kid_less,
            expires_at,
            claims,
            cost,
        });
        self.release(slot.swap(Some(entry)));
    }

    /// Reserves `cost` bytes of the budget, evicting when it is full: `slot`'s entry (which
    /// the insert replaces anyway), then, in the [`SWEEP_SLOTS`] slots from where the last
    /// sweep stopped, expired entries and, failing those, live ones: round the table, oldest
    /// places first, like a clock hand. `false` when that made no room (a table far larger
    /// than its budget holds can need a few inserts to reach an entry).
    fn make_room(&self, cost: usize, slot: &ArcSwapOption<Entry>, now: u64) -> bool {
        if self.reserve(cost) {
            return true;
        }
        if self.evict(slot, |_| true) && self.reserve(cost) {
            return true;
        }
        let slots = &self.inner.slots;
        let sweep = SWEEP_SLOTS.min(slots.len());
        let start = self.inner.hand.fetch_add(sweep, Ordering::Relaxed);
        for live_too in [false, true] {
            for i in 0..sweep {
                // The slot count is a power of two: the mask wraps the hand.
                let slot = &slots[start.wrapping_add(i) & (slots.len() - 1)];
                if self.evict(slot, |e| live_too || e.expires_at <= now) && self.reserve(cost) {
                    return true;
                }
            }
        }
        false
    }

    /// Removes `slot`'s entry when `which` picks it; `true` when one was removed.
    fn evict(&self, slot: &ArcSwapOption<Entry>, which: impl FnOnce(&Entry) -> bool) -> bool {
        let guard = slot.load();
        match &*guard {
            Some(entry) if which(entry) => self.remove(slot, &guard),
            _ => false,
        }
    }

    /// Removes the entry `guard` holds from `slot`, unless another thread replaced it
    /// meanwhile; its bytes go back to the budget once, by whichever thread removed it.
    fn remove(
        &self,
        slot: &ArcSwapOption<Entry>,
        guard: &arc_swap::Guard<Option<Arc<Entry>>>,
    ) -> bool {
        let Some(entry) = guard.as_ref() else {
            return false;
        };
        let previous = slot.compare_and_swap(guard, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, entry)) {
            self.inner.bytes.fetch_sub(entry.cost, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    fn reserve(&self, cost: usize) -> bool {
        self.inner
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(cost)
                    .filter(|&n| n <= self.inner.max_bytes)
            })
            .is_ok()
    }

    fn release(&self, old: Option<Arc<Entry>>) {
        if let Some(old) = old {
            self.inner.bytes.fetch_sub(old.cost, Ordering::Relaxed);
        }
    }
}
