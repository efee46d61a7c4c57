//! `RedisStore`: baton's refresh-token sessions in Redis.
//!
//! Every operation is one atomic Lua script (loaded once, then called by SHA) and one round
//! trip: rotation checks the generation, detects reuse, applies the grace window, bumps the
//! generation, records last use and device, and resets the TTLs in one step. Time comes from
//! the store's [`Clock`], never from Redis, so tests control it. A Redis that is down or
//! stalled gives [`StoreError::Unavailable`] within the configured timeouts; the connection
//! manager reconnects by itself once Redis is back.
//!
//! # Example
//! ```no_run
//! use baton_redis::{RedisOptions, RedisStore};
//! use baton_store::{Device, Policy, RefreshKeys, RefreshStore};
//!
//! # async fn run() -> Result<(), baton_store::StoreError> {
//! let keys = RefreshKeys::new(1, std::env::var("REFRESH_KEY").unwrap().as_bytes())?;
//! let store = RedisStore::connect("redis://127.0.0.1:6379/", keys, Policy::new(), RedisOptions::new()).await?;
//! let login = store.create("alice", Device::new(Some("Firefox"), None)).await?;
//! # Ok(()) }
//! ```
//!
//! # Data layout
//! With the default prefix `baton:` and a user whose [user tag](baton_store::user_tag_of) is
//! `T` (12 base64url characters derived from the user id):
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `baton:{T}:s:<20 chars>` | string | one session: generation, created, last used, last rotation, idle deadline, absolute deadline, IP, device name, user agent, user id, separated by `\x1f` | until the session's deadline |
//! | `baton:{T}:s:<20 chars>` | string `R` | a revoked session (so its token answers *revoked*) | the session's remaining life, at most one day |
//! | `baton:{T}:i` | sorted set | the user's sessions by last use (member: the 20 characters) | the longest of its sessions |
//!
//! All keys of one user share the hash tag `{T}`, so every script touches one hash slot and
//! runs unchanged on Redis Cluster. Listing and revoke-all read the index: no `KEYS`, no
//! `SCAN`. Every key has a TTL, so nothing outlives its session. No secret is stored: refresh
//! tokens are authenticated with [`RefreshKeys`], which never reach Redis.
//!
//! # Memory
//! One session with a 130-byte user agent costs about 330 bytes in Redis 7 (`MEMORY USAGE`
//! of its key plus its share of the index), measured by the `bytes_per_session` test. A
//! single string keeps it compact: a 10-field hash leaves Redis's compact encoding as soon
//! as one value passes 64 bytes and then costs over 1,100 bytes.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_store::{
    Created, Device, Policy, REVOKED_TOMBSTONE_MS, RefreshKeys, RefreshStore, RotateContext,
    RotateError, Rotation, RotationKind, Session, SessionId, SessionRef, StoreError,
    UserAgentChange, check_user_id,
};
use baton_token::{Clock, SystemClock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

const SEP: char = '\u{1f}';

/// Connection settings for [`RedisStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions::new()
    }
}

impl RedisOptions {
    /// Prefix `baton:`, connect timeout 250 ms, response timeout 250 ms.
    pub fn new() -> Self {
        RedisOptions {
            prefix: "baton:".to_owned(),
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(250),
        }
    }

    /// The prefix of every key (no `{` or `}`: the hash tag is the store's).
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] when the prefix has braces.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self, StoreError> {
        let prefix = prefix.into();
        if prefix.contains(['{', '}']) {
            return Err(StoreError::InvalidInput("key prefix must not contain braces"));
        }
        self.prefix = prefix;
        Ok(self)
    }

    /// How long connecting may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation may take before it is [`StoreError::Unavailable`].
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }
}

struct Scripts {
    create: Script,
    rotate: Script,
    list: Script,
    revoke: Script,
}

/// Refresh-token sessions in Redis. Clones share one auto-reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: RefreshKeys,
    policy: Policy,
    clock: Arc<dyn Clock>,
    options: Arc<RedisOptions>,
    scripts: Arc<Scripts>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("stored session is not readable: {what}"))
}

