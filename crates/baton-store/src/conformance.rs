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

use crate::{
    Device, Policy, PolicyBuilder, RefreshKeys, RefreshStore, ReuseDetection, RotateContext,
    RotateError, RotationKind, Session, UserAgentChange,
};

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

const START_MS: u64 = 1_800_000_000_000;
const GRACE: Duration = Duration::from_secs(10);

fn policy() -> PolicyBuilder {
    Policy::builder()
        .grace_window(GRACE)
        .idle_lifetime(Duration::from_secs(3600))
        .absolute_lifetime(Duration::from_secs(4 * 3600))
}

async fn build<F: StoreFactory>(
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

fn device(ua: &str, ip: [u8; 4]) -> Device {
    Device::new(Some(ua), Some(IpAddr::V4(Ipv4Addr::from(ip))))
}

fn ctx(ua: &str, ip: [u8; 4]) -> RotateContext {
    RotateContext::new(Some(ua), Some(IpAddr::V4(Ipv4Addr::from(ip))))
}

fn ids(sessions: &[Session]) -> Vec<String> {
    sessions.iter().map(|s| s.id.to_string()).collect()
}

/// Sessions are created with their device, listed newest use first, and read back.
pub async fn create_and_list<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let a = store
        .create(
            "alice",
            device("Firefox/130", [10, 0, 0, 1]).with_name("laptop"),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let b = store
        .create("alice", device("Safari/17", [10, 0, 0, 2]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let c = store.create("alice", Device::default()).await.unwrap();
    store
        .create("bob", device("curl/8", [10, 0, 0, 3]))
        .await
        .unwrap();

    assert_eq!(a.session.user_id, "alice");
    assert_eq!(a.session.generation, 0);
    assert_eq!(a.session.created_at, START_MS);
    assert_eq!(a.session.device.name.as_deref(), Some("laptop"));
    assert!(a.evicted.is_empty());
    let list = store.list("alice").await.unwrap();
    assert_eq!(
        ids(&list),
        ids(&[c.session.clone(), b.session.clone(), a.session.clone()])
    );
    assert_eq!(list[2], a.session, "stored exactly as created");
    assert_eq!(list[1].device.user_agent.as_deref(), Some("Safari/17"));
    assert_eq!(
        list[1].device.ip,
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
    );
    assert_eq!(list[0].device, Device::default());
    assert_eq!(store.list("bob").await.unwrap().len(), 1);
    assert!(store.list("carol").await.unwrap().is_empty());
    assert_eq!(store.get(b.session.id).await.unwrap(), Some(b.session));
}

/// Rotating the live token spends it and records the device and time.
pub async fn rotate_once<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store
        .create("alice", device("Firefox/130", [10, 0, 0, 1]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    let r = store
        .rotate(created.token.expose(), ctx("Firefox/131", [10, 0, 0, 9]))
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_ne!(r.token, created.token);
    assert_eq!(r.session.id, created.session.id);
    assert_eq!(r.session.generation, 1);
    assert_eq!(r.session.last_used_at, START_MS + 60_000);
    assert_eq!(r.session.created_at, START_MS);
    assert_eq!(r.session.device.user_agent.as_deref(), Some("Firefox/131"));
    assert_eq!(
        r.session.device.ip,
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)))
    );
    assert_eq!(
        r.session.expires_at,
        START_MS + 60_000 + 3600 * 1000,
        "idle deadline slides"
    );
    assert_eq!(
        store.get(created.session.id).await.unwrap(),
        Some(r.session)
    );
}

/// Two rotations in a row: the first token is spent, and presenting it (a grandparent)
/// revokes the session.
pub async fn rotate_twice_spends_the_first<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let t0 = store
        .create("alice", Device::default())
        .await
        .unwrap()
        .token;
    clock.advance(GRACE * 2);
    let t1 = store
        .rotate(t0.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    clock.advance(GRACE * 2);
    let t2 = store
        .rotate(t1.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(t2.kind, RotationKind::Rotated);
    assert_eq!(t2.session.generation, 2);
    assert!(matches!(
        store.rotate(t0.expose(), RotateContext::default()).await,
        Err(RotateError::Reused(_))
    ));
}

/// A spent token after the grace window is theft: the session is revoked, the newest token
/// is dead too.
pub async fn reuse_after_grace_revokes_the_session<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    let t1 = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    clock.advance(GRACE + Duration::from_millis(1));
    match store
        .rotate(created.token.expose(), RotateContext::default())
        .await
    {
        Err(RotateError::Reused(s)) => {
            assert_eq!(s.id, created.session.id);
            assert_eq!(s.user_id, "alice");
        }
        other => panic!("expected Reused, got {other:?}"),
    }
    assert!(matches!(
        store.rotate(t1.expose(), RotateContext::default()).await,
        Err(RotateError::Revoked(None))
    ));
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.get(created.session.id).await.unwrap(), None);
}

