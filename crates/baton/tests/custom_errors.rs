//! Error bodies are replaceable: one renderer for the endpoints and the bearer layer.

use baton::{AuthUnavailable, Authenticator, Baton, Principal, RenderError};
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
    async fn authenticate(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        Ok(None)
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
            .base_path("auth")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .base_path("/")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .refresh_cookie_path("/")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .realm("a\"b")
            .build()
            .is_err()
    );
    assert!(
        Baton::builder(store(), Nobody, keys())
            .base_path("/api/auth")
            .build()
            .is_ok()
    );
}
