//! Per algorithm, in one run: `jsonwebtoken::decode` alone, baton's `Verifier`, and the whole
//! `BearerVerifyLayer` around a trivial service.
//!
//! ```text
//! cargo bench -p baton-bearer --bench verify
//! ```
//!
//! Every variant gets the same token, verifies the same claims and drops its output outside
//! the timed section; the trivial service hands the request back inside the response so that
//! dropping the request is not counted either.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use baton_bearer::BearerVerifyLayer;
use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use jsonwebtoken::{DecodingKey, Validation};
use tower::{Layer, Service, service_fn};

/// Polls a future that is ready at once (the layer's futures are, around a ready service).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the benchmarked service is always ready"),
    }
}

fn decoding_key(key: &Key) -> DecodingKey {
    match key.algorithm() {
        Algorithm::HS256 => unreachable!("HMAC keys are built from the secret directly"),
        _ => DecodingKey::from_jwk(&serde_json::from_str(&key.public_jwk_json().unwrap()).unwrap())
            .unwrap(),
    }
}

fn bench_algorithm(c: &mut Criterion, alg: Algorithm) {
    let secret = [7u8; 32];
    let key = match alg {
        Algorithm::HS256 => Key::hmac("k1", alg, secret).unwrap(),
        _ => Key::generate("k1", alg).unwrap(),
    };
    let jwt_key = match alg {
        Algorithm::HS256 => DecodingKey::from_secret(&secret),
        _ => decoding_key(&key),
    };
    let issuer = Issuer::new(KeySet::new(key).unwrap())
        .with_issuer("https://auth.example")
        .with_audience("api");
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
    let bearer = format!("Bearer {token}");
    let make_request = || {
        Request::builder()
            .uri("/api/me")
            .header(header::AUTHORIZATION, bearer.as_str())
            .body(())
            .unwrap()
    };
    // The layer must really accept the token (and the others agree).
    assert_eq!(now(service.call(make_request())).unwrap().status(), 200);
    assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());
    assert!(jsonwebtoken::decode::<Claims<NoCustomClaims>>(&token, &jwt_key, &validation).is_ok());

    let mut group = c.benchmark_group(alg.as_str());
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
    group.bench_function("bearer_layer", |b| {
        b.iter_batched(
            make_request,
            |req| now(service.call(req)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
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
