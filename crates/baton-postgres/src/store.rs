//! [`PostgresStore`]: the pool, the prefixed statements, retries on a fresh connection, and the
//! row codec.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_core::{Clock, SystemClock};
use baton_store::{
    Authentication, Created, Device, Login, NetworkChange, Policy, REVOKED_TOMBSTONE_MS,
    RefreshKeys, RefreshStore, ReuseDetection, RotateContext, RotateError, Rotation, RotationKind,
    Session, SessionId, SessionRef, StoreError, UserAgentChange, check_login,
};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row as _};
use time::OffsetDateTime;

/// The embedded migrations, written with the prefix `baton_`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a store could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The table prefix is not `[a-z_][a-z0-9_]*` of at most 40 characters.
    #[error("table prefix {0:?}: use a-z, 0-9 and _ (not first), up to 40 characters")]
    InvalidPrefix(String),
    /// The database could not be reached (or the URL is not one).
    #[error("PostgreSQL: cannot connect")]
    Connect(#[source] sqlx::Error),
    /// The migrations could not be applied.
    #[error("PostgreSQL: the migrations could not be applied")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Settings of a [`PostgresStore`].
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    prefix: String,
    max_connections: u32,
    timeout: Duration,
    sweep_every: Duration,
    sweep_batch: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            prefix: "baton_".to_owned(),
            max_connections: 16,
            timeout: Duration::from_secs(2),
            sweep_every: Duration::from_secs(60),
            sweep_batch: 1_000,
        }
    }
}

impl PostgresOptions {
    /// Tables `baton_sessions` and the like, 16 connections, 2 s per operation (retries
    /// included), a sweep of at most 1,000 dead rows a minute.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of every table, index and function (`baton_`): several stores (or
    /// applications) in one database each under their own.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The pool's size ([`connect`](PostgresStore::connect) only).
    #[must_use]
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The longest an operation may take, retries on a fresh connection included; past it
    /// the answer is [`StoreError::Unavailable`]. Also the server-side `statement_timeout` of
    /// the connections [`connect`](PostgresStore::connect) opens.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(50));
        self
    }

    /// How often at most (per store) dead rows are swept, and how many one sweep removes.
    #[must_use]
    pub fn with_sweep(mut self, every: Duration, batch: u32) -> Self {
        self.sweep_every = every;
        self.sweep_batch = batch.max(1);
        self
    }
}

pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 40
        && !prefix.starts_with(|c: char| c.is_ascii_digit())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The statements, with the prefix in place.
struct Statements {
    create: Arc<str>,
    rotate: Arc<str>,
    get: Arc<str>,
    list: Arc<str>,
    revoke: Arc<str>,
    revoke_all: Arc<str>,
    reauth: Arc<str>,
    sweep: Arc<str>,
}

/// The columns a session is read from.
const COLUMNS: &str = "id, user_id, generation, created_at, last_used_at, expires_at, \
    absolute_expires_at, ip, user_agent, device_name, device_id, network_changed_at, \
    auth_time, amr, acr, dpop_jkt";

