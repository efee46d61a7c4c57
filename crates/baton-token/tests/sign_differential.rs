//! The prepared signer (`Issuer::sign`) against its reference, `jsonwebtoken::encode`
//! (`Issuer::sign_reference`): the same token, byte for byte, for every deterministic
//! algorithm; for ECDSA and RSA-PSS, whose signatures are randomized, the same header and
//! payload and a signature that jsonwebtoken's `decode` accepts.

use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims};
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct AppClaims {
    tenant: String,
    /// Characters JSON escapes, and some it does not.
    note: String,
}

fn keys() -> Vec<Key> {
    let mut keys = Vec::new();
    for alg in Algorithm::ALL {
        keys.push(Key::generate(format!("k-{alg}"), alg).unwrap());
        if !alg.is_symmetric() {
            // The same private key read back from its PEM, as a deployment loads it.
            let generated = keys.last().unwrap();
            let pem = generated.private_pkcs8_pem().unwrap().to_owned();
            keys.push(Key::from_pem(format!("pem-{alg}"), alg, pem.as_bytes()).unwrap());
        }
    }
    keys
}

fn decoding_key(key: &Key) -> DecodingKey {
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_str(&key.public_jwk_json().unwrap()).unwrap();
    DecodingKey::from_jwk(&jwk).unwrap()
}

#[test]
fn the_prepared_signer_signs_as_jsonwebtoken_does() {
    for key in keys() {
        let alg = key.algorithm();
        let kid = key.kid().to_owned();
        let decoding = (!alg.is_symmetric()).then(|| decoding_key(&key));
        let issuer = Issuer::new(KeySet::new(key).unwrap())
            .with_iss("https://auth.example")
            .with_aud("api");
        for note in [
            "plain",
            "quote \" backslash \\ newline \n tab \t",
            "é ✓ \u{1F600}",
            "",
        ] {
            let mut claims = issuer
                .claims(
                    "user-1",
                    AppClaims {
                        tenant: "acme".into(),
                        note: note.into(),
                    },
                )
                .unwrap();
            claims.sid = Some("sess-1".into());
            claims.roles = Some(vec!["admin".into()]);
            let fast = issuer.sign(&claims).unwrap();
            let reference = issuer.sign_reference(&claims).unwrap();
            let (fast_message, _) = fast.rsplit_once('.').unwrap();
            let (reference_message, _) = reference.rsplit_once('.').unwrap();
            assert_eq!(fast_message, reference_message, "{alg}: header and payload");
            let randomized = matches!(alg, Algorithm::ES256 | Algorithm::ES384 | Algorithm::PS256);
            if !randomized {
                assert_eq!(fast, reference, "{alg}: the whole token");
            }
            // Both verify, with baton's verifier and with jsonwebtoken's decode.
            let verifier = issuer.verifier();
            for token in [&fast, &reference] {
                let verified: Claims<AppClaims> = verifier.verify(token).unwrap();
                assert_eq!(verified, claims, "{alg}");
                let mut validation = Validation::new(alg.as_str().parse().unwrap());
                validation.set_issuer(&["https://auth.example"]);
                validation.set_audience(&["api"]);
                if let Some(decoding) = &decoding {
                    let decoded =
                        jsonwebtoken::decode::<Claims<AppClaims>>(token, decoding, &validation)
                            .unwrap();
                    assert_eq!(decoded.claims, claims, "{alg}");
                    assert_eq!(decoded.header.kid.as_deref(), Some(kid.as_str()));
                }
            }
        }
    }
}

#[test]
fn a_verification_only_key_does_not_sign() {
    let signing = Key::generate("k", Algorithm::ES256).unwrap();
    let public = Key::from_jwk(&signing.public_jwk_json().unwrap()).unwrap();
    assert!(!public.can_sign());
    let issuer = Issuer::new(KeySet::verify_only([public]).unwrap());
    let claims = issuer.claims("u", NoCustomClaims {}).unwrap();
    assert!(issuer.sign(&claims).is_err());
    assert!(issuer.sign_reference(&claims).is_err());
    // What the private key signs, the public key alone verifies.
    let token = Issuer::new(KeySet::new(signing).unwrap())
        .sign(&claims)
        .unwrap();
    let verified: Claims = issuer.verifier().verify(&token).unwrap();
    assert_eq!(verified, claims);
}
