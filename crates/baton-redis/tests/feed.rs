//! The revocation feed between instances on a test-started redis-server, healthy and under
//! faults: Redis down when a revocation is made, live messages lost, idle connections closed,
//! every client connection killed, a restart with an append-only file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{CheckRevocation, Revocation, Revoke, TokenIdentity};
use baton_redis::{
    DisconnectPolicy, FeedOptions, FeedStatus, RedisConnection, RedisOptions, RevocationFeed,
};
use baton_test::RedisServer;

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

fn options() -> FeedOptions {
    FeedOptions::new(Duration::from_secs(900))
}

async fn feed(server: &RedisServer) -> Arc<RevocationFeed> {
    RevocationFeed::start(&server.url(), options())
        .await
        .unwrap()
}

/// A feed that never hears live messages: a connection without a client polls the log only.
async fn polling_feed(server: &RedisServer) -> Arc<RevocationFeed> {
    let client = redis::Client::open(server.url()).unwrap();
    let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
    RevocationFeed::start_on(
        RedisConnection::from_manager(manager, &RedisOptions::new()),
        options(),
    )
    .await
}

async fn revoke(feed: &RevocationFeed, sid: &str) {
    feed.revoke(&[Revocation::session(sid)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_reaches_the_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = feed(&server).await;
    let b = feed(&server).await;
    assert_eq!(b.status(), FeedStatus::Connected);

    revoke(&a, "s1").await;
    assert!(
        a.is_revoked(&session("s1")),
        "at once on the instance that revoked"
    );
    let took = eventually("B hears s1", Duration::from_secs(1), || {
        b.is_revoked(&session("s1"))
    })
    .await;
    eprintln!("live delivery took {took:?}");
    assert!(!b.is_revoked(&session("s2")));

    a.revoke(&[Revocation::user_before("bob", 2_000_000_000)])
        .await
        .unwrap();
    let old = TokenIdentity::new("bob").with_iat(1);
    eventually("B hears bob's logout-all", Duration::from_secs(1), || {
        b.is_revoked(&old)
    })
    .await;

    // A third instance starting later catches up from the log.
    let c = feed(&server).await;
    assert!(c.is_revoked(&session("s1")) && c.is_revoked(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_delivery_the_log_brings_a_revocation_within_a_second() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = feed(&server).await;
    let b = polling_feed(&server).await;
    for i in 0..5 {
        let sid = format!("p{i}");
        revoke(&a, &sid).await;
        let took = eventually("B reads it from the log", Duration::from_secs(1), || {
            b.is_revoked(&session(&sid))
        })
        .await;
        eprintln!("read from the log after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_killed_silently_still_learns_within_a_second() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = feed(&server).await;
    let b = feed(&server).await;
    for round in 0..3 {
        // Every subscriber connection dies; the revocation is published while B has none.
        server
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .unwrap();
        let sid = format!("k{round}");
        revoke(&a, &sid).await;
        eventually("B learns it", Duration::from_secs(1), || {
            b.is_revoked(&session(&sid))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_idle_closes_and_killed_connections() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = feed(&server).await;
    let b = feed(&server).await;
    server.command(&["CONFIG", "SET", "timeout", "1"]).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    revoke(&a, "idle").await;
    eventually(
        "B hears it after idle closes",
        Duration::from_secs(1),
        || b.is_revoked(&session("idle")),
    )
    .await;
    for round in 0..3 {
        server
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        let sid = format!("n{round}");
        revoke(&a, &sid).await;
        eventually("B hears it after the kill", Duration::from_secs(1), || {
            b.is_revoked(&session(&sid))
        })
        .await;
    }
    assert_eq!(a.connection().stats().failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_a_logout_is_refused_and_a_detected_theft_recorded_later() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = feed(&server).await;
    let b = feed(&server).await;
    server.stop();
    // A logout while Redis is down: not recorded, so not acknowledged, and nothing kept.
    let err = a
        .revoke(&[Revocation::session("logout")])
        .await
        .expect_err("not recorded: the caller must answer 503");
    eprintln!("while down: {err}");
    assert!(!a.is_revoked(&session("logout")), "nothing half-done");
    assert_eq!(a.pending(), 0);
    // A revocation the store already made (theft detected): refused here at once, and kept.
    a.revoked(&[Revocation::session("down")])
        .await
        .expect_err("not recorded yet");
    assert!(a.is_revoked(&session("down")), "refused here at once");
    assert_eq!(a.pending(), 1, "kept for a retry");
    server.restart();
    eventually("the retry records it", Duration::from_secs(10), || {
        a.pending() == 0
    })
    .await;
    eventually("B learns it", Duration::from_secs(10), || {
        b.is_revoked(&session("down"))
    })
    .await;
    // And the feeds work as before.
    revoke(&a, "after").await;
    eventually("B hears a new one", Duration::from_secs(1), || {
        b.is_revoked(&session("after"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_survives_a_redis_restart_with_an_append_only_file() {
    let Some(mut server) = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]) else {
        return;
    };
    let a = feed(&server).await;
    let b = feed(&server).await;
    revoke(&a, "before").await;
    server.restart();
    // An instance started after the restart finds what was recorded before it.
    let c = feed(&server).await;
    assert!(c.is_revoked(&session("before")));
    revoke(&a, "after").await;
    for instance in [&b, &c] {
        eventually("heard after the restart", Duration::from_secs(1), || {
            instance.is_revoked(&session("after"))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_all_while_disconnected_when_configured() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let options = options().with_disconnect_policy(DisconnectPolicy::RefuseAll);
    let feed = RevocationFeed::start(&server.url(), options).await.unwrap();
    assert!(!feed.is_revoked(&session("s1")));
    assert!(feed.is_known());
    server.stop();
    eventually("disconnected", Duration::from_secs(5), || {
        matches!(feed.status(), FeedStatus::Disconnected { .. })
    })
    .await;
    assert!(!feed.is_known(), "fails closed: nothing can be trusted");
    assert!(
        !feed.is_revoked(&session("s1")),
        "but nothing is called revoked"
    );
    server.restart();
    eventually("reconnected", Duration::from_secs(10), || {
        feed.status() == FeedStatus::Connected
    })
    .await;
    assert!(feed.is_known());
    assert!(!feed.is_revoked(&session("s1")));
}