impl Statements {
    fn new(prefix: &str) -> Self {
        let p = |sql: &str| -> Arc<str> { Arc::from(sql.replace("baton_", prefix)) };
        let live = "revoked_until IS NULL AND expires_at > $2";
        Statements {
            create: p("SELECT evicted, replaced FROM baton_create(\
                $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::cidr, $11, $12, $13, $14, $15, $16, $17)"),
            rotate: p(&format!(
                "SELECT r.outcome, r.network_changed, {} \
                 FROM baton_rotate($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::cidr, $14, \
                 $15) \
                 AS r",
                COLUMNS
                    .split(", ")
                    .map(|c| format!("(r.session).{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            get: p(&format!(
                "SELECT {COLUMNS} FROM baton_sessions WHERE id = $1 AND {live}"
            )),
            list: p(&format!(
                "SELECT {COLUMNS} FROM baton_sessions WHERE user_id = $1 AND {live} \
                 ORDER BY last_used_at DESC, created_at DESC"
            )),
            // Revoked now, or by this very call's first try (a lost reply).
            revoke: p(&format!(
                "WITH done AS (\
                    UPDATE baton_sessions SET revoked_until = least(expires_at, $2 + $4 * \
                    interval '1 millisecond'), outcome = 'revoked', attempt = $5 \
                    WHERE id = $1 AND user_id = $3 AND {live} RETURNING id) \
                 SELECT EXISTS (SELECT 1 FROM done) OR EXISTS (\
                    SELECT 1 FROM baton_sessions WHERE id = $1 AND user_id = $3 \
                    AND attempt = $5 AND outcome = 'revoked')"
            )),
            revoke_all: p(&format!(
                "WITH done AS (\
                    UPDATE baton_sessions SET revoked_until = least(expires_at, $2 + $3 * \
                    interval '1 millisecond'), outcome = 'revoked_all', attempt = $4 \
                    WHERE user_id = $1 AND {live} RETURNING id) \
                 SELECT id FROM done UNION SELECT id FROM baton_sessions \
                    WHERE user_id = $1 AND attempt = $4 AND outcome = 'revoked_all'"
            )),
            reauth: p(&format!(
                "UPDATE baton_sessions SET auth_time = $2, amr = $4, acr = $5 \
                 WHERE id = $1 AND user_id = $3 AND {live} RETURNING {COLUMNS}"
            )),
            sweep: p("DELETE FROM baton_sessions WHERE id IN (\
                SELECT id FROM baton_sessions \
                WHERE coalesce(revoked_until, expires_at) <= $1 \
                ORDER BY coalesce(revoked_until, expires_at) \
                LIMIT $2 FOR UPDATE SKIP LOCKED)"),
        }
    }
}

/// Refresh-token sessions in PostgreSQL. Clones share one pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    keys: RefreshKeys,
    policy: Policy,
    clock: Arc<dyn Clock>,
    options: Arc<PostgresOptions>,
    sql: Arc<Statements>,
    /// When the last sweep started, in the store's clock (ms).
    last_sweep: Arc<AtomicU64>,
    /// The connections the store's statements run on.
    held: Arc<Held>,
    /// The server's clock minus this host's, in ms (measured at start, and again after a
    /// write reached the server late), for deadlines.
    skew_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn corrupt(what: &'static str) -> StoreError {
    tracing::error!(target: "baton::postgres", what, "stored session data is not readable");
    StoreError::Corrupted(what)
}

/// `true` for a failure of the connection rather than of the statement: worth sending again
/// on a fresh connection (the write's attempt id makes that safe).
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Connection exceptions, and the server ending the session (an administrator's
            // pg_terminate_backend, a shutdown, a crash restart).
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// `true` for an error a repeat may clear: a lost connection, a deadlock or serialization
/// failure chosen by the server (every write carries its attempt id, so repeating is safe).
fn retryable(e: &sqlx::Error) -> bool {
    connection_lost(e)
        || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| matches!(&*c, "40P01" | "40001")))
}

/// `true` when a write reached the server after its deadline (the clocks may have moved).
fn late(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().as_deref() == Some("BT001"),
        _ => false,
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::unavailable(e)
}

pub(crate) fn at(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn policy_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A random attempt id.
fn attempt_id() -> Result<i64, StoreError> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Internal("random generator failed"))?;
    Ok(i64::from_be_bytes(bytes))
}

/// The network of `ip` under `policy`, as a `cidr`.
fn network(policy: &Policy, ip: Option<IpAddr>) -> Option<ipnet::IpNet> {
    let net = policy.network_of(ip?);
    net.to_string().parse().ok()
}

