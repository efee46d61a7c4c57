//! Error bodies are replaceable: one renderer for the endpoints and the bearer layer.

use baton::{AuthUnavailable, Authenticator, Baton, Principal, RenderError, UsernamePassword};
use baton_store::{MemoryStore, Policy, RefreshKeys};
use baton_token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

struct Nobody;

impl Authenticator for Nobody {
    type Claims = NoCustomClaims;
    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        _: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        Ok(None)
    }
    async fn check_password(&self, _: &str, _: &str) -> Result<bool, AuthUnavailable> {
        Ok(false)
    }
    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(None)
    }
}

/// RFC 9457 problem details.
struct Problems;

impl RenderError for Problems {
    fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
        let body = serde_json::json!({ "type": format!("urn:example:{error}"), "title": description, "status": status.as_u16() });
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = status;
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

fn baton() -> Baton<MemoryStore, Nobody> {
    let keys = KeyRing::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    Baton::builder(store, Nobody, keys)
        .errors(Problems)
        .no_client_addr()
        .build()
        .unwrap()
}

#[tokio::test]
async fn endpoints_and_bearer_layer_share_the_renderer() {
    let baton = baton();
    let login = Request::post("/auth/login")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::from(r#"{"username":"x","password":"y"}"#))
        .unwrap();
    let res = baton.endpoints().oneshot(login).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[CONTENT_TYPE], "application/problem+json");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["type"], "urn:example:invalid_credentials");

    let api = baton
        .bearer_layer()
        .layer(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let req = Request::get("/api")
        .header("authorization", "Bearer a.b.c")
        .body(Full::default())
        .unwrap();
    let res = api.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[CONTENT_TYPE], "application/problem+json");
    assert!(
        res.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["type"], "urn:example:invalid_token");
}

#[test]
fn bad_configurations_fail_when_built() {
    let keys = || KeyRing::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
    let store = || MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    assert!(
        Baton::builder(store(), Nobody, keys())
            .no_client_addr()
            .base_path("auth")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .no_client_addr()
            .base_path("/")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .no_client_addr()
            .refresh_cookie_path("/")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .no_client_addr()
            .realm("a\"b")
            .build()
            .is_err()
    );
    for origin in ["null", "https://app.example/", "app.example", "file:///x"] {
        let err = Baton::builder(store(), Nobody, keys())
            .no_client_addr()
            .trusted_origin(origin)
            .build()
            .err()
            .unwrap_or_else(|| panic!("{origin} accepted"));
        assert!(
            matches!(err, baton::ConfigError::Origin(_)),
            "{origin}: {err}"
        );
    }
    assert!(
        Baton::builder(store(), Nobody, keys())
            .no_client_addr()
            .base_path("/api/auth")
            .trusted_origin("https://partner.example")
            .build()
            .is_ok()
    );
}

async fn problem_type(
    res: Response<impl http_body::Body<Data = Bytes, Error = impl std::fmt::Debug>>,
) -> (StatusCode, String, baton::Refusal) {
    let status = res.status();
    let refusal = res
        .extensions()
        .get::<baton::Refusal>()
        .cloned()
        .expect("every refusal carries a Refusal");
    assert_eq!(res.headers()[CONTENT_TYPE], "application/problem+json");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    (status, body["type"].as_str().unwrap().to_owned(), refusal)
}

#[tokio::test]
async fn the_cross_site_guard_and_the_rate_limits_use_the_renderer_too() {
    let keys = KeyRing::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    let baton = Baton::builder(store, Nobody, keys)
        .errors(Problems)
        .rate_limits(baton::RateLimits::default().with_login_per_ip(Some(baton::Rule::new(1, 1))))
        .client_addr_from_peer()
        .build()
        .unwrap();

    // The endpoints' own cross-site check.
    let cross = Request::post("/auth/refresh")
        .header("sec-fetch-site", "cross-site")
        .body(Full::<Bytes>::default())
        .unwrap();
    let (status, kind, refusal) =
        problem_type(baton.endpoints().oneshot(cross).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(kind, "urn:example:cross_site_request");
    assert_eq!(refusal.error(), "cross_site_request");

    // The guard as a layer around the application's routes.
    let app = baton
        .origin_guard()
        .layer(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let cross = Request::delete("/api/notes/1")
        .header("sec-fetch-site", "cross-site")
        .body(Full::<Bytes>::default())
        .unwrap();
    let (status, kind, _) = problem_type(app.oneshot(cross).await.unwrap()).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::FORBIDDEN, "urn:example:cross_site_request")
    );

    // Over a rate limit: 429 with Retry-After, in the application's format.
    let login = || {
        Request::post("/auth/login")
            .extension(baton::PeerAddr("192.0.2.9:40000".parse().unwrap()))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::from(r#"{"username":"x","password":"y"}"#))
            .unwrap()
    };
    let first = baton.endpoints().oneshot(login()).await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let limited = baton.endpoints().oneshot(login()).await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    let (status, kind, refusal) = problem_type(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(kind, "urn:example:too_many_requests");
    assert!(refusal.retry_after().is_some());
}
