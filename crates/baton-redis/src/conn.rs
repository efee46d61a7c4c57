//! `RedisConnection`: the one connection set a process keeps to one Redis (or one Redis
//! Cluster), shared by the store, the revocation feed, the rate limiter and the application.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::ErrorChain;
use baton_store::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, RedisError, RedisFuture, Value};
use tokio::time::{Instant, timeout_at};

use crate::RedisOptions;

/// One Redis, or a Redis Cluster (feature `cluster`).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How often the estimate of Redis's clock is read again.
const CLOCK_SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How long before the end of the wait a write's deadline falls: time for its reply to
/// arrive, and for the estimate of Redis's clock to be off.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// The check a write script makes first (prepend it to the script): it takes `ARGV[1]`, the
/// deadline [`RedisConnection::write`] hands to its operation, off `ARGV`; past it, the script
/// answers the error `BATON_LATE` and changes nothing.
pub const DEADLINE_LUA: &str = include_str!("deadline.lua");

/// No Nagle delay; keepalive probes so a peer that vanished without closing (a host gone, a
/// network partition) is noticed while idle; and, on Linux, data unacknowledged for a while
/// fails the connection instead of hanging every command on it for the kernel's default
/// quarter of an hour. A paused Redis still acknowledges at the TCP level, so this does not
/// fire for a slow server.
fn tcp_settings(options: &RedisOptions) -> redis::io::tcp::TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5));
    #[cfg(any(
        target_os = "linux",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_retries(3);
    let settings = redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings =
        settings.set_user_timeout((options.write_timeout * 4).max(Duration::from_secs(5)));
    #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
    let _ = options;
    settings
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
struct Counters {
    retried: AtomicU64,
    late: AtomicU64,
    failed: AtomicU64,
}

/// What a [`RedisConnection`] has been through, for logs and load reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Commands sent a second time after a connection-level error (a connection closed by
    /// Redis, a proxy or a restart): each one a request that did not fail.
    pub retried: u64,
    /// Writes whose reply came after the response timeout and was awaited (up to the write
    /// timeout) instead of answering "unavailable" for a write that may have happened.
    pub late: u64,
    /// Operations that failed (Redis down, stalled past the timeouts, or an error reply).
    pub failed: u64,
}

