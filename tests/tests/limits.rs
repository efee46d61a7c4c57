//! Login and refresh rate limits over real TCP: 429 with Retry-After, per IP and per username,
//! and shared by every instance through Redis.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use baton::store::{MemoryStore, Policy, RefreshKeys};
use baton::token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use baton::{
    AuthUnavailable, Authenticator, Baton, Principal, RateLimiter, RateLimits, Rule,
    UsernamePassword,
};
use baton_test::RedisServer;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

struct Users;

impl Authenticator for Users {
    type Claims = NoCustomClaims;
    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        let (user, password) = (credentials.username.as_str(), credentials.password.as_str());
        Ok((password == format!("{user}-password"))
            .then(|| Principal::new(user, NoCustomClaims {})))
    }
    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        Ok(password == format!("{user_id}-password"))
    }
    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(Some(NoCustomClaims {}))
    }
}

/// An app whose peer (127.0.0.1) is a trusted proxy, so tests choose client IPs with
/// `X-Forwarded-For`.
async fn serve(limits: RateLimits, limiter: Option<Arc<dyn RateLimiter>>) -> SocketAddr {
    let keys = KeyRing::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    let mut builder = Baton::builder(store, Users, keys)
        .trusted_proxy("127.0.0.1".parse::<std::net::IpAddr>().unwrap())
        .rate_limits(limits);
    if let Some(limiter) = limiter {
        builder = builder.rate_limiter(Shared(limiter));
    }
    let app = builder.build().unwrap().router::<()>();
    common::serve_with_peer(app).await
}

struct Shared(Arc<dyn RateLimiter>);

impl RateLimiter for Shared {
    fn check<'a>(
        &'a self,
        bucket: &'static str,
        key: &'a str,
        rule: Rule,
    ) -> baton::LimitFuture<'a> {
        self.0.check(bucket, key, rule)
    }

    fn peek<'a>(
        &'a self,
        bucket: &'static str,
        key: &'a str,
        rule: Rule,
    ) -> baton::LimitFuture<'a> {
        self.0.peek(bucket, key, rule)
    }
}

