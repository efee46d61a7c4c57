//! The revocation feed: see [`RevocationFeed`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_core::{
    CheckRevocation, Revocation, RevocationList, Revoke, RevokeError, RevokeFuture, TokenIdentity,
};
use baton_core::{Clock, DisconnectPolicy, FeedState, FeedStatus, SystemClock};
use baton_store::StoreError;
use futures_util::StreamExt;
use redis::{Script, Value};

use crate::{RedisConnection, RedisOptions};
use event::{apply, decode, encode, entries, entry_id};
use tasks::{poll, subscribe};

mod event;
mod tasks;

/// Settings of a [`RevocationFeed`].
#[derive(Clone, Debug)]
pub struct FeedOptions {
    prefix: String,
    keep: Duration,
    policy: DisconnectPolicy,
    poll: Duration,
    resync: Duration,
}

impl FeedOptions {
    /// Revocations are kept for `keep`: the longest an access token lives, leeway included.
    /// Prefix `baton:`, policy [`DisconnectPolicy::KeepServing`], the log read every 250 ms,
    /// and checked every 5 s for having gone back (then read whole).
    pub fn new(keep: Duration) -> Self {
        FeedOptions {
            prefix: "baton:".to_owned(),
            keep,
            policy: DisconnectPolicy::KeepServing,
            poll: Duration::from_millis(250),
            resync: Duration::from_secs(5),
        }
    }

