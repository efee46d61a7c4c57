//! Two stores under two table prefixes in one database: their own tables, functions and
//! migration history, neither seeing the other's sessions; a prefix that is not an identifier
//! is refused before any SQL runs.

use baton_postgres::{PostgresError, PostgresOptions, PostgresStore};
use baton_store::{Device, Policy, RefreshKeys, RefreshStore, RotateContext};
use baton_test::PgServer;

async fn store(url: &str, prefix: &str) -> Result<PostgresStore, PostgresError> {
    PostgresStore::connect(
        url,
        RefreshKeys::new(1, [7; 32]).unwrap(),
        Policy::new(),
        PostgresOptions::new().with_prefix(prefix),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_in_one_database_keep_apart() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let a = store(&url, "app_a_").await.unwrap();
    let b = store(&url, "app_b_").await.unwrap();
    // Connecting again applies nothing twice.
    let a_again = store(&url, "app_a_").await.unwrap();
    let created = a.create("alice", Device::default()).await.unwrap();
    assert_eq!(a_again.list("alice").await.unwrap().len(), 1);
    assert!(b.list("alice").await.unwrap().is_empty());
    // The same keys, but b has no such session.
    let err = b
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap_err();
    assert_eq!(err, baton_store::RotateError::Expired);
    let db = url.rsplit('/').next().unwrap();
    let tables = server.psql(
        db,
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
         WHERE schemaname = 'public'",
    );
    assert_eq!(
        tables.trim(),
        "app_a_limits,app_a_migrations,app_a_revocations,app_a_sessions,app_b_limits,\
         app_b_migrations,app_b_revocations,app_b_sessions"
    );
    for bad in ["Robert'); DROP TABLE x; --", "9lives_", ""] {
        assert!(
            matches!(store(&url, bad).await, Err(PostgresError::InvalidPrefix(_))),
            "{bad:?}"
        );
    }
}