/// A session from a row of [`COLUMNS`].
fn decode(row: &PgRow) -> Result<Session, StoreError> {
    let bad = |_| corrupt("a column is not of its type");
    let id: Vec<u8> = row.try_get("id").map_err(bad)?;
    let id = SessionId::from_bytes(&id).map_err(|_| corrupt("bad session id"))?;
    let user_id: String = row.try_get("user_id").map_err(bad)?;
    let generation: i64 = row.try_get("generation").map_err(bad)?;
    let time = |name: &str| -> Result<u64, StoreError> {
        row.try_get::<OffsetDateTime, _>(name).map(ms).map_err(bad)
    };
    let text = |name: &str| -> Result<Option<String>, StoreError> {
        row.try_get::<Option<String>, _>(name).map_err(bad)
    };
    let ip: Option<IpAddr> = row.try_get("ip").map_err(bad)?;
    let mut device = Device::new(text("user_agent")?.as_deref(), ip);
    if let Some(name) = text("device_name")? {
        device = device.with_name(name);
    }
    if let Some(device_id) = text("device_id")? {
        device = device.with_id(device_id);
    }
    let amr: Vec<String> = row.try_get("amr").map_err(bad)?;
    let mut authentication = Authentication::new(amr);
    if let Some(acr) = text("acr")? {
        authentication = authentication.with_acr(acr);
    }
    let changed: Option<OffsetDateTime> = row.try_get("network_changed_at").map_err(bad)?;
    Ok(Session::new(
        id,
        user_id,
        device,
        time("created_at")?,
        time("last_used_at")?,
        u64::try_from(generation).map_err(|_| corrupt("negative generation"))?,
        time("expires_at")?,
        time("absolute_expires_at")?,
    )
    .with_authentication(time("auth_time")?, authentication)
    .with_network_changed_at(changed.map(ms))
    .with_dpop_jkt(text("dpop_jkt")?))
}

impl PostgresStore {
    /// Connects a pool of its own to `url` (`postgres://user@host/db`), each connection with
    /// `statement_timeout` set to the options' timeout, and applies the migrations.
    ///
    /// # Errors
    /// [`PostgresError`].
    pub async fn connect(
        url: &str,
        keys: RefreshKeys,
        policy: Policy,
        options: PostgresOptions,
    ) -> Result<Self, PostgresError> {
        if !valid_prefix(&options.prefix) {
            return Err(PostgresError::InvalidPrefix(options.prefix));
        }
        let pool = connect_pool(url, &options).await?;
        Self::new(pool, keys, policy, options).await
    }

