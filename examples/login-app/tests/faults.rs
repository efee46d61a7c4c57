//! Faults over real TCP with a test-started redis-server and two app instances on it: every
//! client connection killed, idle connections closed by Redis, Redis paused across a rotation,
//! Redis killed under a load of refreshes, stalled, restarted with an fsync'd append-only
//! file, and the app restarted. After each, a logout on one instance is refused by the other
//! within a second, no retry-safe request gets a 5xx, and a client that retries a 503 as the
//! page does keeps its session.

mod common;

use std::time::{Duration, Instant};

use baton_test::RedisServer;
use common::{Reply, call, start};
use http::{Method, StatusCode};
use login_app::Config;
use serde_json::json;

fn config(server: &RedisServer) -> Config {
    Config {
        redis_url: Some(server.url()),
        key_file: Some(server.dir().join("signing.pem")),
        rate_limits: baton::RateLimits::none(),
        register_limit: None,
        ..Config::default()
    }
}

async fn register_and_login(base: &str, user: &str) -> Reply {
    let creds = json!({"username": user, "password": "correct horse"});
    let r = call(
        base,
        Method::POST,
        "/auth/register",
        &[],
        Some(creds.clone()),
    )
    .await;
    assert!(
        r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT,
        "{:?}",
        r.body
    );
    let login = call(base, Method::POST, "/auth/login", &[], Some(creds)).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    login
}

fn bearer(login: &Reply) -> (&'static str, String) {
    (
        "authorization",
        format!("Bearer {}", login.body["access_token"].as_str().unwrap()),
    )
}

/// Refreshes as the page does: a 503 or 429 is retried after its `Retry-After` (at most five
/// tries), keeping any new cookie it carries; anything else is the answer.
async fn refresh_like_the_page(base: &str, cookie: &mut String) -> Reply {
    let mut tries = 0;
    loop {
        tries += 1;
        let r = refresh(base, cookie).await;
        if let Some(next) = &r.cookie {
            cookie.clone_from(next);
        }
        let transient = r.status == StatusCode::SERVICE_UNAVAILABLE
            || r.status == StatusCode::TOO_MANY_REQUESTS;
        if !transient || tries == 5 {
            return r;
        }
        assert!(
            r.retry_after.is_some(),
            "a {} without Retry-After",
            r.status
        );
        tokio::time::sleep(Duration::from_secs(r.retry_after.unwrap_or(1))).await;
    }
}

