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
    // Let the replica catch up before the master dies (replication is asynchronous).
    let _ = cluster.nodes()[master].command(&["WAIT", "1", "2000"]);
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
