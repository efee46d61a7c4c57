//! Conformance cases of devices and authentication: device identifiers that replace a
//! device's earlier session, the network-change policy, and re-authentication.

use std::net::IpAddr;
use std::time::Duration;

use super::{START_MS, StoreFactory, build, ctx, device, policy};
use crate::{
    Authentication, Device, DeviceChange, Login, NetworkChange, RefreshStore, RotateContext,
    RotateError, RotationKind, StoreError,
};

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("test address"))
}

/// A login with a device identifier replaces the same user's live session with that
/// identifier, and only that one: other devices, other users and sessions without an
/// identifier stay.
pub async fn device_id_replaces_that_devices_session<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let phone = || device("App/1.0", [10, 0, 0, 1]).with_id("install-7f3a");
    let first = store.create("alice", phone()).await.unwrap();
    assert_eq!(first.session.device.id.as_deref(), Some("install-7f3a"));
    assert!(first.replaced.is_empty());
    let laptop = store
        .create("alice", device("Firefox/130", [10, 0, 0, 2]))
        .await
        .unwrap();
    let tablet = store
        .create("alice", Device::default().with_id("install-0000"))
        .await
        .unwrap();
    let bobs = store.create("bob", phone()).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let again = store.create("alice", phone()).await.unwrap();
    assert_eq!(again.replaced, vec![first.session.id]);
    assert!(again.evicted.is_empty());
    assert_eq!(
        store
            .rotate(first.token.expose(), RotateContext::default())
            .await
            .unwrap_err(),
        RotateError::Revoked
    );
    let mut live: Vec<_> = store
        .list("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    live.sort();
    let mut want = vec![laptop.session.id, tablet.session.id, again.session.id];
    want.sort();
    assert_eq!(live, want);
    assert_eq!(
        store.list("bob").await.unwrap()[0].id,
        bobs.session.id,
        "another user's session with the same device id stays"
    );
    assert_eq!(
        store
            .get(again.session.id)
            .await
            .unwrap()
            .unwrap()
            .device
            .id,
        Some("install-7f3a".to_owned()),
        "the identifier is kept with the session"
    );
}

