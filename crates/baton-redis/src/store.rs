//! [`RedisStore`]: one key per user, one atomic script per write, and the record codec.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Clock, SystemClock};
use baton_store::{
    Authentication, Created, Device, Login, NetworkChange, Policy, REVOKED_TOMBSTONE_MS,
    RefreshKeys, RefreshStore, ReuseDetection, RotateContext, RotateError, Rotation, RotationKind,
    Session, SessionId, SessionRef, StoreError, UserAgentChange, check_login,
};
use redis::{Script, Value};

use crate::{RedisConnection, RedisOptions, attempt_id};

/// Separates the fields of a record.
const US: char = '\u{1f}';
/// Separates the records of a user's key.
const RS: char = '\u{1e}';

const CREATE_LUA: &str = concat!(
    include_str!("deadline.lua"),
    include_str!("common.lua"),
    include_str!("create.lua")
);
const ROTATE_LUA: &str = concat!(
    include_str!("deadline.lua"),
    include_str!("common.lua"),
    include_str!("rotate.lua")
);
const REVOKE_LUA: &str = concat!(
    include_str!("deadline.lua"),
    include_str!("common.lua"),
    include_str!("revoke.lua")
);
const REAUTH_LUA: &str = concat!(
    include_str!("deadline.lua"),
    include_str!("common.lua"),
    include_str!("reauth.lua")
);

/// The SHA1 by which `EVALSHA` names the rotate script (to drive it from `redis-benchmark`).
pub fn rotate_script_sha() -> String {
    Script::new(ROTATE_LUA).get_hash().to_owned()
}

struct Scripts {
    create: Script,
    rotate: Script,
    revoke: Script,
    reauth: Script,
}

/// Refresh-token sessions in Redis. Clones share one auto-reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
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

fn corrupt(what: &'static str) -> StoreError {
    tracing::error!(target: "baton::redis", what, "stored session data is not readable");
    StoreError::Corrupted(what)
}

/// The network class and network of `ip` under `policy` (empty when unknown).
fn network_args(policy: &Policy, ip: Option<IpAddr>) -> (String, String) {
    ip.map(|ip| policy.network_of(ip))
        .map(|net| (net.class(), net.to_string()))
        .unwrap_or_default()
}

/// A new live session as a record (member first), its network under `policy`.
fn encode(session: &Session, policy: &Policy) -> String {
    let d = &session.device;
    let ip = d.ip.map(|ip| ip.to_string()).unwrap_or_default();
    // The network of the login address, in the slot of its family.
    let (class, network) = network_args(policy, d.ip);
    let seen = if class.is_empty() {
        String::new()
    } else {
        format!("{class}|{network}")
    };
    let (v4, v6) = if class.starts_with('6') {
        (String::new(), seen)
    } else {
        (seen, String::new())
    };
    [
        session.id.random_part(),
        session.generation.to_string(),
        session.created_at.to_string(),
        session.last_used_at.to_string(),
        session.expires_at.to_string(),
        session.absolute_expires_at.to_string(),
        ip,
        d.name.clone().unwrap_or_default(),
        d.user_agent.clone().unwrap_or_default(),
        session.user_id.clone(),
        String::new(),
        d.id.clone().unwrap_or_default(),
        v4,
        v6,
        session
            .network_changed_at
            .map(|t| t.to_string())
            .unwrap_or_default(),
        session.auth_time.to_string(),
        session.amr.join(" "),
        session.acr.clone().unwrap_or_default(),
        session.dpop_jkt.clone().unwrap_or_default(),
    ]
    .join(&US.to_string())
}

/// A live record (member first) back into a session of the user with tag `tag`.
fn decode(tag: &str, record: &str) -> Result<Session, StoreError> {
    let mut f: Vec<&str> = record.split(US).collect();
    // Fields 12 to 19 came later: records written before them have 10 or 11 fields (or 18,
    // before the DPoP key).
    let mut later = [""; 8];
    match f.len() {
        10 | 11 => {}
        18 | 19 => later[..f.len() - 11].copy_from_slice(&f[11..]),
        _ => return Err(corrupt("wrong number of fields")),
    }
    // The 11th field (the latest rotation's attempt id) is the scripts' own.
    f.truncate(10);
    let [
        device_id,
        _v4,
        _v6,
        network_changed_at,
        auth_time,
        amr,
        acr,
        dpop_jkt,
    ] = later;
    let [
        member,
        generation,
        created,
        last_used,
        expires,
        absolute,
        ip,
        name,
        ua,
        user_id,
    ] = f[..]
    else {
        return Err(corrupt("wrong number of fields"));
    };
    let id: SessionId = format!("{tag}{member}")
        .parse()
        .map_err(|_| corrupt("bad session id"))?;
    let num = |s: &str| s.parse::<u64>().map_err(|_| corrupt("bad number"));
    let ip = match ip {
        "" => None,
        ip => Some(ip.parse::<IpAddr>().map_err(|_| corrupt("bad ip"))?),
    };
    let mut device = Device::new((!ua.is_empty()).then_some(ua), ip);
    if !name.is_empty() {
        device = device.with_name(name);
    }
    if !device_id.is_empty() {
        device = device.with_id(device_id);
    }
    let created = num(created)?;
    let mut authentication =
        Authentication::new(amr.split(' ').filter(|m| !m.is_empty()).map(str::to_owned));
    if !acr.is_empty() {
        authentication = authentication.with_acr(acr);
    }
    let auth_time = match auth_time {
        "" => created,
        t => num(t)?,
    };
    let network_changed_at = match network_changed_at {
        "" => None,
        t => Some(num(t)?),
    };
    Ok(Session::new(
        id,
        user_id.to_owned(),
        device,
        created,
        num(last_used)?,
        num(generation)?,
        num(expires)?,
        num(absolute)?,
    )
    .with_authentication(auth_time, authentication)
    .with_network_changed_at(network_changed_at)
    .with_dpop_jkt((!dpop_jkt.is_empty()).then(|| dpop_jkt.to_owned())))
}

