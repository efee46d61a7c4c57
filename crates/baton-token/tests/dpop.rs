//! Every check of RFC 9449 section 4.3 that a proof alone can fail, each with its own forged
//! proof: the verifier must refuse it with `invalid_dpop_proof` (or `use_dpop_nonce`) and a
//! description, never panic, and accept the honest proofs of both algorithms.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_token::{
    Algorithm, DpopError, DpopKey, DpopVerifier, ProofRequest, TestClock, normalize_htu,
};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const HTU: &str = "https://api.example/orders";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

fn verifier() -> (DpopVerifier, TestClock) {
    let clock = TestClock::at_secs(NOW);
    (
        DpopVerifier::new().with_clock(Arc::new(clock.clone())),
        clock,
    )
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// A P-256 key of the test's own, to forge proofs by hand.
struct Forger {
    pair: EcdsaKeyPair,
}

impl Forger {
    fn new() -> Self {
        Forger {
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    fn header(&self) -> Value {
        json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() })
    }

    fn claims(&self) -> Value {
        json!({ "jti": "j-1", "htm": "GET", "htu": HTU, "iat": NOW, "ath": ath(TOKEN) })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn honest(&self) -> String {
        self.sign(&self.header(), &self.claims())
    }
}

fn request() -> ProofRequest<'static> {
    ProofRequest::new("GET", HTU).with_access_token(TOKEN)
}

fn refused(proof: &str, request: &ProofRequest<'_>, why: &str) {
    let (verifier, _) = verifier();
    match verifier.verify(proof, request) {
        Err(e @ DpopError::Invalid(_)) => {
            assert_eq!(e.code(), "invalid_dpop_proof");
            assert!(e.description().contains(why), "{why}: got {e:?}");
        }
        other => panic!("{why}: expected invalid_dpop_proof, got {other:?}"),
    }
}

#[test]
fn honest_proofs_of_both_algorithms_verify_and_name_their_key() {
    let (verifier, _) = verifier();
    let f = Forger::new();
    let proof = verifier.verify(&f.honest(), &request()).unwrap();
    // RFC 7638: SHA-256 over the required members in lexical order, no spaces.
    let jwk = f.jwk();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    let want = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
    assert_eq!(proof.jkt, want);
    assert_eq!(proof.jti, "j-1");
    assert_eq!(proof.iat, NOW);

    let clock = TestClock::at_secs(NOW);
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let key = DpopKey::generate(alg)
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        let p = key
            .proof(
                "POST",
                "https://api.example/auth/refresh?x=1",
                Some(TOKEN),
                Some("n-1"),
            )
            .unwrap();
        let req = ProofRequest::new("POST", "https://API.example:443/auth/refresh")
            .with_access_token(TOKEN)
            .with_nonce("n-1");
        let verified = verifier.verify(&p, &req).unwrap();
        assert_eq!(verified.jkt, key.jkt(), "{alg}");
    }
    assert!(DpopKey::generate(Algorithm::HS256).is_err());
    assert!(DpopKey::generate(Algorithm::RS256).is_err());
}

#[test]
fn typ_must_be_dpop_jwt() {
    let f = Forger::new();
    let mut h = f.header();
    h["typ"] = json!("JWT");
    refused(&f.sign(&h, &f.claims()), &request(), "typ");
    h.as_object_mut().unwrap().remove("typ");
    refused(&f.sign(&h, &f.claims()), &request(), "typ");
}

#[test]
fn alg_none_hmac_and_rsa_are_refused() {
    let f = Forger::new();
    let claims = b64(&f.claims());
    // alg none, no signature.
    let mut h = f.header();
    h["alg"] = json!("none");
    refused(&format!("{}.{claims}.", b64(&h)), &request(), "alg");
    // HS256 keyed with the public key's bytes (the classic confusion).
    h["alg"] = json!("HS256");
    let input = format!("{}.{claims}", b64(&h));
    let key =
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, f.jwk().to_string().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    refused(
        &format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())),
        &request(),
        "alg",
    );
    h["alg"] = json!("RS256");
    refused(&f.sign(&h, &f.claims()), &request(), "alg");
}

