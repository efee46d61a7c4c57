//! [`PgRevocationFeed`]: revocations shared between instances through PostgreSQL, without
//! Redis.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{
    CheckRevocation, Clock, DisconnectPolicy, FeedState, FeedStatus, Revocation, RevocationList,
    Revoke, RevokeError, RevokeFuture, SystemClock, TokenIdentity,
};
use baton_store::StoreError;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{AssertSqlSafe, Row as _};

use crate::store::{connect_pool, migrate, valid_prefix};
use crate::{PostgresError, PostgresOptions};

/// Rows read per statement.
const PAGE: i64 = 512;

/// Settings of a [`PgRevocationFeed`].
#[derive(Clone, Debug)]
pub struct PgFeedOptions {
    prefix: String,
    keep: Duration,
    policy: DisconnectPolicy,
    poll: Duration,
    timeout: Duration,
}

impl PgFeedOptions {
    /// Revocations are kept for `keep`: the longest an access token lives, leeway included.
    /// Table prefix `baton_`, [`DisconnectPolicy::KeepServing`], the log read every 250 ms
    /// (and at once when another instance writes), 2 s per write.
    pub fn new(keep: Duration) -> Self {
        PgFeedOptions {
            prefix: "baton_".to_owned(),
            keep,
            policy: DisconnectPolicy::KeepServing,
            poll: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
        }
    }

    /// The table and channel prefix (the store's, when they share a database).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do while the log cannot be read.
    #[must_use]
    pub fn with_disconnect_policy(mut self, policy: DisconnectPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How often the log is read for what a notification did not announce (10 ms to 1 s):
    /// the longest a revocation takes to reach an instance whose listening connection
    /// silently lost it.
    #[must_use]
    pub fn with_poll_period(mut self, period: Duration) -> Self {
        self.poll = period.clamp(Duration::from_millis(10), Duration::from_secs(1));
        self
    }
}

struct Sql {
    record: Arc<str>,
    read: Arc<str>,
    gaps: Arc<str>,
    newest: Arc<str>,
    trim: Arc<str>,
}

struct Shared {
    pool: PgPool,
    /// The revocations known here, those waiting for a retry, and when the log was read.
    state: FeedState,
    sql: Sql,
    channel: String,
    poll: Duration,
    timeout: Duration,
    /// Read the whole log next time (at start, after an error).
    resync: AtomicBool,
    /// Row numbers skipped by a read (not committed yet, or rolled back), with when they were
    /// first missed: read again until they appear or a minute has passed.
    gaps: Mutex<std::collections::BTreeMap<i64, std::time::Instant>>,
    /// Another instance wrote (a notification): read now.
    wake: tokio::sync::Notify,
}

/// Revocations recorded in PostgreSQL so every instance refuses a revoked session's access
/// tokens within a second, without a database round trip per request: the guarantees of
/// `baton_redis::RevocationFeed`, on the database the sessions live in.
///
/// - A revocation is one statement: a row in `{prefix}revocations` and a `NOTIFY` on the
///   channel `{prefix}revocations`, delivered when the row commits. [`Revoke::revoke`] (a
///   logout) answers `Ok` only once the row is committed, then applies it here; when the write
///   fails it answers `Err` (the endpoint says 503, the client retries).
///   [`Revoke::revoked`] (theft detected: already done in the store) applies it here at once
///   and, when the write fails, retries it in the background with backoff until it succeeds or
///   no longer matters.
/// - Every instance listens on the channel (`LISTEN`, reconnected with backoff) and reads the
///   log every poll period (250 ms) from the last row it saw, and again the numbers it skipped
///   (a row with a lower number may commit after a higher one; a skipped number is read again
///   until it appears, or for a minute: then it was rolled back). The log is read whole at start
///   and after any error, and checked every few seconds for having gone back (a database
///   restored from a backup). Rows older than the retention are trimmed a batch at a time.
/// - While the log cannot be read the feed follows its [`DisconnectPolicy`] and reports it
///   through [`status`](Self::status).
///
/// ```no_run
/// use baton_postgres::{PgFeedOptions, PgRevocationFeed};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), baton_postgres::PostgresError> {
/// let feed = PgRevocationFeed::start(
///     "postgres://baton@127.0.0.1/app",
///     PgFeedOptions::new(Duration::from_secs(900)),
/// )
/// .await?;
/// // Give `feed` to `Baton::builder(..).revocations(feed)`.
/// # Ok(()) }
/// ```
pub struct PgRevocationFeed {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for PgRevocationFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgRevocationFeed")
            .field("channel", &self.shared.channel)
            .field("state", &self.shared.state)
            .finish_non_exhaustive()
    }
}

