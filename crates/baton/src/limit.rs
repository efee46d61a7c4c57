//! Rate limits for login and refresh: per client IP and per username, answered with 429 and
//! `Retry-After`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

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

/// Which limits apply. Defaults: login 10/min (burst 10) per IP and 5/min (burst 5) per
/// username, refresh 60/min (burst 30) per IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Login attempts per client IP.
    pub login_per_ip: Option<Rule>,
    /// Login attempts per username (credential stuffing against one account).
    pub login_per_username: Option<Rule>,
    /// Refreshes per client IP.
    pub refresh_per_ip: Option<Rule>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            login_per_ip: Some(Rule::new(10, 10)),
            login_per_username: Some(Rule::new(5, 5)),
            refresh_per_ip: Some(Rule::new(60, 30)),
        }
    }
}

impl RateLimits {
    /// No limits at all.
    pub fn none() -> Self {
        RateLimits {
            login_per_ip: None,
            login_per_username: None,
            refresh_per_ip: None,
        }
    }
}

/// A boxed future of a limiter's answer.
pub type LimitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Duration>> + Send + 'a>>;

/// Counts requests per key. `Err(wait)` refuses one and says when to come back.
///
/// [`MemoryLimiter`] is per process; `baton::redis::RedisLimiter` shares the limits between
/// every instance, so adding instances does not multiply an attacker's budget.
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` in `bucket` (`"login-ip"`, ...) under `rule`.
    fn check<'a>(&'a self, bucket: &'static str, key: &'a str, rule: Rule) -> LimitFuture<'a>;
}

type Keyed = DefaultKeyedRateLimiter<String>;

/// In-process limits (the `governor` crate's GCRA), one keyed limiter per bucket and rule.
#[derive(Default)]
pub struct MemoryLimiter {
    limiters: Mutex<HashMap<(&'static str, Rule), Arc<Keyed>>>,
}

impl fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter").finish_non_exhaustive()
    }
}

impl MemoryLimiter {
    /// No requests counted yet.
    pub fn new() -> Self {
        MemoryLimiter::default()
    }

    fn limiter(&self, bucket: &'static str, rule: Rule) -> Arc<Keyed> {
        let mut limiters = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiters
            .entry((bucket, rule))
            .or_insert_with(|| {
                let period = Duration::from_millis(rule.interval_ms().max(1));
                let burst = NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                Arc::new(Keyed::keyed(quota))
            })
            .clone()
    }
}

impl RateLimiter for MemoryLimiter {
    fn check<'a>(&'a self, bucket: &'static str, key: &'a str, rule: Rule) -> LimitFuture<'a> {
        let limiter = self.limiter(bucket, rule);
        let answer = match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        };
        // Forget keys that are back to a full bucket, so memory follows active clients only.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(feature = "redis")]
impl RateLimiter for baton_redis::RedisGcra {
    fn check<'a>(&'a self, bucket: &'static str, key: &'a str, rule: Rule) -> LimitFuture<'a> {
        Box::pin(baton_redis::RedisGcra::check(
            self,
            bucket,
            key,
            Duration::from_millis(rule.interval_ms()),
            rule.burst,
        ))
    }
}
