//! Rate limits every limiter implements: a [`Rule`], and the [`RateLimiter`] that counts
//! requests under it (in memory in the facade, shared through Redis or PostgreSQL by their
//! crates).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A limit: `per_minute` requests a minute on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Sustained rate.
    pub per_minute: u32,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

impl Rule {
    /// `per_minute` a minute, bursts of `burst` (both at least 1).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Rule {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
        }
    }

    /// Milliseconds between two requests at the sustained rate.
    pub fn interval_ms(&self) -> u64 {
        60_000 / u64::from(self.per_minute.max(1))
    }
}

/// A boxed future of a limiter's answer.
pub type LimitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Duration>> + Send + 'a>>;

/// Counts requests per key. `Err(wait)` refuses one and says when to come back.
///
/// `baton::MemoryLimiter` is per process; `baton_redis::RedisGcra` and
/// `baton_postgres::PgLimiter` share the limits between every instance, so adding instances
/// does not multiply an attacker's budget.
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` in `bucket` (`"login-ip"`, ...) under `rule`.
    fn check<'a>(&'a self, bucket: &'static str, key: &'a str, rule: Rule) -> LimitFuture<'a>;

    /// Whether `key` is over `rule` in `bucket` now, without counting (limits that count
    /// failures only peek before and [`check`](Self::check) after a failure). By default,
    /// never over.
    fn peek<'a>(&'a self, _bucket: &'static str, _key: &'a str, _rule: Rule) -> LimitFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }
}
