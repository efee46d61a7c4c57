//! `RedisStore`: baton's refresh-token sessions in Redis, the revocation feed, shared rate
//! limits and the shared DPoP replay cache, all on one [`RedisConnection`].
//!
//! Every store operation is one atomic Lua script (loaded once, then called by SHA) and one
//! round trip: rotation checks the generation, detects reuse, applies the grace window, bumps
//! the generation, records last use and device, and resets the TTLs in one step. Time comes
//! from the store's [`Clock`](baton_core::Clock), never from Redis, so tests control it.
//!
//! # Faults
//! What production brings is handled where it happens, and tested by causing it
//! (`tests/faults.rs`, `tests/feed.rs`):
//! - A connection Redis or a proxy closed (idle timeout, `CLIENT KILL`, a restart) is reopened
//!   before it is used (RESP3), and a command that meets it anyway is sent once more.
//! - Every write carries an attempt id, so the store's own repeat of a write whose reply was
//!   lost gives the first try's outcome: the same successor for a rotation, the same session
//!   for a creation, the same revoked sessions, the same reuse report; never a second session
//!   or a false theft alarm from the repeat.
//! - A write whose reply is late (Redis stalled) is awaited up to the write timeout: the
//!   client gets the rotation's successor rather than a 503.
//! - Every write carries a deadline in Redis's own clock, just before the end of that wait:
//!   Redis does nothing with a write it reaches later (a stall's backlog). So a 503 means the
//!   write did not happen and will not: the client's retry presents a live token, never one
//!   spent behind its back. What remains is a reply lost *after* the store answered (the
//!   client's own connection dropped): under [`ReuseDetection::Strict`](baton_store::ReuseDetection::Strict) that client, coming
//!   back after the grace window, counts as reuse; [`ReuseDetection::AfterSuccessorUse`](baton_store::ReuseDetection::AfterSuccessorUse) keeps
//!   it.
//! - A Redis that is down or stalled past the timeouts gives [`StoreError::Unavailable`](baton_store::StoreError::Unavailable)
//!   (503 with `Retry-After` at the endpoints) within the write timeout.
//!
//! # Operating Redis for it
//! - `maxmemory-policy noeviction`: sessions, tombstones and the revocation log carry TTLs, so
//!   any `volatile-*` or `allkeys-*` policy may evict a live session or an unread revocation.
//! - "Recorded" means in the primary's memory when it answered. For revocations and rotations
//!   to survive a Redis restart, use the append-only file (`appendfsync always` loses nothing,
//!   `everysec` up to a second); with replicas, a failover can lose what the primary had not
//!   replicated yet.
//! - Redis 6.2 or later (streams trimmed with `MINID`, exclusive ranges).
//!
//! # Example
//! ```no_run
//! use baton_redis::{RedisConnection, RedisOptions, RedisStore};
//! use baton_store::{Device, Policy, RefreshKeys, RefreshStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = RefreshKeys::new(1, std::env::var("REFRESH_KEY").unwrap().as_bytes())?;
//! let options = RedisOptions::new();
//! let redis = RedisConnection::connect("redis://127.0.0.1:6379/", &options).await?;
//! let store = RedisStore::new(redis.clone(), keys, Policy::new(), &options);
//! let login = store.create("alice", Device::new(Some("Firefox"), None)).await?;
//! # Ok(()) }
//! ```
//!
//! # Data layout
//! One string key per user, `<prefix>{T}` (default prefix `baton:`), where `T` is the user's
//! [user tag](baton_store::user_tag_of): 12 base64url characters derived from the user id,
//! which also start each of the user's session ids. The key holds all of the user's sessions,
//! records separated by `\x1e` and fields by `\x1f`:
//!
//! | record | fields |
//! |---|---|
//! | live session | id (the 20 characters after the tag), generation, created, last used, idle deadline, absolute deadline (ms), IP, device name, user agent, user id, attempt id of the latest rotation |
//! | revoked session | id, `R`, remembered until (its remaining life, at most one day), so its token answers *revoked*; attempt id of the revoking call; `reused`/`ua_revoked` and the user id when the store revoked it itself |
//!
//! Every operation touches that one key, declared in `KEYS`, so every script stays within one
//! hash slot as Redis Cluster requires ([`RedisStore::connect_cluster`], feature `cluster`).
//! The revocation feed's log is one stream key and the limiter one key per bucket, so they
//! work on a cluster too. Listing and
//! revoke-all need no `KEYS` or `SCAN`, and the key's TTL covers its longest-lived record, so
//! nothing outlives its sessions. Expired records are dropped by the
//! next write. No secret is stored: refresh tokens are authenticated with [`RefreshKeys`](baton_store::RefreshKeys),
//! which never reach Redis. Users are expected to have few sessions (the policy's per-user
//! limit): every write rewrites the user's key.
//!
//! # Memory
//! Measured by the `bytes_per_session` test (`MEMORY USAGE`, Redis 7, 130-byte user agent,
//! IPv4): about 330 bytes for a user with one session, and about 260 per session for a user
//! with ten. A per-session hash would cost 456 bytes, and 1,112 once the user agent (over 64
//! bytes) pushes it out of Redis's compact encoding; a separate per-user index adds another
//! 120 bytes for a one-session user.
//!
//! # Performance
//! `cargo bench -p baton-redis --bench rotate` (2-core machine, Redis 7.0 on loopback, one
//! run; `redis-benchmark` drives the same rotate script by `EVALSHA` over as many connections):
//!
//! | concurrency | `RedisStore` rotations/s | p50 | p99 | `redis-benchmark` EVALSHA/s | p50 | p99 | ratio |
//! |---|---|---|---|---|---|---|---|
//! | 1 | 6,404 | 148 µs | 292 µs | 6,302 | 143 µs | 351 µs | 1.02x |
//! | 16 | 25,605 | 487 µs | 4 ms | 29,078 | 511 µs | 943 µs | 0.88x |
//! | 64 | 34,488 | 2 ms | 3 ms | 34,388 | 2 ms | 4 ms | 1.00x |
//!
//! One round trip per rotation; `RedisStore` multiplexes all callers over one connection.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod conn;
mod feed;
mod gcra;
mod replay;
mod store;