impl Drop for PgRevocationFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The three columns of `revocations`, as arrays for one `unnest` insert.
type Columns = (Vec<Option<String>>, Vec<Option<String>>, Vec<Option<i64>>);

fn columns(revocations: &[Revocation]) -> Columns {
    let mut cols: Columns = Default::default();
    for revocation in revocations {
        let (sid, sub, before) = match revocation {
            Revocation::Session(sid) => (Some(sid.clone()), None, None),
            Revocation::UserBefore { sub, before } => (
                None,
                Some(sub.clone()),
                Some(i64::try_from(*before).unwrap_or(i64::MAX)),
            ),
            _ => continue,
        };
        cols.0.push(sid);
        cols.1.push(sub);
        cols.2.push(before);
    }
    cols
}

/// A row of the log, back into a revocation and the time it was recorded (ms).
fn revocation_of(row: &sqlx::postgres::PgRow) -> Option<(i64, Revocation, u64)> {
    let seq: i64 = row.try_get("seq").ok()?;
    let at_ms: i64 = row.try_get("at_ms").ok()?;
    let at_ms = u64::try_from(at_ms).ok()?;
    if let Some(sid) = row.try_get::<Option<String>, _>("session_id").ok()? {
        return Some((seq, Revocation::session(sid), at_ms));
    }
    let sub: String = row.try_get::<Option<String>, _>("sub").ok()??;
    let before: i64 = row.try_get::<Option<i64>, _>("before").ok()??;
    Some((
        seq,
        Revocation::user_before(sub, u64::try_from(before).ok()?),
        at_ms,
    ))
}