/// The fields of a stored session, in order.
fn encode(record: &Session, rotated_at: u64) -> String {
    let d = &record.device;
    let ip = d.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let parts = [
        record.generation.to_string(),
        record.created_at.to_string(),
        record.last_used_at.to_string(),
        rotated_at.to_string(),
        record.expires_at.to_string(),
        record.absolute_expires_at.to_string(),
        ip,
        d.name.clone().unwrap_or_default(),
        d.user_agent.clone().unwrap_or_default(),
        record.user_id.clone(),
    ];
    parts.join(&SEP.to_string())
}

fn decode(id: SessionId, value: &str) -> Result<Session, StoreError> {
    let f: Vec<&str> = value.split(SEP).collect();
    let [generation, created, last_used, _rotated, expires, absolute, ip, name, ua, user_id] = f[..]
    else {
        return Err(corrupt("wrong number of fields"));
    };
    let num = |s: &str| s.parse::<u64>().map_err(|_| corrupt("bad number"));
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let ip = if ip.is_empty() {
        None
    } else {
        Some(ip.parse::<IpAddr>().map_err(|_| corrupt("bad ip"))?)
    };
    let mut device = Device::new(opt(ua).as_deref(), ip);
    if let Some(name) = opt(name) {
        device = device.with_name(name);
    }
    Ok(Session::new(
        id,
        user_id.to_owned(),
        device,
        num(created)?,
        num(last_used)?,
        num(generation)?,
        num(expires)?,
        num(absolute)?,
    ))
}

fn text(value: &Value) -> Result<String, StoreError> {
    redis::from_redis_value_ref::<String>(value).map_err(|_| corrupt("not a string"))
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached within the connect timeout.
    pub async fn connect(
        url: &str,
        keys: RefreshKeys,
        policy: Policy,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connect = ConnectionManager::new_with_config(client, config);
        let conn = tokio::time::timeout(options.connect_timeout * 4, connect)
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            keys,
            policy,
            clock: Arc::new(SystemClock),
            options: Arc::new(options),
            scripts: Arc::new(Scripts {
                create: Script::new(include_str!("create.lua")),
                rotate: Script::new(include_str!("rotate.lua")),
                list: Script::new(include_str!("list.lua")),
                revoke: Script::new(include_str!("revoke.lua")),
            }),
        })
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn session_prefix(&self, tag: &str) -> String {
        format!("{}{{{tag}}}:s:", self.options.prefix)
    }

    fn index_key(&self, tag: &str) -> String {
        format!("{}{{{tag}}}:i", self.options.prefix)
    }

    /// The Redis key of a session (for inspection and tests).
    pub fn session_key(&self, id: SessionId) -> String {
        format!("{}{}", self.session_prefix(&id.user_tag()), id.random_part())
    }

    /// The Redis key of a user's session index (for inspection and tests).
    pub fn index_key_of(&self, user_id: &str) -> String {
        self.index_key(&baton_store::user_tag_of(user_id))
    }

    /// A clone of the connection, for inspection and tests (`MEMORY USAGE`, ...).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs `op` within the response timeout; errors and time-outs are `Unavailable`.
    async fn bounded<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.options.response_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(target: "baton::redis", error = %e, "redis operation failed");
                Err(unavailable(e))
            }
            Err(_) => {
                tracing::error!(target: "baton::redis", "redis operation timed out");
                Err(unavailable("redis did not answer in time"))
            }
        }
    }

    fn members_to_ids(tag_of: &SessionId, members: &[Value]) -> Vec<SessionId> {
        let tag = tag_of.user_tag();
        members
            .iter()
            .filter_map(|m| text(m).ok())
            .filter_map(|m| format!("{tag}{m}").parse().ok())
            .collect()
    }
}

impl RefreshStore for RedisStore {
    fn keys(&self) -> &RefreshKeys {
        &self.keys
    }

    async fn create(&self, user_id: &str, device: Device) -> Result<Created, StoreError> {
        check_user_id(user_id)?;
        let now = self.clock.now_millis();
        let id = SessionId::generate(user_id)?;
        let absolute = now.saturating_add(policy_ms(self.policy.absolute_lifetime()));
        let expires = now.saturating_add(policy_ms(self.policy.idle_lifetime())).min(absolute);
        let session = Session::new(id, user_id.to_owned(), device.sanitized(), now, now, 0, expires, absolute);
        let tag = id.user_tag();
        let mut invocation = self.scripts.create.prepare_invoke();
        invocation
            .key(self.session_key(id))
            .key(self.index_key(&tag))
            .arg(encode(&session, 0))
            .arg(expires - now)
            .arg(now)
            .arg(self.policy.max_sessions_per_user())
            .arg(id.random_part())
            .arg(self.session_prefix(&tag))
            .arg(user_id)
            .arg(REVOKED_TOMBSTONE_MS);
        let mut conn = self.conn.clone();
        let evicted: Vec<Value> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        let evicted = Self::members_to_ids(&id, &evicted);
        Ok(Created::new(session, self.keys.mint(&id, 0), evicted))
    }

