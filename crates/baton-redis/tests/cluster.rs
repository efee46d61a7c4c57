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
