//! Faults caused on a real PostgreSQL server: every connection of the store killed
//! (`pg_terminate_backend`), the server restarted, a statement timing out behind a lock, the
//! server frozen across a write. None may fail an operation a repeat could save, or turn a
//! repeat into a second session or a false reuse; a write answered "unavailable" never happens
//! later. And the races: fifty concurrent rotations of one token, and the sweep's bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::TestClock;
use baton_postgres::{PostgresOptions, PostgresStore};
use baton_store::{
    Device, Policy, RefreshKeys, RefreshStore, RotateContext, RotateError, RotationKind,
};
use baton_test::PgServer;
use sqlx::Connection as _;

fn strictest() -> Policy {
    // No grace at all: only the attempt id can tell a repeat from a theft.
    Policy::builder()
        .grace_window(Duration::ZERO)
        .build()
        .unwrap()
}

async fn store_at(url: &str, policy: Policy, timeout: Duration) -> PostgresStore {
    PostgresStore::connect(
        url,
        RefreshKeys::generate().unwrap(),
        policy,
        PostgresOptions::new().with_timeout(timeout),
    )
    .await
    .unwrap()
}

fn database(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

/// Kills every connection the store holds (application name `baton`); returns how many.
fn kill_connections(server: &PgServer, url: &str) -> usize {
    let killed = server.psql(
        &database(url),
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'baton') AS killed",
    );
    killed.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_rotations_of_one_token_rotate_it_once() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let store = store_at(&url, Policy::new(), Duration::from_secs(10)).await;
    let created = store.create("alice", Device::default()).await.unwrap();
    let token = created.token.expose().to_owned();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, token) = (store.clone(), token.clone());
            tokio::spawn(async move { store.rotate(&token, RotateContext::default()).await })
        })
        .collect();
    let mut rotated = 0;
    let mut successors = std::collections::HashSet::new();
    for task in tasks {
        let r = task.await.unwrap().unwrap();
        if r.kind == RotationKind::Rotated {
            rotated += 1;
        }
        successors.insert(r.token.expose().to_owned());
    }
    assert_eq!(rotated, 1, "one rotation; the others graced");
    assert_eq!(successors.len(), 1, "every caller got the same successor");
    let sessions = store.list("alice").await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_connection_costs_no_request() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let store = store_at(&url, strictest(), Duration::from_secs(5)).await;
    let created = store.create("erin", Device::default()).await.unwrap();
    let mut token = created.token;
    let mut killed = 0;
    for round in 0..5 {
        killed += kill_connections(&server, &url);
        let r = store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.kind, RotationKind::Rotated);
        token = r.token;
        killed += kill_connections(&server, &url);
        assert_eq!(store.list("erin").await.unwrap().len(), round + 1);
        killed += kill_connections(&server, &url);
        store.create("erin", Device::default()).await.unwrap();
    }
    assert!(killed >= 10, "connections were really killed: {killed}");
    assert_eq!(store.list("erin").await.unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_costs_no_request_once_it_is_back() {
    let Some(mut server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let store = store_at(&url, strictest(), Duration::from_secs(5)).await;
    let created = store.create("frank", Device::default()).await.unwrap();
    let mut token = created.token;
    for round in 0..3 {
        server.restart();
        let r = store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.kind, RotationKind::Rotated);
        assert_eq!(
            r.session.generation,
            round + 1,
            "nothing lost in the restart"
        );
        token = r.token;
    }
    // Down: a clear "unavailable" in bounded time, not a hang; back: working, no restart of
    // the application.
    server.stop();
    let started = Instant::now();
    let err = store
        .rotate(token.expose(), RotateContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RotateError::Store(ref e) if e.is_unavailable()),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    server.restart();
    let r = store
        .rotate(token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_eq!(r.session.generation, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_waiting_past_its_time_is_unavailable_and_changes_nothing() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let store = store_at(&url, strictest(), Duration::from_millis(800)).await;
    let created = store.create("gina", Device::default()).await.unwrap();
    // Another connection holds the session's row.
    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM baton_sessions FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, RotateError::Store(ref e) if e.is_unavailable()),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sessions = store.list("gina").await.unwrap();
    assert_eq!(
        sessions[0].generation, 0,
        "the rotation that timed out did not happen"
    );
    // The client's retry, with no grace at all, rotates normally: no false reuse.
    let r = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_unavailable_never_happens_later() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let store = store_at(&url, strictest(), Duration::from_millis(800)).await;
    let created = store.create("hana", Device::default()).await.unwrap();
    let live = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    // The whole server frozen longer than the store's timeout: the calls give up, and the
    // server reads them when it thaws.
    server.pause();
    let started = Instant::now();
    let rotate = store.rotate(live.expose(), RotateContext::default()).await;
    let create = store.create("hana", Device::default()).await;
    let gave_up = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume();
    assert!(matches!(rotate, Err(RotateError::Store(_))), "{rotate:?}");
    assert!(create.is_err(), "{create:?}");
    eprintln!("gave up after {gave_up:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions = store.list("hana").await.unwrap();
    assert_eq!(sessions.len(), 1, "no late session");
    assert_eq!(sessions[0].generation, 1, "no late rotation");
    let r = store
        .rotate(live.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated, "no false reuse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_dead_rows_a_batch_at_a_time() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let clock = TestClock::at_millis(1_800_000_000_000);
    let policy = Policy::builder()
        .idle_lifetime(Duration::from_secs(60))
        .max_sessions_per_user(100)
        .build()
        .unwrap();
    let store = PostgresStore::connect(
        &url,
        RefreshKeys::generate().unwrap(),
        policy,
        // No sweep on its own during the test.
        PostgresOptions::new().with_sweep(Duration::from_secs(86_400), 10),
    )
    .await
    .unwrap()
    .with_clock(Arc::new(clock.clone()));
    for _ in 0..25 {
        store.create("ivan", Device::default()).await.unwrap();
    }
    store.create("judy", Device::default()).await.unwrap();
    assert_eq!(store.sweep(10).await.unwrap(), 0, "nothing is dead yet");
    clock.advance(Duration::from_secs(61));
    // 26 dead rows, at most 10 a statement.
    assert_eq!(store.sweep(10).await.unwrap(), 10);
    assert_eq!(store.sweep(10).await.unwrap(), 10);
    assert_eq!(store.sweep(10).await.unwrap(), 6);
    assert_eq!(store.sweep(10).await.unwrap(), 0);
    let left = server.psql(&database(&url), "SELECT count(*) FROM baton_sessions");
    assert_eq!(left.trim(), "0");
}

/// PostgreSQL's `ReadyForQuery`, idle: the end of a reply whose transaction committed.
const READY: &[u8] = b"Z\0\0\0\x05I";

/// A relay that loses the server's reply to a write (and the connection with it): the write
/// committed, the store never heard. The store sends it again on a fresh connection with the
/// same attempt id and gets the first try's outcome: no false reuse, no second session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_is_lost_happens_once() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let proxy = baton_test::FaultProxy::start(server.port());
    let through = url.replace(
        &format!("127.0.0.1:{}", server.port()),
        &format!("127.0.0.1:{}", proxy.port()),
    );
    // One connection, so each statement below is prepared on it before its reply is lost.
    let store = PostgresStore::connect(
        &through,
        RefreshKeys::generate().unwrap(),
        strictest(),
        PostgresOptions::new()
            .with_timeout(Duration::from_secs(5))
            .with_max_connections(1),
    )
    .await
    .unwrap();
    let created = store.create("kim", Device::default()).await.unwrap();
    // A first rotation prepares the statement.
    let live = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;

    proxy.drop_next_reply_ending_with(READY);
    let r = store
        .rotate(live.expose(), RotateContext::default())
        .await
        .expect("the repeat answers with the first try's outcome");
    assert_eq!(proxy.dropped(), 1, "the first reply was lost");
    assert_eq!(r.session.generation, 2, "rotated once, not twice");
    assert_eq!(r.kind, RotationKind::Graced, "the first try rotated");
    let next = store
        .rotate(r.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(next.kind, RotationKind::Rotated, "its successor is live");

    // Prepared on this connection first.
    store.create("kim", Device::default()).await.unwrap();
    proxy.drop_next_reply_ending_with(READY);
    let again = store.create("kim", Device::default()).await.unwrap();
    assert_eq!(proxy.dropped(), 2);
    let sessions = store.list("kim").await.unwrap();
    assert_eq!(sessions.len(), 3, "one session created, not two");
    assert!(sessions.iter().any(|s| s.id == again.session.id));

    // Prepared first (a session that does not exist: false).
    let nobody = baton_store::SessionId::generate("kim").unwrap();
    assert!(!store.revoke("kim", nobody).await.unwrap());
    proxy.drop_next_reply_ending_with(READY);
    assert!(
        store.revoke("kim", again.session.id).await.unwrap(),
        "revoked, once"
    );
    assert_eq!(proxy.dropped(), 3);
    assert_eq!(store.list("kim").await.unwrap().len(), 2);
}
