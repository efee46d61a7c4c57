//! Conformance cases of sessions: create, list, expiry, revocation, caps, reads and input.

use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr};

use super::{START_MS, StoreFactory, build, device, ids, policy};
use crate::{Device, RefreshStore, RotateContext, RotateError};

/// Sessions are created with their device, listed newest use first, and read back.
pub async fn create_and_list<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let a = store
        .create(
            "alice",
            device("Firefox/130", [10, 0, 0, 1]).with_name("laptop"),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let b = store
        .create("alice", device("Safari/17", [10, 0, 0, 2]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let c = store.create("alice", Device::default()).await.unwrap();
    store
        .create("bob", device("curl/8", [10, 0, 0, 3]))
        .await
        .unwrap();

    assert_eq!(a.session.user_id, "alice");
    assert_eq!(a.session.generation, 0);
    assert_eq!(a.session.created_at, START_MS);
    assert_eq!(a.session.device.name.as_deref(), Some("laptop"));
    assert!(a.evicted.is_empty());
    let list = store.list("alice").await.unwrap();
    assert_eq!(
        ids(&list),
        ids(&[c.session.clone(), b.session.clone(), a.session.clone()])
    );
    assert_eq!(list[2], a.session, "stored exactly as created");
    assert_eq!(list[1].device.user_agent.as_deref(), Some("Safari/17"));
    assert_eq!(
        list[1].device.ip,
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
    );
    assert_eq!(list[0].device, Device::default());
    assert_eq!(store.list("bob").await.unwrap().len(), 1);
    assert!(store.list("carol").await.unwrap().is_empty());
    assert_eq!(store.get(b.session.id).await.unwrap(), Some(b.session));
}

/// A session unused for the idle lifetime expires; each rotation slides the deadline.
pub async fn idle_expiry_slides<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    clock.advance(Duration::from_secs(3599));
    let t1 = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap()
        .token;
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        store.list("alice").await.unwrap().len(),
        1,
        "still alive: the rotation slid it"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store
            .rotate(t1.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Expired
    );
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.get(created.session.id).await.unwrap(), None);
}

/// However often it is used, a session ends at the absolute cap.
pub async fn absolute_cap<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    assert_eq!(
        created.session.absolute_expires_at,
        START_MS + 4 * 3600 * 1000
    );
    let mut token = created.token;
    for _ in 0..4 {
        clock.advance(Duration::from_secs(3500));
        let r = store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap();
        assert!(r.session.expires_at <= r.session.absolute_expires_at);
        token = r.token;
    }
    // 14,000 s in: the idle deadline would allow 3,600 s more, the 4-hour cap only 400.
    clock.advance(Duration::from_secs(500));
    assert_eq!(
        store
            .rotate(token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Expired
    );
}

/// Revoking one session kills its token and leaves the others.
pub async fn revoke_one<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let a = store.create("alice", Device::default()).await.unwrap();
    let b = store.create("alice", Device::default()).await.unwrap();
    let bob = store.create("bob", Device::default()).await.unwrap();
    assert!(
        !store.revoke("bob", a.session.id).await.unwrap(),
        "not bob's session"
    );
    assert!(!store.revoke("alice", bob.session.id).await.unwrap());
    assert!(store.revoke("alice", a.session.id).await.unwrap());
    assert!(
        !store.revoke("alice", a.session.id).await.unwrap(),
        "already revoked"
    );
    assert_eq!(
        store
            .rotate(a.token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Revoked
    );
    assert_eq!(ids(&store.list("alice").await.unwrap()), ids(&[b.session]));
    assert!(
        store
            .rotate(b.token.expose(), RotateContext::default())
            .await
            .is_ok()
    );
    assert!(
        store
            .rotate(bob.token.expose(), RotateContext::default())
            .await
            .is_ok()
    );
}

