#![doc = include_str!("../README.md")]
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
