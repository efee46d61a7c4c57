//! Login and refresh rate limits over real TCP: 429 with Retry-After, per IP and per username,
//! and shared by every instance through Redis.

use std::net::SocketAddr;
use std::sync::Arc;

use baton::store::{MemoryStore, Policy, RefreshKeys};
use baton::token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use baton::{AuthUnavailable, Authenticator, Baton, Principal, RateLimiter, RateLimits, Rule};
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
    async fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        Ok((password == format!("{user}-password"))
            .then(|| Principal::new(user, NoCustomClaims {})))
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
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
    let limits = RateLimits {
        login_per_ip: Some(Rule::new(10, 10)),
        login_per_username: None,
        refresh_per_ip: None,
    };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_username_is_limited_whatever_the_ip() {
    let limits = RateLimits {
        login_per_ip: None,
        login_per_username: Some(Rule::new(5, 5)),
        refresh_per_ip: None,
    };
    let addr = serve(limits, None).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(login(addr, &format!("203.0.113.{i}"), "Alice").await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        login(addr, "203.0.113.99", "alice").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "case does not matter"
    );
    assert_eq!(login(addr, "203.0.113.99", "bob").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_budget_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Each instance has its own limiter and connection; only Redis is shared.
    let limiter = || async {
        Arc::new(
            baton_redis::RedisGcra::connect(&server.url(), "test:")
                .await
                .unwrap(),
        ) as Arc<dyn RateLimiter>
    };
    let limits = RateLimits {
        login_per_ip: Some(Rule::new(10, 10)),
        login_per_username: None,
        refresh_per_ip: None,
    };
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
    let limits = RateLimits {
        login_per_ip: Some(Rule::new(5, 5)),
        login_per_username: None,
        refresh_per_ip: None,
    };
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