/// The live sessions of a user's key at `now` (revoked and expired records skipped).
fn live_sessions(tag: &str, value: &str, now: u64) -> Result<Vec<Session>, StoreError> {
    let mut sessions = Vec::new();
    for record in value.split(RS).filter(|r| !r.is_empty()) {
        if record.split(US).nth(1) == Some("R") {
            continue;
        }
        let session = decode(tag, record)?;
        if now < session.expires_at {
            sessions.push(session);
        }
    }
    Ok(sessions)
}

fn text(value: &Value) -> Result<String, StoreError> {
    redis::from_redis_value_ref::<String>(value).map_err(|_| corrupt("not a string"))
}

impl RedisStore {
    /// Sessions on `conn` (shared with the feed, the limiter and the application), with the
    /// prefix of `options`.
    pub fn new(
        conn: impl Into<RedisConnection>,
        keys: RefreshKeys,
        policy: Policy,
        options: &RedisOptions,
    ) -> Self {
        RedisStore {
            conn: conn.into(),
            keys,
            policy,
            clock: Arc::new(SystemClock),
            options: Arc::new(options.clone()),
            scripts: Arc::new(Scripts {
                create: Script::new(CREATE_LUA),
                rotate: Script::new(ROTATE_LUA),
                revoke: Script::new(REVOKE_LUA),
                reauth: Script::new(REAUTH_LUA),
            }),
        }
    }

    /// Connects to `url` (`redis://host:port/db`): a [`RedisConnection`] of its own (use
    /// [`new`](Self::new) to share one).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached within the connect timeout.
    pub async fn connect(
        url: &str,
        keys: RefreshKeys,
        policy: Policy,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let conn = RedisConnection::connect(url, &options).await?;
        Ok(Self::new(conn, keys, policy, &options))
    }

    /// Connects to a Redis Cluster through any of its `nodes` (`redis://host:port`), with
    /// `redis`'s cluster client (feature `cluster`): it follows `MOVED`/`ASK` redirections and
    /// re-discovers the topology when a master fails over. Every script touches one key, so
    /// any cluster layout works; give several seed nodes so a connect survives one being down.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no node can be reached within the connect timeout.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster(
        nodes: &[&str],
        keys: RefreshKeys,
        policy: Policy,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let conn = RedisConnection::connect_cluster(nodes, &options).await?;
        Ok(Self::new(conn, keys, policy, &options))
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn key(&self, tag: &str) -> String {
        format!("{}{{{tag}}}", self.options.prefix)
    }

    /// The Redis key holding `user_id`'s sessions (for inspection and tests).
    pub fn user_key(&self, user_id: &str) -> String {
        self.key(&baton_store::user_tag_of(user_id))
    }

    /// The connection (shared by clones), for inspection and the application's own commands.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// The prefix of every key the store writes (the feed and the limiter sharing its
    /// connection take the same one).
    pub fn prefix(&self) -> &str {
        self.options.prefix()
    }

    async fn read_user(&self, tag: &str) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.now_millis();
        let key = self.key(tag);
        let key = &key;
        let value: Option<String> = self
            .conn
            .read("read sessions", move |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        value.map_or(Ok(Vec::new()), |v| live_sessions(tag, &v, now))
    }

    async fn revoke_members(
        &self,
        user_id: &str,
        only: Option<SessionId>,
    ) -> Result<Vec<SessionId>, StoreError> {
        let now = self.clock.now_millis();
        let mut args = vec![
            now.to_string(),
            user_id.to_owned(),
            REVOKED_TOMBSTONE_MS.to_string(),
            attempt_id(),
        ];
        if let Some(id) = only {
            args.push(id.random_part().to_owned());
        }
        let members: Vec<String> = self
            .conn
            .write_script(
                "revoke",
                &self.scripts.revoke,
                &[self.user_key(user_id)],
                &args,
            )
            .await?;
        let tag = baton_store::user_tag_of(user_id);
        Ok(members
            .iter()
            .filter_map(|m| format!("{tag}{m}").parse().ok())
            .collect())
    }
}

