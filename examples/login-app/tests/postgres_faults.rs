//! Faults over real TCP with a test-started PostgreSQL and two app instances on it
//! (`--database-url`): every connection of the database killed (`pg_terminate_backend`)
//! between a user's steps, and the server stopped and restarted under a load of refreshes.
//! No retry-safe request gets a 5xx from a killed connection; while the server is down a
//! refresh is a clear 503 with `Retry-After` (bearer routes keep answering 200); nothing is
//! lost, and the app recovers without a restart; a logout on one instance is refused by the
//! other within a second.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_test::PgServer;
use common::{Reply, call, start};
use http::{Method, StatusCode};
use login_app::Config;
use serde_json::json;

fn config(url: &str, key_file: std::path::PathBuf) -> Config {
    Config {
        database_url: Some(url.to_owned()),
        key_file: Some(key_file),
        rate_limits: baton::RateLimits::none(),
        register_limit: None,
        ..Config::default()
    }
}

/// A key file of the test's own (two instances must share it).
fn key_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("baton-pgf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("signing.pem")
}

fn kill_every_connection(server: &PgServer, db: &str) {
    server.psql(
        db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
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
        "{} {:?}",
        r.status,
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
async fn killed_connections_cost_no_request_and_no_revocation() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let config = config(&url, key_file("kill"));
    let (a, b) = (start(&config).await, start(&config).await);
    for round in 0..3 {
        kill_every_connection(&server, &db);
        let login = register_and_login(&a, &format!("kim{round}")).await;
        kill_every_connection(&server, &db);
        let r = refresh(&b, login.cookie.as_deref().unwrap()).await;
        assert_eq!(r.status, StatusCode::OK, "round {round}: {:?}", r.body);
        kill_every_connection(&server, &db);
        let me = call(&a, Method::GET, "/api/me", &[bearer(&login)], None).await;
        assert_eq!(me.status, StatusCode::OK);
        kill_every_connection(&server, &db);
        let cookie = r.cookie.unwrap();
        let out = call(
            &a,
            Method::POST,
            "/auth/logout",
            &[("cookie", cookie)],
            None,
        )
        .await;
        assert_eq!(
            out.status,
            StatusCode::NO_CONTENT,
            "round {round}: {:?}",
            out.body
        );
        let started = Instant::now();
        loop {
            let me = call(&b, Method::GET, "/api/me", &[bearer(&login)], None).await;
            if me.status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "round {round}: the other instance still accepts a logged-out token"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_is_503_with_retry_after_and_loses_nothing() {
    let Some(mut server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let base = start(&config(&url, key_file("restart"))).await;
    let mut sessions = Vec::new();
    for i in 0..6 {
        let login = register_and_login(&base, &format!("load{i}")).await;
        sessions.push((bearer(&login), login.cookie.unwrap()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for (bearer, cookie) in sessions {
        let (base, stop) = (base.clone(), stop.clone());
        workers.spawn(async move {
            let mut cookie = cookie;
            let (mut ok, mut unavailable, mut worst) = (0u32, 0u32, Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let r = refresh(&base, &cookie).await;
                match r.status {
                    StatusCode::OK => {
                        ok += 1;
                        cookie = r.cookie.unwrap();
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        unavailable += 1;
                        worst = worst.max(started.elapsed());
                        assert!(r.retry_after.is_some(), "a 503 without Retry-After");
                        if let Some(next) = r.cookie {
                            cookie = next;
                        }
                    }
                    other => panic!("refresh answered {other}: {:?}", r.body),
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
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, unavailable, worst, cookie)
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Down longer than the store's timeout (2 s), which a shorter restart is waited out in.
    server.stop();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    server.restart();
    let restarted = Instant::now();
    loop {
        let creds = json!({"username": "after", "password": "correct horse"});
        let r = call(&base, Method::POST, "/auth/register", &[], Some(creds)).await;
        if r.status == StatusCode::CREATED {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "no recovery: {} {:?}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut unavailable, mut worst) = (0, 0, Duration::ZERO);
    let mut cookies = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (o, u, w, cookie) = done.unwrap();
        ok += o;
        unavailable += u;
        worst = worst.max(w);
        cookies.push(cookie);
    }
    eprintln!("refreshes: {ok} rotated, {unavailable} answered 503; worst 503 took {worst:?}");
    assert!(ok > 0 && unavailable > 0, "{ok} / {unavailable}");
    assert!(
        worst < Duration::from_secs(4),
        "a 503 took {worst:?} (timeout 2 s)"
    );
    // Nothing lost: every session, kept by the database through its restart, rotates on.
    for cookie in cookies {
        let r = refresh(&base, &cookie).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
}