#[test]
fn the_jwk_must_be_a_public_key_of_the_algorithm() {
    let f = Forger::new();
    let mut h = f.header();
    h.as_object_mut().unwrap().remove("jwk");
    refused(&f.sign(&h, &f.claims()), &request(), "no jwk");
    // A private member in the jwk.
    let mut h = f.header();
    h["jwk"]["d"] = json!("c2VjcmV0");
    refused(&f.sign(&h, &f.claims()), &request(), "private");
    // An EC key under EdDSA.
    let mut h = f.header();
    h["alg"] = json!("EdDSA");
    refused(&f.sign(&h, &f.claims()), &request(), "does not fit");
    // Another curve's name, and garbage coordinates.
    let mut h = f.header();
    h["jwk"]["crv"] = json!("P-384");
    refused(&f.sign(&h, &f.claims()), &request(), "does not fit");
    let mut h = f.header();
    h["jwk"]["x"] = json!("AAAA");
    refused(&f.sign(&h, &f.claims()), &request(), "does not fit");
    // The same point spelled with a byte moved from y to x would have another thumbprint.
    let jwk = f.jwk();
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
    let mut h = f.header();
    h["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode([&x[..], &y[..1]].concat()));
    h["jwk"]["y"] = json!(URL_SAFE_NO_PAD.encode(&y[1..]));
    refused(&f.sign(&h, &f.claims()), &request(), "does not fit");
    // Garbage of the right size.
    let mut h = f.header();
    h["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
    refused(&f.sign(&h, &f.claims()), &request(), "signature");
    // Critical headers.
    let mut h = f.header();
    h["crit"] = json!(["exp"]);
    refused(&f.sign(&h, &f.claims()), &request(), "critical");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let f = Forger::new();
    let thief = Forger::new();
    // The victim's public key in the header, the thief's signature.
    let proof = thief.sign(&f.header(), &f.claims());
    refused(&proof, &request(), "signature");
    // A flipped bit in the claims after signing.
    let honest = f.honest();
    let mut parts: Vec<String> = honest.split('.').map(str::to_owned).collect();
    let mut claims = f.claims();
    claims["htu"] = json!("https://api.example/admin");
    parts[1] = b64(&claims);
    refused(&parts.join("."), &request(), "signature");
}

/// The verifier remembers the keys it parsed: a remembered key still checks every
/// signature, and each key keeps its own thumbprint.
#[test]
fn a_remembered_key_still_checks_every_signature() {
    let (verifier, _) = verifier();
    let victim = Forger::new();
    let other = Forger::new();
    let jkt_of = |f: &Forger| verifier.verify(&f.honest(), &request()).unwrap().jkt;
    let (first, second) = (jkt_of(&victim), jkt_of(&other));
    assert_ne!(first, second);
    for _ in 0..3 {
        assert_eq!(jkt_of(&victim), first);
        assert_eq!(jkt_of(&other), second);
    }
    // The victim's key is remembered now; the thief's signature under it is still refused.
    let forged = other.sign(&victim.header(), &victim.claims());
    match verifier.verify(&forged, &request()) {
        Err(e) => assert!(e.description().contains("signature"), "{e:?}"),
        Ok(p) => panic!("a forged proof passed: {p:?}"),
    }
    // The same key with its members spelled in another order and extra members: the same key.
    let mut header = victim.header();
    header["jwk"] = json!({
        "y": victim.jwk()["y"], "x": victim.jwk()["x"], "crv": "P-256", "kty": "EC", "kid": "k"
    });
    let proof = victim.sign(&header, &victim.claims());
    assert_eq!(verifier.verify(&proof, &request()).unwrap().jkt, first);
    // A remembered key with an ill-typed member the full parse refuses: refused warm as cold.
    let mut header = victim.header();
    header["jwk"]["key_ops"] = json!(5);
    let proof = victim.sign(&header, &victim.claims());
    let cold = verifier.verify(&proof, &request()).unwrap_err();
    assert!(cold.description().contains("jwk"), "{cold:?}");
    assert!(
        verifier.verify(&proof, &request()).is_err(),
        "and again, warm"
    );
}

#[test]
fn htm_and_htu_must_match_the_request() {
    let f = Forger::new();
    let mut c = f.claims();
    c["htm"] = json!("POST");
    refused(&f.sign(&f.header(), &c), &request(), "method");
    c["htm"] = json!("get");
    refused(&f.sign(&f.header(), &c), &request(), "method");
    for htu in [
        "https://evil.example/orders",
        "https://api.example/orders/1",
        "http://api.example/orders",
        "https://api.example:8443/orders",
        "/orders",
    ] {
        let mut c = f.claims();
        c["htu"] = json!(htu);
        refused(&f.sign(&f.header(), &c), &request(), "URI");
    }
    // Query and fragment are ignored; scheme and host case and the default port too.
    let (verifier, _) = verifier();
    let mut c = f.claims();
    c["htu"] = json!("HTTPS://Api.Example:443/orders?page=2#top");
    assert!(
        verifier
            .verify(&f.sign(&f.header(), &c), &request())
            .is_ok()
    );
    assert!(normalize_htu("https://api.example/orders").is_some());
}

#[test]
fn iat_must_be_within_the_window() {
    let f = Forger::new();
    for iat in [NOW - 61, NOW + 61, 0] {
        let mut c = f.claims();
        c["iat"] = json!(iat);
        refused(&f.sign(&f.header(), &c), &request(), "too old");
    }
    for iat in [NOW - 60, NOW + 60] {
        let (verifier, _) = verifier();
        let mut c = f.claims();
        c["iat"] = json!(iat);
        assert!(
            verifier
                .verify(&f.sign(&f.header(), &c), &request())
                .is_ok(),
            "{iat}"
        );
    }
    let mut c = f.claims();
    c["iat"] = json!("1800000000");
    refused(&f.sign(&f.header(), &c), &request(), "claims");
    let (verifier, clock) = verifier();
    let proof = f.honest();
    assert!(verifier.verify(&proof, &request()).is_ok());
    clock.advance(Duration::from_secs(61));
    assert!(verifier.verify(&proof, &request()).is_err(), "ages out");
}

#[test]
fn ath_must_be_the_hash_of_the_access_token() {
    let f = Forger::new();
    let mut c = f.claims();
    c.as_object_mut().unwrap().remove("ath");
    refused(&f.sign(&f.header(), &c), &request(), "ath");
    c["ath"] = json!(ath("another.token.here"));
    refused(&f.sign(&f.header(), &c), &request(), "ath");
    // Without an access token (login, refresh) no ath is needed.
    let (verifier, _) = verifier();
    assert!(
        verifier
            .verify(&f.sign(&f.header(), &c), &ProofRequest::new("GET", HTU))
            .is_ok()
    );
}

#[test]
fn a_missing_or_wrong_nonce_asks_for_one() {
    let (verifier, _) = verifier();
    let f = Forger::new();
    let req = request().with_nonce("n-2");
    assert_eq!(
        verifier.verify(&f.honest(), &req).unwrap_err(),
        DpopError::UseNonce
    );
    let mut c = f.claims();
    c["nonce"] = json!("n-1");
    assert_eq!(
        verifier
            .verify(&f.sign(&f.header(), &c), &req)
            .unwrap_err()
            .code(),
        "use_dpop_nonce"
    );
    c["nonce"] = json!("n-2");
    assert!(verifier.verify(&f.sign(&f.header(), &c), &req).is_ok());
}

#[test]
fn malformed_proofs_never_panic() {
    let f = Forger::new();
    let honest = f.honest();
    let mut c = f.claims();
    c["jti"] = json!("");
    let empty_jti = f.sign(&f.header(), &c);
    c["jti"] = json!("j".repeat(257));
    let long_jti = f.sign(&f.header(), &c);
    let (verifier, _) = verifier();
    for bad in [
        "",
        ".",
        "..",
        "a.b.c.d",
        "!!.??.**",
        &format!("{honest}.extra"),
        &honest.replace('.', ""),
        &"A".repeat(5000),
        &empty_jti,
        &long_jti,
    ] {
        let err = verifier.verify(bad, &request()).unwrap_err();
        assert_eq!(err.code(), "invalid_dpop_proof", "{bad:.40}");
    }
}
