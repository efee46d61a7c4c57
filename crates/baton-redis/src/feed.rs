//! The revocation feed: see [`RevocationFeed`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use baton_bearer::{CheckRevocation, RevocationList, Revoke, TokenIdentity};
use baton_store::StoreError;
use baton_token::{Clock, SystemClock};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;

/// What an instance does while it cannot hear revocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectPolicy {
    /// Keep serving with the revocations known so far (availability first).
    #[default]
    KeepServing,
    /// Refuse every access token until the feed is back and caught up (safety first: any
    /// token may have been revoked meanwhile).
    RefuseAll,
}

/// Whether the feed is hearing revocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedStatus {
    /// Subscribed and caught up.
    Connected,
    /// Not subscribed since this time (ms since the epoch).
    Disconnected {
        /// When the feed lost Redis, or when it started without it.
        since_ms: u64,
    },
}

/// Settings of a [`RevocationFeed`].
#[derive(Clone, Debug)]
pub struct FeedOptions {
    prefix: String,
    keep: Duration,
    policy: DisconnectPolicy,
}

impl FeedOptions {
    /// Revocations are kept for `keep`: the longest an access token lives, leeway included.
    /// Prefix `baton:`, policy [`DisconnectPolicy::KeepServing`].
    pub fn new(keep: Duration) -> Self {
        FeedOptions {
            prefix: "baton:".to_owned(),
            keep,
            policy: DisconnectPolicy::KeepServing,
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
}

struct State {
    connected: AtomicBool,
    disconnected_since: AtomicU64,
}

/// `RevocationFeed`: revocations published over Redis so every instance refuses a revoked
/// session's access tokens within a second, without a Redis round trip per request.
///
/// Revoking (logout, logout-all, a deleted device, detected reuse) records the revocation in
/// this process's [`RevocationList`](baton_bearer::RevocationList) at once, then publishes it: a `PUBLISH` for the instances
/// listening now, and an entry in a sorted set kept for the access-token lifetime, so an
/// instance that (re)connects catches up on what it missed. Every instance runs a subscriber
/// task that feeds its own list; the bearer layer consults the list in memory.
///
/// While the subscriber is disconnected the feed follows a [`DisconnectPolicy`], logs the
/// change, and reports it through [`RevocationFeed::status`].
///
/// ```no_run
/// use baton_redis::{DisconnectPolicy, FeedOptions, RevocationFeed};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), baton_store::StoreError> {
/// let feed = RevocationFeed::start("redis://127.0.0.1:6379/", FeedOptions::new(Duration::from_secs(900))).await?;
/// // Give `feed` to `Baton::builder(..).revocations(feed)`: the endpoints publish into it and
/// // the bearer layer consults it.
/// # Ok(()) }
/// ```
pub struct RevocationFeed {
    list: Arc<RevocationList>,
    publisher: ConnectionManager,
    channel: String,
    log_key: String,
    keep_ms: u64,
    policy: DisconnectPolicy,
    state: Arc<State>,
    clock: Arc<dyn Clock>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("channel", &self.channel)
            .field("policy", &self.policy)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// One revocation as it travels: `s\x1f<sid>` or `u\x1f<sub>\x1f<before, s>`.
fn apply(list: &RevocationList, event: &str) {
    let mut parts = event.split('\u{1f}');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("s"), Some(sid), None) => list.revoke_session(sid),
        (Some("u"), Some(sub), Some(before)) => {
            if let Ok(before) = before.parse() {
                list.revoke_user_before(sub, before);
            }
        }
        _ => tracing::debug!(target: "baton::redis", "unknown revocation event ignored"),
    }
}

impl RevocationFeed {
    /// Connects the publisher and starts the subscriber task (which reconnects by itself).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is invalid or Redis cannot be reached at all.
    pub async fn start(url: &str, options: FeedOptions) -> Result<Arc<Self>, StoreError> {
        Self::start_with_clock(url, options, Arc::new(SystemClock)).await
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
        let client = redis::Client::open(url).map_err(crate::unavailable)?;
        let config = crate::manager_config(Duration::from_millis(250), Duration::from_millis(250));
        let publisher = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(crate::unavailable)?;
        let list = Arc::new(RevocationList::new(options.keep).with_clock(clock.clone()));
        let state = Arc::new(State {
            connected: AtomicBool::new(false),
            disconnected_since: AtomicU64::new(clock.now_millis()),
        });
        let channel = format!("{}revocations", options.prefix);
        let log_key = format!("{}revocations:log", options.prefix);
        let subscriber = tokio::spawn(subscribe(
            client,
            channel.clone(),
            log_key.clone(),
            list.clone(),
            state.clone(),
            clock.clone(),
        ));
        let feed = Arc::new(RevocationFeed {
            list,
            publisher,
            channel,
            log_key,
            keep_ms: u64::try_from(options.keep.as_millis()).unwrap_or(u64::MAX),
            policy: options.policy,
            state,
            clock,
            subscriber,
        });
        // Give the subscriber a moment to catch up, so a fresh instance starts informed.
        for _ in 0..50 {
            if feed.status() == FeedStatus::Connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(feed)
    }

    /// Whether the feed is hearing revocations.
    pub fn status(&self) -> FeedStatus {
        if self.state.connected.load(Ordering::Acquire) {
            FeedStatus::Connected
        } else {
            FeedStatus::Disconnected {
                since_ms: self.state.disconnected_since.load(Ordering::Acquire),
            }
        }
    }

    /// The revocations this instance knows.
    pub fn list(&self) -> &RevocationList {
        &self.list
    }

    fn publish(&self, event: String) {
        let mut conn = self.publisher.clone();
        let (channel, log_key) = (self.channel.clone(), self.log_key.clone());
        let now = self.clock.now_millis();
        let keep = self.keep_ms;
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("ZADD")
                .arg(&log_key)
                .arg(now)
                .arg(&event)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&log_key)
                .arg("-inf")
                .arg(now.saturating_sub(keep))
                .ignore()
                .cmd("PEXPIRE")
                .arg(&log_key)
                .arg(keep.max(1))
                .ignore()
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(&event)
                .ignore();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::error!(target: "baton::redis", error = %e, "revocation not published; other instances learn it only at catch-up");
            }
        });
    }
}

