//! The DPoP replay cache on a real redis-server: one answer for every instance, a lost reply
//! repeated without becoming a replay, a Redis that is gone refused (never let through) and
//! used again once it is back, and the same on a Redis Cluster.

use std::time::{Duration, Instant};

use baton_core::{ReplayCache, ReplayCheck, ReplayUnknown};
use baton_redis::{RedisConnection, RedisOptions, RedisReplayCache};
use baton_test::{FaultProxy, RedisServer};

async fn cache_at(url: &str) -> RedisReplayCache {
    let conn = RedisConnection::connect(url, &RedisOptions::new())
        .await
        .unwrap();
    RedisReplayCache::new(conn, "t:")
}

/// The cache's answer for `key`, kept 60 s.
async fn first_use(cache: &RedisReplayCache, key: u8) -> Result<bool, ReplayUnknown> {
    match cache.first_use([key; 16], 1_060_000, 1_000_000) {
        ReplayCheck::Pending(answer) => answer.await,
        ReplayCheck::Ready(_) => panic!("a shared cache asks Redis"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_new_once_for_every_instance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two instances, two connections, one Redis.
    let a = cache_at(&server.url()).await;
    let b = cache_at(&server.url()).await;
    assert_eq!(first_use(&a, 1).await, Ok(true));
    assert_eq!(
        first_use(&b, 1).await,
        Ok(false),
        "replayed to another instance"
    );
    assert_eq!(
        first_use(&a, 1).await,
        Ok(false),
        "replayed to the same one"
    );
    assert_eq!(first_use(&b, 2).await, Ok(true));
    // Kept for the proof's window and no longer.
    let key = format!("t:dpop:{}", "01".repeat(16));
    let ttl: i64 = server
        .command(&["PTTL", &key])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((55_000..=60_000).contains(&ttl), "{ttl}");
    // What one remembered proof costs Redis (the figure the docs give).
    let bytes: u64 = server
        .command(&["MEMORY", "USAGE", &key])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("one remembered proof: {bytes} bytes of Redis memory");
    assert!(bytes <= 128, "{bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_whose_reply_is_lost_is_not_its_own_replay() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.port());
    let cache = cache_at(&proxy.url()).await;
    assert_eq!(first_use(&cache, 9).await, Ok(true));
    // The script runs, its reply is lost with the connection; the connection's repeat of the
    // same call (same attempt id) must hear "first use" again.
    proxy.drop_next_reply();
    assert_eq!(first_use(&cache, 3).await, Ok(true));
    assert_eq!(proxy.dropped(), 1, "the reply was lost");
    assert_eq!(
        first_use(&cache, 3).await,
        Ok(false),
        "a new call is a replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_gone_refuses_and_one_that_is_back_answers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let cache = cache_at(&server.url()).await;
    assert_eq!(first_use(&cache, 1).await, Ok(true));
    server.stop();
    let started = Instant::now();
    assert!(first_use(&cache, 2).await.is_err(), "never let through");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.restart();
    // Back without restarting the application (the connection reconnects).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match first_use(&cache, 4).await {
            Ok(first) => {
                assert!(first);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("Redis is back but the cache is not: {e}"),
        }
    }
    assert_eq!(first_use(&cache, 4).await, Ok(false));
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_works_on_a_cluster() {
    let Some(cluster) = baton_test::RedisCluster::start() else {
        return;
    };
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let conn = RedisConnection::connect_cluster(&nodes, &RedisOptions::new())
        .await
        .unwrap();
    let cache = RedisReplayCache::new(conn, "t:");
    // Keys spread over the masters.
    for key in 0..32 {
        assert_eq!(first_use(&cache, key).await, Ok(true));
        assert_eq!(first_use(&cache, key).await, Ok(false));
    }
}