    /// Sessions on `pool`, after applying the migrations. The store holds the connections it
    /// uses between its statements (up to the pool's size, each given back after 10 s
    /// unused): give it a pool of its own, not the one the revocation feed, the limiter or the
    /// application's own queries use, which could then wait for a connection.
    ///
    /// # Errors
    /// [`PostgresError`].
    pub async fn new(
        pool: PgPool,
        keys: RefreshKeys,
        policy: Policy,
        options: PostgresOptions,
    ) -> Result<Self, PostgresError> {
        migrate(&pool, &options.prefix).await?;
        let skew_ms = skew(&pool).await.map_err(PostgresError::Connect)?;
        Ok(PostgresStore {
            held: Arc::new(Held::new(pool.clone())),
            pool,
            keys,
            policy,
            clock: Arc::new(SystemClock),
            sql: Arc::new(Statements::new(&options.prefix)),
            options: Arc::new(options),
            // The first sweep one period after the start.
            last_sweep: Arc::new(AtomicU64::new(SystemClock.now_millis())),
            skew_ms: Arc::new(std::sync::atomic::AtomicI64::new(skew_ms)),
        })
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.last_sweep = Arc::new(AtomicU64::new(clock.now_millis()));
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server-clock deadline of a write starting now: past it, the server refuses it.
    fn deadline(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let timeout =
            time::Duration::try_from(self.options.timeout).unwrap_or(time::Duration::ZERO);
        now + timeout + time::Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Measures the clocks' difference again, in the background.
    fn remeasure_skew(&self) {
        let (pool, skew_ms) = (self.pool.clone(), self.skew_ms.clone());
        tokio::spawn(async move {
            if let Ok(Ok(measured)) =
                tokio::time::timeout(Duration::from_secs(2), skew(&pool)).await
            {
                skew_ms.store(measured, Ordering::Relaxed);
            }
        });
    }

    /// Runs `op` on the pool, again on a fresh connection when the connection failed under
    /// it, until the options' timeout: then [`StoreError::Unavailable`].
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = (Lease, Result<T, sqlx::Error>)>,
    {
        let deadline = Instant::now() + self.options.timeout;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                let lease = self.held.lease().await?;
                let (lease, result) = op(lease).await;
                match &result {
                    // Lost: so are the others held since (a restart, a proxy that dropped
                    // them all); they go back to the pool's own checks.
                    Err(e) if connection_lost(e) => {
                        drop(lease);
                        self.held.forget_idle();
                    }
                    // Fine (a refusal, a timeout of the statement): kept.
                    _ => lease.release(),
                }
                result
            };
            let error = match tokio::time::timeout(left, attempt).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(_) => {
                    tracing::warn!(target: "baton::postgres", what, tries, "timed out");
                    return Err(StoreError::unavailable(format!(
                        "PostgreSQL did not answer {what} in {:?}",
                        self.options.timeout
                    )));
                }
            };
            if let sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) = error {
                return Err(corrupt("a column is not of its type"));
            }
            if late(&error) {
                // The server's clock or this host's moved since the skew was measured, or the
                // server is that slow: measure again for the next writes.
                self.remeasure_skew();
            }
            if !retryable(&error) || tries >= 4 || Instant::now() >= deadline {
                tracing::warn!(target: "baton::postgres", what, tries, error = %error, "failed");
                return Err(unavailable(error));
            }
            tracing::debug!(target: "baton::postgres", what, tries, error = %error, "connection lost; sending again");
        }
    }

    /// Removes at most `limit` dead rows (expired sessions, tombstones past their time);
    /// returns how many. [`create`](RefreshStore::create) runs one in the background at most
    /// once per the options' sweep period.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn sweep(&self, limit: u32) -> Result<u64, StoreError> {
        let now = at(self.clock.now_millis());
        let sql = self.sql.sweep.clone();
        self.run("sweep", |mut lease| {
            let sql = sql.clone();
            async move {
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(now)
                    .bind(i64::from(limit))
                    .execute(lease.conn())
                    .await
                    .map(|done| done.rows_affected());
                (lease, r)
            }
        })
        .await
    }

    /// Starts a sweep in the background when the last one is older than the sweep period.
    fn maybe_sweep(&self, now: u64) {
        let every = u64::try_from(self.options.sweep_every.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < every
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.clone();
        let batch = self.options.sweep_batch;
        tokio::spawn(async move {
            // A whole batch removed: more may wait (a busy site makes more than a batch a
            // period). At most 100 batches a period, a short pause between them.
            for _ in 0..100 {
                match store.sweep(batch).await {
                    Ok(n) if n >= u64::from(batch) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(n) => {
                        tracing::debug!(target: "baton::postgres", removed = n, "swept");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(target: "baton::postgres", error = %e, "sweep failed");
                        break;
                    }
                }
            }
        });
    }

    async fn sessions(
        &self,
        what: &'static str,
        sql: &Arc<str>,
        binds: impl Fn(
            sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = self
            .run(what, |mut lease| {
                let query = binds(sqlx::query(AssertSqlSafe(sql.clone())));
                async move {
                    let r = query.fetch_all(lease.conn()).await;
                    (lease, r)
                }
            })
            .await?;
        rows.iter().map(decode).collect()
    }
}

/// The store's own hold on pool connections: each statement takes one and gives it back
/// without the pool's check of a released connection (a round trip of its own, which would
/// double the server's work per rotation). A connection that failed, or whose statement was
/// abandoned midway, goes back to the pool instead, which checks it and closes it if broken.
pub(crate) struct Held {
    pool: PgPool,
    permits: Arc<tokio::sync::Semaphore>,
    /// Idle connections, the most recently used last, with when they were given back.
    idle: std::sync::Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
}

/// A connection idle longer than this goes back to the pool (its idle timeout, lifetime and
/// checks apply there; a connection a proxy dropped while idle is found by its check).
const HELD_IDLE: Duration = Duration::from_secs(10);

impl Held {
    pub(crate) fn new(pool: PgPool) -> Self {
        let size = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
        Held {
            pool,
            permits: Arc::new(tokio::sync::Semaphore::new(size.max(1))),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Gives every idle connection back to the pool (after one was found lost).
    pub(crate) fn forget_idle(&self) {
        let stale: Vec<_> = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        drop(stale);
    }

    /// A connection: an idle one of the store's, or a new one from the pool.
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<Lease, sqlx::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // The stalest first: back to the pool.
            let now = Instant::now();
            let stale = idle
                .iter()
                .take_while(|(_, since)| now.duration_since(*since) > HELD_IDLE)
                .count();
            drop(idle.drain(..stale));
            idle.pop().map(|(conn, _)| conn)
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Lease {
            conn: Some(conn),
            held: self.clone(),
            _permit: permit,
        })
    }
}

/// One statement's connection: [`release`](Self::release) it when the statement finished;
/// dropped otherwise, it goes back to the pool's own checks.
pub(crate) struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    held: Arc<Held>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Lease {
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    /// Gives the connection back for the next statement.
    pub(crate) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.held
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((conn, Instant::now()));
        }
    }
}

