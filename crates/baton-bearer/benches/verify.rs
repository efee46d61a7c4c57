//! Per algorithm, in one run: the signature check alone with a key prepared once (the crypto
//! floor), `jsonwebtoken::decode`, baton's `Verifier` (prepared keys) and its jsonwebtoken
//! reference path, and the whole `BearerVerifyLayer` around a trivial service.
//!
//! ```text
//! cargo bench -p baton-bearer --bench verify
//! ```
//!
//! Every variant gets the same token, verifies the same claims and drops its output outside
//! the timed section; the trivial service hands the request back inside the response so that
//! dropping the request is not counted either.

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_bearer::BearerVerifyLayer;
use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, TokenCache};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use http::{Request, Response, header};
use jsonwebtoken::{DecodingKey, DecodingKeyKind, Validation};
use tower::{Layer, Service, service_fn};

/// The benchmarked services answer at once (the layer's futures are ready around a ready
/// service).
const READY: &str = "the benchmarked service is always ready";

/// Requests are built before each batch, outside the timed section; small batches keep them in
/// the CPU cache as they would be in a server that has just parsed them (a batch of thousands
/// would charge the layer for reading cold memory).
const BATCH: BatchSize = BatchSize::NumIterations(32);

fn decoding_key(key: &Key) -> DecodingKey {
    match key.algorithm() {
        Algorithm::HS256 => unreachable!("HMAC keys are built from the secret directly"),
        _ => DecodingKey::from_jwk(&serde_json::from_str(&key.public_jwk_json().unwrap()).unwrap())
            .unwrap(),
    }
}

/// A key prepared once, the way the fast path prepares it.
enum Floor {
    Hmac(Box<hmac::Key>),
    Public(ParsedPublicKey),
}

impl Floor {
    fn new(alg: Algorithm, jwt_key: &DecodingKey, secret: &[u8]) -> Floor {
        let bytes = || match jwt_key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => bytes.clone(),
            DecodingKeyKind::RsaModulusExponent { .. } => unreachable!("not RSA"),
        };
        match alg {
            Algorithm::HS256 => Floor::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
            Algorithm::ES256 => Floor::Public(
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, bytes()).unwrap(),
            ),
            Algorithm::EdDSA => {
                Floor::Public(ParsedPublicKey::new(&signature::ED25519, bytes()).unwrap())
            }
            Algorithm::RS256 => match jwt_key.kind() {
                DecodingKeyKind::RsaModulusExponent { n, e } => Floor::Public(
                    signature::RsaPublicKeyComponents { n, e }
                        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                        .unwrap(),
                ),
                DecodingKeyKind::SecretOrDer(_) => unreachable!("from a JWK: components"),
            },
            _ => unreachable!("not benchmarked"),
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Floor::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Floor::Public(key) => key.verify_sig(message, signature).is_ok(),
        }
    }
}