/// Both reuse-detection policies, for the cases they must agree on.
const POLICIES: [ReuseDetection; 2] = [ReuseDetection::Strict, ReuseDetection::AfterSuccessorUse];

/// Inside the grace window the parent gets exactly the successor the first call got, under
/// both policies.
pub async fn reuse_inside_grace_gets_the_same_successor<F: StoreFactory>(factory: &F) {
    for detection in POLICIES {
        reuse_inside_grace_under(factory, detection).await;
    }
}

async fn reuse_inside_grace_under<F: StoreFactory>(factory: &F, detection: ReuseDetection) {
    let (store, _guard, clock) = setup!(factory, policy().reuse_detection(detection));
    let created = store.create("alice", Device::default()).await.unwrap();
    let first = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    clock.advance(GRACE - Duration::from_millis(1));
    let second = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(second.kind, RotationKind::Graced);
    assert_eq!(second.token, first.token, "same successor, never a sibling");
    assert_eq!(second.session.generation, 1);
    let next = store
        .rotate(first.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(next.kind, RotationKind::Rotated);
    assert_eq!(next.session.generation, 2);
}

/// A grandparent is never graced, even inside the window, under both policies.
pub async fn grandparent_inside_grace_is_reused<F: StoreFactory>(factory: &F) {
    for detection in POLICIES {
        grandparent_is_reused_under(factory, detection).await;
    }
}

async fn grandparent_is_reused_under<F: StoreFactory>(factory: &F, detection: ReuseDetection) {
    let (store, _guard, _clock) = setup!(factory, policy().reuse_detection(detection));
    let t0 = store
        .create("alice", Device::default())
        .await
        .unwrap()
        .token;
    let t1 = store
        .rotate(t0.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    let t2 = store
        .rotate(t1.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    assert!(matches!(
        store.rotate(t0.expose(), RotateContext::default()).await,
        Err(RotateError::Reused(_))
    ));
    assert!(matches!(
        store.rotate(t2.expose(), RotateContext::default()).await,
        Err(RotateError::Revoked(None))
    ));
}

/// A token naming a real session with a forged secret is `Invalid` and changes nothing.
pub async fn forged_secret_is_invalid_and_harmless<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    let attacker = RefreshKeys::new(1, [0x66; 32]).unwrap();
    for generation in [0, 1, 5] {
        let forged = attacker.mint(&created.session.id, generation);
        assert_eq!(
            store
                .rotate(forged.expose(), RotateContext::default())
                .await
                .unwrap_err(),
            RotateError::Invalid
        );
    }
    let mut flipped = created.token.expose().to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        store
            .rotate(&flipped, RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Invalid
    );
    assert_eq!(
        store.get(created.session.id).await.unwrap(),
        Some(created.session.clone())
    );
    let r = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
}

/// Garbage of every shape is `Invalid`, without side effects.
pub async fn garbage_tokens_are_invalid<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    let good = created.token.expose().to_owned();
    let garbage = [
        String::new(),
        "v1.".to_owned(),
        "v1".to_owned(),
        " ".repeat(90),
        "v1.".to_owned() + &"A".repeat(87),
        "v2.".to_owned() + &good[3..],
        good[..good.len() - 1].to_owned(),
        format!("{good}A"),
        format!("{good}{good}"),
        format!("{}+{}", &good[..10], &good[11..]),
        "é".repeat(45),
        "\0".repeat(90),
        "x".repeat(100_000),
        "v1.".to_owned() + &"%".repeat(87),
    ];
    for g in &garbage {
        assert_eq!(
            store.rotate(g, RotateContext::default()).await.unwrap_err(),
            RotateError::Invalid,
            "{g:?}"
        );
    }
    assert_eq!(store.list("alice").await.unwrap(), vec![created.session]);
    assert!(store.rotate(&good, RotateContext::default()).await.is_ok());
}

/// A session unused for the idle lifetime expires; each rotation slides the deadline.
pub async fn idle_expiry_slides<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    clock.advance(Duration::from_secs(3599));
    let t1 = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        store.list("alice").await.unwrap().len(),
        1,
        "still alive: the rotation slid it"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store
            .rotate(t1.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Expired
    );
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.get(created.session.id).await.unwrap(), None);
}

