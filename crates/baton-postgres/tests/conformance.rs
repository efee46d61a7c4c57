//! The conformance suite against `PostgresStore` on a test-started PostgreSQL server (one
//! server for the process, a database of its own per test).

use std::sync::Arc;

use baton_postgres::{PostgresOptions, PostgresStore};
use baton_store::conformance::StoreSetup;
use baton_test::PgServer;

async fn postgres(setup: StoreSetup) -> Option<(PostgresStore, Arc<PgServer>)> {
    let server = PgServer::shared()?;
    let url = server.create_database();
    let store = PostgresStore::connect(&url, setup.keys, setup.policy, PostgresOptions::new())
        .await
        .unwrap()
        .with_clock(Arc::new(setup.clock));
    Some((store, server))
}

baton_store::conformance_tests!(postgres);