/// A pool for `url` as the options say: each connection with `statement_timeout` set to the
/// timeout and the application name `baton`.
pub(crate) async fn connect_pool(
    url: &str,
    options: &PostgresOptions,
) -> Result<PgPool, PostgresError> {
    let connect: PgConnectOptions = url.parse().map_err(PostgresError::Connect)?;
    let timeout_ms = options.timeout.as_millis().to_string();
    let connect = connect
        .options([("statement_timeout", timeout_ms.as_str())])
        .application_name("baton");
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.timeout)
        // A connection closed while idle is found by the first statement on it, which is then
        // sent again on a fresh one: no ping before every use.
        .test_before_acquire(false)
        .connect_with(connect)
        .await
        .map_err(PostgresError::Connect)
}

/// The server's clock minus this host's, in ms: the server's time read halfway through one
/// round trip.
async fn skew(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let before = OffsetDateTime::now_utc();
    let server: OffsetDateTime = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let after = OffsetDateTime::now_utc();
    let midpoint = before + (after - before) / 2;
    let skew: time::Duration = server - midpoint;
    Ok(i64::try_from(skew.whole_milliseconds()).unwrap_or(0))
}

/// Applies the embedded migrations under `prefix` (their own history table:
/// `{prefix}migrations`).
///
/// # Errors
/// [`PostgresError`].
pub(crate) async fn migrate(pool: &PgPool, prefix: &str) -> Result<(), PostgresError> {
    if !valid_prefix(prefix) {
        return Err(PostgresError::InvalidPrefix(prefix.to_owned()));
    }
    let migrations: Vec<sqlx::migrate::Migration> = MIGRATOR
        .iter()
        .map(|m| {
            sqlx::migrate::Migration::new(
                m.version,
                m.description.clone(),
                m.migration_type,
                sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
                    m.sql.as_str().replace("baton_", prefix),
                )),
                m.no_tx,
            )
        })
        .collect();
    let mut migrator = sqlx::migrate::Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{prefix}migrations"));
    migrator.run(pool).await.map_err(PostgresError::Migrate)
}

impl RefreshStore for PostgresStore {
    fn is_shared(&self) -> bool {
        true
    }

    fn keys(&self) -> &RefreshKeys {
        &self.keys
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }

