//! The revocation feed between instances on a test-started PostgreSQL server, healthy and
//! under faults: live delivery within a second, the listening connections killed, the server
//! down when a revocation is made (refused, or kept and recorded once it is back), a restart,
//! a fresh instance reading what came before it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{
    CheckRevocation, DisconnectPolicy, FeedStatus, Revocation, Revoke, TokenIdentity,
};
use baton_postgres::{PgFeedOptions, PgRevocationFeed};
use baton_test::PgServer;

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn session(sid: &str) -> TokenIdentity<'_> {
    TokenIdentity::new("alice").with_sid(sid)
}

fn options() -> PgFeedOptions {
    PgFeedOptions::new(Duration::from_secs(900))
}

async fn feed(url: &str, options: PgFeedOptions) -> Arc<PgRevocationFeed> {
    PgRevocationFeed::start(url, options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_reaches_the_other_within_a_second() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let a = feed(&url, options()).await;
    // Notifications only: no poll to speak of, so the time is the channel's.
    let b = feed(&url, options().with_poll_period(Duration::from_secs(1))).await;
    assert_eq!(b.status(), FeedStatus::Connected);

    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sid = format!("s{i}");
        a.revoke(&[Revocation::session(&sid)]).await.unwrap();
        assert!(a.is_revoked(&session(&sid)), "at once where it was made");
        let took = eventually("B hears it", Duration::from_secs(1), || {
            b.is_revoked(&session(&sid))
        })
        .await;
        worst = worst.max(took);
    }
    eprintln!("slowest of 20 deliveries: {worst:?}");
    assert!(!b.is_revoked(&session("other")));

    a.revoke(&[Revocation::user_before("bob", 2_000_000_000)])
        .await
        .unwrap();
    let old = TokenIdentity::new("bob").with_iat(1);
    eventually("B hears bob's logout-all", Duration::from_secs(1), || {
        b.is_revoked(&old)
    })
    .await;
    // A fresh instance reads what came before it.
    let c = feed(&url, options()).await;
    assert!(c.is_revoked(&session("s0")) && c.is_revoked(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_and_a_restart_lose_nothing() {
    let Some(mut server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let a = feed(&url, options()).await;
    let b = feed(&url, options()).await;
    for round in 0..3 {
        // Every connection of both feeds, the listening ones included.
        server.psql(
            &db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'baton'",
        );
        let sid = format!("k{round}");
        a.revoke(&[Revocation::session(&sid)])
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eventually("B hears it after the kill", Duration::from_secs(1), || {
            b.is_revoked(&session(&sid))
        })
        .await;
    }
    server.restart();
    a.revoke(&[Revocation::session("after-restart")])
        .await
        .unwrap();
    eventually(
        "B hears it after the restart",
        Duration::from_secs(2),
        || b.is_revoked(&session("after-restart")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_a_logout_is_refused_and_a_theft_is_kept_until_it_is_back() {
    let Some(mut server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let a = feed(&url, options()).await;
    let b = feed(
        &url,
        options().with_disconnect_policy(DisconnectPolicy::RefuseAll),
    )
    .await;
    assert!(b.is_known());
    server.stop();
    // A logout cannot be acknowledged: the caller answers 503.
    assert!(a.revoke(&[Revocation::session("logout")]).await.is_err());
    // Theft detected in the store: applied here at once, recorded when the database is back.
    assert!(a.revoked(&[Revocation::session("stolen")]).await.is_err());
    assert!(a.is_revoked(&session("stolen")));
    assert_eq!(a.pending(), 1);
    eventually("B knows it cannot hear", Duration::from_secs(5), || {
        !b.is_known()
    })
    .await;
    assert!(matches!(b.status(), FeedStatus::Disconnected { .. }));
    server.restart();
    eventually(
        "the kept revocation reaches B",
        Duration::from_secs(10),
        || b.is_revoked(&session("stolen")),
    )
    .await;
    eventually(
        "A has nothing left to record",
        Duration::from_secs(5),
        || a.pending() == 0,
    )
    .await;
    eventually("B serves again", Duration::from_secs(5), || b.is_known()).await;
    assert!(
        !b.is_revoked(&session("logout")),
        "the refused logout was never recorded"
    );
}

/// A revocation whose row number is lower but whose commit comes seconds after a higher one
/// was read (a slow transaction): read all the same, once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_after_a_higher_one_was_read_still_arrives() {
    use sqlx::Connection as _;
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let a = feed(&url, options()).await;
    let b = feed(&url, options()).await;
    a.revoke(&[Revocation::session("first")]).await.unwrap();
    eventually("B reads the log", Duration::from_secs(1), || {
        b.is_revoked(&session("first"))
    })
    .await;
    // A transaction takes the next row number and holds it uncommitted.
    let mut slow = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = slow.begin().await.unwrap();
    sqlx::query("INSERT INTO baton_revocations (session_id) VALUES ('late')")
        .execute(&mut *tx)
        .await
        .unwrap();
    a.revoke(&[Revocation::session("after")]).await.unwrap();
    eventually("B reads the higher row", Duration::from_secs(1), || {
        b.is_revoked(&session("after"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!b.is_revoked(&session("late")), "not committed yet");
    tx.commit().await.unwrap();
    let took = eventually("B reads the late row", Duration::from_secs(1), || {
        b.is_revoked(&session("late"))
    })
    .await;
    eprintln!("the late row arrived {took:?} after its commit");
}
