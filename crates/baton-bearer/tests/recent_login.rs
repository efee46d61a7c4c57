//! Step-up authentication (RFC 9470) through the real layer: a token whose login is too old,
//! or of the wrong class, gets 401 `insufficient_user_authentication` with `max_age` and
//! `acr_values` in the challenge, never a refresh hint; a recent one passes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use baton_bearer::{BearerVerifyLayer, ConfigError, RecentLogin, Rejection, RejectionKind};
use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, TestClock};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    clock: TestClock,
    issuer: Issuer,
}

fn fixture() -> Fixture {
    let clock = TestClock::at_secs(NOW);
    let key = Key::hmac("hs", Algorithm::HS256, [7; 32]).unwrap();
    let issuer = Issuer::new(KeySet::new(key).unwrap())
        .with_clock(clock.clone())
        .with_ttl(Duration::from_secs(900));
    Fixture { clock, issuer }
}

impl Fixture {
    fn token(&self, auth_time: Option<u64>, acr: Option<&str>) -> String {
        let mut claims = self.issuer.claims("alice", NoCustomClaims {}).unwrap();
        if let Some(at) = auth_time {
            claims = claims.with_authentication(at, ["pwd"], acr.map(str::to_owned));
        }
        self.issuer.sign(&claims).unwrap()
    }

    async fn call(
        &self,
        layer: &BearerVerifyLayer,
        token: &str,
        grpc: bool,
    ) -> Response<baton_bearer::ResponseBody<Full<Bytes>>> {
        let service = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
            let claims = req.extensions().get::<Arc<Claims>>().expect("claims");
            Ok::<_, Infallible>(Response::new(Full::from(claims.sub.clone())))
        }));
        let mut req = Request::builder().header(header::AUTHORIZATION, format!("Bearer {token}"));
        if grpc {
            req = req.header(header::CONTENT_TYPE, "application/grpc");
        }
        service
            .oneshot(req.body(Full::default()).unwrap())
            .await
            .unwrap()
    }
}

async fn body_json(res: Response<baton_bearer::ResponseBody<Full<Bytes>>>) -> serde_json::Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_login_older_than_max_age_is_refused_with_the_rfc_9470_challenge() {
    let f = fixture();
    let layer = BearerVerifyLayer::new(f.issuer.verifier())
        .require_recent_login(RecentLogin::within(Duration::from_secs(300)));
    // Logged in 5 minutes ago exactly: fine.
    let res = f.call(&layer, &f.token(Some(NOW - 300), None), false).await;
    assert_eq!(res.status(), StatusCode::OK);
    // A second more: refused, with max_age, and not as an expired token.
    let res = f.call(&layer, &f.token(Some(NOW - 301), None), false).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="baton", error="insufficient_user_authentication", error_description="a more recent authentication is required", max_age=300"#
    );
    let rejection = res.extensions().get::<Rejection>().unwrap().clone();
    assert!(!rejection.is_expired(), "a refresh cannot help");
    assert_eq!(
        rejection.kind(),
        &RejectionKind::InsufficientUserAuthentication {
            max_age: Some(300),
            acr_values: None
        }
    );
    assert_eq!(
        body_json(res).await["error"],
        "insufficient_user_authentication"
    );
    // No auth_time at all (a token from before, or another issuer): refused.
    let res = f.call(&layer, &f.token(None, None), false).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // An auth_time far in the future does not count as recent.
    let res = f
        .call(&layer, &f.token(Some(NOW + 3600), None), false)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Time passes: the same token stops meeting the requirement.
    let fresh = f.token(Some(NOW), None);
    assert_eq!(f.call(&layer, &fresh, false).await.status(), StatusCode::OK);
    f.clock.advance(Duration::from_secs(301));
    assert_eq!(
        f.call(&layer, &fresh, false).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn acr_values_are_required_and_named_in_the_challenge() {
    let f = fixture();
    let layer = BearerVerifyLayer::new(f.issuer.verifier()).require_recent_login(
        RecentLogin::within(Duration::from_secs(600))
            .with_acr_values(["urn:example:mfa", "phr"])
            .unwrap(),
    );
    let res = f
        .call(&layer, &f.token(Some(NOW), Some("phr")), false)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = f
        .call(&layer, &f.token(Some(NOW), Some("low")), false)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="baton", error="insufficient_user_authentication", error_description="a more recent authentication is required", acr_values="urn:example:mfa phr", max_age=600"#
    );
    let res = f.call(&layer, &f.token(Some(NOW), None), false).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    for bad in ["", "two words", "q\"uote", "back\\slash"] {
        assert_eq!(
            RecentLogin::acr([bad]).unwrap_err(),
            ConfigError::InvalidAcr(bad.to_owned())
        );
    }
}

#[tokio::test]
async fn grpc_calls_get_unauthenticated() {
    let f = fixture();
    let layer = BearerVerifyLayer::new(f.issuer.verifier())
        .require_recent_login(RecentLogin::within(Duration::from_secs(60)));
    let res = f.call(&layer, &f.token(Some(NOW - 61), None), true).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "16");
    assert!(
        res.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("max_age=60")
    );
}
