//! Every way a token can be wrong, each through the real layer, each asserting the status,
//! the `WWW-Authenticate` challenge and the JSON body. None may panic.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_bearer::{BearerVerifyLayer, Rejection, TokenIdentity};
use baton_token::{
    Algorithm, Claims, Issuer, Key, KeyRing, KeySet, NoCustomClaims, TestClock, TokenCache,
    Verifier,
};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::EncodingKey;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_800_000_000;
const SECRET: [u8; 32] = [42; 32];
const ISS: &str = "https://issuer.test";
const AUD: &str = "api";

struct Fixture {
    clock: TestClock,
    ring: KeyRing,
    issuer: Issuer,
    ec: Key,
    rsa: Key,
}

fn fixture() -> Fixture {
    let clock = TestClock::at_secs(NOW);
    let ec = Key::generate("ec", Algorithm::ES256).unwrap();
    let rsa = Key::generate("rsa", Algorithm::RS256).unwrap();
    let set = KeySet::new(Key::hmac("hs", Algorithm::HS256, SECRET).unwrap())
        .unwrap()
        .with_key(
            Key::from_pem(
                "ec",
                Algorithm::ES256,
                ec.private_pkcs8_pem().unwrap().as_bytes(),
            )
            .unwrap(),
        )
        .unwrap()
        .with_key(
            Key::from_pem(
                "rsa",
                Algorithm::RS256,
                rsa.private_pkcs8_pem().unwrap().as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
    let ring = KeyRing::new(set);
    let issuer = Issuer::new(ring.clone())
        .with_clock(clock.clone())
        .with_iss(ISS)
        .with_aud(AUD)
        .with_ttl(Duration::from_secs(300));
    Fixture {
        clock,
        ring,
        issuer,
        ec,
        rsa,
    }
}

impl Fixture {
    /// The issuer's verifier with the default leeway of a verifier of another service's
    /// tokens (the issuer's own allows none), so the leeway's edges are tested too.
    fn verifier(&self) -> Verifier {
        self.issuer.verifier().with_leeway(Verifier::DEFAULT_LEEWAY)
    }

    fn layer(&self) -> BearerVerifyLayer {
        BearerVerifyLayer::new(self.verifier())
    }

    fn good_claims(&self) -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": NOW, "exp": NOW + 300, "sid": "s1"})
    }

    fn token(&self) -> String {
        self.issuer
            .issue("alice", Some("s1"), NoCustomClaims {})
            .unwrap()
            .token
    }

    fn ec_encoding(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(self.ec.private_pkcs8_pem().unwrap().as_bytes()).unwrap()
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A compact JWS with any header and claims, signed with `key` under `alg`.
fn sign_raw(
    header: &Value,
    claims: &Value,
    key: &EncodingKey,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn hs256(header: &Value, claims: &Value) -> String {
    sign_raw(
        header,
        claims,
        &EncodingKey::from_secret(&SECRET).unwrap(),
        jsonwebtoken::Algorithm::HS256,
    )
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
    rejection: Option<Rejection>,
}

/// The prepared-key path and the jsonwebtoken reference path must accept and refuse exactly
/// the same tokens, with the same error: checked on every token these tests send.
#[track_caller]
fn assert_paths_agree(verifier: &Verifier, token: &str) {
    let fast = verifier.verify::<NoCustomClaims>(token);
    let reference = verifier.verify_reference::<NoCustomClaims>(token);
    let cached = verifier.clone().with_cache(TokenCache::new(4, 1 << 16));
    for _ in 0..2 {
        assert_eq!(
            cached
                .verify_cached::<NoCustomClaims>(token)
                .map(Arc::unwrap_or_clone)
                .map_err(|e| (e.kind(), e.to_string())),
            fast.clone().map_err(|e| (e.kind(), e.to_string())),
            "cached path on {token}"
        );
    }
    match (&fast, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{token}"),
        (Err(a), Err(b)) => assert_eq!(
            (a.kind(), a.to_string()),
            (b.kind(), b.to_string()),
            "{token}"
        ),
        _ => panic!("paths disagree on {token:?}: fast {fast:?}, reference {reference:?}"),
    }
}

async fn send_with(layer: BearerVerifyLayer, req: Request<Full<Bytes>>) -> Answer {
    if let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        assert_paths_agree(layer.verifier(), token);
    }
    let svc = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
        let sub = req
            .extensions()
            .get::<Arc<Claims<NoCustomClaims>>>()
            .map_or("anonymous".to_owned(), |c| c.sub.clone());
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(
            json!({ "sub": sub }).to_string(),
        )))
    }));
    let res = svc.oneshot(req).await.unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let rejection = res.extensions().get::<Rejection>().cloned();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        challenge,
        body,
        rejection,
    }
}

