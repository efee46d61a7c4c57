//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use baton_store::MemoryStore;
use baton_store::conformance::StoreSetup;

async fn memory(setup: StoreSetup) -> Option<(MemoryStore, ())> {
    Some((
        MemoryStore::new(setup.keys, setup.policy).with_clock(Arc::new(setup.clock)),
        (),
    ))
}

baton_store::conformance_tests!(memory);

#[tokio::test]
async fn expired_sessions_are_purged_so_memory_stays_bounded() {
    use baton_core::TestClock;
    use baton_store::{Device, Policy, RefreshKeys, RefreshStore};
    use std::time::Duration;

    let clock = TestClock::at_millis(1_800_000_000_000);
    let policy = Policy::builder()
        .idle_lifetime(Duration::from_secs(60))
        .build()
        .unwrap();
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), policy)
        .with_clock(Arc::new(clock.clone()));
    for i in 0..1000 {
        store
            .create(&format!("u{i}"), Device::default())
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 1000);
    clock.advance(Duration::from_secs(120));
    // The next write sweeps everything that expired.
    store.create("fresh", Device::default()).await.unwrap();
    assert_eq!(store.len(), 1);
}
