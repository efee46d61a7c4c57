//! `RedisGcra`: rate limits shared by every instance, one atomic GCRA script per request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Clock, SystemClock};
use baton_store::StoreError;
use redis::Script;

use crate::{RedisConnection, RedisOptions};

/// The wait of one key's bucket, shared by both scripts: `KEYS[1]` holds the theoretical
/// arrival time; ARGV: now (ms), emission interval (ms), burst tolerance (ms). Returns the
/// milliseconds to wait when over the limit.
macro_rules! gcra_wait {
    () => {
        r#"
local now = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call("GET", KEYS[1]) or ARGV[1])
if tat < now then tat = now end
if tat - now > tolerance then
  return tat - now - tolerance
end
"#
    };
}

/// The generic cell rate algorithm on one key (see `gcra_wait`): 0 when allowed and counted,
/// else the milliseconds to wait.
const GCRA: &str = concat!(
    gcra_wait!(),
    r#"local interval = tonumber(ARGV[2])
local new_tat = tat + interval
redis.call("SET", KEYS[1], string.format("%.0f", new_tat), "PX", string.format("%.0f", new_tat - now))
return 0
"#
);

/// The same bucket, read only: 0 when one more request would be allowed, else the wait (ms).
const PEEK: &str = concat!(gcra_wait!(), "return 0\n");

/// Rate limits kept in Redis, so every instance shares one budget per key (GCRA: one key and
/// one atomic script per request, TTL = the time until the key's bucket is full again).
///
/// Works on one Redis and on a Redis Cluster (each bucket is one key). When Redis does not
/// answer, requests are let through (and the failure logged): a limiter outage must not lock
/// every user out. A check that meets a closed connection is sent once more (it may then count
/// one request twice, which errs on the side of the limit).
#[derive(Clone)]
pub struct RedisGcra {
    conn: RedisConnection,
    prefix: Arc<str>,
    script: Arc<Script>,
    peek: Arc<Script>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisGcra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGcra")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisGcra {
    /// Limits on `conn` (shared with the store and the feed); keys are
    /// `<prefix>rl:<bucket>:<key>`.
    pub fn new(conn: impl Into<RedisConnection>, prefix: &str) -> Self {
        RedisGcra {
            conn: conn.into(),
            prefix: Arc::from(prefix),
            script: Arc::new(Script::new(GCRA)),
            peek: Arc::new(Script::new(PEEK)),
            clock: Arc::new(SystemClock),
        }
    }

    /// Connects to `url` (a [`RedisConnection`] of its own: use [`new`](Self::new) to share
    /// one); keys are `<prefix>rl:<bucket>:<key>`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let conn = RedisConnection::connect(url, &RedisOptions::new()).await?;
        Ok(Self::new(conn, prefix))
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether one more request of `key` in `bucket` would be refused, without counting it.
    /// `Err(wait)`: it would. Let through when Redis does not answer.
    pub async fn peek(
        &self,
        bucket: &str,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<(), Duration> {
        self.run(&self.peek, bucket, key, interval, burst).await
    }

    /// Counts one request of `key` in `bucket`: on average one per `interval`, bursts of
    /// `burst`. `Err(wait)` refuses it.
    pub async fn check(
        &self,
        bucket: &str,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<(), Duration> {
        self.run(&self.script, bucket, key, interval, burst).await
    }

    async fn run(
        &self,
        script: &Script,
        bucket: &str,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<(), Duration> {
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let tolerance = interval_ms.saturating_mul(u64::from(burst.max(1)) - 1);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(format!("{}rl:{bucket}:{key}", self.prefix))
            .arg(self.clock.now_millis())
            .arg(interval_ms)
            .arg(tolerance);
        let invocation = &invocation;
        let answer = self
            .conn
            .read("rate limit", move |mut conn| async move {
                invocation.invoke_async::<u64>(&mut conn).await
            })
            .await;
        match answer {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(Duration::from_millis(wait_ms)),
            Err(_) => {
                tracing::error!(target: "baton::redis", "rate limiter unavailable; request let through");
                Ok(())
            }
        }
    }
}

impl baton_core::RateLimiter for RedisGcra {
    fn check<'a>(
        &'a self,
        bucket: &'static str,
        key: &'a str,
        rule: baton_core::Rule,
    ) -> baton_core::LimitFuture<'a> {
        Box::pin(RedisGcra::check(
            self,
            bucket,
            key,
            Duration::from_millis(rule.interval_ms()),
            rule.burst,
        ))
    }

    fn peek<'a>(
        &'a self,
        bucket: &'static str,
        key: &'a str,
        rule: baton_core::Rule,
    ) -> baton_core::LimitFuture<'a> {
        Box::pin(RedisGcra::peek(
            self,
            bucket,
            key,
            Duration::from_millis(rule.interval_ms()),
            rule.burst,
        ))
    }
}
