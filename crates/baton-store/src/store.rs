//! The `RefreshStore` trait and what its operations return.

use std::future::Future;

use crate::{
    Authentication, Login, Policy, RefreshKeys, RefreshToken, RotateContext, RotateError, Session,
    SessionId, StoreError,
};

/// A new session and its first refresh token.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Created {
    /// The session.
    pub session: Session,
    /// Its first refresh token (generation 0).
    pub token: RefreshToken,
    /// Sessions of the same user evicted to stay within the per-user limit.
    pub evicted: Vec<SessionId>,
    /// The user's earlier session on the same device (same [`Device::id`](crate::Device::id)),
    /// replaced by this one.
    pub replaced: Vec<SessionId>,
}

impl Created {
    /// A creation result (for store implementations).
    pub fn new(session: Session, token: RefreshToken, evicted: Vec<SessionId>) -> Self {
        Created {
            session,
            token,
            evicted,
            replaced: Vec::new(),
        }
    }

    /// Sets the replaced sessions (for store implementations).
    #[must_use]
    pub fn with_replaced(mut self, replaced: Vec<SessionId>) -> Self {
        self.replaced = replaced;
        self
    }
}

/// How a refresh token was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationKind {
    /// The presented token was the live one: it is now spent and a successor was issued.
    Rotated,
    /// The presented token was the immediate parent of the live one, spent less than the
    /// grace window ago (two tabs refreshing at once): the answer carries the *same*
    /// successor the first caller got.
    Graced,
}

/// A successful refresh.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rotation {
    /// Rotated or graced.
    pub kind: RotationKind,
    /// The live refresh token to hand back.
    pub token: RefreshToken,
    /// The session after the rotation (for issuing the access token).
    pub session: Session,
    /// `true` when this refresh came from outside the session's network (see
    /// [`NetworkChange`](crate::NetworkChange); always `false` on the grace path, which
    /// records nothing).
    pub network_changed: bool,
}

impl Rotation {
    /// A rotation result (for store implementations).
    pub fn new(kind: RotationKind, token: RefreshToken, session: Session) -> Self {
        Rotation {
            kind,
            token,
            session,
            network_changed: false,
        }
    }

    /// Sets whether the refresh came from another network (for store implementations).
    #[must_use]
    pub fn with_network_changed(mut self, changed: bool) -> Self {
        self.network_changed = changed;
        self
    }
}

/// Where sessions and their refresh-token generations live.
///
/// Every implementation has the same semantics, checked by the conformance suite
/// (`baton_store::conformance_tests!`, feature `conformance`):
///
/// - [`rotate`](Self::rotate) first checks the token's MAC with the store's
///   [`RefreshKeys`] (a forged or malformed token is [`RotateError::Invalid`] and touches
///   nothing), then, in one atomic step: the live generation rotates; its immediate parent is
///   graced with the same successor while the policy's [`ReuseDetection`](crate::ReuseDetection)
///   allows; any other spent generation revokes the whole session ([`RotateError::Reused`]).
///   A changed user agent or network is then judged by the policy (on the grace path too:
///   a parent coming back from elsewhere is no more welcome than the live token would be).
/// - [`create`](Self::create) with a device identifier replaces the user's live session
///   with that identifier ([`Created::replaced`]) before counting the per-user limit.
/// - Every write is safe to repeat: a store that retries after a lost reply gives the caller
///   the outcome of the first attempt (the same successor, the same revoked sessions), never a
///   second session or a false reuse.
/// - Reads ([`get`](Self::get), [`list`](Self::list)) never change a session.
/// - A store that is down or too slow answers [`StoreError::Unavailable`] in bounded time.
pub trait RefreshStore: Send + Sync + 'static {
    /// The keys that mint and verify this store's refresh tokens.
    fn keys(&self) -> &RefreshKeys;

    /// The store's policy (lifetimes, grace window, limits).
    fn policy(&self) -> &Policy;

    /// `true` when other processes may share these sessions (a server store: Redis,
    /// PostgreSQL), `false` for one process's own memory (the default). The facade then
    /// refuses to build without revocations every instance hears (a feed), unless the
    /// application says it runs one instance: a logout on one instance must refuse the
    /// session's access tokens on all of them.
    fn is_shared(&self) -> bool {
        false
    }

    /// Creates a session for `user_id` from `login` (a [`Login`], or just a
    /// [`Device`](crate::Device)): the user's live session with the same device identifier,
    /// if any, is replaced, then the user's least recently used sessions beyond the policy's
    /// limit are evicted. The session's `auth_time` is now.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] when [`check_login`](crate::check_login) refuses the input.
    fn create(
        &self,
        user_id: &str,
        login: impl Into<Login> + Send,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Spends `token` and returns its successor (see the trait docs).
    fn rotate(
        &self,
        token: &str,
        context: RotateContext,
    ) -> impl Future<Output = Result<Rotation, RotateError>> + Send;

    /// The session, if it is live. Does not touch it.
    fn get(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// The user's live sessions, most recently used first. Does not touch them.
    fn list(&self, user_id: &str) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Revokes one session of `user_id`; `false` when it is not a live session of that user.
    fn revoke(
        &self,
        user_id: &str,
        id: SessionId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that the user proved who they are again in the live session `id` of `user_id`
    /// (a password asked again before a sensitive action): `auth_time` becomes now and `amr`
    /// and `acr` become `authentication`'s. Nothing else changes (no rotation). `None` when
    /// it is not a live session of that user.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] when [`Authentication::check`] refuses the values.
    fn reauthenticate(
        &self,
        user_id: &str,
        id: SessionId,
        authentication: Authentication,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Revokes every session of `user_id` and returns the sessions it revoked (so their access
    /// tokens can be refused one by one).
    fn revoke_all(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send;
}
