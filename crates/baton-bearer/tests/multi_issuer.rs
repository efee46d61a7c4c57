//! One layer accepting tokens from several issuers, each with its own keys and audience.

use std::convert::Infallible;
use std::sync::Arc;

use baton_bearer::BearerVerifyLayer;
use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, Verifier};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

fn issuer(iss: &str, aud: &str, alg: Algorithm) -> Issuer {
    Issuer::new(KeySet::new(Key::generate(format!("{iss}-key"), alg).unwrap()).unwrap())
        .with_iss(iss)
        .with_aud(aud)
}

async fn send(layer: &BearerVerifyLayer, token: &str) -> (StatusCode, String) {
    let svc = layer
        .clone()
        .layer(service_fn(|req: Request<Full<Bytes>>| async move {
            let claims = req
                .extensions()
                .get::<Arc<Claims<NoCustomClaims>>>()
                .unwrap();
            let body = format!(
                "{} from {}",
                claims.sub,
                claims.iss.clone().unwrap_or_default()
            );
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(body)))
        }));
    let req = Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, challenge.unwrap_or(body))
}

#[tokio::test]
async fn each_issuer_is_checked_with_its_own_keys_and_audience() {
    let auth = issuer("https://auth.example", "api", Algorithm::ES256);
    let partner = issuer("https://partner.example", "partner-api", Algorithm::EdDSA);
    let verifier = Verifier::any_of([auth.verifier(), partner.verifier()]).unwrap();
    let layer = BearerVerifyLayer::new(verifier);

    let token = auth.issue("alice", None, NoCustomClaims {}).unwrap().token;
    assert_eq!(
        send(&layer, &token).await,
        (StatusCode::OK, "alice from https://auth.example".into())
    );
    let token = partner.issue("bob", None, NoCustomClaims {}).unwrap().token;
    assert_eq!(
        send(&layer, &token).await,
        (StatusCode::OK, "bob from https://partner.example".into())
    );

    // Claiming the other issuer does not borrow its keys: the signature fails.
    let mut claims = auth.claims("mallory", NoCustomClaims {}).unwrap();
    claims.iss = Some("https://partner.example".into());
    let forged = auth.sign(&claims).unwrap();
    let (status, challenge) = send(&layer, &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("unknown signing key"), "{challenge}");

    // An issuer nobody listed, or none at all.
    let stranger = issuer("https://stranger.example", "api", Algorithm::ES256);
    let token = stranger
        .issue("eve", None, NoCustomClaims {})
        .unwrap()
        .token;
    let (status, challenge) = send(&layer, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("issuer not accepted"), "{challenge}");
    let anonymous =
        Issuer::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
    let token = anonymous
        .issue("eve", None, NoCustomClaims {})
        .unwrap()
        .token;
    assert!(send(&layer, &token).await.1.contains("issuer not accepted"));

    // Each issuer's audience is its own.
    let mut claims = partner.claims("bob", NoCustomClaims {}).unwrap();
    claims.aud = Some("api".into());
    let token = partner.sign(&claims).unwrap();
    assert!(
        send(&layer, &token)
            .await
            .1
            .contains("audience not accepted")
    );

    assert!(
        Verifier::any_of([Verifier::new(
            KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap()
        )])
        .is_err()
    );
    assert!(Verifier::any_of(Vec::new()).is_err());
}