async fn send(layer: BearerVerifyLayer, token: &str) -> Answer {
    let req = Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    send_with(layer, req).await
}

#[track_caller]
fn assert_invalid_token(answer: &Answer, description: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.challenge.as_deref(),
        Some(
            format!(
                r#"Bearer realm="baton", error="invalid_token", error_description="{description}""#
            )
            .as_str()
        )
    );
    assert_eq!(
        answer.body,
        json!({"error": "invalid_token", "error_description": description})
    );
}

#[track_caller]
fn assert_invalid_request(answer: &Answer, description: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.challenge.as_deref(),
        Some(format!(r#"Bearer realm="baton", error="invalid_request", error_description="{description}""#).as_str())
    );
    assert_eq!(
        answer.body,
        json!({"error": "invalid_request", "error_description": description})
    );
}

#[tokio::test]
async fn valid_token_reaches_the_service_with_its_claims() {
    let f = fixture();
    let answer = send(f.layer(), &f.token()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.challenge, None);
    assert_eq!(answer.body, json!({"sub": "alice"}));
}

#[tokio::test]
async fn missing_token_gets_a_bare_challenge() {
    let f = fixture();
    let answer = send_with(f.layer(), Request::new(Full::default())).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge.as_deref(), Some(r#"Bearer realm="baton""#));
    assert_eq!(
        answer.body,
        json!({"error": "unauthorized", "error_description": "bearer token required"})
    );
}

#[tokio::test]
async fn another_auth_scheme_counts_as_no_token() {
    let f = fixture();
    let req = Request::builder()
        .header(header::AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0")
        .body(Full::default())
        .unwrap();
    let answer = send_with(f.layer(), req).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge.as_deref(), Some(r#"Bearer realm="baton""#));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let f = fixture();
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "hs"})),
        b64(&f.good_claims())
    );
    assert_invalid_token(&send(f.layer(), &token).await, "token header is not valid");
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none"})),
        b64(&f.good_claims())
    );
    assert_invalid_token(&send(f.layer(), &token).await, "token header is not valid");
}

#[tokio::test]
async fn hs256_signed_with_the_published_ec_public_key_is_refused() {
    let f = fixture();
    let jwk: Value = serde_json::from_str(&f.ec.public_jwk_json().unwrap()).unwrap();
    for secret in [
        serde_json::to_vec(&jwk).unwrap(),
        f.ec.public_jwk_json().unwrap().into_bytes(),
    ] {
        let token = sign_raw(
            &json!({"alg": "HS256", "kid": "ec"}),
            &f.good_claims(),
            &EncodingKey::from_secret(&secret).unwrap(),
            jsonwebtoken::Algorithm::HS256,
        );
        assert_invalid_token(
            &send(f.layer(), &token).await,
            "algorithm does not match the signing key",
        );
    }
}

#[tokio::test]
async fn hs256_signed_with_the_published_rsa_public_key_is_refused() {
    let f = fixture();
    let secret = f.rsa.public_jwk_json().unwrap();
    let token = sign_raw(
        &json!({"alg": "HS256", "kid": "rsa"}),
        &f.good_claims(),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        jsonwebtoken::Algorithm::HS256,
    );
    assert_invalid_token(
        &send(f.layer(), &token).await,
        "algorithm does not match the signing key",
    );
}

