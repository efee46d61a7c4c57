//! The layer checks a token's `token68` syntax (RFC 9110 section 11.2) only when the token
//! fails to verify. Held here to the rule it replaces, the syntax checked first: a valid token
//! with any one byte replaced, or padding added, is answered 400 `invalid_request` exactly
//! when it is not `token68`, and 401 `invalid_token` otherwise; none is ever let through.

use std::convert::Infallible;

use baton_bearer::{BearerVerifyLayer, Rejection, RejectionKind};
use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims, TokenCache};
use futures_util::FutureExt as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service, service_fn};

/// The rule as RFC 9110 states it: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
/// *"="`.
fn is_token68(token: &[u8]) -> bool {
    let body = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body > 0
        && token[..body]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[test]
fn a_token_that_does_not_verify_is_400_exactly_when_it_is_not_token68() {
    for (alg, cached) in [
        (Algorithm::HS256, false),
        (Algorithm::HS256, true),
        (Algorithm::EdDSA, true),
    ] {
        let issuer = Issuer::new(KeySet::new(Key::generate("k", alg).unwrap()).unwrap());
        let token = issuer
            .issue("alice", Some("s1"), NoCustomClaims {})
            .unwrap()
            .token;
        let mut verifier = issuer.verifier();
        if cached {
            verifier = verifier.with_cache(TokenCache::new(64, 1 << 16));
        }
        let mut service =
            BearerVerifyLayer::new(verifier).layer(service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
        // The status, and the rejection's `invalid_request` description or `invalid_token`.
        let mut send = |value: &[u8]| -> Option<(StatusCode, Result<(), Option<&'static str>>)> {
            // Bytes a header cannot carry (controls, DEL) never reach a layer.
            let value = HeaderValue::from_bytes(value).ok()?;
            let req = Request::get("/")
                .header(header::AUTHORIZATION, value)
                .body(())
                .unwrap();
            let res = service
                .call(req)
                .now_or_never()
                .expect("the service is always ready")
                .unwrap();
            let kind = match res.extensions().get::<Rejection>().map(Rejection::kind) {
                None => Ok(()),
                Some(RejectionKind::InvalidRequest(description)) => Err(Some(*description)),
                Some(RejectionKind::InvalidToken(_)) => Err(None),
                Some(other) => panic!("unexpected rejection {other:?}"),
            };
            Some((res.status(), kind))
        };
        // The token itself passes, through the cache too.
        for _ in 0..2 {
            let ok = send(format!("Bearer {token}").as_bytes()).unwrap();
            assert_eq!(ok, (StatusCode::OK, Ok(())), "{alg}");
        }

        let bytes = token.as_bytes();
        let dots: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'.').collect();
        // Every byte near the ends and the dots, and a spread of others.
        let mut positions: Vec<usize> = (0..4).chain(bytes.len() - 4..bytes.len()).collect();
        for &d in &dots {
            positions.extend(d.saturating_sub(2)..(d + 3).min(bytes.len()));
        }
        positions.extend((0..bytes.len()).step_by(5));
        let mut checked = 0;
        for &i in &positions {
            for b in (0x20u8..=0xff).filter(|&b| b != bytes[i]) {
                let mut mutated = bytes.to_vec();
                mutated[i] = b;
                let mut value = b"Bearer ".to_vec();
                value.extend_from_slice(&mutated);
                let Some((status, kind)) = send(&value) else {
                    continue;
                };
                checked += 1;
                // Spaces before the token belong to the header's syntax, not the token's.
                let at = format!("{alg}, cached {cached}: byte {b:#04x} at {i}");
                if is_token68(mutated.trim_ascii_start()) {
                    assert_eq!(
                        (status, kind),
                        (StatusCode::UNAUTHORIZED, Err(None)),
                        "{at}"
                    );
                } else {
                    let syntax = Err(Some("bearer token has invalid syntax"));
                    assert_eq!((status, kind), (StatusCode::BAD_REQUEST, syntax), "{at}");
                }
            }
        }
        assert!(checked > 10_000, "{checked} mutations checked");
        // Padding: token68 at the end only.
        let (status, _) = send(format!("Bearer {token}==").as_bytes()).unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (head, tail) = token.split_at(dots[0]);
        let (status, _) = send(format!("Bearer {head}={tail}").as_bytes()).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