    async fn create(
        &self,
        user_id: &str,
        login: impl Into<Login> + Send,
    ) -> Result<Created, StoreError> {
        let login = login.into();
        check_login(user_id, &login)?;
        let now = self.clock.now_millis();
        self.maybe_sweep(now);
        let id = SessionId::generate(user_id)?;
        let absolute =
            now.saturating_add(policy_ms(self.policy.absolute_lifetime()).unsigned_abs());
        let expires = now
            .saturating_add(policy_ms(self.policy.idle_lifetime()).unsigned_abs())
            .min(absolute);
        let device = login.device.sanitized();
        let attempt = attempt_id()?;
        let max = i64::try_from(self.policy.max_sessions_per_user()).unwrap_or(i64::MAX);
        let net = network(&self.policy, device.ip);
        let sql = self.sql.create.clone();
        let deadline = self.deadline();
        let user = user_id.to_owned();
        let session = Session::new(
            id,
            user.clone(),
            device.clone(),
            now,
            now,
            0,
            expires,
            absolute,
        )
        .with_authentication(now, login.authentication.clone())
        .with_dpop_jkt(login.dpop_jkt.clone());
        let (evicted, replaced): (Vec<Vec<u8>>, Vec<Vec<u8>>) = self
            .run("create", |mut lease| {
                let query = sqlx::query_as(AssertSqlSafe(sql.clone()))
                    .bind(id.as_bytes().to_vec())
                    .bind(user.clone())
                    .bind(at(now))
                    .bind(at(expires))
                    .bind(at(absolute))
                    .bind(device.ip)
                    .bind(device.user_agent.clone())
                    .bind(device.name.clone())
                    .bind(device.id.clone())
                    .bind(net)
                    .bind(login.authentication.amr.clone())
                    .bind(login.authentication.acr.clone())
                    .bind(login.dpop_jkt.clone())
                    .bind(max)
                    .bind(i64::try_from(REVOKED_TOMBSTONE_MS).unwrap_or(i64::MAX))
                    .bind(attempt)
                    .bind(deadline);
                async move {
                    let r = query.fetch_one(lease.conn()).await;
                    (lease, r)
                }
            })
            .await?;
        let ids = |raw: Vec<Vec<u8>>| -> Result<Vec<SessionId>, StoreError> {
            raw.iter()
                .map(|b| SessionId::from_bytes(b).map_err(|_| corrupt("bad session id")))
                .collect()
        };
        Ok(Created::new(session, self.keys.mint(&id, 0), ids(evicted)?)
            .with_replaced(ids(replaced)?))
    }

    async fn rotate(&self, token: &str, context: RotateContext) -> Result<Rotation, RotateError> {
        let verified = self.keys.verify(token).ok_or(RotateError::Invalid)?;
        let id = verified.session_id;
        let now = self.clock.now_millis();
        let attempt = attempt_id()?;
        let generation = i64::try_from(verified.generation).map_err(|_| RotateError::Invalid)?;
        let ua_revoke = self.policy.user_agent_change() == UserAgentChange::Revoke;
        let network_policy = match self.policy.network_change() {
            NetworkChange::Revoke => "revoke",
            NetworkChange::Flag => "flag",
            _ => "record",
        };
        let after_use = self.policy.reuse_detection() == ReuseDetection::AfterSuccessorUse;
        let user_agent = context.stored_user_agent();
        let net = network(&self.policy, context.ip);
        let sql = self.sql.rotate.clone();
        let deadline = self.deadline();
        let row = self
            .run("rotate", |mut lease| {
                let query = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(id.as_bytes().to_vec())
                    .bind(generation)
                    .bind(at(now))
                    .bind(policy_ms(self.policy.grace_window()))
                    .bind(policy_ms(self.policy.idle_lifetime()))
                    .bind(ua_revoke)
                    .bind(user_agent.clone())
                    .bind(context.ip)
                    .bind(i64::try_from(REVOKED_TOMBSTONE_MS).unwrap_or(i64::MAX))
                    .bind(after_use)
                    .bind(attempt)
                    .bind(network_policy)
                    .bind(net)
                    .bind(context.dpop_jkt.clone())
                    .bind(deadline);
                async move {
                    let r = query.fetch_one(lease.conn()).await;
                    (lease, r)
                }
            })
            .await?;
        let outcome: String = row.try_get("outcome").map_err(|_| corrupt("no outcome"))?;
        match outcome.as_str() {
            "rotated" | "graced" => {
                let session = decode(&row)?;
                let kind = if outcome == "rotated" {
                    RotationKind::Rotated
                } else {
                    RotationKind::Graced
                };
                let moved: bool = row.try_get("network_changed").unwrap_or(false);
                let token = self.keys.mint(&id, session.generation);
                Ok(Rotation::new(kind, token, session).with_network_changed(moved))
            }
            refusal => Err(RotateError::refused(refusal, || {
                let user_id: String = row.try_get("user_id").map_err(|_| corrupt("no user id"))?;
                Ok(SessionRef { id, user_id })
            })
            .unwrap_or_else(|| RotateError::Store(corrupt("unexpected outcome")))),
        }
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = at(self.clock.now_millis());
        let found = self
            .sessions("get", &self.sql.get, |q| {
                q.bind(id.as_bytes().to_vec()).bind(now)
            })
            .await?;
        Ok(found.into_iter().next())
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let now = at(self.clock.now_millis());
        let user = user_id.to_owned();
        self.sessions("list", &self.sql.list, |q| q.bind(user.clone()).bind(now))
            .await
    }