fn bench_algorithm(c: &mut Criterion, alg: Algorithm) {
    let secret = [7u8; 32];
    let key = match alg {
        Algorithm::HS256 => Key::hmac("k1", alg, secret).unwrap(),
        _ => Key::generate("k1", alg).unwrap(),
    };
    let jwt_key = match alg {
        Algorithm::HS256 => DecodingKey::from_secret(&secret).unwrap(),
        _ => decoding_key(&key),
    };
    let issuer = Issuer::new(KeySet::new(key).unwrap())
        .with_iss("https://auth.example")
        .with_aud("api");
    let token = issuer
        .issue("user-1234", Some("sess-5678"), NoCustomClaims {})
        .unwrap()
        .token;
    let verifier = issuer.verifier();

    let jwt_alg: jsonwebtoken::Algorithm = alg.as_str().parse().unwrap();
    let mut validation = Validation::new(jwt_alg);
    validation.set_issuer(&["https://auth.example"]);
    validation.set_audience(&["api"]);

    let mut service =
        BearerVerifyLayer::new(verifier.clone()).layer(service_fn(|req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(Response::new(req))
        }));
    // The same trivial service without the layer: the layer's own cost is
    // bearer_layer - service_alone, to compare with baton_verifier.
    let mut bare = service_fn(|req: Request<()>| async move {
        Ok::<_, std::convert::Infallible>(Response::new(req))
    });
    let bearer = format!("Bearer {token}");
    // The request as a route layer gets it behind axum's router, which has put the matched
    // path and the URL parameters in its extensions; `bearer_layer_unrouted` sends requests
    // with no extension yet (the layer then pays for the extension map as well).
    let make_unrouted = || {
        Request::builder()
            .uri("/api/me")
            .header(header::AUTHORIZATION, bearer.as_str())
            .body(())
            .unwrap()
    };
    let make_request = || {
        let mut req = make_unrouted();
        req.extensions_mut()
            .insert(MatchedPath(Arc::from("/api/me")));
        req.extensions_mut().insert(UrlParams(Vec::new()));
        req
    };
    // The layer must really accept the token (and the others agree).
    assert_eq!(
        service
            .call(make_request())
            .now_or_never()
            .expect(READY)
            .unwrap()
            .status(),
        200
    );
    assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());
    assert!(jsonwebtoken::decode::<Claims<NoCustomClaims>>(&token, &jwt_key, &validation).is_ok());

    // The crypto floor: the signature alone, checked with a key prepared once (aws-lc-rs's
    // HMAC key or parsed public key), the signature already decoded.
    let (message, signature_b64) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
    let floor = Floor::new(alg, &jwt_key, &secret);
    assert!(floor.verify(message.as_bytes(), &signature));

    let mut group = c.benchmark_group(alg.as_str());
    group.bench_function("prepared_key_verify", |b| {
        b.iter_batched(
            || (),
            |()| floor.verify(black_box(message.as_bytes()), black_box(&signature)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("jsonwebtoken_decode", |b| {
        b.iter_batched(
            || (),
            |()| {
                jsonwebtoken::decode::<Claims<NoCustomClaims>>(
                    black_box(&token),
                    &jwt_key,
                    &validation,
                )
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("baton_verifier", |b| {
        b.iter_batched(
            || (),
            |()| verifier.verify::<NoCustomClaims>(black_box(&token)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("baton_verifier_reference", |b| {
        b.iter_batched(
            || (),
            |()| verifier.verify_reference::<NoCustomClaims>(black_box(&token)),
            BatchSize::SmallInput,
        )
    });
    // The verified-token cache: a repeated token (hit), and a token not in the cache (miss:
    // the cache is emptied before each iteration, outside the timed section).
    let cache = TokenCache::new(2, 1 << 20);
    let cached = verifier.clone().with_cache(cache.clone());
    assert!(cached.verify_cached::<NoCustomClaims>(&token).is_ok());
    assert_eq!(cache.len(), 1);
    group.bench_function("verifier_cache_hit", |b| {
        b.iter_batched(
            || (),
            |()| cached.verify_cached::<NoCustomClaims>(black_box(&token)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verifier_cache_miss", |b| {
        b.iter_batched(
            || cache.clear(),
            |()| cached.verify_cached::<NoCustomClaims>(black_box(&token)),
            BatchSize::PerIteration,
        )
    });
    let mut cached_service =
        BearerVerifyLayer::new(cached.clone()).layer(service_fn(|req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(Response::new(req))
        }));
    group.bench_function("bearer_layer_cache_hit", |b| {
        b.iter_batched(
            make_request,
            |req| cached_service.call(req).now_or_never().expect(READY),
            BATCH,
        )
    });
    // What any middleware must do at the least: read the header, verify (cached), put the
    // claims in the extensions, call the service.
    let minimal_verifier = cached.clone();
    let mut minimal = service_fn(move |mut req: Request<()>| {
        let claims = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| minimal_verifier.verify_cached::<NoCustomClaims>(t));
        if let Some(Ok(claims)) = claims {
            req.extensions_mut().insert(claims);
        }
        async move { Ok::<_, std::convert::Infallible>(Response::new(req)) }
    });
    group.bench_function("minimal_middleware_cache_hit", |b| {
        b.iter_batched(
            make_request,
            |req| minimal.call(req).now_or_never().expect(READY),
            BATCH,
        )
    });
    group.bench_function("service_alone", |b| {
        b.iter_batched(
            make_request,
            |req| bare.call(req).now_or_never().expect(READY),
            BATCH,
        )
    });
    group.bench_function("bearer_layer", |b| {
        b.iter_batched(
            make_request,
            |req| service.call(req).now_or_never().expect(READY),
            BATCH,
        )
    });
    group.bench_function("bearer_layer_unrouted", |b| {
        b.iter_batched(
            make_unrouted,
            |req| service.call(req).now_or_never().expect(READY),
            BATCH,
        )
    });
    group.finish();
}

/// What axum's router puts in a request's extensions before a route layer sees it (stand-ins
/// of the same shape: the matched path, the URL parameters).
#[derive(Clone)]
struct MatchedPath(#[allow(dead_code)] Arc<str>);
#[derive(Clone)]
struct UrlParams(#[allow(dead_code)] Vec<(Arc<str>, Arc<str>)>);

/// A DPoP proof (RFC 9449) per algorithm: its signature alone with the client's public key
/// prepared once (the floor), the whole proof check (header, the JWK made into a key, the
/// signature, the claims, the thumbprint), and a request through the layer with a cached
/// access token and a fresh proof (one proof check, no second signature check).
fn bench_dpop(c: &mut Criterion, alg: Algorithm) {
    use baton_bearer::{Dpop, MemoryReplayCache};
    use baton_token::{DpopKey, DpopVerifier, ProofRequest, TestClock};

    let clock = TestClock::at_secs(1_800_000_000);
    let key = DpopKey::generate(alg)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let htu = "https://api.example/orders";
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    let proof = key.proof("GET", htu, Some(token), None).unwrap();
    let verifier = DpopVerifier::new().with_clock(Arc::new(clock.clone()));
    let request = ProofRequest::new("GET", htu).with_access_token(token);
    assert!(verifier.verify(&proof, &request).is_ok());

    // The floor: the client's public key parsed once, the signature checked.
    let (header_b64, rest) = proof.split_once('.').unwrap();
    let (claims_b64, signature_b64) = rest.split_once('.').unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
    let coord = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(header["jwk"][name].as_str().unwrap())
            .unwrap()
    };
    let floor = match alg {
        Algorithm::ES256 => {
            let mut point = vec![4u8];
            point.extend(coord("x"));
            point.extend(coord("y"));
            ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
        _ => ParsedPublicKey::new(&signature::ED25519, coord("x")).unwrap(),
    };
    let message = format!("{header_b64}.{claims_b64}");
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
    assert!(floor.verify_sig(message.as_bytes(), &signature).is_ok());

    let mut group = c.benchmark_group(format!("dpop_proof/{alg}"));
    group.bench_function("signature_floor", |b| {
        b.iter(|| floor.verify_sig(black_box(message.as_bytes()), black_box(&signature)))
    });
    // The floor plus the parsing of one small JWT, what any proof check must do at least:
    // the three parts base64-decoded, the header and the claims parsed as JSON, the signature
    // checked with a key parsed once.
    group.bench_function("floor_plus_parsing", |b| {
        b.iter(|| {
            let proof = black_box(proof.as_str());
            let (header_b64, rest) = proof.split_once('.').unwrap();
            let (claims_b64, signature_b64) = rest.split_once('.').unwrap();
            let header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64).unwrap()).unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
            let message = &proof[..header_b64.len() + 1 + claims_b64.len()];
            let verified = floor.verify_sig(message.as_bytes(), &signature);
            (header, claims, verified)
        })
    });
    group.bench_function("proof_verify", |b| {
        b.iter(|| verifier.verify(black_box(&proof), black_box(&request)))
    });

    // Through the layer: the access token from the cache, a fresh proof per request (made
    // outside the timed section), the replay cache large enough for the whole run.
    let signing = Key::hmac("hs", Algorithm::HS256, [5; 32]).unwrap();
    let issuer = Issuer::new(KeySet::new(signing).unwrap()).with_clock(clock.clone());
    let claims = issuer
        .claims("alice", NoCustomClaims {})
        .unwrap()
        .with_dpop_jkt(key.jkt());
    let bound = issuer.sign(&claims).unwrap();
    let dpop = Dpop::new("https://api.example")
        .unwrap()
        .with_verifier(DpopVerifier::new().with_clock(Arc::new(clock.clone())))
        .with_replay_cache(MemoryReplayCache::new(10_000_000));
    let layer =
        BearerVerifyLayer::new(issuer.verifier().with_cache(TokenCache::new(1024, 1 << 20)))
            .with_dpop(dpop);
    let mut service = layer.layer(service_fn(|req: Request<()>| async move {
        Ok::<_, std::convert::Infallible>(Response::new(req))
    }));
    let auth = format!("DPoP {bound}");
    let make_request = || {
        let proof = key.proof("GET", htu, Some(&bound), None).unwrap();
        Request::get("/orders")
            .header(header::AUTHORIZATION, &auth)
            .header("dpop", proof)
            .body(())
            .unwrap()
    };
    assert_eq!(
        service
            .call(make_request())
            .now_or_never()
            .expect(READY)
            .unwrap()
            .status(),
        200
    );
    group.bench_function("layer_cached_token_fresh_proof", |b| {
        b.iter_batched(
            make_request,
            |req| service.call(req).now_or_never().expect(READY),
            BATCH,
        )
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        bench_dpop(c, alg);
    }
    for alg in [
        Algorithm::HS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
    ] {
        bench_algorithm(c, alg);
    }
}

criterion_group!(verify, benches);
criterion_main!(verify);