#[tokio::test]
async fn es256_header_on_the_hmac_key_is_refused() {
    let f = fixture();
    let token = sign_raw(
        &json!({"alg": "ES256", "kid": "hs"}),
        &f.good_claims(),
        &f.ec_encoding(),
        jsonwebtoken::Algorithm::ES256,
    );
    assert_invalid_token(
        &send(f.layer(), &token).await,
        "algorithm does not match the signing key",
    );
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let f = fixture();
    let token = f.token();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = f.good_claims();
    claims["sub"] = json!("mallory");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_invalid_token(&send(f.layer(), &forged).await, "signature does not match");
}

#[tokio::test]
async fn truncated_signature_is_refused() {
    let f = fixture();
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &f.good_claims());
    // 43 base64url characters: 40 still decode (to 30 bytes), 41 are not base64 at all.
    assert_invalid_token(
        &send(f.layer(), &token[..token.len() - 3]).await,
        "signature does not match",
    );
    assert_invalid_token(
        &send(f.layer(), &token[..token.len() - 2]).await,
        "token is not a well-formed JWT",
    );
}

#[tokio::test]
async fn empty_signature_is_refused() {
    let f = fixture();
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &f.good_claims());
    let unsigned = &token[..=token.rfind('.').unwrap()];
    assert_invalid_token(&send(f.layer(), unsigned).await, "signature does not match");
}

#[tokio::test]
async fn two_segments_are_refused() {
    let f = fixture();
    let token = f.token();
    let two = &token[..token.rfind('.').unwrap()];
    assert_invalid_token(&send(f.layer(), two).await, "token header is not valid");
}

#[tokio::test]
async fn four_segments_are_refused() {
    let f = fixture();
    let token = format!("{}.{}", f.token(), "AAAA");
    assert_invalid_token(&send(f.layer(), &token).await, "token header is not valid");
    let token = format!("{}.{}", "AAAA", f.token());
    assert_invalid_token(&send(f.layer(), &token).await, "token header is not valid");
}

#[tokio::test]
async fn non_base64url_characters_are_refused() {
    let f = fixture();
    let token = f.token();
    let dot = token.find('.').unwrap();
    // `+` and `/` are token68 but not base64url. In the payload the signature (over the
    // bytes as sent) fails first; in the signature or header, decoding fails.
    let plus = format!("{}+{}", &token[..=dot], &token[dot + 2..]);
    assert_invalid_token(&send(f.layer(), &plus).await, "signature does not match");
    let sig = format!("{}+", &token[..token.len() - 1]);
    assert_invalid_token(
        &send(f.layer(), &sig).await,
        "token is not a well-formed JWT",
    );
    let slash = format!("{}/{}", &token[..dot - 1], &token[dot..]);
    assert_invalid_token(&send(f.layer(), &slash).await, "token header is not valid");
    // `*` is not even token68: the request is malformed.
    let star = format!("{}*{}", &token[..=dot], &token[dot + 2..]);
    assert_invalid_request(
        &send(f.layer(), &star).await,
        "bearer token has invalid syntax",
    );
}

