//! `MemoryStore`: sessions in process memory, for development and tests.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use baton_core::{Clock, SystemClock};

use crate::{
    Authentication, Created, DeviceChange, Login, NetworkChange, Policy, RefreshKeys, RefreshStore,
    RotateContext, RotateError, Rotation, RotationKind, Session, SessionId, SessionRef, StoreError,
    UserAgentChange, check_login,
};

/// How long, in milliseconds, a revoked session is remembered as revoked (so its token gets
/// [`RotateError::Revoked`] rather than `Expired`), capped by its remaining lifetime.
pub const REVOKED_TOMBSTONE_MS: u64 = 24 * 3600 * 1000;
/// How often, at most, a full sweep of expired entries runs.
const SWEEP_EVERY_MS: u64 = 60 * 1000;

#[derive(Clone, Debug)]
struct Record {
    user_id: String,
    device: crate::Device,
    created_at: u64,
    last_used_at: u64,
    generation: u64,
    rotated_at: u64,
    expires_at: u64,
    absolute_expires_at: u64,
    auth_time: u64,
    authentication: Authentication,
    network_changed_at: Option<u64>,
    /// The address last seen of each family (IPv4, IPv6): a dual-stack client alternates
    /// between the two, and each is compared with its own kind.
    last_ip: [Option<IpAddr>; 2],
    dpop_jkt: Option<String>,
}

/// The slot of `ip`'s family in [`Record::last_ip`].
fn family(ip: IpAddr) -> usize {
    usize::from(ip.to_canonical().is_ipv6())
}

impl Record {
    fn session(&self, id: SessionId) -> Session {
        Session {
            id,
            user_id: self.user_id.clone(),
            device: self.device.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            generation: self.generation,
            expires_at: self.expires_at,
            absolute_expires_at: self.absolute_expires_at,
            auth_time: self.auth_time,
            amr: self.authentication.amr.clone(),
            acr: self.authentication.acr.clone(),
            network_changed_at: self.network_changed_at,
            dpop_jkt: self.dpop_jkt.clone(),
        }
    }
}

#[derive(Clone, Debug)]
enum Slot {
    Live(Box<Record>),
    Revoked { until: u64 },
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Slot>,
    users: HashMap<String, Vec<SessionId>>,
    last_sweep: u64,
}

impl State {
    fn live(&self, id: &SessionId, now: u64) -> Option<&Record> {
        match self.sessions.get(id) {
            Some(Slot::Live(r)) if now < r.expires_at => Some(r),
            _ => None,
        }
    }

    /// Turns a session into a tombstone and drops it from its user's index.
    fn revoke(&mut self, id: &SessionId, now: u64) -> Option<Record> {
        let Some(Slot::Live(record)) = self.sessions.get(id).cloned() else {
            return None;
        };
        let until = record
            .expires_at
            .min(now.saturating_add(REVOKED_TOMBSTONE_MS));
        self.sessions.insert(*id, Slot::Revoked { until });
        self.unindex(&record.user_id, id);
        Some(*record)
    }

    fn unindex(&mut self, user_id: &str, id: &SessionId) {
        if let Some(ids) = self.users.get_mut(user_id) {
            ids.retain(|s| s != id);
            if ids.is_empty() {
                self.users.remove(user_id);
            }
        }
    }

    /// Drops the user's index entries whose sessions are gone or expired.
    fn purge_user(&mut self, user_id: &str, now: u64) {
        let Some(ids) = self.users.get(user_id) else {
            return;
        };
        let dead: Vec<SessionId> = ids
            .iter()
            .filter(|id| self.live(id, now).is_none())
            .copied()
            .collect();
        for id in dead {
            if matches!(self.sessions.get(&id), Some(Slot::Live(_))) {
                self.sessions.remove(&id);
            }
            self.unindex(user_id, &id);
        }
    }

    /// Removes every expired session and tombstone, at most once a minute.
    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep = now;
        self.sessions.retain(|_, slot| match slot {
            Slot::Live(r) => now < r.expires_at,
            Slot::Revoked { until } => now < *until,
        });
        let sessions = &self.sessions;
        self.users.retain(|_, ids| {
            ids.retain(|id| matches!(sessions.get(id), Some(Slot::Live(_))));
            !ids.is_empty()
        });
    }
}

