//! The revocation feed between two instances on a test-started redis-server.

use std::time::{Duration, Instant};

use baton_bearer::{CheckRevocation, Revoke, TokenIdentity};
use baton_redis::{DisconnectPolicy, FeedOptions, FeedStatus, RevocationFeed};
use baton_test::RedisServer;

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn session(sid: &str) -> TokenIdentity<'_> {
    TokenIdentity::new("alice").with_sid(sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_reaches_the_other() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let options = FeedOptions::new(Duration::from_secs(900));
    let a = RevocationFeed::start(&server.url(), options.clone())
        .await
        .unwrap();
    let b = RevocationFeed::start(&server.url(), options.clone())
        .await
        .unwrap();
    assert_eq!(b.status(), FeedStatus::Connected);

    let started = Instant::now();
    a.revoke_session("s1");
    assert!(
        a.is_revoked(&session("s1")),
        "at once on the instance that revoked"
    );
    eventually("B hears s1", || b.is_revoked(&session("s1"))).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!b.is_revoked(&session("s2")));

    a.revoke_user("bob");
    let old = TokenIdentity::new("bob").with_iat(1);
    eventually("B hears bob's logout-all", || b.is_revoked(&old)).await;

    // A third instance starting later catches up from the log.
    let c = RevocationFeed::start(&server.url(), options.clone())
        .await
        .unwrap();
    eventually("C catches up", || {
        c.is_revoked(&session("s1")) && c.is_revoked(&old)
    })
    .await;

    // Redis dies between a revocation and the check: B still refuses, and once Redis is
    // back (empty: it kept nothing) B reconnects and hears new revocations.
    a.revoke_session("s3");
    eventually("B hears s3", || b.is_revoked(&session("s3"))).await;
    server.stop();
    eventually("B notices", || {
        matches!(b.status(), FeedStatus::Disconnected { .. })
    })
    .await;
    assert!(b.is_revoked(&session("s3")), "kept while disconnected");
    server.restart();
    eventually("B reconnects", || b.status() == FeedStatus::Connected).await;
    assert!(b.is_revoked(&session("s3")), "kept after reconnecting");
    eventually("A's publisher reconnects", || {
        a.revoke_session("s4");
        b.is_revoked(&session("s4"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_all_while_disconnected_when_configured() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let options = FeedOptions::new(Duration::from_secs(900))
        .with_disconnect_policy(DisconnectPolicy::RefuseAll);
    let feed = RevocationFeed::start(&server.url(), options).await.unwrap();
    assert!(!feed.is_revoked(&session("s1")));
    server.stop();
    eventually("disconnected", || {
        matches!(feed.status(), FeedStatus::Disconnected { .. })
    })
    .await;
    assert!(feed.is_revoked(&session("s1")), "fails closed");
    server.restart();
    eventually("reconnected", || feed.status() == FeedStatus::Connected).await;
    assert!(!feed.is_revoked(&session("s1")));
}
