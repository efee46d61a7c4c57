//! The conformance suite every [`RefreshStore`] runs (feature `conformance`).
//!
//! A store crate calls [`conformance_tests!`](crate::conformance_tests) with a factory: an
//! async function from a [`StoreSetup`] (keys, policy and a test clock the store must read
//! time from) to `Some((store, guard))`, or `None` to skip (when its backend cannot run
//! here). The guard lives as long as the test (a test server, say).
//!
//! ```
//! use baton_store::MemoryStore;
//! use baton_store::conformance::StoreSetup;
//! use std::sync::Arc;
//!
//! async fn memory(setup: StoreSetup) -> Option<(MemoryStore, ())> {
//!     let store = MemoryStore::new(setup.keys, setup.policy).with_clock(Arc::new(setup.clock));
//!     Some((store, ()))
//! }
//!
//! baton_store::conformance_tests!(memory);
//! # fn main() {}
//! ```

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use baton_core::TestClock;

use crate::{Device, Policy, PolicyBuilder, RefreshKeys, RefreshStore, RotateContext, Session};

/// What a store under test is built from.
#[derive(Clone, Debug)]
pub struct StoreSetup {
    /// The refresh-token keys.
    pub keys: RefreshKeys,
    /// The policy.
    pub policy: Policy,
    /// The clock the store must read time from.
    pub clock: TestClock,
}

/// Builds a store for one test; `None` skips the test.
pub trait StoreFactory: Sync {
    /// The store.
    type Store: RefreshStore + Clone;
    /// Kept alive for the duration of the test.
    type Guard: Send;
    /// Builds a store from `setup`.
    fn make(
        &self,
        setup: StoreSetup,
    ) -> impl Future<Output = Option<(Self::Store, Self::Guard)>> + Send;
}

impl<F, Fut, S, G> StoreFactory for F
where
    F: Fn(StoreSetup) -> Fut + Sync,
    Fut: Future<Output = Option<(S, G)>> + Send,
    S: RefreshStore + Clone,
    G: Send,
{
    type Store = S;
    type Guard = G;
    fn make(&self, setup: StoreSetup) -> impl Future<Output = Option<(S, G)>> + Send {
        self(setup)
    }
}

pub(super) const START_MS: u64 = 1_800_000_000_000;
pub(super) const GRACE: Duration = Duration::from_secs(10);

pub(super) fn policy() -> PolicyBuilder {
    Policy::builder()
        .grace_window(GRACE)
        .idle_lifetime(Duration::from_secs(3600))
        .absolute_lifetime(Duration::from_secs(4 * 3600))
}

pub(super) async fn build<F: StoreFactory>(
    factory: &F,
    policy: Policy,
) -> Option<(F::Store, F::Guard, TestClock)> {
    let clock = TestClock::at_millis(START_MS);
    let keys = RefreshKeys::new(1, [0x5a; 32]).expect("valid key");
    let (store, guard) = factory
        .make(StoreSetup {
            keys,
            policy,
            clock: clock.clone(),
        })
        .await?;
    Some((store, guard, clock))
}

macro_rules! setup {
    ($factory:expr) => {
        setup!($factory, policy())
    };
    ($factory:expr, $policy:expr) => {
        match build($factory, $policy.build().expect("valid test policy")).await {
            Some(built) => built,
            None => return,
        }
    };
}

pub(super) fn device(ua: &str, ip: [u8; 4]) -> Device {
    Device::new(Some(ua), Some(IpAddr::V4(Ipv4Addr::from(ip))))
}

pub(super) fn ctx(ua: &str, ip: [u8; 4]) -> RotateContext {
    RotateContext::new(Some(ua), Some(IpAddr::V4(Ipv4Addr::from(ip))))
}

pub(super) fn ids(sessions: &[Session]) -> Vec<String> {
    sessions.iter().map(|s| s.id.to_string()).collect()
}

mod device;
mod rotation;
mod sessions;

pub use device::*;
pub use rotation::*;
pub use sessions::*;

/// Generates one `#[tokio::test]` per conformance case for a store factory (see the
/// [module docs](crate::conformance)).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@cases $factory;
            create_and_list,
            rotate_once,
            rotate_twice_spends_the_first,
            reuse_after_grace_revokes_the_session,
            reuse_inside_grace_gets_the_same_successor,
            grandparent_inside_grace_is_reused,
            forged_secret_is_invalid_and_harmless,
            garbage_tokens_are_invalid,
            idle_expiry_slides,
            absolute_cap,
            revoke_one,
            revoke_all,
            max_sessions_evicts_the_least_recently_used,
            concurrent_rotation_never_forks,
            many_users_many_sessions,
            user_agent_change_is_recorded,
            user_agent_change_revokes_when_configured,
            user_agent_change_revokes_on_the_grace_path,
            after_successor_use_graces_the_parent_past_the_window,
            after_successor_use_detects_reuse_once_the_successor_was_used,
            strict_refuses_the_parent_past_the_window,
            reads_are_touch_free,
            bad_input_is_refused_or_cleaned,
            device_id_replaces_that_devices_session,
            device_id_replacement_comes_before_eviction,
            bad_device_ids_and_methods_are_refused,
            network_change_is_recorded,
            network_change_flags_when_configured,
            network_change_revokes_when_configured,
            reauthenticate_renews_auth_time_only,
            dpop_bound_sessions_rotate_only_with_their_key
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case(&$factory).await;
            }
        )*
    };
}
