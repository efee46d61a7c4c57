//! Faults over real TCP with a test-started redis-server: Redis killed under a load of
//! refreshes, Redis stalled, Redis restarted with an fsync'd append-only file, and the app
//! restarted.

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
                        assert!(r.cookie.is_none(), "the cookie is kept");
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
    assert!(
        worst < Duration::from_secs(1),
        "a 503 took {worst:?} (timeout 250 ms)"
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
    assert!(worst < Duration::from_millis(1000), "{worst:?}");
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