pub use baton_core::{DisconnectPolicy, FeedStatus};
pub use conn::{ConnectionStats, DEADLINE_LUA, RedisConnection, RedisFailure};
pub use feed::{FeedOptions, RevocationFeed};
pub use gcra::RedisGcra;
pub use replay::RedisReplayCache;
pub use store::{RedisStore, rotate_script_sha};

use std::time::Duration;

use baton_store::ConfigError;

/// Connection settings ([`RedisConnection`]) and the store's key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions::new()
    }
}

impl RedisOptions {
    /// Prefix `baton:`, connect timeout 250 ms, response timeout 250 ms, write timeout 1 s.
    pub fn new() -> Self {
        RedisOptions {
            prefix: "baton:".to_owned(),
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(250),
            write_timeout: Duration::from_secs(1),
        }
    }

    /// The prefix of every key of the store (no `{` or `}`: the hash tag is the store's).
    ///
    /// # Errors
    /// [`ConfigError`] when the prefix has braces.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let prefix = prefix.into();
        if prefix.contains(['{', '}']) {
            return Err(ConfigError::new("key prefix must not contain braces"));
        }
        self.prefix = prefix;
        Ok(self)
    }

    /// How long connecting may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation may take before it is [`StoreError::Unavailable`](baton_store::StoreError::Unavailable) (a write that
    /// has not answered by then is awaited up to the write timeout).
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long the reply of a write (a rotation, a login, a revocation) is awaited before it
    /// is [`StoreError::Unavailable`](baton_store::StoreError::Unavailable) (at least the response timeout). A stalled Redis runs a
    /// write it has received when it wakes up: awaiting its reply a little longer answers the
    /// client with the outcome instead of a 503 whose retry would present a spent token.
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A fresh attempt id: a call sent again after a lost reply carries the same one, so the
/// scripts recognise their own earlier effect.
pub(crate) fn attempt_id() -> String {
    use aws_lc_rs::rand::SecureRandom;
    use std::sync::atomic::{AtomicU64, Ordering};
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        // Never a shared constant (that would make every call look like a repeat): the
        // process, the time and a counter tell one's own repeats apart well enough.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let unique = (nanos as u64)
            ^ (u64::from(std::process::id()) << 40)
            ^ FALLBACK.fetch_add(1, Ordering::Relaxed);
        bytes = unique.to_le_bytes();
    }
    format!("{:016x}", u64::from_le_bytes(bytes))
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
