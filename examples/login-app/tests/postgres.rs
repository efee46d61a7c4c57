//! The login app on PostgreSQL (`--database-url`), on a test-started server: the whole
//! register / login / refresh / logout scenario, and two instances on one database sharing
//! users and sessions, a logout on one refused by the other within a second (measured over
//! 50 logouts), and rate limits counted once for both.

mod common;

use std::time::{Duration, Instant};

use baton_test::PgServer;
use common::{call, start};
use http::{Method, StatusCode};
use login_app::Config;
use serde_json::json;

fn config(url: &str, key_file: std::path::PathBuf) -> Config {
    Config {
        database_url: Some(url.to_owned()),
        key_file: Some(key_file),
        rate_limits: baton::RateLimits::none(),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let dir = std::env::temp_dir().join(format!("baton-app-pg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = config(&url, dir.join("signing.pem"));
    let a = start(&config).await;
    let b = start(&config).await;
    let creds = json!({"username": "dora", "password": "correct horse"});
    let register = call(&a, Method::POST, "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(register.status, StatusCode::CREATED);
    let again = call(&b, Method::POST, "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "B sees A's user");

    let mut delays = Vec::new();
    for _ in 0..50 {
        let login = call(&b, Method::POST, "/auth/login", &[], Some(creds.clone())).await;
        assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
        let bearer = (
            "authorization",
            format!("Bearer {}", login.body["access_token"].as_str().unwrap()),
        );
        let cookie = ("cookie", login.cookie.unwrap());
        // A rotates B's session.
        let refreshed = call(&a, Method::POST, "/auth/refresh", &[cookie], None).await;
        assert_eq!(refreshed.status, StatusCode::OK);
        let cookie = ("cookie", refreshed.cookie.unwrap());
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
        let revoked = Instant::now();
        let logout = call(&a, Method::POST, "/auth/logout", &[cookie], None).await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT);
        loop {
            let me = call(
                &b,
                Method::GET,
                "/api/me",
                std::slice::from_ref(&bearer),
                None,
            )
            .await;
            if me.status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "B still accepts a token revoked on A after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(revoked.elapsed());
    }
    delays.sort();
    eprintln!(
        "logout on A refused by B: p50 {:?}, max {:?} over {}",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_by_both_instances() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let dir = std::env::temp_dir().join(format!("baton-app-pg-l-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config {
        rate_limits: baton::RateLimits::none().with_login_per_ip(Some(baton::Rule::new(4, 4))),
        ..config(&url, dir.join("signing.pem"))
    };
    let a = start(&config).await;
    let b = start(&config).await;
    let wrong = json!({"username": "nobody", "password": "wrong password"});
    let mut statuses = Vec::new();
    for i in 0..8 {
        let at = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            call(at, Method::POST, "/auth/login", &[], Some(wrong.clone()))
                .await
                .status,
        );
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        (3..=4).contains(&refused),
        "one budget of 4 (or 5) for both instances: {statuses:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The app's account directory on PostgreSQL: a first sign-in makes one user even when two
/// race, a link is the signed-in user's once and never moves to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_link_once_and_never_move() {
    use baton::oidc::{Accounts as _, Identity, Link};
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let users = login_app::Users::postgres(pool).await.unwrap();
    let zoe = Identity::new("https://idp.example", "zoe").with_name("Zoe");
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let (users, zoe) = (users.clone(), zoe.clone());
            tokio::spawn(async move { users.sign_in(&zoe).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for task in racing {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one user for one identity: {ids:?}");
    let zoe_user = &ids[0];
    let other = Identity::new("https://other.example", "z-1");
    assert_eq!(users.link(zoe_user, &other).await.unwrap(), Link::Linked);
    assert_eq!(
        users.link(zoe_user, &other).await.unwrap(),
        Link::AlreadyLinked
    );
    assert_eq!(users.sign_in(&other).await.unwrap(), *zoe_user);
    assert_eq!(
        users.link("u_someone_else", &other).await.unwrap(),
        Link::TakenByAnother
    );
    assert_eq!(
        users.sign_in(&other).await.unwrap(),
        *zoe_user,
        "it did not move"
    );
}