impl Shared {
    async fn timed<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::unavailable(e)),
            Err(_) => Err(StoreError::unavailable(format!(
                "PostgreSQL did not answer {what} in {:?}",
                self.timeout
            ))),
        }
    }

    async fn record(&self, revocations: &[Revocation]) -> Result<(), StoreError> {
        let (sids, subs, befores) = columns(revocations);
        if sids.is_empty() {
            return Ok(());
        }
        // Sent again after a lost reply, the rows are written twice: applying one is
        // idempotent.
        let mut tries = 0;
        loop {
            tries += 1;
            let query = sqlx::query(AssertSqlSafe(self.sql.record.clone()))
                .bind(&sids)
                .bind(&subs)
                .bind(&befores)
                .execute(&self.pool);
            match self.timed("record revocations", query).await {
                Ok(_) => return Ok(()),
                Err(e) if tries < 3 && lost(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Records what failed before, oldest first; `false` when the write failed again.
    async fn flush(&self) -> bool {
        let batch = self.state.due(100);
        if batch.is_empty() {
            return true;
        }
        let revocations: Vec<Revocation> = batch.iter().map(|(_, r)| r.clone()).collect();
        if self.record(&revocations).await.is_err() {
            return false;
        }
        self.state.recorded(&batch);
        tracing::info!(target: "baton::postgres", recorded = batch.len(), "deferred revocations recorded");
        true
    }

    /// Applies `rows`; returns their numbers, in order.
    fn apply(&self, rows: &[sqlx::postgres::PgRow]) -> Vec<i64> {
        let read: Vec<(i64, Revocation, u64)> = rows.iter().filter_map(revocation_of).collect();
        let recorded: Vec<(Revocation, u64)> =
            read.iter().map(|(_, r, at)| (r.clone(), *at)).collect();
        self.state.list().apply_recorded(&recorded);
        read.iter().map(|(seq, _, _)| *seq).collect()
    }

    /// Notes the numbers between `last` and each row read that did not come: a row numbered
    /// lower may commit after a higher one was read.
    fn note_gaps(&self, mut last: i64, seen: &[i64]) {
        let now = std::time::Instant::now();
        let mut gaps = self
            .gaps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &seq in seen {
            // A jump of thousands is a sequence cache or a trim, not commits in flight.
            if seq > last + 1 && seq - last <= 1_000 {
                for missing in last + 1..seq {
                    gaps.entry(missing).or_insert(now);
                }
            }
            last = last.max(seq);
        }
        // A gap a minute old was rolled back; and never more than 10,000 kept.
        gaps.retain(|_, since| now.duration_since(*since) < Duration::from_secs(60));
        while gaps.len() > 10_000 {
            gaps.pop_first();
        }
    }

    /// Reads the log after row `after`, page by page, and the rows skipped before; returns
    /// the highest row number seen.
    async fn read(&self, after: i64) -> Result<i64, StoreError> {
        let mut last = after;
        loop {
            let query = sqlx::query(AssertSqlSafe(self.sql.read.clone()))
                .bind(last)
                .bind(PAGE)
                .fetch_all(&self.pool);
            let rows = self.timed("read revocations", query).await?;
            let seen = self.apply(&rows);
            // Gaps count once the log has been read whole (a fresh read starts anywhere).
            if last > 0 {
                self.note_gaps(last, &seen);
            }
            if let Some(&seq) = seen.last() {
                last = last.max(seq);
            }
            if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        let missing: Vec<i64> = self
            .gaps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        if !missing.is_empty() {
            let query = sqlx::query(AssertSqlSafe(self.sql.gaps.clone()))
                .bind(&missing)
                .fetch_all(&self.pool);
            let rows = self.timed("read revocations", query).await?;
            let found = self.apply(&rows);
            let mut gaps = self
                .gaps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for seq in found {
                gaps.remove(&seq);
            }
        }
        self.state.log_read();
        Ok(last)
    }

    /// The highest row number in the log (0: empty).
    async fn newest(&self) -> Result<i64, StoreError> {
        let query = sqlx::query_scalar::<_, Option<i64>>(AssertSqlSafe(self.sql.newest.clone()))
            .fetch_one(&self.pool);
        Ok(self.timed("read revocations", query).await?.unwrap_or(0))
    }

    /// Removes at most a batch of rows older than the retention.
    async fn trim(&self) -> Result<u64, StoreError> {
        let keep = i64::try_from(self.state.keep_ms()).unwrap_or(i64::MAX);
        let query = sqlx::query(AssertSqlSafe(self.sql.trim.clone()))
            .bind(keep)
            .execute(&self.pool);
        Ok(self.timed("trim revocations", query).await?.rows_affected())
    }

    fn connected(&self) -> bool {
        self.state.connected()
    }
}

/// `true` for a store error whose cause is a lost connection.
fn lost(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(cause) => cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(crate::store::connection_lost),
        _ => false,
    }
}

/// Reads the log every poll period, or at once when woken; retries deferred writes with
/// backoff; every few seconds trims it and checks that it did not go back.
async fn poll(shared: Arc<Shared>) {
    let mut last = 0i64;
    let mut last_check = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut next_flush = tokio::time::Instant::now();
    let mut was_connected = shared.connected();
    loop {
        if tokio::time::Instant::now() >= next_flush {
            if shared.flush().await {
                backoff = Duration::from_millis(100);
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            next_flush = tokio::time::Instant::now() + backoff;
        }
        if last_check.elapsed() >= Duration::from_secs(5) {
            last_check = tokio::time::Instant::now();
            match shared.newest().await {
                Ok(newest) if newest < last => {
                    tracing::warn!(target: "baton::postgres", "the revocation log went back; reading it whole");
                    shared.resync.store(true, Ordering::Release);
                }
                Ok(_) => {
                    if let Err(e) = shared.trim().await {
                        tracing::debug!(target: "baton::postgres", error = %e, "trim failed");
                    }
                }
                Err(_) => shared.resync.store(true, Ordering::Release),
            }
        }
        if shared.resync.swap(false, Ordering::AcqRel) {
            last = 0;
        }
        match shared.read(last).await {
            Ok(seen) => last = seen,
            // The database may have restarted or been restored: read it whole next time.
            Err(_) => shared.resync.store(true, Ordering::Release),
        }
        let connected = shared.connected();
        if connected != was_connected {
            if connected {
                tracing::info!(target: "baton::postgres", "revocation log readable again; caught up");
            } else {
                tracing::error!(target: "baton::postgres", "revocation log unreadable: revocations from other instances wait until it is back");
            }
            was_connected = connected;
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(shared.poll) => {}
        }
    }
}

/// Live delivery: `LISTEN` on the channel, reconnected with backoff; each notification wakes
/// the reader.
async fn listen(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&shared.pool).await?;
            listener.listen(&shared.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        if let Ok(Ok(mut listener)) = tokio::time::timeout(shared.timeout, connected).await {
            tracing::debug!(target: "baton::postgres", "revocation channel listened to");
            backoff = Duration::from_millis(50);
            // Anything written while not listening is in the log: read it now.
            shared.wake.notify_one();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => shared.wake.notify_one(),
                    // The connection dropped; the listener reconnects on the next call and
                    // listens again. What came meanwhile is in the log.
                    Ok(None) => shared.wake.notify_one(),
                    Err(_) => break,
                }
            }
            tracing::debug!(target: "baton::postgres", "revocation channel lost; the log reader covers until it is back");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

impl PgRevocationFeed {
    /// Connects a pool of its own to `url`, applies the migrations, and starts the feed.
    ///
    /// # Errors
    /// [`PostgresError`] when the database cannot be reached or migrated.
    pub async fn start(url: &str, options: PgFeedOptions) -> Result<Arc<Self>, PostgresError> {
        let pool = connect_pool(
            url,
            &PostgresOptions::new()
                .with_max_connections(4)
                .with_timeout(options.timeout),
        )
        .await?;
        Self::start_on(pool, options).await
    }

    /// Starts the feed on `pool` (shared with the store): applies the migrations, reads the
    /// whole log once (so a fresh instance starts informed), then keeps reading it and
    /// listening in background tasks.
    ///
    /// # Errors
    /// [`PostgresError`] when the migrations cannot be applied.
    pub async fn start_on(
        pool: PgPool,
        options: PgFeedOptions,
    ) -> Result<Arc<Self>, PostgresError> {
        Self::start_on_with_clock(pool, options, Arc::new(SystemClock)).await
    }

    /// As [`start_on`](Self::start_on), reading time from `clock`.
    ///
    /// # Errors
    /// As [`start_on`](Self::start_on).
    pub async fn start_on_with_clock(
        pool: PgPool,
        options: PgFeedOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, PostgresError> {
        if !valid_prefix(&options.prefix) {
            return Err(PostgresError::InvalidPrefix(options.prefix));
        }
        migrate(&pool, &options.prefix).await?;
        let p = |sql: &str| -> Arc<str> { Arc::from(sql.replace("baton_", &options.prefix)) };
        let columns = "seq, (extract(epoch FROM recorded_at) * 1000)::bigint AS at_ms, \
                       session_id, sub, before";
        let sql = Sql {
            record: p("WITH ins AS (\
                INSERT INTO baton_revocations (session_id, sub, before) \
                SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) RETURNING seq) \
                SELECT pg_notify('baton_revocations', coalesce(max(seq), 0)::text) FROM ins"),
            read: p(&format!(
                "SELECT {columns} FROM baton_revocations WHERE seq > $1 ORDER BY seq LIMIT $2"
            )),
            gaps: p(&format!(
                "SELECT {columns} FROM baton_revocations WHERE seq = ANY($1) ORDER BY seq"
            )),
            newest: p("SELECT max(seq) FROM baton_revocations"),
            trim: p("DELETE FROM baton_revocations WHERE seq IN (\
                SELECT seq FROM baton_revocations \
                WHERE recorded_at < clock_timestamp() - $1 * interval '1 millisecond' \
                ORDER BY seq LIMIT 1000)"),
        };
        let shared = Arc::new(Shared {
            pool,
            state: FeedState::new(options.keep, options.poll, options.policy, clock),
            sql,
            channel: format!("{}revocations", options.prefix),
            poll: options.poll,
            timeout: options.timeout,
            resync: AtomicBool::new(true),
            gaps: Mutex::new(std::collections::BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(listen(shared.clone())),
            tokio::spawn(poll(shared.clone())),
        ];
        let feed = Arc::new(PgRevocationFeed { shared, tasks });
        // Give the reader a moment to catch up, so a fresh instance starts informed.
        for _ in 0..50 {
            if feed.shared.connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(feed)
    }

    /// Whether the feed is hearing revocations.
    pub fn status(&self) -> FeedStatus {
        self.shared.state.status()
    }

    /// The revocations this instance knows.
    pub fn list(&self) -> &RevocationList {
        self.shared.state.list()
    }

    /// Revocations whose write failed and that wait for a retry.
    pub fn pending(&self) -> usize {
        self.shared.state.pending()
    }
}

impl Revoke for PgRevocationFeed {
    fn revoke<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a> {
        Box::pin(async move {
            let written = self.shared.record(revocations);
            self.shared.state.revoke(revocations, written).await.map_err(|e| {
                tracing::error!(target: "baton::postgres", error = %baton_core::ErrorChain(&e), count = revocations.len(), "revocation not recorded; the caller answers 503");
                RevokeError::new(e)
            })
        })
    }

    fn is_recorded(&self, revocation: &Revocation) -> bool {
        self.shared.state.is_recorded(revocation)
    }

    fn revoked<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a> {
        // Applied here at once: already done in the store.
        for revocation in revocations {
            self.shared.state.list().apply(revocation);
        }
        Box::pin(async move {
            self.shared.record(revocations).await.map_err(|e| {
                tracing::error!(target: "baton::postgres", error = %baton_core::ErrorChain(&e), count = revocations.len(), "revocation not recorded; retrying in the background");
                if self.shared.state.defer(revocations) > 0 {
                    tracing::error!(target: "baton::postgres", "revocation retry queue full: the oldest unrecorded revocation is dropped");
                }
                RevokeError::new(e)
            })
        })
    }
}

impl CheckRevocation for PgRevocationFeed {
    fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool {
        self.shared.state.is_revoked(token)
    }

    fn is_known(&self) -> bool {
        self.shared.state.is_known()
    }
}
