//! The layer's success path allocates once of its own: the box the claims go into in the
//! request's extensions. Everything else it allocates is the verifier's (the claims' strings
//! and their `Arc`; nothing for a cache hit, which shares the cached claims) or `http`'s (the
//! extension map of a request that had none yet).
//!
//! Counted by a global allocator that counts every allocation of the process; this file holds
//! one test so that nothing else runs beside it.

use std::alloc::System;
use std::convert::Infallible;
use std::sync::Arc;

use baton_bearer::BearerVerifyLayer;
use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, TokenCache};
use futures_util::FutureExt as _;
use http::{Request, Response, header};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocations (and reallocations) made while `f` runs, and its output.
fn count<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    (change.allocations + change.reallocations, out)
}

/// What a router puts in the request's extensions before a route layer runs (axum: the
/// matched path and the URL parameters).
#[derive(Clone)]
struct Routed;
#[derive(Clone)]
struct Params;

#[test]
fn the_layer_allocates_once_over_the_verifier() {
    for (alg, cached) in [
        (Algorithm::HS256, false),
        (Algorithm::HS256, true),
        (Algorithm::ES256, true),
    ] {
        let key = Key::generate("k1", alg).unwrap();
        let issuer = Issuer::new(KeySet::new(key).unwrap())
            .with_iss("https://auth.example")
            .with_aud("api");
        let token = issuer
            .issue("user-1234", Some("sess-5678"), NoCustomClaims {})
            .unwrap()
            .token;
        let mut verifier = issuer.verifier();
        if cached {
            verifier = verifier.with_cache(TokenCache::new(16, 1 << 16));
            verifier.verify_cached::<NoCustomClaims>(&token).unwrap();
        }
        // The service checks the claims went into the extensions, and hands the request back
        // so that its drop is counted outside.
        let mut service = BearerVerifyLayer::new(verifier.clone()).layer(service_fn(
            |req: Request<()>| async move {
                let found = req
                    .extensions()
                    .get::<Arc<Claims>>()
                    .is_some_and(|c| c.sub == "user-1234");
                let mut res = Response::new(req);
                if !found {
                    *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok::<_, Infallible>(res)
            },
        ));
        let bearer = format!("Bearer {token}");
        // `entries` extensions already there.
        let request = |entries: usize| {
            let mut req = Request::get("/api/me")
                .header(header::AUTHORIZATION, bearer.as_str())
                .body(())
                .unwrap();
            if entries > 0 {
                req.extensions_mut().insert(Routed);
            }
            if entries > 1 {
                req.extensions_mut().insert(Params);
            }
            req
        };
        // Warm: the verifier remembers the header, thread-locals are set up.
        for _ in 0..2 {
            let _ = service
                .call(request(1))
                .now_or_never()
                .expect("the service is always ready");
            let _ = verifier.verify_cached::<NoCustomClaims>(&token);
        }

        let (verifying, claims) = count(|| verifier.verify_cached::<NoCustomClaims>(&token));
        assert!(claims.is_ok(), "{alg:?}");
        if cached {
            assert_eq!(
                verifying, 0,
                "{alg:?}: a cache hit shares the cached claims, it copies nothing"
            );
        } else {
            assert!(verifying > 0, "{alg:?}: the claims' strings and their Arc");
        }
        // A debug build also inserts the claims-type marker: a fourth entry makes the table of
        // a request axum routed grow (one more allocation). A release build does not.
        let marker = usize::from(cfg!(debug_assertions));
        for (entries, of_http) in [(1, 0), (2, marker), (0, 2)] {
            let req = request(entries);
            let (layer, response) = count(|| {
                service
                    .call(req)
                    .now_or_never()
                    .expect("the service is always ready")
            });
            assert_eq!(
                response.unwrap().status(),
                200,
                "{alg:?}: the claims are in"
            );
            assert_eq!(
                layer,
                verifying + 1 + of_http,
                "{alg:?}, cached {cached}, {entries} extensions before: the verifier's \
                 {verifying}, one box for the claims and {of_http} for http's extension map"
            );
        }
    }
}