/// The connection set a process keeps to one Redis or one Redis Cluster: cheap to clone, every
/// clone shares it. [`RedisStore`](crate::RedisStore), [`RevocationFeed`](crate::RevocationFeed),
/// [`RedisGcra`](crate::RedisGcra) and the application's own commands all go through one, so a
/// process holds one multiplexed connection per Redis (plus one subscriber connection for the
/// feed's live delivery), whatever it uses.
///
/// # Faults
/// - Connections are RESP3 when this type opens them, so a connection that Redis or a proxy
///   closes while idle is noticed and reopened at once, before the next command needs it.
///   They use TCP keepalive and, on Linux, `TCP_USER_TIMEOUT` (four times the write timeout,
///   at least 5 s), so a peer that vanished without closing is noticed too.
/// - A command that meets a connection-level error (closed, reset, refused) is sent once more
///   on the reopened connection. Every command baton sends is safe to repeat: reads; writes
///   that carry their own attempt id (a rotation, a creation, a revocation repeated gives the
///   outcome of the first try, never a second session or a false reuse).
/// - A read that does not answer within the response timeout is
///   [`StoreError::Unavailable`]. A write is awaited longer, up to the write timeout: a
///   rotation whose reply is late (Redis stalled for a moment) is answered with its successor
///   instead of a 503.
/// - A write carries a deadline in Redis's own clock (estimated from `TIME`, read every 10 s),
///   just before the end of that wait, and does nothing when Redis reaches it later: a stalled
///   Redis that wakes up does not run rotations whose clients were told 503 long ago. So a
///   write that answers "unavailable" has not happened and will not happen: a client that
///   retries presents a token that is still live, never one spent behind its back.
///
/// Built from a URL ([`connect`](Self::connect)), or from what the application already has:
/// a [`redis::Client`] ([`from_client`](Self::from_client)), a [`ConnectionManager`]
/// ([`from_manager`](Self::from_manager)), or a cluster connection
/// ([`from_cluster`](Self::from_cluster), feature `cluster`). Needs Redis 6.2 or later.
///
/// ```no_run
/// use baton_redis::{RedisConnection, RedisOptions};
///
/// # async fn run() -> Result<(), baton_store::StoreError> {
/// let redis = RedisConnection::connect("redis://127.0.0.1:6379/", &RedisOptions::new()).await?;
/// // One connection for the store, the revocation feed and the limiter:
/// // RedisStore::new(redis.clone(), ..), RevocationFeed::start_on(redis.clone(), ..),
/// // RedisGcra::new(redis.clone(), ..).
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection {
    conn: Conn,
    subscribers: Arc<[redis::Client]>,
    response_timeout: Duration,
    write_timeout: Duration,
    counters: Arc<Counters>,
    /// A reading of Redis's clock (ms) and when it was taken.
    clock: Arc<std::sync::Mutex<Option<(Instant, u64)>>>,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("response_timeout", &self.response_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Why a Redis operation failed: the [`source`](std::error::Error::source) of the
/// [`StoreError::Unavailable`] this crate answers, reachable with
/// [`Cause::downcast_ref`](baton_store::Cause::downcast_ref).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisFailure {
    /// No reply within the operation's timeout (a write's: the write timeout).
    #[error("{what}: redis did not answer in time")]
    TimedOut {
        /// The operation.
        what: &'static str,
    },
    /// The connection closed under every attempt.
    #[error("{what}: the connection keeps closing")]
    ConnectionClosing {
        /// The operation.
        what: &'static str,
    },
    /// Redis or the client answered with an error (the URL, the connection, the command): the
    /// client's error is the [`source`](std::error::Error::source).
    #[error("{what}: redis error")]
    Redis {
        /// The operation.
        what: &'static str,
        /// The client's error.
        #[source]
        source: RedisError,
    },
}

fn redis_failure(what: &'static str) -> impl FnOnce(RedisError) -> StoreError {
    move |source| StoreError::unavailable(RedisFailure::Redis { what, source })
}

fn connect_timed_out<E>(_: E) -> StoreError {
    StoreError::unavailable(RedisFailure::TimedOut { what: "connect" })
}

/// `true` for errors where the command may not have reached Redis, or its connection is gone:
/// sending it again on a fresh connection can succeed.
fn connection_level(e: &RedisError) -> bool {
    (e.is_io_error() && !e.is_timeout()) || e.is_unrecoverable_error()
}

impl RedisConnection {
    fn with(conn: Conn, subscribers: Vec<redis::Client>, options: &RedisOptions) -> Self {
        RedisConnection {
            conn,
            subscribers: subscribers.into(),
            response_timeout: options.response_timeout,
            write_timeout: options.write_timeout.max(options.response_timeout),
            counters: Arc::default(),
            clock: Arc::default(),
        }
    }

    /// Connects to `url` (`redis://host:port/db`, `rediss://` with redis's TLS features) over
    /// RESP3, within the connect timeout.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for a bad URL or a Redis that cannot be reached in time.
    pub async fn connect(url: &str, options: &RedisOptions) -> Result<Self, StoreError> {
        let info = url
            .into_connection_info()
            .map_err(redis_failure("parse the redis url"))?;
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(redis)
            .set_tcp_settings(tcp_settings(options));
        let client = redis::Client::open(info).map_err(redis_failure("open a redis client"))?;
        Self::from_client(client, options).await
    }

    /// Builds the connection manager from `client` (its protocol as configured; RESP3 lets a
    /// closed idle connection be reopened before it is used), within the connect timeout. The
    /// feed's subscriber connects with the same client.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached in time.
    pub async fn from_client(
        client: redis::Client,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        // The manager's own timeout is only a backstop: ours are applied per operation, and
        // a late write is awaited up to the write timeout.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.write_timeout.max(options.response_timeout)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connect = ConnectionManager::new_with_config(client.clone(), config);
        let manager = tokio::time::timeout(options.connect_timeout * 4, connect)
            .await
            .map_err(connect_timed_out)?
            .map_err(redis_failure("connect"))?;
        Ok(Self::with(Conn::Single(manager), vec![client], options))
    }

    /// Uses a connection manager the application already has. The feed then delivers
    /// revocations by polling its log only (within its poll period): without a
    /// [`redis::Client`] it cannot open a subscriber connection.
    pub fn from_manager(manager: ConnectionManager, options: &RedisOptions) -> Self {
        Self::with(Conn::Single(manager), Vec::new(), options)
    }

    /// Connects to a Redis Cluster through any of its `nodes` (`redis://host:port`) with
    /// redis's cluster client: it follows `MOVED`/`ASK` and re-discovers the topology when a
    /// master fails over. Give several seed nodes so a connect survives one being down; the
    /// feed's subscriber listens on any of them (cluster pub/sub reaches every node).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no node can be reached within the connect timeout.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster(
        nodes: &[&str],
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        let client = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .tcp_settings(tcp_settings(options))
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.write_timeout.max(options.response_timeout))
            .use_protocol(ProtocolVersion::RESP3)
            .retries(2)
            .build()
            .map_err(redis_failure("build the cluster client"))?;
        let conn = tokio::time::timeout(options.connect_timeout * 4, client.get_async_connection())
            .await
            .map_err(connect_timed_out)?
            .map_err(redis_failure("connect to the cluster"))?;
        let subscribers = nodes
            .iter()
            .filter_map(|node| redis::Client::open(*node).ok())
            .collect();
        Ok(Self::with(Conn::Cluster(conn), subscribers, options))
    }

    /// Uses a cluster connection the application already has (the feed then polls its log
    /// only, as with [`from_manager`](Self::from_manager)).
    #[cfg(feature = "cluster")]
    pub fn from_cluster(
        conn: redis::cluster_async::ClusterConnection,
        options: &RedisOptions,
    ) -> Self {
        Self::with(Conn::Cluster(conn), Vec::new(), options)
    }

    /// Retries, late replies and failures so far.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            retried: self.counters.retried.load(Ordering::Relaxed),
            late: self.counters.late.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Clients the feed's subscriber may connect with (empty: poll only).
    pub(crate) fn subscribers(&self) -> &[redis::Client] {
        &self.subscribers
    }

    /// Runs a command or script that is safe to repeat, within the response timeout, sending
    /// it once more after a connection-level error. For an application's own reads through the
    /// shared connection.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis does not answer in time or answers an error.
    pub async fn read<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Self) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run(what, false, false, |conn, _| op(conn)).await
    }

    /// As [`read`](Self::read), logging failures at `debug` only (a poll that runs every few
    /// hundred milliseconds reports an outage once, itself).
    pub(crate) async fn read_quiet<T, F, Fut>(
        &self,
        what: &'static str,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Self) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run(what, false, true, |conn, _| op(conn)).await
    }

    /// Runs a write that is safe to repeat (idempotent, or carrying its own attempt id) and
    /// that refuses to run late: `op` gets a deadline in Redis's own clock (milliseconds since
    /// the epoch, as `TIME` reads) and must pass it to its script, which checks it first with
    /// [`DEADLINE_LUA`] and does nothing after it. The reply is awaited past the response
    /// timeout up to the write timeout; the deadline falls just before that, so when this
    /// answers [`StoreError::Unavailable`] the write has not happened and never will. Sent
    /// once more (with a new deadline) after a connection-level error.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis does not answer in time, answers an error, or
    /// ran the write too late (it then did nothing).
    pub async fn write<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Self, u64) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run(what, true, false, op).await
    }

    /// Runs `script` as a [`write`](Self::write): `KEYS` are `keys`, `ARGV` the deadline then
    /// `args`. The script must start with [`DEADLINE_LUA`], which takes the deadline off
    /// `ARGV`, so the rest of the script sees `args` as `ARGV[1..]`.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub async fn write_script<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        self.write(what, |mut conn, deadline| {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            invocation.arg(deadline);
            for arg in args {
                invocation.arg(arg);
            }
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    /// Redis's clock now, in milliseconds, estimated from a `TIME` read within the last 10 s
    /// (read again when older) and this process's monotonic clock.
    async fn redis_now_ms(&self) -> Result<u64, StoreError> {
        let fresh = {
            let clock = self
                .clock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (*clock).and_then(|(at, ms)| {
                let age = at.elapsed();
                (age < CLOCK_SAMPLE_EVERY).then(|| ms + millis(age))
            })
        };
        if let Some(now) = fresh {
            return Ok(now);
        }
        let mut sent = Instant::now();
        let mut reading = None;
        for _ in 0..2 {
            sent = Instant::now();
            let mut conn = self.clone();
            match tokio::time::timeout(
                self.response_timeout,
                redis::cmd("TIME").query_async::<(u64, u64)>(&mut conn),
            )
            .await
            {
                Ok(Ok(time)) => {
                    reading = Some(time);
                    break;
                }
                // A closed connection: once more, on the reopened one.
                Ok(Err(e)) if connection_level(&e) => {}
                Ok(Err(source)) => {
                    let what = "read redis time";
                    return Err(self.failed(false, RedisFailure::Redis { what, source }));
                }
                Err(_) => {
                    let what = "read redis time";
                    return Err(self.failed(false, RedisFailure::TimedOut { what }));
                }
            }
        }
        let Some((secs, micros)) = reading else {
            let what = "read redis time";
            return Err(self.failed(false, RedisFailure::ConnectionClosing { what }));
        };
        let received = Instant::now();
        // The reading was taken somewhere within the round trip: count it from the middle.
        let half = (received - sent) / 2;
        let ms = secs * 1000 + micros / 1000 + millis(half);
        if received - sent < Duration::from_millis(100) {
            *self
                .clock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((received, ms));
        }
        Ok(ms)
    }

    async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        write: bool,
        quiet: bool,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Self, u64) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let last = started
            + if write {
                self.write_timeout
            } else {
                self.response_timeout
            };
        let mut retried = false;
        loop {
            let deadline = if write {
                let remaining = last.saturating_duration_since(Instant::now());
                let now = self.redis_now_ms().await?;
                now + millis(remaining.saturating_sub(DEADLINE_MARGIN))
            } else {
                0
            };
            let attempt = op(self.clone(), deadline);
            tokio::pin!(attempt);
            let fast = (Instant::now() + self.response_timeout).min(last);
            let result = match timeout_at(fast, &mut attempt).await {
                Ok(result) => result,
                Err(_) if write && fast < last => {
                    self.counters.late.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "baton::redis", what, "no reply within the response timeout; awaiting the write's reply");
                    match timeout_at(last, &mut attempt).await {
                        Ok(result) => result,
                        Err(_) => {
                            return Err(self.failed(quiet, RedisFailure::TimedOut { what }));
                        }
                    }
                }
                Err(_) => return Err(self.failed(quiet, RedisFailure::TimedOut { what })),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if !retried && connection_level(&e) && Instant::now() < last => {
                    retried = true;
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("baton_redis_retries_total").increment(1);
                    if quiet {
                        tracing::debug!(target: "baton::redis", what, error = %e, "connection-level error; sending once more");
                    } else {
                        tracing::info!(target: "baton::redis", what, error = %e, "connection-level error; sending once more");
                    }
                }
                Err(source) => return Err(self.failed(quiet, RedisFailure::Redis { what, source })),
            }
        }
    }

    fn failed(&self, quiet: bool, failure: RedisFailure) -> StoreError {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("baton_redis_failures_total").increment(1);
        if quiet {
            tracing::debug!(target: "baton::redis", error = %ErrorChain(&failure), "redis operation failed");
        } else {
            tracing::error!(target: "baton::redis", error = %ErrorChain(&failure), "redis operation failed");
        }
        StoreError::unavailable(failure)
    }
}

impl From<ConnectionManager> for RedisConnection {
    /// As [`RedisConnection::from_manager`] with [`RedisOptions::new`].
    fn from(manager: ConnectionManager) -> Self {
        RedisConnection::from_manager(manager, &RedisOptions::new())
    }
}

#[cfg(feature = "cluster")]
impl From<redis::cluster_async::ClusterConnection> for RedisConnection {
    /// As [`RedisConnection::from_cluster`] with [`RedisOptions::new`].
    fn from(conn: redis::cluster_async::ClusterConnection) -> Self {
        RedisConnection::from_cluster(conn, &RedisOptions::new())
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
