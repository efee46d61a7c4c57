//! Rate limits for login and refresh: per client IP and per username, answered with 429 and
//! `Retry-After`.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use baton_core::{LimitFuture, RateLimiter, Rule};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Which limits apply. Defaults: login attempts 10/min (burst 10) per client network; failed
/// logins 5/min (burst 5) per username and client network, and 30/min (burst 30) per username
/// from browsers without its device cookie; refresh 60/min (burst 30) per client network.
///
/// # The model: nobody locks out a stranger
/// - Per-username limits count **failures** only, checked before the password and counted
///   after a wrong one (so a guesser gets the burst, plus the one that filled it).
/// - They are keyed by **username and client network** (an IPv4 address, an IPv6 /64): a
///   guessing run from one network is stopped, and it spends no other network's budget.
/// - A distributed run (many networks) meets a per-username budget shared by every browser
///   **without the user's device cookie**: a browser that logged in as that user before
///   (a signed `__Secure-device` cookie, as OWASP recommends) is never limited by failures
///   from elsewhere, so the real user keeps logging in while a botnet guesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// Login attempts per client network.
    pub login_per_ip: Option<Rule>,
    /// Failed logins per username and client network.
    pub login_per_username: Option<Rule>,
    /// Failed logins per username from browsers without its device cookie, every network
    /// together.
    pub login_failures_per_username: Option<Rule>,
    /// Refreshes per client network.
    pub refresh_per_ip: Option<Rule>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            login_per_ip: Some(Rule::new(10, 10)),
            login_per_username: Some(Rule::new(5, 5)),
            login_failures_per_username: Some(Rule::new(30, 30)),
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
            login_failures_per_username: None,
            refresh_per_ip: None,
        }
    }

    /// Sets the login attempts per client network.
    #[must_use]
    pub fn with_login_per_ip(mut self, rule: Option<Rule>) -> Self {
        self.login_per_ip = rule;
        self
    }

    /// Sets the failed logins per username and client network.
    #[must_use]
    pub fn with_login_per_username(mut self, rule: Option<Rule>) -> Self {
        self.login_per_username = rule;
        self
    }

    /// Sets the failed logins per username from browsers without its device cookie.
    #[must_use]
    pub fn with_login_failures_per_username(mut self, rule: Option<Rule>) -> Self {
        self.login_failures_per_username = rule;
        self
    }

    /// Sets the refreshes per client network.
    #[must_use]
    pub fn with_refresh_per_ip(mut self, rule: Option<Rule>) -> Self {
        self.refresh_per_ip = rule;
        self
    }
}

type Keyed = DefaultKeyedRateLimiter<String>;

/// In-process limits (the `governor` crate's GCRA), one keyed limiter per bucket and rule.
/// A key refused by [`check`](RateLimiter::check) stays refused by
/// [`peek`](RateLimiter::peek) for the wait it was given.
#[derive(Default)]
pub struct MemoryLimiter {
    limiters: Mutex<HashMap<(&'static str, Rule), Arc<Keyed>>>,
    refused: Mutex<HashMap<(&'static str, String), std::time::Instant>>,
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
        if let Err(wait) = answer {
            let mut refused = self
                .refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if refused.len() > 10_000 {
                refused.retain(|_, until| *until > now);
            }
            refused.insert((bucket, key.to_owned()), now + wait);
        }
        Box::pin(std::future::ready(answer))
    }

    fn peek<'a>(&'a self, bucket: &'static str, key: &'a str, _rule: Rule) -> LimitFuture<'a> {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let left = refused
            .get(&(bucket, key.to_owned()))
            .map(|until| until.saturating_duration_since(std::time::Instant::now()))
            .filter(|left| !left.is_zero());
        Box::pin(std::future::ready(left.map_or(Ok(()), Err)))
    }
}
