//! What only a real Redis shows: outages, stalls, and the memory a session costs.

use std::time::{Duration, Instant};

use baton_redis::{RedisOptions, RedisStore};
use baton_store::{
    Device, Policy, RefreshKeys, RefreshStore, RotateContext, RotateError, RotationKind, StoreError,
};
use baton_test::RedisServer;

async fn store(server: &RedisServer) -> RedisStore {
    let options = RedisOptions::new()
        .with_connect_timeout(Duration::from_millis(200))
        .with_response_timeout(Duration::from_millis(300));
    RedisStore::connect(
        &server.url(),
        RefreshKeys::generate().unwrap(),
        Policy::new(),
        options,
    )
    .await
    .unwrap()
}

/// The worst case seen for one call while Redis is down or stalled.
const BOUND: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_unavailable_in_bounded_time_and_recovers_by_itself() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = store(&server).await;
    let created = store.create("alice", Device::default()).await.unwrap();

    server.stop();
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let err = store
            .rotate(created.token.expose(), RotateContext::default())
            .await
            .unwrap_err();
        worst = worst.max(started.elapsed());
        let RotateError::Store(StoreError::Unavailable(cause)) = &err else {
            panic!("{err:?}");
        };
        // The cause is kept, typed: which operation, and the client's own error or a timeout.
        let failure = cause
            .downcast_ref::<baton_redis::RedisFailure>()
            .unwrap_or_else(|| panic!("{cause:?}"));
        assert!(
            matches!(
                failure,
                baton_redis::RedisFailure::Redis { .. }
                    | baton_redis::RedisFailure::TimedOut { .. }
            ),
            "{failure:?}"
        );
        // The chain reaches it by type, with the client's error below it.
        let mut chain = std::error::Error::source(&err);
        let mut found = false;
        while let Some(e) = chain {
            found |= e.downcast_ref::<baton_redis::RedisFailure>().is_some();
            chain = e.source();
        }
        assert!(found, "{}", baton_core::ErrorChain(&err));
        let started = Instant::now();
        assert!(matches!(
            store.list("alice").await,
            Err(StoreError::Unavailable(_))
        ));
        worst = worst.max(started.elapsed());
    }
    assert!(worst < BOUND, "an operation took {worst:?} with Redis down");
    eprintln!("worst call with redis down: {worst:?}");

    // Back up (empty: it kept nothing): the same store value works again, not rebuilt.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        match store.create("alice", Device::default()).await {
            Ok(created) => break created,
            Err(e) => {
                assert!(Instant::now() < deadline, "store did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let r = store
        .rotate(again.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_times_out_instead_of_hanging() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server).await;
    let created = store.create("alice", Device::default()).await.unwrap();
    server.pause();
    let started = Instant::now();
    let err = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap_err();
    let took = started.elapsed();
    server.resume();
    assert!(matches!(err, RotateError::Store(_)), "{err:?}");
    assert!(took < BOUND, "took {took:?}");
    // Whether or not the stalled Redis ran the rotation when it woke up, the client, which
    // never saw an answer, comes back with the same token and gets generation 1: the stalled
    // rotation's successor (graced), or a fresh rotation. Never a reuse.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store
            .rotate(created.token.expose(), RotateContext::default())
            .await
        {
            Ok(r) => {
                assert_eq!(r.session.generation, 1, "{:?}", r.kind);
                let next = store
                    .rotate(r.token.expose(), RotateContext::default())
                    .await
                    .unwrap();
                assert_eq!(next.kind, RotationKind::Rotated, "the successor is live");
                break;
            }
            Err(RotateError::Store(e)) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_redis_fails_to_connect_in_bounded_time() {
    let port = baton_test::free_port();
    let started = Instant::now();
    let err = RedisStore::connect(
        &format!("redis://127.0.0.1:{port}/"),
        RefreshKeys::generate().unwrap(),
        Policy::new(),
        RedisOptions::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

async fn memory_usage(store: &RedisStore, key: &str) -> u64 {
    let mut conn = store.connection().clone();
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn bytes_per_session() {
    for sessions in [1, 3, 10] {
        bytes_per_session_for(sessions).await;
    }
}

async fn bytes_per_session_for(sessions: u64) {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server).await;
    // A realistic 130-byte browser user agent.
    let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.112";
    assert_eq!(ua.len(), 130);
    let ip = Some("203.0.113.42".parse().unwrap());
    let user = format!("user-{sessions:08}");
    for _ in 0..sessions {
        let created = store
            .create(&user, Device::new(Some(ua), ip))
            .await
            .unwrap();
        store
            .rotate(created.token.expose(), RotateContext::new(Some(ua), ip))
            .await
            .unwrap();
    }
    assert_eq!(store.list(&user).await.unwrap().len() as u64, sessions);
    let per_session = memory_usage(&store, &store.user_key(&user)).await / sessions;
    eprintln!("bytes per session with {sessions} per user: {per_session}");
    assert!(per_session <= 400, "{per_session} bytes per session");
}

#[tokio::test]
async fn corrupted_session_data_is_corrupted_not_unavailable() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server).await;
    let created = store.create("alice", Device::default()).await.unwrap();
    let key = format!("baton:{{{}}}", baton_store::user_tag_of("alice"));
    assert_eq!(
        server.command(&["EXISTS", &key]).as_deref().map(str::trim),
        Some("1"),
        "the user's key is {key}"
    );
    server
        .command(&["SET", &key, "not\x1fa\x1fsession", "KEEPTTL"])
        .unwrap();
    let err = store.list("alice").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupted(_)), "{err:?}");
    assert!(!err.is_unavailable());
    // The rotation script finds no record of the session in the unreadable data: refused,
    // never a 503 that would have the client retry forever.
    let err = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap_err();
    assert!(
        !matches!(err, RotateError::Store(StoreError::Unavailable(_))),
        "{err:?}"
    );
}

/// Sessions written before device ids, networks and authentication times were kept (10 or 11
/// fields a record) still read, rotate and re-authenticate: their login counts as their
/// authentication time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_earlier_format_still_work() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server).await;
    let created = store.create("alice", Device::default()).await.unwrap();
    let key = store.user_key("alice");
    let s = &created.session;
    // The earlier layout: member, generation, created, last used, idle and absolute deadlines,
    // ip, device name, user agent, user id (and, after a rotation, its attempt id).
    let old = [
        s.id.random_part().to_owned(),
        "0".to_owned(),
        s.created_at.to_string(),
        s.last_used_at.to_string(),
        s.expires_at.to_string(),
        s.absolute_expires_at.to_string(),
        "10.0.0.1".to_owned(),
        String::new(),
        "Firefox/130".to_owned(),
        "alice".to_owned(),
    ]
    .join("\u{1f}");
    server.command(&["SET", &key, &old, "KEEPTTL"]).unwrap();
    let listed = store.list("alice").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].auth_time, s.created_at);
    assert!(listed[0].amr.is_empty());
    assert_eq!(listed[0].device.id, None);
    assert_eq!(listed[0].device.user_agent.as_deref(), Some("Firefox/130"));
    let r = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_eq!(r.session.auth_time, s.created_at);
    let again = store
        .reauthenticate("alice", s.id, baton_store::Authentication::password())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.amr, ["pwd"]);
    assert_eq!(again.generation, 1);
}