#[tokio::test]
async fn jku_jwk_and_x5u_headers_pointing_elsewhere_are_ignored() {
    let f = fixture();
    let attacker = Key::generate("attacker", Algorithm::ES256).unwrap();
    let attacker_enc =
        EncodingKey::from_ec_pem(attacker.private_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let attacker_jwk: Value = serde_json::from_str(&attacker.public_jwk_json().unwrap()).unwrap();
    let header = json!({
        "alg": "ES256",
        "kid": "ec",
        "jku": "https://attacker.invalid/jwks.json",
        "x5u": "https://attacker.invalid/cert.pem",
        "jwk": attacker_jwk,
    });
    let token = sign_raw(
        &header,
        &f.good_claims(),
        &attacker_enc,
        jsonwebtoken::Algorithm::ES256,
    );
    assert_invalid_token(&send(f.layer(), &token).await, "signature does not match");

    let mut header = header;
    header["kid"] = json!("attacker");
    let token = sign_raw(
        &header,
        &f.good_claims(),
        &attacker_enc,
        jsonwebtoken::Algorithm::ES256,
    );
    assert_invalid_token(&send(f.layer(), &token).await, "unknown signing key");

    // The same headers on a token our key really signed change nothing: they are not used.
    let token = sign_raw(
        &header_with_kid(&header, "ec"),
        &f.good_claims(),
        &f.ec_encoding(),
        jsonwebtoken::Algorithm::ES256,
    );
    assert_eq!(send(f.layer(), &token).await.status, StatusCode::OK);
}

fn header_with_kid(header: &Value, kid: &str) -> Value {
    let mut h = header.clone();
    h["kid"] = json!(kid);
    h
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let f = fixture();
    for kid in ["nope", "../../dev/null", "", "hs\u{0}"] {
        let token = hs256(&json!({"alg": "HS256", "kid": kid}), &f.good_claims());
        assert_invalid_token(&send(f.layer(), &token).await, "unknown signing key");
    }
}

#[tokio::test]
async fn missing_kid_is_refused_when_the_set_has_several_keys() {
    let f = fixture();
    let token = hs256(&json!({"alg": "HS256"}), &f.good_claims());
    assert_invalid_token(&send(f.layer(), &token).await, "unknown signing key");

    let single =
        Verifier::new(KeySet::new(Key::hmac("only", Algorithm::HS256, SECRET).unwrap()).unwrap())
            .with_clock(f.clock.clone());
    assert_eq!(
        send(BearerVerifyLayer::new(single), &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn crit_header_is_refused() {
    let f = fixture();
    let token = hs256(
        &json!({"alg": "HS256", "kid": "hs", "crit": ["exp"], "exp": 1}),
        &f.good_claims(),
    );
    assert_invalid_token(
        &send(f.layer(), &token).await,
        "critical header parameters are not supported",
    );
}

#[tokio::test]
async fn expired_one_second_past_the_leeway_is_refused() {
    let f = fixture();
    let leeway = Verifier::DEFAULT_LEEWAY.as_secs();
    let token = f.token();
    f.clock.set_secs(NOW + 300 + leeway - 1);
    assert_eq!(
        send(f.layer(), &token).await.status,
        StatusCode::OK,
        "inside the leeway"
    );
    f.clock.set_secs(NOW + 300 + leeway + 1);
    let answer = send(f.layer(), &token).await;
    assert_invalid_token(&answer, "token expired");
    assert!(answer.rejection.unwrap().is_expired());
}

#[tokio::test]
async fn expiry_with_zero_leeway_is_exact() {
    let f = fixture();
    let layer = BearerVerifyLayer::new(f.verifier().with_leeway(Duration::ZERO));
    let token = f.token();
    f.clock.set_secs(NOW + 299);
    assert_eq!(send(layer.clone(), &token).await.status, StatusCode::OK);
    f.clock.set_secs(NOW + 300);
    assert_invalid_token(&send(layer, &token).await, "token expired");
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let f = fixture();
    let leeway = Verifier::DEFAULT_LEEWAY.as_secs();
    let mut claims = f.good_claims();
    claims["nbf"] = json!(NOW + leeway + 1);
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    let answer = send(f.layer(), &token).await;
    assert_invalid_token(&answer, "token not yet valid");
    assert!(!answer.rejection.unwrap().is_expired());
}

#[tokio::test]
async fn missing_nbf_is_refused_when_required() {
    let f = fixture();
    let layer = BearerVerifyLayer::new(f.verifier().require_nbf(true));
    assert_invalid_token(
        &send(layer.clone(), &f.token()).await,
        "token has no nbf claim",
    );
    let mut claims = f.good_claims();
    claims["nbf"] = json!(NOW);
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_eq!(send(layer, &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn missing_exp_is_refused() {
    let f = fixture();
    let mut claims = f.good_claims();
    claims.as_object_mut().unwrap().remove("exp");
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_invalid_token(&send(f.layer(), &token).await, "token claims are not valid");
}

#[tokio::test]
async fn exp_as_a_string_is_refused() {
    let f = fixture();
    let mut claims = f.good_claims();
    claims["exp"] = json!("9999999999");
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_invalid_token(&send(f.layer(), &token).await, "token claims are not valid");
}

#[tokio::test]
async fn claims_that_are_not_an_object_are_refused() {
    let f = fixture();
    for claims in [
        json!([1, 2]),
        json!("x"),
        json!(null),
        json!({"sub": 5, "exp": NOW + 10}),
    ] {
        let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
        assert_invalid_token(&send(f.layer(), &token).await, "token claims are not valid");
    }
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let f = fixture();
    let mut claims = f.good_claims();
    claims["iss"] = json!("https://evil.test");
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_invalid_token(&send(f.layer(), &token).await, "issuer not accepted");
    claims.as_object_mut().unwrap().remove("iss");
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_invalid_token(&send(f.layer(), &token).await, "issuer not accepted");
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let f = fixture();
    let mut claims = f.good_claims();
    claims["aud"] = json!(["other", "admin"]);
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_invalid_token(&send(f.layer(), &token).await, "audience not accepted");
    claims["aud"] = json!(["other", AUD]);
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert_eq!(send(f.layer(), &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn nine_kib_token_is_refused_before_decoding() {
    let f = fixture();
    let mut claims = f.good_claims();
    claims["pad"] = json!("x".repeat(9 * 1024));
    let token = hs256(&json!({"alg": "HS256", "kid": "hs"}), &claims);
    assert!(token.len() > 9 * 1024);
    assert_invalid_token(
        &send(f.layer(), &token).await,
        "token exceeds the size limit",
    );
    // Not even valid base64: the size check comes first.
    let junk = "A".repeat(9 * 1024);
    assert_invalid_token(
        &send(f.layer(), &junk).await,
        "token exceeds the size limit",
    );
}

#[tokio::test]
async fn all_zero_ecdsa_signature_is_refused() {
    // CVE-2022-21449: r = s = 0 must never verify.
    let f = fixture();
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": "ES256", "kid": "ec"})),
        b64(&f.good_claims())
    );
    let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_invalid_token(&send(f.layer(), &token).await, "signature does not match");
    let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode([0u8; 72]));
    assert_invalid_token(&send(f.layer(), &token).await, "signature does not match");
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_until_the_old_key_is_removed() {
    let f = fixture();
    let old = f.token();
    f.ring
        .update(|set| set.rotate_to(Key::generate("hs-2", Algorithm::HS256)?))
        .unwrap();
    let new = f.token();
    assert!(new != old);
    assert_eq!(
        send(f.layer(), &old).await.status,
        StatusCode::OK,
        "old key still verifies"
    );
    assert_eq!(send(f.layer(), &new).await.status, StatusCode::OK);
    f.ring.update(|set| set.without("hs")).unwrap();
    assert_invalid_token(&send(f.layer(), &old).await, "unknown signing key");
    assert_eq!(send(f.layer(), &new).await.status, StatusCode::OK);
}

#[tokio::test]
async fn next_key_is_published_and_verifies_before_it_signs() {
    let f = fixture();
    let next = Key::generate("es-next", Algorithm::ES256).unwrap();
    let next_pem = next.private_pkcs8_pem().unwrap().to_owned();
    f.ring
        .update(|set| {
            set.with_next(Key::from_pem(
                "es-next",
                Algorithm::ES256,
                next_pem.as_bytes(),
            )?)
        })
        .unwrap();
    assert_eq!(
        f.ring.load().active().unwrap().kid(),
        "hs",
        "the next key does not sign yet"
    );
    assert!(f.ring.load().jwks_json().contains("es-next"));
    let early = sign_raw(
        &json!({"alg": "ES256", "kid": "es-next"}),
        &f.good_claims(),
        &EncodingKey::from_ec_pem(next_pem.as_bytes()).unwrap(),
        jsonwebtoken::Algorithm::ES256,
    );
    assert_eq!(send(f.layer(), &early).await.status, StatusCode::OK);
    f.ring.update(KeySet::promote_next).unwrap();
    assert_eq!(f.ring.load().active().unwrap().kid(), "es-next");
    let token = f.token();
    assert_eq!(send(f.layer(), &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn two_authorization_headers_are_invalid_request() {
    let f = fixture();
    let token = f.token();
    let req = Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    assert_invalid_request(
        &send_with(f.layer(), req).await,
        "more than one Authorization header",
    );
}

#[tokio::test]
async fn empty_bearer_is_invalid_request() {
    let f = fixture();
    let req = Request::builder()
        .header(header::AUTHORIZATION, "Bearer ")
        .body(Full::default())
        .unwrap();
    assert_invalid_request(&send_with(f.layer(), req).await, "empty bearer token");
    let req = Request::builder()
        .header(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Full::default())
        .unwrap();
    assert_invalid_request(
        &send_with(f.layer(), req).await,
        "bearer token has invalid syntax",
    );
}

#[tokio::test]
async fn cookie_token_is_accepted_and_must_agree_with_the_header() {
    let f = fixture();
    let layer = f.layer().with_cookie("__Host-access").unwrap();
    let token = f.token();
    let req = Request::builder()
        .header(header::COOKIE, format!("theme=dark; __Host-access={token}"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send_with(layer.clone(), req).await.status, StatusCode::OK);

    let other = f
        .issuer
        .issue("bob", None, NoCustomClaims {})
        .unwrap()
        .token;
    let req = Request::builder()
        .header(header::COOKIE, format!("__Host-access={token}"))
        .header(header::AUTHORIZATION, format!("Bearer {other}"))
        .body(Full::default())
        .unwrap();
    assert_invalid_request(
        &send_with(layer.clone(), req).await,
        "the tokens in the Authorization header and the cookie differ",
    );

    let req = Request::builder()
        .header(header::COOKIE, format!("__Host-access={token}"))
        .header(header::COOKIE, format!("__Host-access={other}"))
        .body(Full::default())
        .unwrap();
    assert_invalid_request(
        &send_with(layer.clone(), req).await,
        "the token cookie appears twice with different values",
    );

    // Without cookie mode, the cookie is ignored.
    let req = Request::builder()
        .header(header::COOKIE, format!("__Host-access={token}"))
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send_with(f.layer(), req).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn optional_mode_lets_anonymous_requests_through_but_not_bad_tokens() {
    let f = fixture();
    let layer = f.layer().optional();
    let answer = send_with(layer.clone(), Request::new(Full::default())).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"sub": "anonymous"}));
    assert_eq!(
        send(layer.clone(), &f.token()).await.body,
        json!({"sub": "alice"})
    );
    assert_invalid_token(
        &send(layer, &format!("{}x", f.token())).await,
        "signature does not match",
    );
}

#[tokio::test]
async fn missing_scope_or_role_is_insufficient_scope() {
    let f = fixture();
    let layer = f
        .layer()
        .require_scope("read")
        .unwrap()
        .require_scope("write")
        .unwrap();
    let answer = send(layer.clone(), &f.token()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.challenge.as_deref(),
        Some(
            r#"Bearer realm="baton", error="insufficient_scope", error_description="token lacks a required scope or role", scope="read write""#
        )
    );
    assert_eq!(answer.body["error"], "insufficient_scope");

    let claims = f
        .issuer
        .claims("alice", NoCustomClaims {})
        .unwrap()
        .with_scope("write read");
    let token = f.issuer.sign(&claims).unwrap();
    assert_eq!(send(layer, &token).await.status, StatusCode::OK);

    for bad in ["", " admin", "ad\u{7}min", "admin\n"] {
        assert!(
            matches!(
                f.layer().require_role(bad),
                Err(baton_bearer::ConfigError::InvalidRole(_))
            ),
            "{bad:?} accepted"
        );
    }
    let layer = f.layer().require_role("admin").unwrap();
    assert_eq!(
        send(layer.clone(), &f.token()).await.status,
        StatusCode::FORBIDDEN
    );
    let claims = f
        .issuer
        .claims("alice", NoCustomClaims {})
        .unwrap()
        .with_roles(["admin"]);
    assert_eq!(
        send(layer, &f.issuer.sign(&claims).unwrap()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoked_session_is_refused() {
    let f = fixture();
    let layer = f
        .layer()
        .with_revocation(|t: &TokenIdentity<'_>| t.sid == Some("s1"));
    assert_invalid_token(&send(layer.clone(), &f.token()).await, "token revoked");
    let other = f
        .issuer
        .issue("alice", Some("s2"), NoCustomClaims {})
        .unwrap()
        .token;
    assert_eq!(send(layer, &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_cached_token_is_still_checked_for_revocation_and_expiry() {
    let f = fixture();
    let revoked = std::sync::Arc::new(baton_bearer::RevocationList::new(Duration::from_secs(600)));
    let layer = f
        .layer()
        .with_cache(TokenCache::new(64, 1 << 20))
        .with_shared_revocation(revoked.clone());
    let token = f.token();
    assert_eq!(send(layer.clone(), &token).await.status, StatusCode::OK);
    assert_eq!(send(layer.clone(), &token).await.status, StatusCode::OK);
    assert_eq!(layer.verifier().cache().unwrap().len(), 1, "cached");
    revoked.revoke_session("s1");
    assert_invalid_token(&send(layer.clone(), &token).await, "token revoked");
    // Another session of the same user is unaffected; the first token expires in the cache.
    let other = f
        .issuer
        .issue("alice", Some("s2"), NoCustomClaims {})
        .unwrap()
        .token;
    assert_eq!(send(layer.clone(), &other).await.status, StatusCode::OK);
    f.clock.advance(Duration::from_secs(300 + 30));
    assert_invalid_token(&send(layer, &other).await, "token expired");
}

#[tokio::test]
async fn realm_is_configurable_and_checked() {
    let f = fixture();
    let layer = f.layer().with_realm("api.example").unwrap();
    let answer = send_with(layer, Request::new(Full::default())).await;
    assert_eq!(
        answer.challenge.as_deref(),
        Some(r#"Bearer realm="api.example""#)
    );
    assert!(f.layer().with_realm("a\"b").is_err());
    assert!(f.layer().with_realm("a\nb").is_err());
    assert!(f.layer().require_scope("a b").is_err());
    assert!(f.layer().with_cookie("a=b").is_err());
}

#[tokio::test]
async fn grpc_requests_get_grpc_status_in_headers() {
    let f = fixture();
    let req = Request::builder()
        .header(header::CONTENT_TYPE, "application/grpc+proto")
        .body(Full::default())
        .unwrap();
    let svc = f
        .layer()
        .layer(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "16");
    assert_eq!(res.headers()["grpc-message"], "bearer token required");
    assert_eq!(
        res.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="baton""#
    );
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );

    let layer = f.layer().require_scope("admin").unwrap();
    let svc = layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    }));
    let req = Request::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.token()))
        .body(Full::default())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "7");
}

#[tokio::test]
async fn poll_ready_is_forwarded_to_the_inner_service() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};
    use tower::Service;

    /// Ready only once `open` is set.
    #[derive(Clone)]
    struct Gate(Arc<AtomicBool>);

    impl Service<Request<Full<Bytes>>> for Gate {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.0.load(Ordering::SeqCst) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
            std::future::ready(Ok(Response::new(Full::default())))
        }
    }

    let f = fixture();
    let open = Arc::new(AtomicBool::new(false));
    let mut svc = f.layer().layer(Gate(open.clone()));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "not ready while the inner service is not"
    );
    open.store(true, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let res = svc.call(Request::new(Full::default())).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