/// Logs `login` out on `a` (retrying a 503 as the page does) and checks that `b` refuses its
/// access token within a second.
async fn logout_reaches_the_other_instance(a: &str, b: &str, login: &Reply) {
    let cookie = login.cookie.clone().unwrap();
    assert_eq!(
        call(b, Method::GET, "/api/me", &[bearer(login)], None)
            .await
            .status,
        StatusCode::OK,
        "live before the logout"
    );
    let mut tries = 0;
    loop {
        tries += 1;
        let out = call(
            a,
            Method::POST,
            "/auth/logout",
            &[("cookie", cookie.clone())],
            None,
        )
        .await;
        if out.status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(
            out.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{:?}",
            out.body
        );
        assert!(tries < 10, "logout never recorded");
        tokio::time::sleep(Duration::from_secs(out.retry_after.unwrap_or(1))).await;
    }
    let started = Instant::now();
    loop {
        let me = call(b, Method::GET, "/api/me", &[bearer(login)], None).await;
        if me.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(me.status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the other instance still accepts a logged-out token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "refused on the other instance after {:?}",
        started.elapsed()
    );
}

async fn two_instances(server: &RedisServer) -> (String, String) {
    (start(&config(server)).await, start(&config(server)).await)
}

/// Every step a user takes, none of which may answer 5xx.
async fn a_user_goes_through(a: &str, b: &str, user: &str) -> Reply {
    let login = register_and_login(a, user).await;
    let mut cookie = login.cookie.clone().unwrap();
    let r = refresh(b, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    cookie = r.cookie.unwrap();
    let me = call(a, Method::GET, "/api/me", &[bearer(&login)], None).await;
    assert_eq!(me.status, StatusCode::OK);
    let r = refresh(a, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_connections_cost_no_request_and_no_revocation() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server).await;
    for round in 0..3 {
        server
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        let login = a_user_goes_through(&a, &b, &format!("killed{round}")).await;
        server
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .unwrap();
        logout_reaches_the_other_instance(&a, &b, &login).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_redis_cost_no_request_and_no_revocation() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server).await;
    let login = a_user_goes_through(&a, &b, "idle").await;
    server.command(&["CONFIG", "SET", "timeout", "1"]).unwrap();
    for round in 0..2 {
        // A quiet period past Redis's idle timeout, then the first requests.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let next = a_user_goes_through(&b, &a, &format!("quiet{round}")).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        logout_reaches_the_other_instance(&b, &a, &next).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    logout_reaches_the_other_instance(&a, &b, &login).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_across_a_redis_pause_keeps_the_session() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server).await;
    let login = register_and_login(&a, "paused").await;
    let mut cookie = login.cookie.clone().unwrap();
    // 600 ms: longer than the response timeout (250 ms), shorter than the write timeout (1 s):
    // the late reply is awaited and the refresh answers 200.
    server.command(&["CLIENT", "PAUSE", "600", "ALL"]).unwrap();
    let r = refresh(&a, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    cookie = r.cookie.unwrap();
    // 3 s: the refresh answers 503, Redis then runs the rotation; a client that retries as
    // the page does gets that rotation's successor, not a reuse alarm.
    server.command(&["CLIENT", "PAUSE", "3000", "ALL"]).unwrap();
    let r = refresh_like_the_page(&b, &mut cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = refresh(&a, &cookie).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the session lives on: {:?}",
        r.body
    );
    let fresh = Reply {
        status: r.status,
        cookie: r.cookie.clone(),
        retry_after: None,
        body: r.body.clone(),
    };
    logout_reaches_the_other_instance(&a, &b, &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_sessions_survive_a_redis_restart_with_an_append_only_file() {
    let Some(mut server) = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]) else {
        return;
    };
    let (a, b) = two_instances(&server).await;
    let before = a_user_goes_through(&a, &b, "restart1").await;
    let other = a_user_goes_through(&b, &a, "restart2").await;
    server.restart();
    let mut cookie = other.cookie.clone().unwrap();
    let r = refresh_like_the_page(&a, &mut cookie).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the session survived: {:?}",
        r.body
    );
    logout_reaches_the_other_instance(&a, &b, &before).await;
    let after = a_user_goes_through(&b, &a, "restart3").await;
    logout_reaches_the_other_instance(&b, &a, &after).await;
}

async fn refresh(base: &str, cookie: &str) -> Reply {
    call(
        base,
        Method::POST,
        "/auth/refresh",
        &[("cookie", cookie.to_owned())],
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_refresh_is_503_bearer_still_200_and_it_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let base = start(&config(&server)).await;
    let mut sessions = Vec::new();
    for i in 0..8 {
        let login = register_and_login(&base, &format!("load{i}")).await;
        sessions.push((bearer(&login), login.cookie.unwrap()));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for (bearer, cookie) in sessions.clone() {
        let (base, stop) = (base.clone(), stop.clone());
        workers.spawn(async move {
            let mut cookie = cookie;
            let (mut ok, mut unavailable, mut worst_unavailable) = (0, 0, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let r = refresh(&base, &cookie).await;
                match r.status {
                    StatusCode::OK => {
                        ok += 1;
                        cookie = r.cookie.unwrap();
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        unavailable += 1;
                        worst_unavailable = worst_unavailable.max(started.elapsed());
                        // A 503 after the rotation happened (the user directory failed) hands
                        // back the successor; otherwise the cookie is kept as it was.
                        if let Some(next) = r.cookie {
                            cookie = next;
                        }
                    }
                    // After the restart Redis is empty: the session is gone, cleanly.
                    StatusCode::UNAUTHORIZED => break,
                    other => panic!("refresh answered {other}"),
                }
                let me = call(
                    &base,
                    Method::GET,
                    "/api/me",
                    std::slice::from_ref(&bearer),
                    None,
                )
                .await;
                assert_eq!(me.status, StatusCode::OK, "bearer routes keep working");
            }
            (ok, unavailable, worst_unavailable)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart();
    // The app recovers by itself: a fresh login works again within a few seconds.
    let restarted = Instant::now();
    loop {
        let creds = json!({"username": "after", "password": "correct horse"});
        let r = call(&base, Method::POST, "/auth/register", &[], Some(creds)).await;
        if r.status == StatusCode::CREATED {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "no recovery: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut unavailable, mut worst) = (0, 0, Duration::ZERO);
    while let Some(done) = workers.join_next().await {
        let (o, u, w) = done.unwrap();
        ok += o;
        unavailable += u;
        worst = worst.max(w);
    }
    eprintln!("refreshes: {ok} rotated, {unavailable} answered 503; worst 503 took {worst:?}");
    assert!(ok > 0 && unavailable > 0);
    // A write's reply (or its retry on a reconnected connection) is awaited up to the write
    // timeout, 1 s.
    assert!(
        worst < Duration::from_millis(1500),
        "a 503 took {worst:?} (write timeout 1 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_times_out_instead_of_hanging() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let base = start(&config(&server)).await;
    let login = register_and_login(&base, "stall").await;
    let cookie = login.cookie.clone().unwrap();
    server.pause();
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let r = refresh(&base, &cookie).await;
        worst = worst.max(started.elapsed());
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let me = call(&base, Method::GET, "/api/me", &[bearer(&login)], None).await;
        assert_eq!(me.status, StatusCode::OK);
    }
    server.resume();
    eprintln!("worst refresh while Redis was stalled: {worst:?}");
    // Response timeout 250 ms; a write's late reply is awaited up to the write timeout (1 s).
    assert!(worst < Duration::from_millis(1500), "{worst:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = refresh(&base, &cookie).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after SIGCONT: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rotations_survive_a_redis_restart_with_fsync_always() {
    let Some(mut server) = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]) else {
        return;
    };
    let base = start(&config(&server)).await;
    let login = register_and_login(&base, "durable").await;
    let mut cookies = vec![login.cookie.unwrap()];
    for _ in 0..20 {
        let r = refresh(&base, cookies.last().unwrap()).await;
        assert_eq!(r.status, StatusCode::OK);
        cookies.push(r.cookie.unwrap());
    }
    server.stop();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let newest = loop {
        let r = refresh(&base, cookies.last().unwrap()).await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        newest.status,
        StatusCode::OK,
        "the newest acknowledged token works: {:?}",
        newest.body
    );
    // An older one is reuse: the session is revoked.
    let old = refresh(&base, &cookies[5]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        old.body["error_description"],
        "refresh token reuse detected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_tokens_survive_an_app_restart() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let first = start(&config(&server)).await;
    let login = register_and_login(&first, "restart").await;
    // A new app process (same key file, same Redis): the old one is gone from the picture.
    let second = start(&config(&server)).await;
    let me = call(&second, Method::GET, "/api/me", &[bearer(&login)], None).await;
    assert_eq!(me.status, StatusCode::OK, "the access token still verifies");
    let r = refresh(&second, login.cookie.as_ref().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "the session survived");
}
