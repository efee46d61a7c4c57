//! Cookie reading on arbitrary `Cookie` headers, and the cookie policy on arbitrary
//! `Set-Cookie` values: never panics; a rewritten credential cookie is HttpOnly and Secure.
#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;

use baton::cookie::{CookiePolicyLayer, CookieSpec, read_cookie};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service};

static SPEC: LazyLock<CookieSpec> = LazyLock::new(|| CookieSpec::refresh("/auth").build().unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, value.clone());
    let _ = read_cookie(&headers, "__Secure-refresh", 8192);
    let _ = SPEC.read(&headers);

    let mut service = CookiePolicyLayer::new()
        .enforce(&SPEC)
        .layer(tower::service_fn(move |_req: Request<()>| {
            let value = value.clone();
            async move {
                let mut res = Response::new(());
                res.headers_mut().append(SET_COOKIE, value);
                Ok::<_, Infallible>(res)
            }
        }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let res = runtime.block_on(service.call(Request::new(()))).unwrap();
    for out in res.headers().get_all(SET_COOKIE) {
        let text = out.to_str().unwrap_or("");
        if text.starts_with("__Secure-refresh=") && out.as_bytes() != data {
            assert!(
                text.contains("HttpOnly") && text.contains("Secure") && text.contains("Path=/auth"),
                "{text}"
            );
        }
    }
});
