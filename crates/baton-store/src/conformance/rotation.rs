//! Conformance cases of rotation: successors, the grace window, reuse, concurrency, and
//! user-agent changes.

use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr};

use super::{GRACE, START_MS, StoreFactory, build, ctx, device, policy};
use crate::{
    Device, DeviceChange, RefreshKeys, RefreshStore, ReuseDetection, RotateContext, RotateError,
    RotationKind, UserAgentChange,
};

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
        Err(RotateError::Revoked)
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
        Err(RotateError::Revoked)
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
        RotateError::Revoked,
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
        Err(RotateError::DeviceChanged {
            session,
            change: DeviceChange::UserAgent,
        }) => assert_eq!(session.id, created.session.id),
        other => panic!("expected DeviceChanged(UserAgent), got {other:?}"),
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
        Err(RotateError::DeviceChanged {
            session,
            change: DeviceChange::UserAgent,
        }) => assert_eq!(session.id, created.session.id),
        other => panic!("expected DeviceChanged(UserAgent), got {other:?}"),
    }
    assert!(store.list("alice").await.unwrap().is_empty());
}
