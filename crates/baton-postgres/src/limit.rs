//! [`PgLimiter`]: rate limits shared through PostgreSQL, one statement per check.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::{Clock, LimitFuture, RateLimiter, Rule, SystemClock};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

use crate::PostgresError;
use crate::store::{at, migrate, valid_prefix};

/// How often (ms) at most a limiter sweeps full buckets away.
const SWEEP_EVERY_MS: u64 = 60_000;

struct Sql {
    check: Arc<str>,
    peek: Arc<str>,
    sweep: Arc<str>,
}

/// Rate limits kept in PostgreSQL, so every instance shares one budget per key: the generic
/// cell rate algorithm in one atomic statement per request (an upsert that counts the request
/// only when the bucket allows it, and the wait otherwise), as an alternative to
/// `baton_redis::RedisGcra` for deployments without Redis.
///
/// When the database does not answer within the timeout (250 ms by default), requests are let
/// through and the failure logged: a limiter outage must not lock every user out. Full buckets
/// are removed a batch at a time, at most once a minute.
///
/// ```no_run
/// use baton_postgres::PgLimiter;
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), baton_postgres::PostgresError> {
/// let limiter = PgLimiter::new(pool, "baton_").await?;
/// // Give it to `Baton::builder(..).rate_limiter(limiter)`.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgLimiter {
    pool: PgPool,
    sql: Arc<Sql>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    last_sweep: Arc<AtomicU64>,
}

impl fmt::Debug for PgLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLimiter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgLimiter {
    /// Limits on `pool` (shared with the store and the feed), in `{prefix}limits`; applies the
    /// migrations.
    ///
    /// # Errors
    /// [`PostgresError`] when the prefix is not an identifier or the migrations fail.
    pub async fn new(pool: PgPool, prefix: &str) -> Result<Self, PostgresError> {
        if !valid_prefix(prefix) {
            return Err(PostgresError::InvalidPrefix(prefix.to_owned()));
        }
        migrate(&pool, prefix).await?;
        let p = |sql: &str| -> Arc<str> { Arc::from(sql.replace("baton_", prefix)) };
        // $1 bucket, $2 key, $3 now, $4 interval (ms), $5 tolerance (ms).
        let sql = Sql {
            check: p("WITH up AS (\
                INSERT INTO baton_limits AS l (bucket, key, tat) \
                VALUES ($1, $2, $3 + $4 * interval '1 millisecond') \
                ON CONFLICT (bucket, key) DO UPDATE \
                SET tat = greatest(l.tat, $3) + $4 * interval '1 millisecond' \
                WHERE greatest(l.tat, $3) - $3 <= $5 * interval '1 millisecond' \
                RETURNING 0::bigint AS wait_ms) \
                SELECT wait_ms FROM up \
                UNION ALL \
                SELECT greatest((extract(epoch FROM greatest(l.tat, $3) - $3) * 1000)::bigint \
                    - $5, 1) \
                FROM baton_limits AS l \
                WHERE l.bucket = $1 AND l.key = $2 AND NOT EXISTS (SELECT 1 FROM up)"),
            // $1 bucket, $2 key, $3 now, $4 tolerance (ms).
            peek: p("SELECT coalesce((\
                SELECT greatest((extract(epoch FROM greatest(tat, $3) - $3) * 1000)::bigint \
                    - $4, 0) \
                FROM baton_limits WHERE bucket = $1 AND key = $2), 0)"),
            sweep: p("DELETE FROM baton_limits WHERE ctid IN (\
                SELECT ctid FROM baton_limits WHERE tat < $1 LIMIT 1000)"),
        };
        Ok(PgLimiter {
            pool,
            sql: Arc::new(sql),
            clock: Arc::new(SystemClock),
            timeout: Duration::from_millis(250),
            last_sweep: Arc::new(AtomicU64::new(SystemClock.now_millis())),
        })
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.last_sweep = Arc::new(AtomicU64::new(clock.now_millis()));
        self.clock = clock;
        self
    }

    /// The longest a check waits for the database before letting the request through.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Removes at most 1,000 full buckets; returns how many.
    ///
    /// # Errors
    /// The database's error.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        let now = at(self.clock.now_millis());
        sqlx::query(AssertSqlSafe(self.sql.sweep.clone()))
            .bind(now)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
    }

    fn maybe_sweep(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let limiter = self.clone();
        tokio::spawn(async move {
            if let Err(e) = limiter.sweep().await {
                tracing::debug!(target: "baton::postgres", error = %e, "limit sweep failed");
            }
        });
    }

    async fn wait_ms(
        &self,
        what: &str,
        query: impl Future<Output = Result<Option<i64>, sqlx::Error>>,
    ) -> Result<(), Duration> {
        match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(Some(0))) => Ok(()),
            Ok(Ok(Some(ms))) => Err(Duration::from_millis(u64::try_from(ms).unwrap_or(1).max(1))),
            // A conflicting row this statement could not see yet: refused, briefly.
            Ok(Ok(None)) => Err(Duration::from_millis(1)),
            Ok(Err(e)) => {
                tracing::error!(target: "baton::postgres", what, error = %e, "rate limiter unavailable; request let through");
                Ok(())
            }
            Err(_) => {
                tracing::error!(target: "baton::postgres", what, "rate limiter did not answer in time; request let through");
                Ok(())
            }
        }
    }
}

fn tolerance_ms(rule: Rule) -> i64 {
    let interval = rule.interval_ms().max(1);
    i64::try_from(interval.saturating_mul(u64::from(rule.burst.max(1)) - 1)).unwrap_or(i64::MAX)
}

impl RateLimiter for PgLimiter {
    fn check<'a>(&'a self, bucket: &'static str, key: &'a str, rule: Rule) -> LimitFuture<'a> {
        Box::pin(async move {
            let now = self.clock.now_millis();
            self.maybe_sweep(now);
            let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.sql.check.clone()))
                .bind(bucket)
                .bind(key)
                .bind(at(now))
                .bind(i64::try_from(rule.interval_ms().max(1)).unwrap_or(i64::MAX))
                .bind(tolerance_ms(rule))
                .fetch_optional(&self.pool);
            self.wait_ms("rate limit", query).await
        })
    }

    fn peek<'a>(&'a self, bucket: &'static str, key: &'a str, rule: Rule) -> LimitFuture<'a> {
        Box::pin(async move {
            let now = self.clock.now_millis();
            let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.sql.peek.clone()))
                .bind(bucket)
                .bind(key)
                .bind(at(now))
                .bind(tolerance_ms(rule))
                .fetch_optional(&self.pool);
            self.wait_ms("rate limit peek", query).await
        })
    }
}