async fn login(addr: SocketAddr, ip: &str, user: &str) -> (StatusCode, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = json!({"username": user, "password": format!("{user}-password")}).to_string();
    let req = Request::post(format!("http://{addr}/auth/login"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(Full::from(body))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "too_many_requests");
    }
    (status, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_ip_is_limited_without_slowing_others() {
    let limits = RateLimits::none().with_login_per_ip(Some(Rule::new(10, 10)));
    let addr = serve(limits, None).await;
    let mut refused = 0;
    for i in 0..30 {
        let (status, retry) = login(addr, "203.0.113.66", &format!("victim{i}")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
            let secs: u64 = retry.expect("Retry-After").parse().unwrap();
            assert!((1..=60).contains(&secs), "{secs}");
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert!(refused >= 19, "{refused} of 30 refused");
    // Another client is not slowed down.
    assert_eq!(login(addr, "198.51.100.7", "carol").await.0, StatusCode::OK);
}

/// A login with a wrong password, from `ip`, with an optional device cookie; the status and
/// the device cookie set.
async fn attempt(
    addr: SocketAddr,
    ip: &str,
    user: &str,
    password: &str,
    device: Option<&str>,
) -> (StatusCode, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = json!({"username": user, "password": password}).to_string();
    let mut req = Request::post(format!("http://{addr}/auth/login"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip);
    if let Some(device) = device {
        req = req.header("cookie", format!("__Secure-device={device}"));
    }
    let res = client
        .request(req.body(Full::from(body)).unwrap())
        .await
        .unwrap();
    let device = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Secure-device="))
        .map(|v| v.split(';').next().unwrap().to_owned());
    (res.status(), device)
}

/// A guessing run from one network is stopped, and spends no other network's budget: the
/// user logs in from elsewhere, whatever the case of the name typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_lock_a_user_out() {
    let limits = RateLimits::none()
        .with_login_per_username(Some(Rule::new(5, 5)))
        .with_login_failures_per_username(Some(Rule::new(30, 30)));
    let addr = serve(limits, None).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            attempt(addr, "203.0.113.66", "ALICE", "guess", None)
                .await
                .0,
        );
    }
    let wrong = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((wrong, limited), (6, 4), "{statuses:?}");
    // Even the right password waits there now...
    assert_eq!(
        attempt(addr, "203.0.113.66", "alice", "alice-password", None)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...but the user, from their own network, gets in; successes never count.
    for _ in 0..8 {
        assert_eq!(
            attempt(addr, "198.51.100.7", "alice", "alice-password", None)
                .await
                .0,
            StatusCode::OK
        );
    }
}

/// A distributed run (one guess from each of many networks) fills the name's budget for
/// browsers it does not know; a browser that logged in before (its device cookie) still gets
/// in, and the cookie is the user's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_browser_gets_in_during_a_distributed_guessing_run() {
    let limits = RateLimits::none()
        .with_login_per_username(Some(Rule::new(5, 5)))
        .with_login_failures_per_username(Some(Rule::new(20, 20)));
    let addr = serve(limits, None).await;
    let (status, device) = attempt(addr, "198.51.100.7", "alice", "alice-password", None).await;
    assert_eq!(status, StatusCode::OK);
    let device = device.expect("a device cookie after a successful login");
    for i in 0..30 {
        let _ = attempt(addr, &format!("203.0.{i}.1"), "alice", "guess", None).await;
    }
    assert_eq!(
        attempt(addr, "192.0.2.44", "alice", "alice-password", None)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS,
        "an unknown browser waits"
    );
    assert_eq!(
        attempt(addr, "192.0.2.44", "alice", "alice-password", Some(&device))
            .await
            .0,
        StatusCode::OK,
        "the known browser does not"
    );
    // Alice's device cookie is no pass for bob's name.
    for i in 0..30 {
        let _ = attempt(addr, &format!("203.1.{i}.1"), "bob", "guess", None).await;
    }
    assert_eq!(
        attempt(addr, "192.0.2.45", "bob", "bob-password", Some(&device))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A forged cookie neither.
    assert_eq!(
        attempt(
            addr,
            "192.0.2.46",
            "alice",
            "alice-password",
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        )
        .await
        .0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A limiter of its own (its own connection) on the shared Redis at `url`.
async fn redis_limiter(url: String) -> Arc<dyn RateLimiter> {
    Arc::new(
        baton_redis::RedisGcra::connect(&url, "test:")
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_budget_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Each instance has its own limiter and connection; only Redis is shared.
    let limiter = || redis_limiter(server.url());
    let limits = RateLimits::none().with_login_per_ip(Some(Rule::new(10, 10)));
    let a = serve(limits, Some(limiter().await)).await;
    let b = serve(limits, Some(limiter().await)).await;
    let mut ok = 0;
    for i in 0..20 {
        let addr = if i % 2 == 0 { a } else { b };
        if login(addr, "203.0.113.5", &format!("u{i}")).await.0 == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(
        (10..=11).contains(&ok),
        "two instances gave {ok} logins, not one budget of 10"
    );
}

/// Behind a trusted proxy that appends to `X-Forwarded-For`, a client that writes its own
/// addresses (to the left in that header, or a `Forwarded` header) still spends its real
/// address's budget, and an IPv6 client rotating addresses within its /64 spends one budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_its_address_behind_a_trusted_proxy() {
    let limits = RateLimits::none().with_login_per_ip(Some(Rule::new(5, 5)));
    let addr = serve(limits, None).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut ok = 0;
    for i in 0..12 {
        // The proxy appended 203.0.113.50; the client wrote a fresh address before it, and a
        // Forwarded header too.
        let body = json!({"username": "u", "password": "u-password"}).to_string();
        let req = Request::post(format!("http://{addr}/auth/login"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("198.18.0.{i}, 203.0.113.50"))
            .header("forwarded", format!("for=198.19.0.{i}"))
            .body(Full::from(body))
            .unwrap();
        if client.request(req).await.unwrap().status() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 5,
        "one budget for the real address, whatever the client wrote"
    );
    let mut ok = 0;
    for i in 0..12 {
        if login(addr, &format!("2001:db8:7:7::{i:x}"), "v6").await.0 == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "one budget for the /64");
    assert_eq!(
        login(addr, "2001:db8:7:8::1", "v6").await.0,
        StatusCode::OK,
        "another /64"
    );
}

/// The failure limits through Redis: two instances share one failure budget per name and
/// network (the check before the password reads it without counting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_budgets_are_shared_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limiter = || redis_limiter(server.url());
    let limits = RateLimits::none()
        .with_login_per_username(Some(Rule::new(5, 5)))
        .with_login_failures_per_username(Some(Rule::new(30, 30)));
    let a = serve(limits, Some(limiter().await)).await;
    let b = serve(limits, Some(limiter().await)).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let addr = if i % 2 == 0 { a } else { b };
        statuses.push(
            attempt(addr, "203.0.113.77", "carol", "guess", None)
                .await
                .0,
        );
    }
    let wrong = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(
        wrong, 5,
        "one budget of 5 across both instances: {statuses:?}"
    );
    assert_eq!(
        attempt(b, "198.51.100.9", "carol", "carol-password", None)
            .await
            .0,
        StatusCode::OK,
        "another network is not locked out"
    );
}