    async fn rotate(&self, token: &str, context: RotateContext) -> Result<Rotation, RotateError> {
        let verified = self.keys.verify(token).ok_or(RotateError::Invalid)?;
        let id = verified.session_id;
        let now = self.clock.now_millis();
        let policy = match self.policy.user_agent_change() {
            UserAgentChange::Revoke => "revoke",
            _ => "record",
        };
        let mut invocation = self.scripts.rotate.prepare_invoke();
        invocation
            .key(self.session_key(id))
            .key(self.index_key(&id.user_tag()))
            .arg(verified.generation)
            .arg(now)
            .arg(policy_ms(self.policy.grace_window()))
            .arg(policy_ms(self.policy.idle_lifetime()))
            .arg(policy)
            .arg(context.stored_user_agent().unwrap_or_default())
            .arg(context.ip.map(|ip| ip.to_string()).unwrap_or_default())
            .arg(REVOKED_TOMBSTONE_MS)
            .arg(id.random_part());
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        let code = reply.first().map(text).transpose()?.unwrap_or_default();
        let second = || reply.get(1).map(text).transpose().map(Option::unwrap_or_default);
        match code.as_str() {
            "rotated" | "graced" => {
                let session = decode(id, &second()?)?;
                let kind = if code == "rotated" { RotationKind::Rotated } else { RotationKind::Graced };
                let token = self.keys.mint(&id, session.generation);
                Ok(Rotation::new(kind, token, session))
            }
            "reused" => Err(RotateError::Reused(SessionRef { id, user_id: second()? })),
            "ua_revoked" => Err(RotateError::Revoked(Some(SessionRef { id, user_id: second()? }))),
            "revoked" => Err(RotateError::Revoked(None)),
            "expired" => Err(RotateError::Expired),
            "invalid" => Err(RotateError::Invalid),
            _ => Err(RotateError::Unavailable(corrupt("unexpected script reply"))),
        }
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now_millis();
        let mut conn = self.conn.clone();
        let key = self.session_key(id);
        let value: Option<String> = self.bounded(redis::cmd("GET").arg(&key).query_async(&mut conn)).await?;
        match value {
            None => Ok(None),
            Some(v) if v == "R" => Ok(None),
            Some(v) => {
                let session = decode(id, &v)?;
                Ok((now < session.expires_at).then_some(session))
            }
        }
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.now_millis();
        let tag = baton_store::user_tag_of(user_id);
        let mut invocation = self.scripts.list.prepare_invoke();
        invocation.key(self.index_key(&tag)).arg(self.session_prefix(&tag)).arg(now).arg(user_id);
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        reply
            .chunks_exact(2)
            .map(|pair| {
                let id: SessionId = format!("{tag}{}", pair[0]).parse().map_err(|_| corrupt("bad member"))?;
                decode(id, &pair[1])
            })
            .collect()
    }

    async fn revoke(&self, user_id: &str, id: SessionId) -> Result<bool, StoreError> {
        if !id.belongs_to(user_id) {
            return Ok(false);
        }
        let count = self.revoke_members(user_id, Some(id)).await?;
        Ok(count > 0)
    }

    async fn revoke_all(&self, user_id: &str) -> Result<usize, StoreError> {
        self.revoke_members(user_id, None).await
    }
}

impl RedisStore {
    async fn revoke_members(&self, user_id: &str, only: Option<SessionId>) -> Result<usize, StoreError> {
        let now = self.clock.now_millis();
        let tag = baton_store::user_tag_of(user_id);
        let mut invocation = self.scripts.revoke.prepare_invoke();
        invocation
            .key(self.index_key(&tag))
            .arg(self.session_prefix(&tag))
            .arg(now)
            .arg(user_id)
            .arg(REVOKED_TOMBSTONE_MS);
        if let Some(id) = only {
            invocation.arg(id.random_part());
        }
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }
}

fn policy_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
