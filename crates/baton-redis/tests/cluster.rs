//! The conformance suite against `RedisStore` on a three-master Redis Cluster that each test
//! starts on loopback ports.
#![cfg(feature = "cluster")]

use std::sync::Arc;

use baton_redis::{RedisOptions, RedisStore};
use baton_store::conformance::StoreSetup;
use baton_test::RedisCluster;

async fn cluster(setup: StoreSetup) -> Option<(RedisStore, RedisCluster)> {
    let cluster = RedisCluster::start()?;
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(&nodes, setup.keys, setup.policy, RedisOptions::new())
        .await
        .unwrap()
        .with_clock(Arc::new(setup.clock));
    Some((store, cluster))
}

baton_store::conformance_tests!(cluster);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_spread_over_every_master() {
    use baton_store::{Device, RefreshStore, RotateContext};
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(
        &nodes,
        baton_store::RefreshKeys::generate().unwrap(),
        baton_store::Policy::new(),
        RedisOptions::new(),
    )
    .await
    .unwrap();
    for i in 0..60 {
        let created = store
            .create(&format!("user-{i}"), Device::default())
            .await
            .unwrap();
        store
            .rotate(created.token.expose(), RotateContext::default())
            .await
            .unwrap();
    }
    // Every master holds some users: the hash tags spread them over the slots.
    for node in cluster.nodes() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", node.port())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(keys > 0, "node {} holds no user", node.port());
    }
    for i in 0..60 {
        assert_eq!(store.list(&format!("user-{i}")).await.unwrap().len(), 1);
    }
}

/// The master holding a user's sessions dies; its replica takes over, and the store carries
/// on with the same sessions without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_master_is_handled_by_the_cluster_client() {
    use baton_store::{Device, Policy, RefreshKeys, RefreshStore, RotateContext, RotationKind};
    use std::time::{Duration, Instant};
    let Some(mut cluster) = RedisCluster::start_with_replicas(1) else {
        return;
    };
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let options = RedisOptions::new().with_response_timeout(Duration::from_millis(500));
    let store = RedisStore::connect_cluster(
        &nodes,
        RefreshKeys::generate().unwrap(),
        Policy::new(),
        options,
    )
    .await
    .unwrap();
    let created = store.create("frank", Device::default()).await.unwrap();
    let master = cluster
        .master_of(&store.user_key("frank"))
        .expect("a master for the key");
    // Let the replica catch up before the master dies: replication is asynchronous, and a
    // failover loses what the replica had not received (the crate docs say so). On a busy
    // machine the replica may still be syncing: ask until it acknowledges, for 20 s at most.
    let started = Instant::now();
    loop {
        let acked = cluster.nodes()[master]
            .command(&["WAIT", "1", "1000"])
            .and_then(|o| o.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if acked >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never acknowledged the session"
        );
    }
    cluster.nodes_mut()[master].stop();

    let deadline = Instant::now() + Duration::from_secs(30);
    let rotated = loop {
        match store
            .rotate(created.token.expose(), RotateContext::default())
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "no failover: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(rotated.kind, RotationKind::Rotated);
    assert_eq!(store.list("frank").await.unwrap().len(), 1);
}

async fn cluster_connection(cluster: &RedisCluster) -> baton_redis::RedisConnection {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    baton_redis::RedisConnection::connect_cluster(&nodes, &RedisOptions::new())
        .await
        .unwrap()
}

/// Two instances on a three-master cluster: a revocation on one reaches the other within a
/// second, live (pub/sub reaches every node) and from the log alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_feed_works_on_a_cluster() {
    use baton_core::{CheckRevocation, Revocation, Revoke, TokenIdentity};
    use baton_redis::{FeedOptions, RevocationFeed};
    use std::time::{Duration, Instant};
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let options = FeedOptions::new(Duration::from_secs(900));
    let a = RevocationFeed::start_on(cluster_connection(&cluster).await, options.clone()).await;
    let b = RevocationFeed::start_on(cluster_connection(&cluster).await, options.clone()).await;
    // A third instance whose connection came from the application: it reads the log only.
    let urls = cluster.urls();
    let client = redis::cluster::ClusterClient::new(urls.clone()).unwrap();
    let own = client.get_async_connection().await.unwrap();
    let c = RevocationFeed::start_on(own.into(), options).await;
    for i in 0..5 {
        let sid = format!("c{i}");
        a.revoke(&[Revocation::session(sid.clone())]).await.unwrap();
        let started = Instant::now();
        for feed in [&b, &c] {
            while !feed.is_revoked(&TokenIdentity::new("alice").with_sid(&sid)) {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "not heard within a second"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        eprintln!("heard on the cluster after {:?}", started.elapsed());
    }
}

/// Two limiters on a three-master cluster share one budget per key, for keys on every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_shares_one_budget_on_a_cluster() {
    use baton_redis::RedisGcra;
    use std::time::Duration;
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let a = RedisGcra::new(cluster_connection(&cluster).await, "test:");
    let b = RedisGcra::new(cluster_connection(&cluster).await, "test:");
    let interval = Duration::from_secs(60);
    for user in 0..30 {
        let key = format!("user-{user}");
        // A burst of 3 a minute, spent on both instances together.
        assert!(a.check("login", &key, interval, 3).await.is_ok());
        assert!(b.check("login", &key, interval, 3).await.is_ok());
        assert!(a.check("login", &key, interval, 3).await.is_ok());
        let wait = b
            .check("login", &key, interval, 3)
            .await
            .expect_err("the fourth is over the shared budget");
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }
    // The keys landed on every master.
    for node in cluster.nodes() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", node.port())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(keys > 0, "node {} holds no limit", node.port());
    }
}