/// Sessions in process memory, with exactly the semantics of the Redis store (the same
/// conformance suite runs against both). Expired sessions are purged as the store is used,
/// so memory stays bounded. Clones share the same sessions.
///
/// ```
/// use baton_store::{Device, MemoryStore, Policy, RefreshKeys, RefreshStore, RotateContext, RotationKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
/// let created = store.create("alice", Device::new(Some("Firefox"), None)).await.unwrap();
/// let rotation = store.rotate(created.token.expose(), RotateContext::default()).await.unwrap();
/// assert_eq!(rotation.kind, RotationKind::Rotated);
/// assert_eq!(store.list("alice").await.unwrap().len(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    keys: RefreshKeys,
    policy: Policy,
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(keys: RefreshKeys, policy: Policy) -> Self {
        MemoryStore {
            keys,
            policy,
            clock: Arc::new(SystemClock),
            state: Arc::default(),
        }
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written entry: every update is
        // a single insert or remove. Carry on with the data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of entries held (live sessions and tombstones), for memory checks.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// `true` when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry now (normally done as the store is used).
    pub fn purge_expired(&self) {
        let now = self.clock.now_millis();
        let mut state = self.lock();
        state.last_sweep = 0;
        state.sweep(now);
    }

    fn create_sync(&self, user_id: &str, login: Login) -> Result<Created, StoreError> {
        check_login(user_id, &login)?;
        let now = self.clock.now_millis();
        let id = SessionId::generate(user_id)?;
        let absolute = now.saturating_add(self.policy.absolute_ms());
        let mut record = Record {
            user_id: user_id.to_owned(),
            device: login.device.sanitized(),
            created_at: now,
            last_used_at: now,
            generation: 0,
            rotated_at: 0,
            expires_at: now.saturating_add(self.policy.idle_ms()).min(absolute),
            absolute_expires_at: absolute,
            auth_time: now,
            authentication: login.authentication,
            network_changed_at: None,
            last_ip: [None; 2],
            dpop_jkt: login.dpop_jkt,
        };
        if let Some(ip) = record.device.ip {
            record.last_ip[family(ip)] = Some(ip);
        }
        let session = record.session(id);
        let mut state = self.lock();
        state.sweep(now);
        state.purge_user(user_id, now);
        let mut replaced = Vec::new();
        if let Some(device_id) = &record.device.id {
            let same: Vec<SessionId> = state
                .users
                .get(user_id)
                .into_iter()
                .flatten()
                .filter(|id| {
                    state
                        .live(id, now)
                        .is_some_and(|r| r.device.id.as_ref() == Some(device_id))
                })
                .copied()
                .collect();
            for id in same {
                state.revoke(&id, now);
                replaced.push(id);
            }
        }
        let mut evicted = Vec::new();
        loop {
            let ids = state.users.get(user_id).map_or(&[][..], Vec::as_slice);
            if ids.len() < self.policy.max_sessions_per_user() {
                break;
            }
            let oldest = ids
                .iter()
                .filter_map(|id| {
                    state
                        .live(id, now)
                        .map(|r| (r.last_used_at, id.random_part(), *id))
                })
                .min();
            let Some((_, _, oldest)) = oldest else { break };
            state.revoke(&oldest, now);
            evicted.push(oldest);
        }
        state.sessions.insert(id, Slot::Live(Box::new(record)));
        state.users.entry(user_id.to_owned()).or_default().push(id);
        drop(state);
        Ok(Created::new(session, self.keys.mint(&id, 0), evicted).with_replaced(replaced))
    }

    fn rotate_sync(&self, token: &str, context: RotateContext) -> Result<Rotation, RotateError> {
        let verified = self.keys.verify(token).ok_or(RotateError::Invalid)?;
        let id = verified.session_id;
        let now = self.clock.now_millis();
        let mut state = self.lock();
        let record = match state.sessions.get(&id) {
            None => return Err(RotateError::Expired),
            Some(Slot::Revoked { until }) if now < *until => {
                return Err(RotateError::Revoked);
            }
            Some(Slot::Revoked { .. }) => {
                state.sessions.remove(&id);
                return Err(RotateError::Expired);
            }
            Some(Slot::Live(r)) if now >= r.expires_at => {
                let user_id = r.user_id.clone();
                state.sessions.remove(&id);
                state.unindex(&user_id, &id);
                return Err(RotateError::Expired);
            }
            Some(Slot::Live(r)) => r.clone(),
        };
        // A session bound to a DPoP key answers only a request that proves it: without the
        // key a token is not presented at all (no rotation, no reuse verdict).
        if record
            .dpop_jkt
            .as_ref()
            .is_some_and(|jkt| context.dpop_jkt.as_ref() != Some(jkt))
        {
            return Err(RotateError::DpopKeyMismatch);
        }
        let current = record.generation;
        let presented = verified.generation;
        let session_ref = || SessionRef {
            id,
            user_id: record.user_id.clone(),
        };
        if presented > current {
            // Only the server can mint tokens; a future generation means nothing here.
            return Err(RotateError::Invalid);
        }
        let graced = presented + 1 == current
            && self
                .policy
                .graces_parent(now.saturating_sub(record.rotated_at));
        if presented < current && !graced {
            state.revoke(&id, now);
            return Err(RotateError::Reused(session_ref()));
        }
        // Checked on the grace path too: a parent coming back from another browser is no
        // more welcome than the live token would be.
        let changed = if self.policy.user_agent_change() == UserAgentChange::Revoke
            && context.stored_user_agent() != record.device.user_agent
        {
            Some(DeviceChange::UserAgent)
        } else {
            None
        };
        let last = context.ip.and_then(|ip| record.last_ip[family(ip)]);
        let network_changed = self.policy.network_changed(last, context.ip);
        let changed = changed.or((network_changed
            && self.policy.network_change() == NetworkChange::Revoke)
            .then_some(DeviceChange::Network));
        if let Some(change) = changed {
            state.revoke(&id, now);
            return Err(RotateError::DeviceChanged {
                session: session_ref(),
                change,
            });
        }
        if graced {
            return Ok(Rotation::new(
                RotationKind::Graced,
                self.keys.mint(&id, current),
                record.session(id),
            ));
        }
        let mut record = record;
        record.generation = current + 1;
        record.last_used_at = now;
        record.rotated_at = now;
        record.expires_at = now
            .saturating_add(self.policy.idle_ms())
            .min(record.absolute_expires_at);
        record.device.user_agent = context.stored_user_agent();
        record.device.ip = context.ip;
        if let Some(ip) = context.ip {
            record.last_ip[family(ip)] = Some(ip);
        }
        if network_changed && self.policy.network_change() == NetworkChange::Flag {
            record.network_changed_at = Some(now);
        }
        let session = record.session(id);
        state.sessions.insert(id, Slot::Live(record));
        drop(state);
        Ok(Rotation::new(
            RotationKind::Rotated,
            self.keys.mint(&id, current + 1),
            session,
        )
        .with_network_changed(network_changed))
    }

    fn list_sync(&self, user_id: &str) -> Vec<Session> {
        let now = self.clock.now_millis();
        let mut state = self.lock();
        state.purge_user(user_id, now);
        let mut sessions: Vec<Session> = state
            .users
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| state.live(id, now).map(|r| r.session(*id)))
            .collect();
        sessions.sort_by(|a, b| {
            b.last_used_at
                .cmp(&a.last_used_at)
                .then(b.created_at.cmp(&a.created_at))
        });
        sessions
    }
}

