//! The login app over real TCP, in memory and on a test-started Redis.

mod common;

use baton_test::RedisServer;
use common::{call, start};
use http::{Method, StatusCode};
use login_app::Config;
use serde_json::json;

async fn scenario(base: &str) {
    let creds = json!({"username": "alice", "password": "correct horse"});
    assert_eq!(
        call(
            base,
            Method::POST,
            "/auth/register",
            &[],
            Some(creds.clone())
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        call(
            base,
            Method::POST,
            "/auth/register",
            &[],
            Some(creds.clone())
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    let short = json!({"username": "bob", "password": "short"});
    assert_eq!(
        call(base, Method::POST, "/auth/register", &[], Some(short))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let empty = json!({"username": "bob", "password": ""});
    assert_eq!(
        call(base, Method::POST, "/auth/register", &[], Some(empty))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let bad_name = json!({"username": "bad name!", "password": "long enough"});
    assert_eq!(
        call(base, Method::POST, "/auth/register", &[], Some(bad_name))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let wrong = call(
        base,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({"username": "alice", "password": "nope nope"})),
    )
    .await;
    let unknown = call(
        base,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({"username": "nobody", "password": "nope nope"})),
    )
    .await;
    assert_eq!(
        (wrong.status, &wrong.body),
        (StatusCode::UNAUTHORIZED, &unknown.body)
    );

    let login = call(base, Method::POST, "/auth/login", &[], Some(creds.clone())).await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    let bearer = ("authorization", format!("Bearer {token}"));
    let me = call(
        base,
        Method::GET,
        "/api/me",
        std::slice::from_ref(&bearer),
        None,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["username"], "alice");
    assert!(me.body["sub"].as_str().unwrap().starts_with("u_"));

    // Logout revokes the session's access token at once, not at expiry.
    let cookie = ("cookie", login.cookie.unwrap());
    assert_eq!(
        call(base, Method::POST, "/auth/logout", &[cookie], None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let me = call(base, Method::GET, "/api/me", &[bearer], None).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);

    assert_eq!(
        call(base, Method::GET, "/healthz", &[], None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    scenario(&start(&Config::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = Config {
        redis_url: Some(server.url()),
        ..Config::default()
    };
    scenario(&start(&config).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    let Some(server) = baton_test::PgServer::start() else {
        return;
    };
    let config = Config {
        database_url: Some(server.create_database()),
        ..Config::default()
    };
    scenario(&start(&config).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_and_redis_let_two_instances_share_sessions() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let key_file = server.dir().join("signing.pem");
    let config = Config {
        redis_url: Some(server.url()),
        key_file: Some(key_file.clone()),
        ..Config::default()
    };
    let a = start(&config).await;
    let b = start(&config).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let creds = json!({"username": "carol", "password": "correct horse"});
    assert_eq!(
        call(&a, Method::POST, "/auth/register", &[], Some(creds.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    let login = call(&a, Method::POST, "/auth/login", &[], Some(creds)).await;
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    let me = call(
        &b,
        Method::GET,
        "/api/me",
        &[("authorization", format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(me.body["username"], "carol", "B verifies A's token");
    let refreshed = call(
        &b,
        Method::POST,
        "/auth/refresh",
        &[("cookie", login.cookie.unwrap())],
        None,
    )
    .await;
    assert_eq!(
        refreshed.status,
        StatusCode::OK,
        "B rotates A's refresh token"
    );
}

/// Two instances on one Redis: an access token revoked on A is refused by B. The delay is
/// measured over 100 revocations; then Redis is killed and restarted between a revocation and
/// the check, and B still refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_the_other_instance_within_a_second() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let key_file = server.dir().join("signing.pem");
    let config = Config {
        redis_url: Some(server.url()),
        key_file: Some(key_file),
        rate_limits: baton::RateLimits::none(),
        ..Config::default()
    };
    let a = start(&config).await;
    let b = start(&config).await;
    let creds = json!({"username": "dora", "password": "correct horse"});
    assert_eq!(
        call(&a, Method::POST, "/auth/register", &[], Some(creds.clone()))
            .await
            .status,
        StatusCode::CREATED
    );

    let mut delays = Vec::new();
    for _ in 0..100 {
        let login = call(&a, Method::POST, "/auth/login", &[], Some(creds.clone())).await;
        assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
        let bearer = (
            "authorization",
            format!("Bearer {}", login.body["access_token"].as_str().unwrap()),
        );
        assert_eq!(
            call(
                &b,
                Method::GET,
                "/api/me",
                std::slice::from_ref(&bearer),
                None
            )
            .await
            .status,
            StatusCode::OK
        );
        let cookie = ("cookie", login.cookie.unwrap());
        let revoked = std::time::Instant::now();
        assert_eq!(
            call(&a, Method::POST, "/auth/logout", &[cookie], None)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(
                &a,
                Method::GET,
                "/api/me",
                std::slice::from_ref(&bearer),
                None
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED,
            "A refuses at once"
        );
        loop {
            if call(
                &b,
                Method::GET,
                "/api/me",
                std::slice::from_ref(&bearer),
                None,
            )
            .await
            .status
                == StatusCode::UNAUTHORIZED
            {
                delays.push(revoked.elapsed());
                break;
            }
            assert!(
                revoked.elapsed() < std::time::Duration::from_secs(5),
                "B never refused the token"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    delays.sort();
    let (p50, p99) = (delays[49], delays[98]);
    eprintln!(
        "revocation delay A -> B over 100 revocations: p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays[99]
    );
    assert!(p99 < std::time::Duration::from_secs(1), "p99 {p99:?}");

    // Kill and restart Redis between a revocation and the check.
    let login = call(&a, Method::POST, "/auth/login", &[], Some(creds.clone())).await;
    let bearer = (
        "authorization",
        format!("Bearer {}", login.body["access_token"].as_str().unwrap()),
    );
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    let all = ("authorization", format!("Bearer {token}"));
    assert_eq!(
        call(&a, Method::POST, "/auth/logout-all", &[all], None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    server.stop();
    server.restart();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        call(
            &b,
            Method::GET,
            "/api/me",
            std::slice::from_ref(&bearer),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
}

/// Shutdown lets the request in flight finish (a login: seconds of hashing under load), then
/// stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let config = Config::default();
    let app = login_app::app(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(login_app::serve(listener, app, async {
        let _ = stopped.await;
    }));
    // The request is on the wire before the shutdown starts.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base
        .trim_start_matches("http://")
        .replace("localhost", "127.0.0.1");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"username":"gina","password":"correct horse"}"#;
    let request = format!(
        "POST /auth/register HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    stop.send(()).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
            break;
        }
    }
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the in-flight request finished: {response}"
    );
    server.await.unwrap().unwrap();
    let refused = tokio::net::TcpStream::connect(&addr).await;
    assert!(refused.is_err(), "no longer accepting");
}

/// Registrations are limited per client network, before any password is hashed: a flood from
/// one address gets 429 with `Retry-After` at once, another address still registers, and
/// logins go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_from_one_network_is_refused_before_hashing() {
    use std::net::{IpAddr, Ipv4Addr};
    let base = start(&Config::default()).await;
    let flooder = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let other = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    let creds = |name: &str| json!({"username": name, "password": "correct horse"});
    let mut created = 0;
    let mut refused = 0;
    let started = std::time::Instant::now();
    for i in 0..50 {
        let r = common::call_from(
            flooder,
            &base,
            Method::POST,
            "/auth/register",
            &[],
            Some(creds(&format!("flood{i}"))),
        )
        .await;
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(
                    r.retry_after.is_some_and(|s| s >= 1),
                    "429 without Retry-After"
                );
                assert_eq!(r.body["error"], "too_many_requests");
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    eprintln!(
        "50 registrations from one address: {created} created, {refused} refused, in {:?}",
        started.elapsed()
    );
    assert_eq!(created, 5, "the burst");
    assert_eq!(refused, 45);
    let r = common::call_from(
        other,
        &base,
        Method::POST,
        "/auth/register",
        &[],
        Some(creds("neighbour")),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "another network is not limited"
    );
    let login = call(
        &base,
        Method::POST,
        "/auth/login",
        &[],
        Some(creds("flood0")),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
}

/// Behind a trusted proxy (the test client, 127.0.0.1, stands in for it), registrations are
/// limited per client address from `X-Forwarded-For`, whatever the client writes to its left,
/// and the device list shows that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_address_is_the_proxys_word() {
    let config = Config {
        client_ip: baton::ClientIp::new()
            .trust_proxy("127.0.0.1/32".parse().unwrap())
            .with_header(baton::ForwardedHeader::XForwardedFor),
        ..Config::default()
    };
    let base = start(&config).await;
    let mut created = 0;
    for i in 0..10 {
        let xff = format!("198.18.0.{i}, 203.0.113.20");
        let r = call(
            &base,
            Method::POST,
            "/auth/register",
            &[("x-forwarded-for", xff)],
            Some(json!({"username": format!("proxied{i}"), "password": "correct horse"})),
        )
        .await;
        if r.status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(created, 5, "one budget for 203.0.113.20");
    let other = call(
        &base,
        Method::POST,
        "/auth/register",
        &[("x-forwarded-for", "203.0.113.21".to_owned())],
        Some(json!({"username": "neighbour", "password": "correct horse"})),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED);
    let login = call(
        &base,
        Method::POST,
        "/auth/login",
        &[("x-forwarded-for", "6.6.6.6, 203.0.113.21".to_owned())],
        Some(json!({"username": "neighbour", "password": "correct horse"})),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.body["access_token"].as_str().unwrap();
    let sessions = call(
        &base,
        Method::GET,
        "/auth/sessions",
        &[("authorization", format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(sessions.body["sessions"][0]["ip"], "203.0.113.21");
}

async fn canonical_names(base: &str) {
    let register = |name: &str| {
        let body = json!({"username": name, "password": "correct horse"});
        call(base, Method::POST, "/auth/register", &[], Some(body))
    };
    assert_eq!(register("Alice").await.status, StatusCode::CREATED);
    for look_alike in ["alice", "ALICE", "Ａｌｉｃｅ", " alice "] {
        assert_eq!(
            register(look_alike).await.status,
            StatusCode::CONFLICT,
            "{look_alike:?} is Alice"
        );
    }
    let login = call(
        base,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({"username": "ALICE", "password": "correct horse"})),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let token = login.body["access_token"].as_str().unwrap();
    let me = call(
        base,
        Method::GET,
        "/api/me",
        &[("authorization", format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(me.body["username"], "Alice", "shown as registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_have_one_canonical_form() {
    canonical_names(&start(&Config::default()).await).await;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = Config {
        redis_url: Some(server.url()),
        ..Config::default()
    };
    canonical_names(&start(&config).await).await;
}

/// Register bodies go through axum's JSON extractor: 415 for another content type, 400 for
/// anything that is not the expected JSON, 413 only for a body over the limit.
#[tokio::test]
async fn register_bodies_get_the_status_they_deserve() {
    let config = Config {
        register_limit: None,
        ..Config::default()
    };
    let base = start(&config).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let post = |content_type: Option<&'static str>, body: Vec<u8>| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr.replace("localhost", "127.0.0.1"))
                .await
                .unwrap();
            let mut head = format!(
                "POST /auth/register HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
                body.len()
            );
            if let Some(ct) = content_type {
                head.push_str(&format!("content-type: {ct}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            // A body over the limit may be refused before it is all sent.
            let _ = stream.write_all(&body).await;
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
            let response = String::from_utf8_lossy(&response).into_owned();
            let status: u16 = response[9..12].parse().unwrap();
            (status, response)
        }
    };
    let good = br#"{"username":"hana","password":"correct horse"}"#.to_vec();
    let cases: [(Option<&'static str>, Vec<u8>, u16); 7] = [
        (Some("application/json"), b"".to_vec(), 400),
        (None, good.clone(), 415),
        (Some("text/plain"), good.clone(), 415),
        (Some("application/json"), b"{not json".to_vec(), 400),
        (
            Some("application/json"),
            br#"{"username":5,"password":"x"}"#.to_vec(),
            400,
        ),
        (Some("application/json"), vec![b' '; 70 * 1024], 413),
        (Some("application/json; charset=utf-8"), good, 201),
    ];
    for (content_type, body, expected) in cases {
        let (status, response) = post(content_type, body).await;
        assert_eq!(status, expected, "{content_type:?} {expected}: {response}");
        if expected != 201 {
            assert!(
                response.contains("\"error\":\"invalid_request\""),
                "{response}"
            );
        }
    }
}

/// Policy values are checked together when built: an idle lifetime past the default
/// absolute cap (104 days) starts, with the cap raised to it.
#[tokio::test]
async fn a_long_refresh_lifetime_starts() {
    let config = Config {
        refresh_ttl: std::time::Duration::from_secs(9_000_000),
        ..Config::default()
    };
    assert!(login_app::build(&config).await.is_ok());
    let config = Config {
        refresh_grace: std::time::Duration::from_secs(301),
        ..Config::default()
    };
    let Err(err) = login_app::build(&config).await else {
        panic!("a grace over 5 minutes is refused");
    };
    assert!(err.contains("grace window"), "{err}");
}
