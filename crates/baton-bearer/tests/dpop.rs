//! DPoP through the real verify layer: a bound token is accepted with a fresh proof from its
//! key and refused every other way (replayed proof, on this instance and on another sharing
//! the cache; another key; no proof; the Bearer scheme; a proof for another method, URI or
//! token), with the `DPoP` challenge; the replay cache's limits answer 503.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use baton_bearer::{BearerVerifyLayer, Dpop, MemoryReplayCache, Rejection, RejectionKind};
use baton_token::{
    Algorithm, Claims, DpopKey, DpopVerifier, Issuer, Key, KeySet, NoCustomClaims, TestClock,
    TokenCache,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_800_000_000;
const ORIGIN: &str = "https://api.example";

struct Fixture {
    clock: TestClock,
    issuer: Issuer,
    key: DpopKey,
}

fn fixture() -> Fixture {
    let clock = TestClock::at_secs(NOW);
    let signing = Key::hmac("hs", Algorithm::HS256, [9; 32]).unwrap();
    let issuer = Issuer::new(KeySet::new(signing).unwrap())
        .with_clock(clock.clone())
        .with_ttl(Duration::from_secs(300));
    let key = DpopKey::generate(Algorithm::ES256)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    Fixture { clock, issuer, key }
}

impl Fixture {
    fn bound_token(&self, key: &DpopKey) -> String {
        let claims = self
            .issuer
            .claims("alice", NoCustomClaims {})
            .unwrap()
            .with_dpop_jkt(key.jkt());
        self.issuer.sign(&claims).unwrap()
    }

    fn plain_token(&self) -> String {
        self.issuer
            .issue("alice", None, NoCustomClaims {})
            .unwrap()
            .token
    }

    fn dpop(&self) -> Dpop {
        Dpop::new(ORIGIN)
            .unwrap()
            .with_verifier(DpopVerifier::new().with_clock(Arc::new(self.clock.clone())))
    }

    fn layer(&self, dpop: Dpop) -> BearerVerifyLayer {
        BearerVerifyLayer::new(self.issuer.verifier()).with_dpop(dpop)
    }
}

async fn call(
    layer: &BearerVerifyLayer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<baton_bearer::ResponseBody<Full<Bytes>>> {
    let service = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
        let claims = req.extensions().get::<Arc<Claims>>().expect("claims");
        Ok::<_, Infallible>(Response::new(Full::from(claims.sub.clone())))
    }));
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    service
        .oneshot(req.body(Full::default()).unwrap())
        .await
        .unwrap()
}

/// `GET /orders` with `auth` and one proof.
async fn orders(
    layer: &BearerVerifyLayer,
    auth: &str,
    proof: &str,
) -> Response<baton_bearer::ResponseBody<Full<Bytes>>> {
    call(
        layer,
        Method::GET,
        "/orders",
        &[("authorization", auth), ("dpop", proof)],
    )
    .await
}

fn challenge(res: &Response<baton_bearer::ResponseBody<Full<Bytes>>>) -> String {
    res.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned()
}

