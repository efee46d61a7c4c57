//! The conformance suite against `RedisStore` on a test-started `redis-server`.

use std::sync::Arc;

use baton_redis::{RedisOptions, RedisStore};
use baton_store::conformance::StoreSetup;
use baton_test::RedisServer;

async fn redis(setup: StoreSetup) -> Option<(RedisStore, RedisServer)> {
    let server = RedisServer::start()?;
    let store = RedisStore::connect(&server.url(), setup.keys, setup.policy, RedisOptions::new())
        .await
        .unwrap()
        .with_clock(Arc::new(setup.clock));
    Some((store, server))
}

baton_store::conformance_tests!(redis);