/// However often it is used, a session ends at the absolute cap.
pub async fn absolute_cap<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    assert_eq!(
        created.session.absolute_expires_at,
        START_MS + 4 * 3600 * 1000
    );
    let mut token = created.token;
    for _ in 0..4 {
        clock.advance(Duration::from_secs(3500));
        let r = store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap();
        assert!(r.session.expires_at <= r.session.absolute_expires_at);
        token = r.token;
    }
    // 14,000 s in: the idle deadline would allow 3,600 s more, the 4-hour cap only 400.
    clock.advance(Duration::from_secs(500));
    assert_eq!(
        store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Expired
    );
}

/// Revoking one session kills its token and leaves the others.
pub async fn revoke_one<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let a = store.create("alice", Device::default()).await.unwrap();
    let b = store.create("alice", Device::default()).await.unwrap();
    let bob = store.create("bob", Device::default()).await.unwrap();
    assert!(
        !store.revoke("bob", a.session.id).await.unwrap(),
        "not bob's session"
    );
    assert!(!store.revoke("alice", bob.session.id).await.unwrap());
    assert!(store.revoke("alice", a.session.id).await.unwrap());
    assert!(
        !store.revoke("alice", a.session.id).await.unwrap(),
        "already revoked"
    );
    assert_eq!(
        store
            .rotate(a.token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Revoked(None)
    );
    assert_eq!(ids(&store.list("alice").await.unwrap()), ids(&[b.session]));
    assert!(
        store
            .rotate(b.token.expose(), RotateContext::default())
            .await
            .is_ok()
    );
    assert!(
        store
            .rotate(bob.token.expose(), RotateContext::default())
            .await
            .is_ok()
    );
}

/// Revoking all of a user's sessions returns them and kills every token.
pub async fn revoke_all<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            store
                .create("alice", Device::default())
                .await
                .unwrap()
                .token,
        );
    }
    let bob = store.create("bob", Device::default()).await.unwrap();
    let mut revoked = store.revoke_all("alice").await.unwrap();
    revoked.sort();
    let mut created: Vec<_> = tokens
        .iter()
        .map(|t| store.keys().verify(t.expose()).unwrap().session_id)
        .collect();
    created.sort();
    assert_eq!(revoked, created, "the revoked sessions, each once");
    assert!(store.revoke_all("alice").await.unwrap().is_empty());
    assert!(store.revoke_all("nobody").await.unwrap().is_empty());
    for t in &tokens {
        assert_eq!(
            store
                .rotate(t.expose(), RotateContext::default())
                .await
                .unwrap_err(),
            RotateError::Revoked(None)
        );
    }
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.list("bob").await.unwrap().len(), 1);
    assert!(
        store
            .rotate(bob.token.expose(), RotateContext::default())
            .await
            .is_ok()
    );
}

/// Beyond the per-user limit, the least recently used session is evicted.
pub async fn max_sessions_evicts_the_least_recently_used<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().max_sessions_per_user(3));
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(store.create("alice", Device::default()).await.unwrap());
        clock.advance(Duration::from_secs(1));
    }
    // Using the oldest makes the second the least recently used.
    let used = store
        .rotate(created[0].token.expose(), RotateContext::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let fourth = store.create("alice", Device::default()).await.unwrap();
    assert_eq!(fourth.evicted, vec![created[1].session.id]);
    let list = store.list("alice").await.unwrap();
    assert_eq!(
        ids(&list),
        ids(&[fourth.session, used.session, created[2].session.clone()])
    );
    assert_eq!(
        store
            .rotate(created[1].token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Revoked(None)
    );
}

/// 50 tasks presenting the same token at once: exactly one rotation, every other call graced
/// with the same successor, and the session never forks, under both policies.
pub async fn concurrent_rotation_never_forks<F: StoreFactory>(factory: &F) {
    for detection in POLICIES {
        concurrent_rotation_under(factory, detection).await;
    }
}

async fn concurrent_rotation_under<F: StoreFactory>(factory: &F, detection: ReuseDetection) {
    let (store, _guard, _clock) = setup!(factory, policy().reuse_detection(detection));
    let created = store.create("alice", Device::default()).await.unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let store = store.clone();
        let token = created.token.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            store.rotate(token.expose(), RotateContext::default()).await
        });
    }
    let mut rotated = 0;
    let mut successors = std::collections::HashSet::new();
    while let Some(result) = tasks.join_next().await {
        let r = result.unwrap().unwrap();
        if r.kind == RotationKind::Rotated {
            rotated += 1;
        }
        assert_eq!(r.session.generation, 1);
        successors.insert(r.token.into_string());
    }
    assert_eq!(rotated, 1, "exactly one Rotated");
    assert_eq!(successors.len(), 1, "one live token for everybody");
    let session = store.get(created.session.id).await.unwrap().unwrap();
    assert_eq!(session.generation, 1);
    let token = successors.into_iter().next().unwrap();
    assert_eq!(
        store
            .rotate(&token, RotateContext::default())
            .await
            .unwrap()
            .kind,
        RotationKind::Rotated
    );
}