/// Revoking all of a user's sessions returns them and kills every token.
pub async fn revoke_all<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            store
                .create("alice", Device::default())
                .await
                .unwrap()
                .token,
        );
    }
    let bob = store.create("bob", Device::default()).await.unwrap();
    let mut revoked = store.revoke_all("alice").await.unwrap();
    revoked.sort();
    let mut created: Vec<_> = tokens
        .iter()
        .map(|t| store.keys().verify(t.expose()).unwrap().session_id)
        .collect();
    created.sort();
    assert_eq!(revoked, created, "the revoked sessions, each once");
    assert!(store.revoke_all("alice").await.unwrap().is_empty());
    assert!(store.revoke_all("nobody").await.unwrap().is_empty());
    for t in &tokens {
        assert_eq!(
            store
                .rotate(t.expose(), RotateContext::default())
                .await
                .unwrap_err(),
            RotateError::Revoked
        );
    }
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.list("bob").await.unwrap().len(), 1);
    assert!(
        store
            .rotate(bob.token.expose(), RotateContext::default())
            .await
            .is_ok()
    );
}

/// Beyond the per-user limit, the least recently used session is evicted.
pub async fn max_sessions_evicts_the_least_recently_used<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().max_sessions_per_user(3));
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(store.create("alice", Device::default()).await.unwrap());
        clock.advance(Duration::from_secs(1));
    }
    // Using the oldest makes the second the least recently used.
    let used = store
        .rotate(created[0].token.expose(), RotateContext::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let fourth = store.create("alice", Device::default()).await.unwrap();
    assert_eq!(fourth.evicted, vec![created[1].session.id]);
    let list = store.list("alice").await.unwrap();
    assert_eq!(
        ids(&list),
        ids(&[fourth.session, used.session, created[2].session.clone()])
    );
    assert_eq!(
        store
            .rotate(created[1].token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Revoked
    );
}

/// 100 users with 100 sessions each are listed correctly.
pub async fn many_users_many_sessions<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().max_sessions_per_user(100));
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 100];
    for round in 0..100 {
        let mut creates = tokio::task::JoinSet::new();
        for user in 0..100 {
            let store = store.clone();
            creates.spawn(async move {
                let created = store
                    .create(&format!("user-{user}"), Device::default())
                    .await
                    .unwrap();
                (user, created.session.id.to_string())
            });
        }
        while let Some(done) = creates.join_next().await {
            let (user, id) = done.unwrap();
            expected[user].push(id);
        }
        if round % 10 == 9 {
            clock.advance(Duration::from_millis(5));
        }
    }
    for (user, ids_created) in expected.iter().enumerate() {
        let list = store.list(&format!("user-{user}")).await.unwrap();
        assert_eq!(list.len(), 100, "user-{user}");
        assert!(list.iter().all(|s| s.user_id == format!("user-{user}")));
        assert!(
            list.windows(2)
                .all(|w| w[0].last_used_at >= w[1].last_used_at),
            "newest first"
        );
        let mut got = ids(&list);
        got.sort();
        let mut want = ids_created.clone();
        want.sort();
        assert_eq!(got, want, "user-{user}");
    }
}

/// Reads never touch a session.
pub async fn reads_are_touch_free<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store.create("alice", Device::default()).await.unwrap();
    clock.advance(Duration::from_secs(100));
    let got = store.get(created.session.id).await.unwrap().unwrap();
    let listed = store.list("alice").await.unwrap();
    assert_eq!(got, created.session);
    assert_eq!(listed, vec![created.session.clone()]);
    assert_eq!(
        store
            .get(created.session.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        START_MS
    );
}

/// Bad user ids and odd device data are refused or cleaned, never stored raw.
pub async fn bad_input_is_refused_or_cleaned<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    for bad in ["", "a\nb", "a\u{1f}b"] {
        assert!(
            matches!(
                store.create(bad, Device::default()).await,
                Err(crate::StoreError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert!(
        store
            .create(&"u".repeat(257), Device::default())
            .await
            .is_err()
    );
    let ua = format!("Evil\u{1f}Agent\r\n{}", "x".repeat(1000));
    let created = store
        .create("alice", Device::new(Some(&ua), None).with_name("a\u{0}b"))
        .await
        .unwrap();
    let stored = store.list("alice").await.unwrap().remove(0);
    let stored_ua = stored.device.user_agent.unwrap();
    assert!(stored_ua.starts_with("Evil Agent  "));
    assert_eq!(stored_ua.len(), crate::MAX_USER_AGENT_LEN);
    assert_eq!(stored.device.name.as_deref(), Some("a b"));
    assert_eq!(stored.id, created.session.id);
    assert!(
        store
            .rotate(created.token.expose(), RotateContext::new(Some(&ua), None))
            .await
            .is_ok()
    );
}