fn refused_proof(res: &Response<baton_bearer::ResponseBody<Full<Bytes>>>, why: &str) {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{why}");
    let c = challenge(res);
    assert!(
        c.starts_with(r#"DPoP realm="baton", algs="ES256 EdDSA", error="invalid_dpop_proof""#),
        "{why}: {c}"
    );
    let rejection = res.extensions().get::<Rejection>().unwrap();
    assert!(
        matches!(rejection.kind(), RejectionKind::InvalidDpopProof(_)),
        "{why}: {rejection:?}"
    );
    assert!(
        rejection.description().contains(why),
        "{why}: {}",
        rejection.description()
    );
}

#[tokio::test]
async fn a_bound_token_with_a_fresh_proof_passes_once() {
    let f = fixture();
    let layer = f.layer(f.dpop());
    let token = f.bound_token(&f.key);
    let auth = format!("DPoP {token}");
    let proof = f
        .key
        .proof("GET", &format!("{ORIGIN}/orders"), Some(&token), None)
        .unwrap();
    let headers = [("authorization", auth.as_str()), ("dpop", proof.as_str())];
    let res = call(&layer, Method::GET, "/orders?page=2", &headers).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The same proof again: a replay.
    let res = call(&layer, Method::GET, "/orders", &headers).await;
    refused_proof(&res, "used before");
    // A fresh proof: fine again.
    let proof = f
        .key
        .proof("GET", &format!("{ORIGIN}/orders"), Some(&token), None)
        .unwrap();
    let headers = [("authorization", auth.as_str()), ("dpop", proof.as_str())];
    assert_eq!(
        call(&layer, Method::GET, "/orders", &headers)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_proof_replayed_to_another_instance_sharing_the_cache_is_refused() {
    let f = fixture();
    let shared = Arc::new(MemoryReplayCache::default());
    let one = f.layer(f.dpop().with_replay_cache(shared.clone()));
    let two = f.layer(f.dpop().with_replay_cache(shared.clone()));
    let token = f.bound_token(&f.key);
    let auth = format!("DPoP {token}");
    let proof = f
        .key
        .proof("GET", &format!("{ORIGIN}/orders"), Some(&token), None)
        .unwrap();
    let headers = [("authorization", auth.as_str()), ("dpop", proof.as_str())];
    assert_eq!(
        call(&one, Method::GET, "/orders", &headers).await.status(),
        StatusCode::OK
    );
    refused_proof(
        &call(&two, Method::GET, "/orders", &headers).await,
        "used before",
    );
    assert_eq!(shared.len(), 1);
}

#[tokio::test]
async fn every_other_way_is_refused() {
    let f = fixture();
    let layer = f.layer(f.dpop());
    let token = f.bound_token(&f.key);
    let auth = format!("DPoP {token}");
    let htu = format!("{ORIGIN}/orders");
    let proof =
        |method: &str, htu: &str, ath: Option<&str>| f.key.proof(method, htu, ath, None).unwrap();

    // Another key's proof for this token (a thief with the token but not the key).
    let thief = DpopKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_clock(Arc::new(f.clock.clone()));
    let p = thief.proof("GET", &htu, Some(&token), None).unwrap();
    let res = orders(&layer, &auth, &p).await;
    refused_proof(&res, "another key");
    // No proof at all, and two.
    let res = call(&layer, Method::GET, "/orders", &[("authorization", &auth)]).await;
    refused_proof(&res, "required");
    let (p1, p2) = (
        proof("GET", &htu, Some(&token)),
        proof("GET", &htu, Some(&token)),
    );
    let res = call(
        &layer,
        Method::GET,
        "/orders",
        &[("authorization", &auth), ("dpop", &p1), ("dpop", &p2)],
    )
    .await;
    refused_proof(&res, "more than one");
    // A proof for another method, another path, or without the token's hash.
    let p = proof("POST", &htu, Some(&token));
    refused_proof(&orders(&layer, &auth, &p).await, "method");
    let p = proof("GET", &format!("{ORIGIN}/admin"), Some(&token));
    refused_proof(&orders(&layer, &auth, &p).await, "URI");
    let p = proof("GET", "https://evil.example/orders", Some(&token));
    refused_proof(&orders(&layer, &auth, &p).await, "URI");
    let p = proof("GET", &htu, None);
    refused_proof(&orders(&layer, &auth, &p).await, "ath");
    // An old proof.
    let old = proof("GET", &htu, Some(&token));
    f.clock.advance(Duration::from_secs(61));
    refused_proof(&orders(&layer, &auth, &old).await, "too old");

    // The bound token as Bearer: no downgrade, with or without a proof.
    let token = f.bound_token(&f.key);
    let bearer = format!("Bearer {token}");
    let p = proof("GET", &htu, Some(&token));
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("authorization", bearer.as_str()), ("dpop", p.as_str())],
    ] {
        let res = call(&layer, Method::GET, "/orders", &headers).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let c = challenge(&res);
        assert!(
            c.starts_with("DPoP ") && c.contains(r#"error="invalid_token""#),
            "{c}"
        );
    }
    // An unbound token as DPoP.
    let plain = f.plain_token();
    let p = proof("GET", &htu, Some(&plain));
    let res = call(
        &layer,
        Method::GET,
        "/orders",
        &[("authorization", &format!("DPoP {plain}")), ("dpop", &p)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&res).contains("not DPoP-bound"));
    // An unbound token as Bearer still works, unless DPoP is required.
    let plain_auth = format!("Bearer {plain}");
    assert_eq!(
        call(
            &layer,
            Method::GET,
            "/orders",
            &[("authorization", &plain_auth)]
        )
        .await
        .status(),
        StatusCode::OK
    );
    let strict = f.layer(f.dpop().required());
    let res = call(
        &strict,
        Method::GET,
        "/orders",
        &[("authorization", &plain_auth)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&res).contains("requires DPoP"));
    // gRPC: Unauthenticated.
    let res = call(
        &layer,
        Method::POST,
        "/pkg.Svc/Call",
        &[
            ("authorization", &auth),
            ("content-type", "application/grpc"),
        ],
    )
    .await;
    assert_eq!(res.headers()["grpc-status"], "16");
}

#[tokio::test]
async fn the_token_may_come_from_the_cache_the_proof_never_does() {
    let f = fixture();
    let verifier = f
        .issuer
        .verifier()
        .with_cache(TokenCache::new(100, 1 << 20));
    let layer = BearerVerifyLayer::new(verifier).with_dpop(f.dpop());
    let token = f.bound_token(&f.key);
    let auth = format!("DPoP {token}");
    let htu = format!("{ORIGIN}/orders");
    for _ in 0..3 {
        let p = f.key.proof("GET", &htu, Some(&token), None).unwrap();
        let res = orders(&layer, &auth, &p).await;
        assert_eq!(res.status(), StatusCode::OK);
        refused_proof(&orders(&layer, &auth, &p).await, "used before");
    }
    assert!(
        !layer.verifier().cache().unwrap().is_empty(),
        "the token was cached"
    );
}

#[tokio::test]
async fn a_full_replay_cache_answers_503_not_a_pass() {
    let f = fixture();
    let layer = f.layer(f.dpop().with_replay_cache(MemoryReplayCache::new(1)));
    let token = f.bound_token(&f.key);
    let auth = format!("DPoP {token}");
    let htu = format!("{ORIGIN}/orders");
    let p = f.key.proof("GET", &htu, Some(&token), None).unwrap();
    assert_eq!(orders(&layer, &auth, &p).await.status(), StatusCode::OK);
    let p = f.key.proof("GET", &htu, Some(&token), None).unwrap();
    let res = orders(&layer, &auth, &p).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    // Past the window (60 s back, 60 s ahead) the old entry goes and proofs pass again.
    f.clock.advance(Duration::from_secs(121));
    let p = f.key.proof("GET", &htu, Some(&token), None).unwrap();
    assert_eq!(orders(&layer, &auth, &p).await.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("temporarily_unavailable"));
}

#[test]
fn the_public_origin_is_checked() {
    for bad in [
        "api.example",
        "https://api.example/path",
        "ftp://api.example",
        "",
    ] {
        assert!(Dpop::new(bad).is_err(), "{bad}");
    }
    assert!(Dpop::new("http://localhost:3000").is_ok());
}

/// Server nonces (RFC 9449 section 9): a proof without one is refused with the nonce to use;
/// with it the request goes through; the previous period's nonce still passes and is answered
/// with the new one; an older or made-up nonce is refused.
#[tokio::test]
async fn server_nonces_are_required_handed_out_and_turned() {
    let f = fixture();
    let nonces = baton_bearer::DpopNonces::new(&[5; 32], Duration::from_secs(60)).unwrap();
    let layer = f.layer(f.dpop().with_nonces(nonces.clone()));
    let token = f.bound_token(&f.key);
    let auth = format!("DPoP {token}");
    let url = format!("{ORIGIN}/orders");
    let with_nonce = |nonce: Option<&str>| f.key.proof("GET", &url, Some(&token), nonce).unwrap();
    let asked_for_nonce = |res: &Response<baton_bearer::ResponseBody<Full<Bytes>>>| {
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(
            challenge(res).contains(r#"error="use_dpop_nonce""#),
            "{}",
            challenge(res)
        );
        let rejection = res.extensions().get::<Rejection>().unwrap();
        assert!(matches!(
            rejection.kind(),
            RejectionKind::InvalidDpopProof(baton_token::DpopError::UseNonce)
        ));
        res.headers()["dpop-nonce"].to_str().unwrap().to_owned()
    };

    let nonce = asked_for_nonce(&orders(&layer, &auth, &with_nonce(None)).await);
    assert!(nonces.accepts(&nonce, NOW * 1000));
    let res = orders(&layer, &auth, &with_nonce(Some(&nonce))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get("dpop-nonce").is_none(),
        "the nonce is current"
    );

    // The next period: the old nonce passes, and the answer carries the new one.
    f.clock.advance(Duration::from_secs(60));
    let res = orders(&layer, &auth, &with_nonce(Some(&nonce))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let turned = res.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_ne!(turned, nonce);

    // Two periods on: refused, with the current nonce.
    f.clock.advance(Duration::from_secs(60));
    let current = asked_for_nonce(&orders(&layer, &auth, &with_nonce(Some(&nonce))).await);
    assert_ne!(current, turned);
    assert_eq!(
        orders(&layer, &auth, &with_nonce(Some(&current)))
            .await
            .status(),
        StatusCode::OK
    );
    // A nonce of the caller's own making, or another secret's: refused.
    asked_for_nonce(&orders(&layer, &auth, &with_nonce(Some("made-up"))).await);
    let other = baton_bearer::DpopNonces::new(&[6; 32], Duration::from_secs(60)).unwrap();
    let foreign = other.nonce_at(NOW * 1000 + 120_000);
    asked_for_nonce(&orders(&layer, &auth, &with_nonce(Some(&foreign))).await);
}

#[test]
fn nonce_settings_are_checked() {
    use baton_bearer::{ConfigError, DpopNonces};
    assert!(matches!(
        DpopNonces::new(&[1; 31], Duration::from_secs(60)),
        Err(ConfigError::InvalidNonces(_))
    ));
    assert!(matches!(
        DpopNonces::new(&[1; 32], Duration::from_millis(999)),
        Err(ConfigError::InvalidNonces(_))
    ));
    let random = DpopNonces::random(Duration::from_secs(60)).unwrap();
    let again = DpopNonces::random(Duration::from_secs(60)).unwrap();
    assert_ne!(
        random.nonce_at(0),
        again.nonce_at(0),
        "secrets of their own"
    );
}