/// 100 users with 100 sessions each are listed correctly.
pub async fn many_users_many_sessions<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().max_sessions_per_user(100));
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 100];
    for round in 0..100 {
        let mut creates = tokio::task::JoinSet::new();
        for user in 0..100 {
            let store = store.clone();
            creates.spawn(async move {
                let created = store
                    .create(&format!("user-{user}"), Device::default())
                    .await
                    .unwrap();
                (user, created.session.id.to_string())
            });
        }
        while let Some(done) = creates.join_next().await {
            let (user, id) = done.unwrap();
            expected[user].push(id);
        }
        if round % 10 == 9 {
            clock.advance(Duration::from_millis(5));
        }
    }
    for (user, ids_created) in expected.iter().enumerate() {
        let list = store.list(&format!("user-{user}")).await.unwrap();
        assert_eq!(list.len(), 100, "user-{user}");
        assert!(list.iter().all(|s| s.user_id == format!("user-{user}")));
        assert!(
            list.windows(2)
                .all(|w| w[0].last_used_at >= w[1].last_used_at),
            "newest first"
        );
        let mut got = ids(&list);
        got.sort();
        let mut want = ids_created.clone();
        want.sort();
        assert_eq!(got, want, "user-{user}");
    }
}

/// Under `AfterSuccessorUse`, a parent whose successor was never presented stays usable past
/// the grace window (a lost reply costs nothing) and gets the same successor.
pub async fn after_successor_use_graces_the_parent_past_the_window<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(
        factory,
        policy().reuse_detection(ReuseDetection::AfterSuccessorUse)
    );
    let created = store.create("alice", Device::default()).await.unwrap();
    let lost = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    // The client never saw `lost` and comes back much later with the parent.
    clock.advance(GRACE * 30);
    let again = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(again.kind, RotationKind::Graced);
    assert_eq!(again.token, lost.token, "the same successor");
    let next = store
        .rotate(again.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(next.kind, RotationKind::Rotated);
    assert_eq!(next.session.generation, 2);
    assert_eq!(store.list("alice").await.unwrap().len(), 1);
}

/// Under `AfterSuccessorUse`, once the successor has been presented its parent is spent:
/// presenting it is theft, past the window as inside it.
pub async fn after_successor_use_detects_reuse_once_the_successor_was_used<F: StoreFactory>(
    factory: &F,
) {
    let (store, _guard, clock) = setup!(
        factory,
        policy().reuse_detection(ReuseDetection::AfterSuccessorUse)
    );
    let created = store.create("alice", Device::default()).await.unwrap();
    // A thief copied the login token; the victim refreshes twice.
    let t1 = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    clock.advance(GRACE * 30);
    let t2 = store
        .rotate(t1.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(t2.kind, RotationKind::Rotated);
    match store
        .rotate(created.token.expose(), RotateContext::default())
        .await
    {
        Err(RotateError::Reused(s)) => assert_eq!(s.id, created.session.id),
        other => panic!("expected Reused, got {other:?}"),
    }
    assert_eq!(
        store
            .rotate(t2.token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Revoked(None),
        "the whole family is dead"
    );
    assert!(store.list("alice").await.unwrap().is_empty());
}

/// Under `Strict`, the parent past the window is reuse even when its successor was never
/// used (the trade-off `AfterSuccessorUse` makes the other way).
pub async fn strict_refuses_the_parent_past_the_window<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().reuse_detection(ReuseDetection::Strict));
    let created = store.create("alice", Device::default()).await.unwrap();
    store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    clock.advance(GRACE * 30);
    assert!(matches!(
        store
            .rotate(created.token.expose(), RotateContext::default())
            .await,
        Err(RotateError::Reused(_))
    ));
}