impl RefreshStore for RedisStore {
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
        let id = SessionId::generate(user_id)?;
        let absolute = now.saturating_add(policy_ms(self.policy.absolute_lifetime()));
        let expires = now
            .saturating_add(policy_ms(self.policy.idle_lifetime()))
            .min(absolute);
        let session = Session::new(
            id,
            user_id.to_owned(),
            login.device.sanitized(),
            now,
            now,
            0,
            expires,
            absolute,
        )
        .with_authentication(now, login.authentication)
        .with_dpop_jkt(login.dpop_jkt);
        let tag = id.user_tag();
        let args = [
            encode(&session, &self.policy),
            now.to_string(),
            self.policy.max_sessions_per_user().to_string(),
            user_id.to_owned(),
            REVOKED_TOMBSTONE_MS.to_string(),
            attempt_id(),
        ];
        let (evicted, replaced): (Vec<String>, Vec<String>) = self
            .conn
            .write_script("create", &self.scripts.create, &[self.key(&tag)], &args)
            .await?;
        let ids = |members: Vec<String>| {
            members
                .iter()
                .filter_map(|m| format!("{tag}{m}").parse().ok())
                .collect()
        };
        Ok(
            Created::new(session, self.keys.mint(&id, 0), ids(evicted))
                .with_replaced(ids(replaced)),
        )
    }

    async fn rotate(&self, token: &str, context: RotateContext) -> Result<Rotation, RotateError> {
        let verified = self.keys.verify(token).ok_or(RotateError::Invalid)?;
        let id = verified.session_id;
        let tag = id.user_tag();
        let now = self.clock.now_millis();
        let policy = match self.policy.user_agent_change() {
            UserAgentChange::Revoke => "revoke",
            _ => "record",
        };
        let network_policy = match self.policy.network_change() {
            NetworkChange::Revoke => "revoke",
            NetworkChange::Flag => "flag",
            _ => "record",
        };
        let (class, network) = network_args(&self.policy, context.ip);
        let args = [
            id.random_part().to_owned(),
            verified.generation.to_string(),
            now.to_string(),
            policy_ms(self.policy.grace_window()).to_string(),
            policy_ms(self.policy.idle_lifetime()).to_string(),
            policy.to_owned(),
            context.stored_user_agent().unwrap_or_default(),
            context.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            REVOKED_TOMBSTONE_MS.to_string(),
            match self.policy.reuse_detection() {
                ReuseDetection::AfterSuccessorUse => "after-use",
                _ => "strict",
            }
            .to_owned(),
            attempt_id(),
            network_policy.to_owned(),
            class,
            network,
            context.dpop_jkt.clone().unwrap_or_default(),
        ];
        let reply: Vec<Value> = self
            .conn
            .write_script("rotate", &self.scripts.rotate, &[self.key(&tag)], &args)
            .await?;
        let code = reply.first().map(text).transpose()?.unwrap_or_default();
        let second = || {
            reply
                .get(1)
                .map(text)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let session_ref = |user_id| SessionRef { id, user_id };
        match code.as_str() {
            "rotated" | "graced" => {
                let session = decode(&tag, &second()?)?;
                let kind = if code == "rotated" {
                    RotationKind::Rotated
                } else {
                    RotationKind::Graced
                };
                let token = self.keys.mint(&id, session.generation);
                let moved = reply.get(2).map(text).transpose()?.as_deref() == Some("1");
                Ok(Rotation::new(kind, token, session).with_network_changed(moved))
            }
            refusal => Err(RotateError::refused(refusal, || second().map(session_ref))
                .unwrap_or_else(|| RotateError::Store(corrupt("unexpected script reply")))),
        }
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let sessions = self.read_user(&id.user_tag()).await?;
        Ok(sessions.into_iter().find(|s| s.id == id))
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let mut sessions = self.read_user(&baton_store::user_tag_of(user_id)).await?;
        sessions.retain(|s| s.user_id == user_id);
        sessions.sort_by(|a, b| {
            b.last_used_at
                .cmp(&a.last_used_at)
                .then(b.created_at.cmp(&a.created_at))
        });
        Ok(sessions)
    }

    async fn revoke(&self, user_id: &str, id: SessionId) -> Result<bool, StoreError> {
        if !id.belongs_to(user_id) {
            return Ok(false);
        }
        Ok(!self.revoke_members(user_id, Some(id)).await?.is_empty())
    }

    async fn reauthenticate(
        &self,
        user_id: &str,
        id: SessionId,
        authentication: Authentication,
    ) -> Result<Option<Session>, StoreError> {
        authentication.check()?;
        if !id.belongs_to(user_id) {
            return Ok(None);
        }
        let args = [
            id.random_part().to_owned(),
            user_id.to_owned(),
            self.clock.now_millis().to_string(),
            authentication.amr.join(" "),
            authentication.acr.unwrap_or_default(),
        ];
        let record: Option<String> = self
            .conn
            .write_script(
                "reauthenticate",
                &self.scripts.reauth,
                &[self.user_key(user_id)],
                &args,
            )
            .await?;
        record.map(|r| decode(&id.user_tag(), &r)).transpose()
    }

    async fn revoke_all(&self, user_id: &str) -> Result<Vec<SessionId>, StoreError> {
        self.revoke_members(user_id, None).await
    }
}

fn policy_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
