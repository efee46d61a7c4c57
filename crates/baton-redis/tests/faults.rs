//! Connection faults caused on a real redis-server: a reply lost with its connection, idle
//! connections closed by Redis, every client connection killed, Redis paused across a write.
//! None of them may fail an operation that a repeat could save, or turn a repeat into a second
//! session or a false reuse.

use std::time::{Duration, Instant};

use baton_redis::{RedisConnection, RedisOptions, RedisStore};
use baton_store::{
    Device, Policy, RefreshKeys, RefreshStore, RotateContext, RotateError, RotationKind,
};
use baton_test::{FaultProxy, RedisServer};

fn strictest() -> Policy {
    // No grace at all: only the attempt id can tell a repeat from a theft.
    Policy::builder()
        .grace_window(Duration::ZERO)
        .build()
        .unwrap()
}

async fn store_at(url: &str, policy: Policy) -> RedisStore {
    RedisStore::connect(
        url,
        RefreshKeys::generate().unwrap(),
        policy,
        RedisOptions::new(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_reply_is_lost_is_answered_with_its_successor() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.port());
    let store = store_at(&proxy.url(), strictest()).await;
    let created = store.create("alice", Device::default()).await.unwrap();
    // A first rotation loads the script, so the lost reply is the rotation's own.
    let live = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;

    proxy.drop_next_reply();
    let r = store
        .rotate(live.expose(), RotateContext::default())
        .await
        .expect("the repeat answers with the first try's outcome");
    assert_eq!(proxy.dropped(), 1, "the first reply was lost");
    assert_eq!(store.connection().stats().retried, 1);
    assert_eq!(r.kind, RotationKind::Graced, "the first try rotated");
    assert_eq!(r.session.generation, 2, "once, not twice");
    let next = store
        .rotate(r.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(next.kind, RotationKind::Rotated, "its successor is live");
    assert_eq!(next.session.generation, 3);
    assert_eq!(store.list("alice").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_or_revoke_whose_reply_is_lost_happens_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.port());
    let policy = strictest()
        .to_builder()
        .max_sessions_per_user(2)
        .build()
        .unwrap();
    let store = store_at(&proxy.url(), policy).await;
    let first = store.create("bob", Device::default()).await.unwrap();
    let second = store.create("bob", Device::default()).await.unwrap();

    proxy.drop_next_reply();
    let third = store.create("bob", Device::default()).await.unwrap();
    assert_eq!(proxy.dropped(), 1);
    assert_eq!(
        third.evicted,
        vec![first.session.id],
        "the first try's eviction"
    );
    let mut listed: Vec<_> = store
        .list("bob")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    listed.sort();
    let mut expected = vec![second.session.id, third.session.id];
    expected.sort();
    assert_eq!(listed, expected, "one new session, not two");

    // Load the revoke script first, so the lost reply is the revocation's own.
    assert!(store.revoke_all("nobody").await.unwrap().is_empty());
    proxy.drop_next_reply();
    let mut revoked = store.revoke_all("bob").await.unwrap();
    revoked.sort();
    assert_eq!(proxy.dropped(), 2);
    assert_eq!(revoked, expected, "the first try's revocations");
    assert!(store.list("bob").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_detected_by_a_try_whose_reply_is_lost_is_still_reported() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.port());
    let store = store_at(&proxy.url(), strictest()).await;
    let created = store.create("carol", Device::default()).await.unwrap();
    store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    proxy.drop_next_reply();
    match store
        .rotate(created.token.expose(), RotateContext::default())
        .await
    {
        Err(RotateError::Reused(s)) => {
            assert_eq!(s.id, created.session.id);
            assert_eq!(s.user_id, "carol");
        }
        other => panic!("expected Reused from the repeat, got {other:?}"),
    }
    assert_eq!(proxy.dropped(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_redis_cost_no_request() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store_at(&server.url(), Policy::new()).await;
    let created = store.create("dave", Device::default()).await.unwrap();
    server.command(&["CONFIG", "SET", "timeout", "1"]).unwrap();
    let mut token = created.token;
    for round in 0..3 {
        // Idle past Redis's timeout: it closes the connection.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.kind, RotationKind::Rotated);
        token = r.token;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(store.list("dave").await.unwrap().len(), round + 1);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        store.create("dave", Device::default()).await.unwrap();
    }
    eprintln!("after idle closes: {:?}", store.connection().stats());
    assert_eq!(store.connection().stats().failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_client_connection_costs_no_request() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store_at(&server.url(), Policy::new()).await;
    let created = store.create("erin", Device::default()).await.unwrap();
    let mut token = created.token;
    for round in 0..5 {
        server
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        let r = store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.kind, RotationKind::Rotated);
        token = r.token;
        server
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        assert_eq!(store.list("erin").await.unwrap().len(), 1);
    }
    eprintln!("after kills: {:?}", store.connection().stats());
    assert_eq!(store.connection().stats().failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_across_a_redis_pause_is_answered_once_redis_resumes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Response timeout 250 ms, write timeout 1 s (the defaults).
    let conn = RedisConnection::connect(&server.url(), &RedisOptions::new())
        .await
        .unwrap();
    let store = RedisStore::new(
        conn.clone(),
        RefreshKeys::generate().unwrap(),
        strictest(),
        &RedisOptions::new(),
    );
    let created = store.create("frank", Device::default()).await.unwrap();
    server.command(&["CLIENT", "PAUSE", "600", "ALL"]).unwrap();
    let started = Instant::now();
    let r = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .expect("answered once Redis resumes, not 503");
    let took = started.elapsed();
    eprintln!("rotation across a 600 ms pause took {took:?}");
    assert_eq!(r.kind, RotationKind::Rotated);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(conn.stats().late >= 1);
    let next = store
        .rotate(r.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(next.kind, RotationKind::Rotated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_unavailable_never_happens_later() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store_at(&server.url(), strictest()).await;
    let created = store.create("gina", Device::default()).await.unwrap();
    let live = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    // Longer than the write timeout (1 s): the calls give up, and Redis reaches them later.
    server.command(&["CLIENT", "PAUSE", "2500", "ALL"]).unwrap();
    let started = Instant::now();
    let err = store
        .rotate(live.expose(), RotateContext::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RotateError::Store(_)), "{err:?}");
    assert!(
        store.create("gina", Device::default()).await.is_err(),
        "no answer in time"
    );
    eprintln!("gave up after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis ran both after their deadlines: neither happened.
    let sessions = store.list("gina").await.unwrap();
    assert_eq!(sessions.len(), 1, "no late session");
    assert_eq!(sessions[0].generation, 1, "no late rotation");
    // So the client's retry, with no grace at all, rotates normally: no false reuse.
    let r = store
        .rotate(live.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_eq!(r.session.generation, 2);
}