    /// The key and channel prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do while disconnected.
    #[must_use]
    pub fn with_disconnect_policy(mut self, policy: DisconnectPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How often the log is read for what live delivery missed (at least 10 ms, at most
    /// 1 s): the longest a revocation takes to reach an instance whose subscription silently
    /// lost messages.
    #[must_use]
    pub fn with_poll_period(mut self, period: Duration) -> Self {
        self.poll = period.clamp(Duration::from_millis(10), Duration::from_secs(1));
        self
    }
}

/// Entries read from the log per command.
const PAGE: usize = 512;

/// Appends the events to the log (a stream, trimmed to the retention by Redis's own clock),
/// refreshes its TTL, then publishes them: one atomic step, so an event is published only once
/// it is recorded, and recorded events always reach the log's readers.
/// KEYS[1]: the log. ARGV: retention (ms), channel, then the events.
const WRITE_LUA: &str = r#"
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[1])
local minid = string.format("%.0f", math.max(now - keep, 0))
local id
for k = 3, #ARGV do
  id = redis.call("XADD", KEYS[1], "MINID", "~", minid, "*", "e", ARGV[k])
end
redis.call("PEXPIRE", KEYS[1], keep)
for k = 3, #ARGV do
  redis.call("PUBLISH", ARGV[2], ARGV[k])
end
return id
"#;

struct Shared {
    conn: RedisConnection,
    /// The revocations known here, those waiting for a retry, and when the log was read.
    state: FeedState,
    log_key: String,
    channel: String,
    poll: Duration,
    resync_every: Duration,
    write: Script,
    /// Read the whole log next time (at start, after an error).
    resync: AtomicBool,
}

/// `RevocationFeed`: revocations recorded in Redis so every instance refuses a revoked
/// session's access tokens within a second, without a Redis round trip per request.
///
/// A revocation is recorded by one script that appends it to a log (a Redis stream kept for
/// the access-token lifetime) and publishes it. [`Revoke::revoke`] (a logout, a deleted
/// device) answers `Ok` only once the log holds it, then applies it here, so an endpoint
/// acknowledges a logout only when every instance will find it; when the write fails it
/// answers `Err` (the endpoint says 503, the client retries). [`Revoke::revoked`] (theft
/// detected, an eviction: already done in the store) applies it here at once, and when the
/// write fails keeps retrying it in the background, with backoff, until it succeeds or no
/// longer matters (every token it covers has expired). Failures are `error` events (target
/// `baton::redis`) and the counter `baton_revocations_unrecorded_total`.
///
/// Every instance hears revocations two ways: a subscriber on the channel (live, when the
/// connection was built with a [`redis::Client`]), and a reader of the log every poll period
/// (250 ms by default), which picks up whatever live delivery missed, also when no connection
/// ever noticed a fault. The log is read whole at start and after any error, and checked every
/// 5 s for having gone back (a Redis that lost it, a replica promoted with an older clock).
///
/// While the log cannot be read the feed follows a [`DisconnectPolicy`], logs the change, and
/// reports it through [`RevocationFeed::status`].
///
/// ```no_run
/// use baton_redis::{FeedOptions, RedisConnection, RedisOptions, RevocationFeed};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), baton_store::StoreError> {
/// let redis = RedisConnection::connect("redis://127.0.0.1:6379/", &RedisOptions::new()).await?;
/// let feed = RevocationFeed::start_on(redis, FeedOptions::new(Duration::from_secs(900))).await;
/// // Give `feed` to `Baton::builder(..).revocations(feed)`: the endpoints record into it and
/// // the bearer layer consults it.
/// # Ok(()) }
/// ```
pub struct RevocationFeed {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("log", &self.shared.log_key)
            .field("state", &self.shared.state)
            .finish_non_exhaustive()
    }
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    async fn record(&self, revocations: &[Revocation]) -> Result<(), StoreError> {
        let events: Vec<String> = revocations.iter().filter_map(encode).collect();
        if events.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            self.state.keep_ms().max(1).to_string(),
            self.channel.clone(),
        ];
        args.extend(events);
        // Repeating the write after a lost reply appends the events twice: applying one is
        // idempotent.
        self.conn
            .write_script::<Value>(
                "record revocations",
                &self.write,
                std::slice::from_ref(&self.log_key),
                &args,
            )
            .await
            .map(|_| ())
    }

    /// Queues revocations whose write failed, for a retry.
    fn defer(&self, revocations: &[Revocation]) {
        let dropped = self.state.defer(revocations);
        if dropped > 0 {
            metrics::counter!("baton_revocations_dropped_total").increment(dropped as u64);
            tracing::error!(target: "baton::redis", "revocation retry queue full: the oldest unrecorded revocation is dropped (other instances learn it only if it is revoked again)");
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
        // Remove exactly what was written (the queue may have moved meanwhile).
        self.state.recorded(&batch);
        tracing::info!(target: "baton::redis", recorded = batch.len(), "deferred revocations recorded");
        true
    }

    /// Reads the log from after `after` (or whole), applies it page by page, returns the last
    /// id seen.
    async fn read(&self, after: Option<&str>) -> Result<Option<String>, StoreError> {
        let mut start = after.map(|id| format!("({id}"));
        let mut last = after.map(str::to_owned);
        loop {
            let from = start.clone().unwrap_or_else(|| "-".to_owned());
            let key = &self.log_key;
            let from_ref = &from;
            let reply: Value = self
                .conn
                .read_quiet("read revocation log", move |mut conn| async move {
                    redis::cmd("XRANGE")
                        .arg(key)
                        .arg(from_ref)
                        .arg("+")
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let page = entries(&reply);
            let recorded: Vec<(Revocation, u64)> = page
                .iter()
                .filter_map(|(id, event)| {
                    let at_ms = entry_id(id)?.0;
                    Some((decode(event.as_deref()?)?, at_ms))
                })
                .collect();
            self.state.list().apply_recorded(&recorded);
            self.state.log_read();
            let Some((id, _)) = page.last() else {
                return Ok(last);
            };
            if last
                .as_deref()
                .and_then(entry_id)
                .is_none_or(|seen| entry_id(id).is_some_and(|new| new > seen))
            {
                last = Some(id.clone());
            }
            if page.len() < PAGE {
                return Ok(last);
            }
            start = Some(format!("({id}"));
        }
    }

    /// The id of the log's newest entry (`None`: no log).
    async fn newest(&self) -> Result<Option<String>, StoreError> {
        let key = &self.log_key;
        let reply: Value = self
            .conn
            .read_quiet("read revocation log", move |mut conn| async move {
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(entries(&reply).into_iter().next().map(|(id, _)| id))
    }

    fn connected(&self) -> bool {
        self.state.connected()
    }
}

impl RevocationFeed {
    /// Connects to `url` (a [`RedisConnection`] of its own: use
    /// [`start_on`](Self::start_on) to share one) and starts the feed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is invalid or Redis cannot be reached at all.
    pub async fn start(url: &str, options: FeedOptions) -> Result<Arc<Self>, StoreError> {
        let conn = RedisConnection::connect(url, &RedisOptions::new()).await?;
        Ok(Self::start_on(conn, options).await)
    }

    /// As [`start`](Self::start), reading time from `clock`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with_clock(
        url: &str,
        options: FeedOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        let conn = RedisConnection::connect(url, &RedisOptions::new()).await?;
        Ok(Self::start_on_with_clock(conn, options, clock).await)
    }

    /// Starts the feed on `conn` (shared with the store and the limiter): reads the whole log
    /// once (so a fresh instance starts informed; when Redis does not answer the feed starts
    /// disconnected and catches up when it can), then keeps reading it and listening to the
    /// channel in background tasks.
    pub async fn start_on(conn: RedisConnection, options: FeedOptions) -> Arc<Self> {
        Self::start_on_with_clock(conn, options, Arc::new(SystemClock)).await
    }

    /// As [`start_on`](Self::start_on), reading time from `clock`.
    pub async fn start_on_with_clock(
        conn: RedisConnection,
        options: FeedOptions,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let feed = Self::spawn_on_with_clock(conn, options, clock);
        // Give the reader a moment to catch up, so a fresh instance starts informed.
        for _ in 0..50 {
            if feed.shared.connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        feed
    }

    /// As [`start_on_with_clock`](Self::start_on_with_clock), without waiting for the first
    /// read of the log: the feed reads it in the background (revocations recorded by other
    /// instances are known a few milliseconds later). For code that cannot wait, such as a
    /// synchronous builder.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the feed's tasks are spawned on the current one).
    pub fn spawn_on_with_clock(
        conn: RedisConnection,
        options: FeedOptions,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let shared = Arc::new(Shared {
            conn,
            state: FeedState::new(options.keep, options.poll, options.policy, clock),
            // A stream (the sorted set of earlier versions was `revocations:log`).
            log_key: format!("{}revocations:stream", options.prefix),
            channel: format!("{}revocations", options.prefix),
            poll: options.poll,
            resync_every: options.resync,
            write: Script::new(&format!("{}{WRITE_LUA}", crate::DEADLINE_LUA)),
            resync: AtomicBool::new(true),
        });
        let mut tasks = Vec::new();
        if !shared.conn.subscribers().is_empty() {
            tasks.push(tokio::spawn(subscribe(shared.clone())));
        }
        tasks.push(tokio::spawn(poll(shared.clone())));
        Arc::new(RevocationFeed { shared, tasks })
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

    /// The connection the feed writes and reads the log on.
    pub fn connection(&self) -> &RedisConnection {
        &self.shared.conn
    }
}

impl Revoke for RevocationFeed {
    fn revoke<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a> {
        Box::pin(async move {
            let written = self.shared.record(revocations);
            self.shared.state.revoke(revocations, written).await.map_err(|e| {
                metrics::counter!("baton_revocations_unrecorded_total").increment(1);
                tracing::error!(target: "baton::redis", error = %baton_core::ErrorChain(&e), count = revocations.len(), "revocation not recorded; the caller answers 503");
                RevokeError::new(e)
            })
        })
    }

    fn is_recorded(&self, revocation: &Revocation) -> bool {
        // In the list and not waiting for a retry: heard from the log, or written by us.
        self.shared.state.is_recorded(revocation)
    }

    fn revoked<'a>(&'a self, revocations: &'a [Revocation]) -> RevokeFuture<'a> {
        // Applied here at once: already done in the store.
        for revocation in revocations {
            self.shared.state.list().apply(revocation);
        }
        Box::pin(async move {
            self.shared.record(revocations).await.map_err(|e| {
                metrics::counter!("baton_revocations_unrecorded_total").increment(1);
                tracing::error!(target: "baton::redis", error = %baton_core::ErrorChain(&e), count = revocations.len(), "revocation not recorded; retrying in the background");
                self.shared.defer(revocations);
                RevokeError::new(e)
            })
        })
    }
}

impl CheckRevocation for RevocationFeed {
    fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool {
        self.shared.state.is_revoked(token)
    }

    fn is_known(&self) -> bool {
        self.shared.state.is_known()
    }
}