async fn catch_up(
    client: &redis::Client,
    log_key: &str,
    list: &RevocationList,
) -> redis::RedisResult<usize> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let events: Vec<String> = redis::cmd("ZRANGE")
        .arg(log_key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    for event in &events {
        apply(list, event);
    }
    Ok(events.len())
}

async fn subscribe(
    client: redis::Client,
    channel: String,
    log_key: String,
    list: Arc<RevocationList>,
    state: Arc<State>,
    clock: Arc<dyn Clock>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            // Subscribed first, then caught up: nothing published in between is missed.
            let caught_up = catch_up(&client, &log_key, &list).await?;
            Ok::<_, redis::RedisError>((pubsub, caught_up))
        };
        if let Ok(Ok((mut pubsub, caught_up))) =
            tokio::time::timeout(Duration::from_secs(2), connected).await
        {
            state.connected.store(true, Ordering::Release);
            tracing::info!(target: "baton::redis", caught_up, "revocation feed connected");
            backoff = Duration::from_millis(50);
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Ok(event) = message.get_payload::<String>() {
                    apply(&list, &event);
                }
            }
            state
                .disconnected_since
                .store(clock.now_millis(), Ordering::Release);
            state.connected.store(false, Ordering::Release);
            tracing::warn!(target: "baton::redis", "revocation feed disconnected");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

impl Revoke for RevocationFeed {
    fn revoke_session(&self, sid: &str) {
        self.list.revoke_session(sid);
        self.publish(format!("s\u{1f}{sid}"));
    }

    fn revoke_user(&self, sub: &str) {
        let before = self.clock.now();
        self.list.revoke_user_before(sub, before);
        self.publish(format!("u\u{1f}{sub}\u{1f}{before}"));
    }
}

impl CheckRevocation for RevocationFeed {
    fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool {
        if self.policy == DisconnectPolicy::RefuseAll
            && !self.state.connected.load(Ordering::Acquire)
        {
            return true;
        }
        self.list.is_revoked(token)
    }
}