/// A replaced device does not count against the session cap: at the cap, a new login from
/// a known device replaces it and evicts nothing.
pub async fn device_id_replacement_comes_before_eviction<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().max_sessions_per_user(2));
    let phone = store
        .create("alice", Device::default().with_id("phone"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let laptop = store.create("alice", Device::default()).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let again = store
        .create("alice", Device::default().with_id("phone"))
        .await
        .unwrap();
    assert_eq!(again.replaced, vec![phone.session.id]);
    assert!(again.evicted.is_empty(), "{:?}", again.evicted);
    assert!(store.get(laptop.session.id).await.unwrap().is_some());
}

/// Device identifiers and authentication values outside the contract are refused before
/// anything is stored.
pub async fn bad_device_ids_and_methods_are_refused<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let long = "d".repeat(129);
    for bad in ["", "two words", "tab\there", "é", "a\u{1f}b", long.as_str()] {
        assert!(
            matches!(
                store.create("alice", Device::default().with_id(bad)).await,
                Err(StoreError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    for bad in [
        Authentication::new(["p w d"]),
        Authentication::new([""]),
        Authentication::new(["x"; 9]),
        Authentication::password().with_acr("a\"b"),
    ] {
        assert!(
            matches!(
                store
                    .create("alice", Login::new(Device::default(), bad.clone()))
                    .await,
                Err(StoreError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert!(store.list("alice").await.unwrap().is_empty());
    let ok = store
        .create("alice", Device::default().with_id("d".repeat(128)))
        .await
        .unwrap();
    assert!(
        matches!(
            store
                .reauthenticate("alice", ok.session.id, Authentication::new(["a b"]))
                .await,
            Err(StoreError::InvalidInput(_))
        ),
        "reauthenticate checks its values too"
    );
}

/// Under `Record` (the default) a refresh from another network is recorded, reported and
/// goes on, without a flag.
pub async fn network_change_is_recorded<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory);
    let created = store
        .create("alice", device("Firefox/130", [10, 1, 0, 1]))
        .await
        .unwrap();
    let r = store
        .rotate(created.token.expose(), ctx("Firefox/130", [192, 168, 3, 4]))
        .await
        .unwrap();
    assert!(r.network_changed);
    assert_eq!(r.session.device.ip, ip("192.168.3.4"));
    assert_eq!(r.session.network_changed_at, None);
}

/// Under `Flag`, a refresh from another network keeps the session, marks it with the time,
/// and moves it to the new network; moves inside a network, between IPv4 and IPv6, or from
/// an unknown address mark nothing.
pub async fn network_change_flags_when_configured<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory, policy().network_change(NetworkChange::Flag));
    let created = store
        .create("alice", Device::new(Some("UA"), ip("10.1.0.1")))
        .await
        .unwrap();
    let rotate = |token: String, at: Option<IpAddr>| {
        let store = store.clone();
        async move {
            store
                .rotate(&token, RotateContext::new(Some("UA"), at))
                .await
                .unwrap()
        }
    };
    // Same /16.
    let r = rotate(created.token.expose().to_owned(), ip("10.1.200.9")).await;
    assert!(!r.network_changed);
    assert_eq!(r.session.network_changed_at, None);
    // To IPv6 and back (dual stack), and an unknown address: no change.
    let r = rotate(r.token.expose().to_owned(), ip("2001:db8:1::5")).await;
    assert!(!r.network_changed);
    let r = rotate(r.token.expose().to_owned(), None).await;
    assert!(!r.network_changed);
    let r = rotate(r.token.expose().to_owned(), ip("10.1.3.3")).await;
    assert!(!r.network_changed);
    assert_eq!(r.session.network_changed_at, None);
    // Another /16: flagged, kept, moved.
    clock.advance(Duration::from_secs(30));
    let r = rotate(r.token.expose().to_owned(), ip("10.2.0.1")).await;
    assert!(r.network_changed);
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_eq!(r.session.network_changed_at, Some(START_MS + 30_000));
    assert_eq!(r.session.device.ip, ip("10.2.0.1"));
    let listed = store.list("alice").await.unwrap();
    assert_eq!(listed[0].network_changed_at, Some(START_MS + 30_000));
    // Inside the new network: no new change, the mark stays.
    clock.advance(Duration::from_secs(30));
    let r = rotate(r.token.expose().to_owned(), ip("10.2.9.9")).await;
    assert!(!r.network_changed);
    assert_eq!(r.session.network_changed_at, Some(START_MS + 30_000));
    // IPv6 /48s compare too; an IPv4-mapped address is its IPv4 address.
    let v6 = store
        .create("bob", Device::new(None, ip("2001:db8:1:aa::1")))
        .await
        .unwrap();
    let r = store
        .rotate(
            v6.token.expose(),
            RotateContext::new(None, ip("2001:db8:1:bb::2")),
        )
        .await
        .unwrap();
    assert!(!r.network_changed, "same /48");
    let r = store
        .rotate(
            r.token.expose(),
            RotateContext::new(None, ip("2001:db8:2::1")),
        )
        .await
        .unwrap();
    assert!(r.network_changed, "another /48");
    let mapped = store
        .create("carol", Device::new(None, ip("::ffff:10.5.0.1")))
        .await
        .unwrap();
    let r = store
        .rotate(
            mapped.token.expose(),
            RotateContext::new(None, ip("10.5.7.7")),
        )
        .await
        .unwrap();
    assert!(!r.network_changed, "IPv4-mapped is IPv4");
}

/// Under `Revoke`, a refresh from another network revokes the session (on the grace path
/// too); one from inside the network rotates.
pub async fn network_change_revokes_when_configured<F: StoreFactory>(factory: &F) {
    let (store, _guard, _clock) = setup!(factory, policy().network_change(NetworkChange::Revoke));
    let created = store
        .create("alice", device("UA", [10, 1, 0, 1]))
        .await
        .unwrap();
    let first = store
        .rotate(created.token.expose(), ctx("UA", [10, 1, 77, 1]))
        .await
        .unwrap();
    assert_eq!(first.kind, RotationKind::Rotated);
    // The parent inside the grace window, from another network.
    match store
        .rotate(created.token.expose(), ctx("UA", [172, 16, 0, 1]))
        .await
    {
        Err(RotateError::DeviceChanged {
            session,
            change: DeviceChange::Network,
        }) => {
            assert_eq!(session.id, created.session.id);
            assert_eq!(session.user_id, "alice");
        }
        other => panic!("expected DeviceChanged(Network), got {other:?}"),
    }
    assert_eq!(
        store
            .rotate(first.token.expose(), ctx("UA", [10, 1, 0, 1]))
            .await
            .unwrap_err(),
        RotateError::Revoked
    );
    assert!(store.list("alice").await.unwrap().is_empty());
    // Each family is judged against its own last network: a detour through IPv6 or an
    // unknown address does not launder a move to another IPv4 network.
    let dual = store
        .create("bob", Device::new(Some("UA"), ip("10.1.0.1")))
        .await
        .unwrap();
    let r = store
        .rotate(
            dual.token.expose(),
            RotateContext::new(Some("UA"), ip("2001:db8:1::1")),
        )
        .await
        .unwrap();
    assert!(!r.network_changed);
    let r = store
        .rotate(r.token.expose(), RotateContext::new(Some("UA"), None))
        .await
        .unwrap();
    assert!(!r.network_changed);
    let r = store
        .rotate(
            r.token.expose(),
            RotateContext::new(Some("UA"), ip("2001:db8:1:5::1")),
        )
        .await
        .unwrap();
    assert!(!r.network_changed, "same /48");
    assert!(matches!(
        store
            .rotate(
                r.token.expose(),
                RotateContext::new(Some("UA"), ip("10.9.0.1"))
            )
            .await,
        Err(RotateError::DeviceChanged {
            change: DeviceChange::Network,
            ..
        })
    ));
    // A live token from another network: the same.
    let other = store
        .create("alice", device("UA", [10, 1, 0, 1]))
        .await
        .unwrap();
    assert!(matches!(
        store
            .rotate(other.token.expose(), ctx("UA", [10, 3, 0, 1]))
            .await,
        Err(RotateError::DeviceChanged {
            change: DeviceChange::Network,
            ..
        })
    ));
}

/// A login records when and how the user authenticated; refreshes keep it (a refresh is not
/// a login); re-authentication renews it in the same session without rotating, for that
/// user's live session only.
pub async fn reauthenticate_renews_auth_time_only<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let created = store
        .create(
            "alice",
            Login::new(
                Device::default(),
                Authentication::password().with_acr("phr"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.session.auth_time, START_MS);
    assert_eq!(created.session.amr, ["pwd"]);
    assert_eq!(created.session.acr.as_deref(), Some("phr"));
    clock.advance(Duration::from_secs(600));
    let r = store
        .rotate(created.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(r.session.auth_time, START_MS, "a refresh is not a login");
    assert_eq!(r.session.amr, ["pwd"]);
    assert_eq!(r.session.acr.as_deref(), Some("phr"));
    clock.advance(Duration::from_secs(60));
    let again = store
        .reauthenticate(
            "alice",
            created.session.id,
            Authentication::new(["pwd", "otp"]),
        )
        .await
        .unwrap()
        .expect("live session");
    assert_eq!(again.auth_time, START_MS + 660_000);
    assert_eq!(again.amr, ["pwd", "otp"]);
    assert_eq!(again.acr, None);
    assert_eq!(again.generation, 1, "no rotation");
    assert_eq!(again.last_used_at, r.session.last_used_at, "not a use");
    assert_eq!(store.get(created.session.id).await.unwrap(), Some(again));
    // The live token still rotates, and the new time is kept.
    let next = store
        .rotate(r.token.expose(), RotateContext::default())
        .await
        .unwrap();
    assert_eq!(next.session.auth_time, START_MS + 660_000);
    assert_eq!(next.session.amr, ["pwd", "otp"]);
    // Another user's session, a revoked one: nothing.
    assert_eq!(
        store
            .reauthenticate("bob", created.session.id, Authentication::password())
            .await
            .unwrap(),
        None
    );
    assert!(store.revoke("alice", created.session.id).await.unwrap());
    assert_eq!(
        store
            .reauthenticate("alice", created.session.id, Authentication::password())
            .await
            .unwrap(),
        None
    );
}

/// A session bound to a DPoP key rotates only for a request that proves that key: without it
/// (a stolen refresh token) nothing is looked at or changed, not even a reuse verdict; with
/// it, rotation goes on as ever. Unbound sessions rotate whatever key a request proves.
pub async fn dpop_bound_sessions_rotate_only_with_their_key<F: StoreFactory>(factory: &F) {
    let (store, _guard, clock) = setup!(factory);
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let bound = store
        .create(
            "alice",
            Login::new(Device::default(), Authentication::password()).with_dpop_jkt(jkt),
        )
        .await
        .unwrap();
    assert_eq!(bound.session.dpop_jkt.as_deref(), Some(jkt));
    let with = |k: Option<&str>| {
        let context = RotateContext::default();
        match k {
            Some(k) => context.with_dpop_jkt(k),
            None => context,
        }
    };
    for wrong in [None, Some("another-key-thumbprint")] {
        assert_eq!(
            store
                .rotate(bound.token.expose(), with(wrong))
                .await
                .unwrap_err(),
            RotateError::DpopKeyMismatch
        );
    }
    assert_eq!(
        store.get(bound.session.id).await.unwrap(),
        Some(bound.session.clone()),
        "nothing changed"
    );
    let r = store
        .rotate(bound.token.expose(), with(Some(jkt)))
        .await
        .unwrap();
    assert_eq!(r.kind, RotationKind::Rotated);
    assert_eq!(r.session.dpop_jkt.as_deref(), Some(jkt));
    // A spent token without the key: refused before any reuse verdict; the session lives.
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        store
            .rotate(bound.token.expose(), with(None))
            .await
            .unwrap_err(),
        RotateError::DpopKeyMismatch
    );
    assert!(store.get(bound.session.id).await.unwrap().is_some());
    // An unbound session stays unbound whatever a request proves.
    let plain = store.create("bob", Device::default()).await.unwrap();
    let r = store
        .rotate(plain.token.expose(), with(Some(jkt)))
        .await
        .unwrap();
    assert_eq!(r.session.dpop_jkt, None);
    // A thumbprint that is not one is refused at login.
    for bad in ["", "has space", "x".repeat(65).as_str()] {
        assert!(matches!(
            store
                .create(
                    "carol",
                    Login::new(Device::default(), Authentication::password()).with_dpop_jkt(bad),
                )
                .await,
            Err(StoreError::InvalidInput(_))
        ));
    }
}