    async fn revoke(&self, user_id: &str, id: SessionId) -> Result<bool, StoreError> {
        let now = at(self.clock.now_millis());
        let attempt = attempt_id()?;
        let sql = self.sql.revoke.clone();
        let user = user_id.to_owned();
        self.run("revoke", |mut lease| {
            let query = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                .bind(id.as_bytes().to_vec())
                .bind(now)
                .bind(user.clone())
                .bind(i64::try_from(REVOKED_TOMBSTONE_MS).unwrap_or(i64::MAX))
                .bind(attempt);
            async move {
                let r = query.fetch_one(lease.conn()).await;
                (lease, r)
            }
        })
        .await
    }

    async fn reauthenticate(
        &self,
        user_id: &str,
        id: SessionId,
        authentication: Authentication,
    ) -> Result<Option<Session>, StoreError> {
        authentication.check()?;
        let now = at(self.clock.now_millis());
        let user = user_id.to_owned();
        let found = self
            .sessions("reauthenticate", &self.sql.reauth, |q| {
                q.bind(id.as_bytes().to_vec())
                    .bind(now)
                    .bind(user.clone())
                    .bind(authentication.amr.clone())
                    .bind(authentication.acr.clone())
            })
            .await?;
        Ok(found.into_iter().next())
    }

    async fn revoke_all(&self, user_id: &str) -> Result<Vec<SessionId>, StoreError> {
        let now = at(self.clock.now_millis());
        let attempt = attempt_id()?;
        let sql = self.sql.revoke_all.clone();
        let user = user_id.to_owned();
        let raw: Vec<Vec<u8>> = self
            .run("revoke all", |mut lease| {
                let query = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                    .bind(user.clone())
                    .bind(now)
                    .bind(i64::try_from(REVOKED_TOMBSTONE_MS).unwrap_or(i64::MAX))
                    .bind(attempt);
                async move {
                    let r = query.fetch_all(lease.conn()).await;
                    (lease, r)
                }
            })
            .await?;
        raw.iter()
            .map(|b| SessionId::from_bytes(b).map_err(|_| corrupt("bad session id")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_identifiers_only() {
        for good in ["baton_", "app1_", "x"] {
            assert!(valid_prefix(good), "{good}");
        }
        for bad in [
            "",
            "1a_",
            "Baton_",
            "a-b",
            "a; DROP TABLE x; --",
            "a b",
            &"a".repeat(41),
        ] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn every_statement_carries_the_prefix() {
        let sql = Statements::new("app_");
        for s in [
            &sql.create,
            &sql.rotate,
            &sql.get,
            &sql.list,
            &sql.revoke,
            &sql.sweep,
        ] {
            assert!(!s.contains("baton_"), "{s}");
            assert!(s.contains("app_"), "{s}");
        }
    }

    #[test]
    fn times_keep_their_milliseconds() {
        for t in [0, 1, 1_800_000_000_123, 4_102_444_800_999] {
            assert_eq!(ms(at(t)), t);
        }
    }
}