impl RefreshStore for MemoryStore {
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
        self.create_sync(user_id, login.into())
    }

    async fn rotate(&self, token: &str, context: RotateContext) -> Result<Rotation, RotateError> {
        self.rotate_sync(token, context)
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now_millis();
        Ok(self.lock().live(&id, now).map(|r| r.session(id)))
    }

    async fn list(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        Ok(self.list_sync(user_id))
    }

    async fn revoke(&self, user_id: &str, id: SessionId) -> Result<bool, StoreError> {
        let now = self.clock.now_millis();
        let mut state = self.lock();
        if state.live(&id, now).is_none_or(|r| r.user_id != user_id) {
            return Ok(false);
        }
        Ok(state.revoke(&id, now).is_some())
    }

    async fn reauthenticate(
        &self,
        user_id: &str,
        id: SessionId,
        authentication: Authentication,
    ) -> Result<Option<Session>, StoreError> {
        authentication.check()?;
        let now = self.clock.now_millis();
        let mut state = self.lock();
        let Some(Slot::Live(record)) = state.sessions.get_mut(&id) else {
            return Ok(None);
        };
        if now >= record.expires_at || record.user_id != user_id {
            return Ok(None);
        }
        record.auth_time = now;
        record.authentication = authentication;
        Ok(Some(record.session(id)))
    }

    async fn revoke_all(&self, user_id: &str) -> Result<Vec<SessionId>, StoreError> {
        let now = self.clock.now_millis();
        let mut state = self.lock();
        state.purge_user(user_id, now);
        let ids = state.users.get(user_id).cloned().unwrap_or_default();
        Ok(ids
            .into_iter()
            .filter(|id| state.revoke(id, now).is_some())
            .collect())
    }
}