/// Under `Revoke`, a parent presented inside the grace window from another user agent
/// revokes the session as the live token would.
pub async fn user_agent_change_revokes_on_the_grace_path<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) =
        setup!(factory, policy().user_agent_change(UserAgentChange::Revoke));
    let created = store
        .create("alice", device("Firefox/130", [10, 0, 0, 1]))
        .await
        .unwrap();
    let first = store
        .rotate(created.token.expose(), ctx("Firefox/130", [10, 0, 0, 1]))
        .await
        .unwrap();
    let same = store
        .rotate(created.token.expose(), ctx("Firefox/130", [10, 0, 0, 1]))
        .await
        .unwrap();
    assert_eq!(same.kind, RotationKind::Graced);
    assert_eq!(same.token, first.token);
    match store
        .rotate(created.token.expose(), ctx("curl/8", [10, 6, 6, 6]))
        .await
    {
        Err(RotateError::Revoked(Some(s))) => assert_eq!(s.id, created.session.id),
        other => panic!("expected Revoked(Some), got {other:?}"),
    }
    assert!(store.list("alice").await.unwrap().is_empty());
}

/// Under `Record`, a new user agent is recorded and the rotation goes on.
pub async fn user_agent_change_is_recorded<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let created = store
        .create("alice", device("Firefox/130", [10, 0, 0, 1]))
        .await
        .unwrap();
    let r = store
        .rotate(created.token.expose(), ctx("Chrome/120", [10, 0, 0, 1]))
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_eq!(
        store.list("alice").await.unwrap()[0]
            .device
            .user_agent
            .as_deref(),
        Some("Chrome/120")
    );
}

/// Under `Revoke`, a new user agent revokes the session; the same one rotates.
pub async fn user_agent_change_revokes_when_configured<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) =
        setup!(factory, policy().user_agent_change(UserAgentChange::Revoke));
    let created = store
        .create("alice", device("Firefox/130", [10, 0, 0, 1]))
        .await
        .unwrap();
    let r = store
        .rotate(created.token.expose(), ctx("Firefox/130", [10, 9, 9, 9]))
        .await
        .unwrap();
    assert_eq!(
        r.session.device.ip,
        Some(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))),
        "IP changes are fine"
    );
    match store
        .rotate(r.token.expose(), ctx("Chrome/120", [10, 9, 9, 9]))
        .await
    {
        Err(RotateError::Revoked(Some(s))) => assert_eq!(s.id, created.session.id),
        other => panic!("expected Revoked(Some), got {other:?}"),
    }
    assert!(store.list("alice").await.unwrap().is_empty());
}

/// Reads never touch a session.
pub async fn reads_are_touch_free<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    clock.advance(Duration::from_secs(100));
    let got = store.get(created.session.id).await.unwrap().unwrap();
    let listed = store.list("alice").await.unwrap();
    assert_eq!(got, created.session);
    assert_eq!(listed, vec![created.session.clone()]);
    assert_eq!(
        store
            .get(created.session.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        START_MS
    );
}

/// Bad user ids and odd device data are refused or cleaned, never stored raw.
pub async fn bad_input_is_refused_or_cleaned<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    for bad in ["", "a\nb", "a\u{1f}b"] {
        assert!(
            matches!(
                store.create(bad, Device::default()).await,
                Err(crate::StoreError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert!(
        store
            .create(&"u".repeat(257), Device::default())
            .await
            .is_err()
    );
    let ua = format!("Evil\u{1f}Agent\r\n{}", "x".repeat(1000));
    let created = store
        .create("alice", Device::new(Some(&ua), None).with_name("a\u{0}b"))
        .await
        .unwrap();
    let stored = store.list("alice").await.unwrap().remove(0);
    let stored_ua = stored.device.user_agent.unwrap();
    assert!(stored_ua.starts_with("Evil Agent  "));
    assert_eq!(stored_ua.len(), crate::MAX_USER_AGENT_LEN);
    assert_eq!(stored.device.name.as_deref(), Some("a b"));
    assert_eq!(stored.id, created.session.id);
    assert!(
        store
            .rotate(created.token.expose(), RotateContext::new(Some(&ua), None))
            .await
            .is_ok()
    );
}

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
            bad_input_is_refused_or_cleaned
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
