//! Audit events: a login, a failed one, a refresh, a theft, other devices signed out and a
//! rate limit reach the application's sink, typed, with no secret in them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::{
    AuditEvent, AuditRecord, AuthUnavailable, Authenticator, Baton, Principal, RevokeReason,
    UsernamePassword,
};
use baton_core::TestClock;
use baton_store::{MemoryStore, Policy, RefreshKeys};
use baton_token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

const PASSWORD: &str = "pw-never-logged";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

struct Alice;

impl Authenticator for Alice {
    type Claims = NoCustomClaims;
    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        let (username, password) = (credentials.username.as_str(), credentials.password.as_str());
        Ok((username == "alice" && password == PASSWORD)
            .then(|| Principal::new("user-alice", NoCustomClaims {})))
    }
    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        Ok(user_id == "user-alice" && password == PASSWORD)
    }
    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(Some(NoCustomClaims {}))
    }
}

struct Reply {
    status: StatusCode,
    cookie: Option<String>,
    body: serde_json::Value,
}

async fn post(
    baton: &Baton<MemoryStore, Alice>,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Reply {
    post_from(baton, None, path, headers, body).await
}

/// A request whose TCP peer is `peer`.
async fn post_from(
    baton: &Baton<MemoryStore, Alice>,
    peer: Option<&str>,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Reply {
    let mut req = Request::post(path)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, CHROME);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    // The server hands the endpoints the peer address (one documentation address unless the
    // test picks another).
    let peer = peer.unwrap_or("192.0.2.9");
    let addr = std::net::SocketAddr::new(peer.parse().unwrap(), 40000);
    req = req.extension(baton::PeerAddr(addr));
    let res = baton
        .endpoints()
        .oneshot(req.body(Full::<Bytes>::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let cookie = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Secure-refresh=v1."))
        .map(|v| v.split(';').next().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        cookie,
        body: serde_json::from_slice(&bytes).unwrap_or_default(),
    }
}

/// A sink that keeps every record, and the records it keeps.
fn recorder() -> (Arc<Mutex<Vec<AuditRecord>>>, impl baton::AuditSink) {
    let records = Arc::new(Mutex::new(Vec::<AuditRecord>::new()));
    let kept = records.clone();
    let sink = move |record: &AuditRecord| kept.lock().unwrap().push(record.clone());
    (records, sink)
}

#[tokio::test]
async fn the_sink_sees_what_happened_and_no_secret() {
    let clock = TestClock::starting_now();
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new())
        .with_clock(Arc::new(clock.clone()));
    let keys = KeyRing::new(KeySet::new(Key::generate("k", Algorithm::ES256).unwrap()).unwrap());
    let (records, sink) = recorder();
    let baton = Baton::builder(store, Alice, keys)
        .clock(Arc::new(clock.clone()))
        .audit(sink)
        .rate_limits(baton::RateLimits::default().with_login_per_ip(Some(baton::Rule::new(1, 4))))
        .client_addr_from_peer()
        .build()
        .unwrap();
    let login = |password: &str| format!(r#"{{"username":"alice","password":"{password}"}}"#);
    let events = || -> Vec<AuditEvent> {
        records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.event.clone())
            .collect()
    };

    // A wrong password under another case of the name: reported in its canonical form.
    let wrong = r#"{"username":"ALICE","password":"wrong"}"#;
    assert_eq!(
        post(&baton, "/auth/login", &[], wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    let first = post(&baton, "/auth/login", &[], &login(PASSWORD)).await;
    assert_eq!(first.status, StatusCode::OK);
    let spent = first.cookie.unwrap();
    let refreshed = post(
        &baton,
        "/auth/refresh",
        &[(COOKIE.as_str(), spent.clone())],
        "",
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    clock.advance(Duration::from_secs(11));
    let stolen = post(
        &baton,
        "/auth/refresh",
        &[(COOKIE.as_str(), spent.clone())],
        "",
    )
    .await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);

    let a = post(&baton, "/auth/login", &[], &login(PASSWORD)).await;
    let b = post(&baton, "/auth/login", &[], &login(PASSWORD)).await;
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    let token = a.body["access_token"].as_str().unwrap().to_owned();
    let others = post(
        &baton,
        "/auth/logout-others",
        &[(AUTHORIZATION.as_str(), format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(others.body["revoked"], 1);
    let limited = post(&baton, "/auth/login", &[], &login(PASSWORD)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);

    let seen = events();
    assert!(
        matches!(&seen[0], AuditEvent::LoginFailed { username } if username == "alice"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], AuditEvent::LoginSucceeded { user, .. } if user == "user-alice"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], AuditEvent::Refreshed { graced: false, .. }),
        "{seen:?}"
    );
    assert!(
        matches!(
            &seen[3],
            AuditEvent::SessionRevoked {
                reason: RevokeReason::ReuseDetected,
                ..
            }
        ),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[4], AuditEvent::LoginSucceeded { .. }),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[5], AuditEvent::LoginSucceeded { .. }),
        "{seen:?}"
    );
    let AuditEvent::LoginSucceeded {
        session: b_session, ..
    } = &seen[5]
    else {
        unreachable!()
    };
    assert!(
        matches!(&seen[6], AuditEvent::SessionRevoked { reason: RevokeReason::OtherDevicesSignedOut, session, .. } if session == b_session),
        "{seen:?}"
    );
    assert_eq!(seen[7], AuditEvent::RateLimited { bucket: "login-ip" });
    assert_eq!(seen.len(), 8, "{seen:?}");

    let all = records.lock().unwrap().clone();
    // Times come from the facade's clock: the theft is reported 11 s after the login.
    assert_eq!(all[3].at_ms - all[1].at_ms, 11_000);
    assert_eq!(all[1].user_agent.as_deref(), Some(CHROME));
    let text = format!("{all:?}");
    assert!(!text.contains(PASSWORD), "a password in the audit trail");
    assert!(
        !text.contains(&spent["__Secure-refresh=".len()..]),
        "a refresh token in the audit trail"
    );
    assert!(!text.contains(&token), "an access token in the audit trail");
}

#[tokio::test]
async fn replaced_devices_network_changes_and_reauthentication_are_reported() {
    let clock = TestClock::starting_now();
    let policy = Policy::builder()
        .network_change(baton::store::NetworkChange::Flag)
        .build()
        .unwrap();
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), policy)
        .with_clock(Arc::new(clock.clone()));
    let keys = KeyRing::new(KeySet::new(Key::generate("k", Algorithm::ES256).unwrap()).unwrap());
    let (records, sink) = recorder();
    let baton = Baton::builder(store, Alice, keys)
        .clock(Arc::new(clock.clone()))
        .audit(sink)
        .client_addr_from_peer()
        .build()
        .unwrap();
    let login = format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#);
    let device = ("x-device-id", "install-1".to_owned());
    let here = Some("10.1.0.1");
    let first = post_from(
        &baton,
        here,
        "/auth/login",
        std::slice::from_ref(&device),
        &login,
    )
    .await;
    let second = post_from(&baton, here, "/auth/login", &[device], &login).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    let moved = post_from(
        &baton,
        Some("192.168.7.7"),
        "/auth/refresh",
        &[(COOKIE.as_str(), second.cookie.unwrap())],
        "",
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let token = moved.body["access_token"].as_str().unwrap().to_owned();
    let bearer = (AUTHORIZATION.as_str(), format!("Bearer {token}"));
    let wrong = post(
        &baton,
        "/auth/reauthenticate",
        std::slice::from_ref(&bearer),
        r#"{"password":"no"}"#,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let right = post(
        &baton,
        "/auth/reauthenticate",
        &[bearer],
        &format!(r#"{{"password":"{PASSWORD}"}}"#),
    )
    .await;
    assert_eq!(right.status, StatusCode::OK, "{:?}", right.body);

    let seen: Vec<AuditEvent> = records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.event.clone())
        .collect();
    let AuditEvent::LoginSucceeded {
        session: first_session,
        ..
    } = &seen[0]
    else {
        panic!("{seen:?}")
    };
    assert!(
        matches!(&seen[1], AuditEvent::SessionRevoked { reason: RevokeReason::Replaced, session, .. } if session == first_session),
        "{seen:?}"
    );
    let AuditEvent::LoginSucceeded {
        session: second_session,
        ..
    } = &seen[2]
    else {
        panic!("{seen:?}")
    };
    assert!(
        matches!(&seen[3], AuditEvent::NetworkChanged { flagged: true, session, .. } if session == second_session),
        "{seen:?}"
    );
    assert!(matches!(&seen[4], AuditEvent::Refreshed { .. }), "{seen:?}");
    assert!(
        matches!(&seen[5], AuditEvent::ReauthenticationFailed { session, .. } if session == second_session),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[6], AuditEvent::Reauthenticated { user, session } if user == "user-alice" && session == second_session),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 7, "{seen:?}");
    let all = records.lock().unwrap().clone();
    assert_eq!(all[3].ip, Some("192.168.7.7".parse().unwrap()));
    assert!(!format!("{all:?}").contains(PASSWORD));
}
