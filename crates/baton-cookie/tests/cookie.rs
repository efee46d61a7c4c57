//! Cookie specs, the Set-Cookie policy and the cross-site guard, through the real layers.

use std::convert::Infallible;
use std::time::Duration;

use baton_cookie::{
    CookieError, CookiePolicyLayer, CookieSpec, CrossSiteRejection, Match, OriginGuardLayer,
    Requirements, SameSite, read_cookie,
};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt, service_fn};

fn attributes(header: &HeaderValue) -> Vec<String> {
    header
        .to_str()
        .unwrap()
        .split("; ")
        .map(str::to_owned)
        .collect()
}

#[test]
fn refresh_cookie_defaults() {
    let spec = CookieSpec::refresh("/auth")
        .with_max_age(Duration::from_secs(1_209_600))
        .build()
        .unwrap();
    assert_eq!(spec.name(), "__Secure-refresh");
    let attrs = attributes(&spec.set("v1.token").unwrap());
    assert_eq!(attrs[0], "__Secure-refresh=v1.token");
    for want in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/auth",
        "Max-Age=1209600",
    ] {
        assert!(
            attrs.iter().any(|a| a == want),
            "{want} missing from {attrs:?}"
        );
    }
    assert!(!attrs.iter().any(|a| a.starts_with("Domain")));
}

#[test]
fn access_cookie_defaults() {
    let spec = CookieSpec::access()
        .with_max_age(Duration::from_secs(900))
        .build()
        .unwrap();
    assert_eq!(spec.name(), "__Host-access");
    let attrs = attributes(&spec.set("a.b.c").unwrap());
    assert_eq!(attrs[0], "__Host-access=a.b.c");
    for want in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=900",
    ] {
        assert!(
            attrs.iter().any(|a| a == want),
            "{want} missing from {attrs:?}"
        );
    }
    assert!(!attrs.iter().any(|a| a.starts_with("Domain")));
}

#[test]
fn clearing_sends_the_same_name_path_and_domain_expired() {
    let spec = CookieSpec::refresh("/auth")
        .with_max_age(Duration::from_secs(60))
        .build()
        .unwrap();
    let attrs = attributes(&spec.clear());
    assert_eq!(attrs[0], "__Secure-refresh=");
    assert!(attrs.iter().any(|a| a == "Path=/auth"));
    assert!(attrs.iter().any(|a| a == "Max-Age=0"));
    let parsed = cookie::Cookie::parse(spec.clear().to_str().unwrap().to_owned()).unwrap();
    let expires = parsed.expires_datetime().expect("an expiry");
    assert!(
        expires < cookie::time::OffsetDateTime::now_utc(),
        "{expires} is not in the past"
    );

    let spec = CookieSpec::named("sid")
        .with_domain("example.com")
        .build()
        .unwrap();
    let attrs = attributes(&spec.clear());
    assert!(attrs.iter().any(|a| a == "Domain=example.com"));
    assert!(attrs.iter().any(|a| a == "Path=/"));
}

#[test]
fn unsafe_or_browser_rejected_specs_fail_when_built() {
    let bad = [
        CookieSpec::named("x")
            .with_same_site(SameSite::None)
            .dangerous_insecure_http()
            .build(),
        CookieSpec::access().with_domain("example.com").build(),
        CookieSpec::access().with_path("/api").build(),
        CookieSpec::access().dangerous_insecure_http().build(),
        CookieSpec::refresh("/auth")
            .dangerous_insecure_http()
            .build(),
        CookieSpec::refresh("/").build(),
        CookieSpec::refresh("auth").build(),
        CookieSpec::refresh("/auth;x").build(),
        CookieSpec::named("a b").build(),
        CookieSpec::named("").build(),
    ];
    for (i, result) in bad.into_iter().enumerate() {
        assert!(
            matches!(result, Err(CookieError::InvalidSpec(_))),
            "case {i}: {result:?}"
        );
    }
    // Plain HTTP needs both the opt-in and a name without the secure prefixes.
    let plain = CookieSpec::refresh("/auth")
        .with_name("refresh")
        .dangerous_insecure_http()
        .build()
        .unwrap();
    assert!(
        !attributes(&plain.set("v").unwrap())
            .iter()
            .any(|a| a == "Secure")
    );
    assert!(
        CookieSpec::named("x")
            .with_same_site(SameSite::None)
            .build()
            .is_ok()
    );
}

#[test]
fn values_that_are_not_cookie_octets_are_refused() {
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    for bad in ["a b", "a;b", "a\"b", "a,b", "a\\b", "é"] {
        assert_eq!(
            spec.set(bad).unwrap_err(),
            CookieError::InvalidValue,
            "{bad:?}"
        );
    }
}

fn cookie_headers(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(COOKIE, HeaderValue::from_str(v).unwrap());
    }
    headers
}

#[test]
fn reading_across_headers_and_duplicates() {
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    let headers = cookie_headers(&["a=1; b=2", "__Secure-refresh=v1.tok; c=3"]);
    assert_eq!(spec.read(&headers).unwrap(), Some("v1.tok"));
    let headers = cookie_headers(&["__Secure-refresh=same", "__Secure-refresh=same"]);
    assert_eq!(spec.read(&headers).unwrap(), Some("same"));
    let headers = cookie_headers(&["__Secure-refresh=one; __Secure-refresh=two"]);
    let err = spec.read(&headers).unwrap_err();
    assert!(matches!(err, CookieError::Ambiguous(_)));
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(spec.read(&cookie_headers(&["other=1"])).unwrap(), None);
    assert_eq!(
        spec.read(&cookie_headers(&["__Secure-refresh="])).unwrap(),
        None
    );
    assert_eq!(
        spec.read(&cookie_headers(&["garbage;;; =; ==; __Secure-refresh=ok"]))
            .unwrap(),
        Some("ok")
    );
}

#[test]
fn a_hundred_cookies_in_one_header() {
    let mut header = (0..99).map(|i| format!("c{i}=v{i}")).collect::<Vec<_>>();
    header.insert(57, "__Secure-refresh=found".to_owned());
    let headers = cookie_headers(&[&header.join("; ")]);
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    assert_eq!(spec.read(&headers).unwrap(), Some("found"));
    assert_eq!(read_cookie(&headers, "c98", 8192).unwrap(), Some("v98"));
}

#[test]
fn a_sixteen_kib_cookie_header_is_a_clear_4xx() {
    let big = format!("__Secure-refresh=x; pad={}", "a".repeat(16 * 1024));
    let headers = cookie_headers(&[&big]);
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    let err = spec.read(&headers).unwrap_err();
    assert_eq!(err, CookieError::TooLarge(8192));
    assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

async fn set_cookies(layer: CookiePolicyLayer, sent: &[&'static str]) -> Vec<String> {
    let sent: Vec<&'static str> = sent.to_vec();
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let sent = sent.clone();
        async move {
            let mut res = Response::new(());
            for v in sent {
                res.headers_mut()
                    .append(SET_COOKIE, HeaderValue::from_static(v));
            }
            Ok::<_, Infallible>(res)
        }
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn handler_setting_the_refresh_cookie_without_http_only_gets_it_fixed() {
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    let out = set_cookies(
        CookiePolicyLayer::new().enforce(&spec),
        &["__Secure-refresh=v1.x; Path=/auth"],
    )
    .await;
    assert_eq!(
        out,
        ["__Secure-refresh=v1.x; HttpOnly; SameSite=Strict; Secure; Path=/auth"]
    );
    // Weaker SameSite, wider path and a Domain are all tightened.
    let out = set_cookies(
        CookiePolicyLayer::new().enforce(&spec),
        &["__Secure-refresh=v1.x; SameSite=None; Secure; HttpOnly; Path=/; Domain=example.com"],
    )
    .await;
    assert_eq!(
        out,
        ["__Secure-refresh=v1.x; HttpOnly; SameSite=Strict; Secure; Path=/auth"]
    );
}

#[tokio::test]
async fn rewrite_and_strip_across_several_set_cookie_headers() {
    let layer = CookiePolicyLayer::new()
        .strip(Match::Prefix("debug_".to_owned()))
        .rewrite(
            Match::Name("prefs".to_owned()),
            Requirements::default().with_same_site(SameSite::Lax),
        );
    let out = set_cookies(
        layer,
        &[
            "debug_trace=1",
            "session=abc",
            "prefs=dark; SameSite=None; Secure",
            "theme=light",
            "debug_more=2; HttpOnly",
            "not a cookie at all",
        ],
    )
    .await;
    assert_eq!(
        out,
        [
            "session=abc; HttpOnly; Secure",
            "prefs=dark; SameSite=Lax; Secure",
            "theme=light",
            "not a cookie at all",
        ]
    );
}

#[tokio::test]
async fn credential_default_applies_only_to_credential_names() {
    let out = set_cookies(
        CookiePolicyLayer::new(),
        &["auth_token=x", "lang=en", "__Host-x=1; Path=/"],
    )
    .await;
    assert_eq!(
        out,
        [
            "auth_token=x; HttpOnly; Secure",
            "lang=en",
            "__Host-x=1; HttpOnly; Secure; Path=/"
        ]
    );
    let out = set_cookies(
        CookiePolicyLayer::new().without_credential_default(),
        &["auth_token=x"],
    )
    .await;
    assert_eq!(out, ["auth_token=x"]);
}

#[tokio::test]
async fn already_compliant_cookies_are_untouched_and_insecure_opt_in_skips_secure() {
    let compliant = "__Secure-refresh=v; HttpOnly; SameSite=Strict; Secure; Path=/auth; Max-Age=60";
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    assert_eq!(
        set_cookies(CookiePolicyLayer::new().enforce(&spec), &[compliant]).await,
        [compliant]
    );
    let out = set_cookies(
        CookiePolicyLayer::new().dangerous_allow_insecure_http(),
        &["session=1"],
    )
    .await;
    assert_eq!(out, ["session=1; HttpOnly"]);
}

async fn guard_status(
    layer: OriginGuardLayer,
    req: Request<String>,
) -> (StatusCode, Option<CrossSiteRejection>, String) {
    let svc = layer.layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(http_body_util::Full::<bytes::Bytes>::from(
            "ok",
        )))
    }));
    let res = svc.oneshot(req).await.unwrap();
    let status = res.status();
    let rejection = res.extensions().get::<CrossSiteRejection>().copied();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, rejection, String::from_utf8(body.to_vec()).unwrap())
}

fn request(method: &Method, headers: &[(&str, &str)]) -> Request<String> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri("/auth/refresh")
        .header("host", "app.example");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(String::new()).unwrap()
}

#[tokio::test]
async fn every_sec_fetch_site_value_by_method() {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS];
    // TRACE is not safe here (Go's and tower-http's rule): it echoes the request.
    let unsafe_ = [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::TRACE,
    ];
    let cases = [
        ("same-origin", true),
        ("none", true),
        ("same-site", false),
        ("cross-site", false),
        ("bogus", false),
    ];
    for (site, allowed) in cases {
        for m in &safe {
            let (status, _, _) = guard_status(
                OriginGuardLayer::new(),
                request(m, &[("sec-fetch-site", site)]),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{m} {site}");
        }
        for m in &unsafe_ {
            let (status, rejection, body) = guard_status(
                OriginGuardLayer::new(),
                request(m, &[("sec-fetch-site", site)]),
            )
            .await;
            if allowed {
                assert_eq!(status, StatusCode::OK, "{m} {site}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{m} {site}");
                assert_eq!(rejection, Some(CrossSiteRejection::FetchSite));
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(json["error"], "cross_site_request");
            }
        }
    }
    // A sibling subdomain is trusted only by name.
    let sibling = OriginGuardLayer::new()
        .trust_origin("https://admin.app.example")
        .unwrap();
    let from = |origin: &'static str| {
        request(
            &Method::POST,
            &[("sec-fetch-site", "same-site"), ("origin", origin)],
        )
    };
    let (status, _, _) = guard_status(sibling.clone(), from("https://admin.app.example")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, rejection, _) = guard_status(sibling, from("https://user.app.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(rejection, Some(CrossSiteRejection::FetchSite));
}

#[tokio::test]
async fn origin_without_sec_fetch_site() {
    let post = |origin: &'static str| request(&Method::POST, &[("origin", origin)]);
    assert_eq!(
        guard_status(OriginGuardLayer::new(), post("https://app.example"))
            .await
            .0,
        StatusCode::OK
    );
    for bad in [
        "https://evil.example",
        // Browsers send the host in lowercase; anything else is not theirs.
        "http://APP.example",
        "null",
        "https://app.example:8443",
        "app.example",
    ] {
        let (status, rejection, _) = guard_status(OriginGuardLayer::new(), post(bad)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(rejection, Some(CrossSiteRejection::Origin));
    }
}

#[tokio::test]
async fn trusted_origins_and_exempt_paths() {
    let layer = OriginGuardLayer::new()
        .trust_origin("https://Partner.example")
        .unwrap()
        .exempt_path("/webhooks/")
        .unwrap();
    let req = request(
        &Method::POST,
        &[
            ("origin", "https://partner.example"),
            ("sec-fetch-site", "cross-site"),
        ],
    );
    assert_eq!(guard_status(layer.clone(), req).await.0, StatusCode::OK);
    let req = request(
        &Method::POST,
        &[
            ("origin", "https://partner.example.evil"),
            ("sec-fetch-site", "cross-site"),
        ],
    );
    assert_eq!(
        guard_status(layer.clone(), req).await.0,
        StatusCode::FORBIDDEN
    );
    let hook = |path: &str| {
        Request::post(path)
            .header("sec-fetch-site", "cross-site")
            .body(String::new())
            .unwrap()
    };
    for exempt in ["/webhooks", "/webhooks/", "/webhooks/stripe"] {
        let (status, _, _) = guard_status(layer.clone(), hook(exempt)).await;
        assert_eq!(status, StatusCode::OK, "{exempt}");
    }
    // Exemptions are whole segments, not raw prefixes.
    for guarded in [
        "/webhooks-admin",
        "/webhooksx/y",
        "/webhook",
        "/api/webhooks",
    ] {
        let (status, rejection, _) = guard_status(layer.clone(), hook(guarded)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{guarded}");
        assert_eq!(rejection, Some(CrossSiteRejection::FetchSite));
    }
}

#[test]
fn malformed_trusted_origins_and_exemptions_are_refused() {
    for bad in [
        "null",
        "",
        "partner.example",
        "https://partner.example/",
        "https://partner.example/path",
        "https://partner.example?x=1",
        "https://partner.example#x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://bücher.example",
    ] {
        let err = OriginGuardLayer::new().trust_origin(bad).unwrap_err();
        assert!(
            matches!(err, baton_cookie::OriginGuardError::TrustedOrigin(_)),
            "{bad}: {err}"
        );
        assert!(std::error::Error::source(&err).is_some(), "{bad}");
    }
    for never in [
        "https://partner.example:443",
        "http://partner.example:80",
        "https://partner.example.",
        "https://user@partner.example",
    ] {
        let err = OriginGuardLayer::new().trust_origin(never).unwrap_err();
        assert!(
            matches!(err, baton_cookie::OriginGuardError::NeverMatches(_)),
            "{never}: {err}"
        );
    }
    assert!(
        OriginGuardLayer::new()
            .trust_origin("https://partner.example:8443")
            .is_ok()
    );
    assert!(OriginGuardLayer::new().exempt_path("webhooks").is_err());
    assert!(OriginGuardLayer::new().exempt_path("/webhooks").is_ok());
}

#[tokio::test]
async fn check_agrees_with_the_layer_and_uses_the_shared_renderer() {
    static RENDERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    struct Plain;
    impl baton_core::RenderError for Plain {
        fn render(&self, status: StatusCode, error: &str, _: &str) -> Response<bytes::Bytes> {
            RENDERED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut res = Response::new(bytes::Bytes::from(format!("plain {error}")));
            *res.status_mut() = status;
            res
        }
    }
    let layer = OriginGuardLayer::new().with_errors(Plain);
    let cross = || request(&Method::POST, &[("sec-fetch-site", "cross-site")]);
    assert_eq!(layer.check(&cross()), Err(CrossSiteRejection::FetchSite));
    assert_eq!(
        RENDERED.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "check renders nothing"
    );
    let (status, rejection, body) = guard_status(layer.clone(), cross()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(rejection, Some(CrossSiteRejection::FetchSite));
    assert_eq!(body, "plain cross_site_request");
    let old = request(&Method::POST, &[("origin", "https://evil.example")]);
    assert_eq!(layer.check(&old), Err(CrossSiteRejection::Origin));
    let res = layer.refuse(CrossSiteRejection::Origin);
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.extensions()
            .get::<baton_core::Refusal>()
            .unwrap()
            .error(),
        "cross_site_request"
    );
    for ok in [
        request(&Method::GET, &[("sec-fetch-site", "cross-site")]),
        request(&Method::POST, &[("sec-fetch-site", "same-origin")]),
        request(&Method::POST, &[("origin", "https://app.example")]),
        request(&Method::POST, &[]),
    ] {
        assert_eq!(layer.check(&ok), Ok(()));
    }
}

#[tokio::test]
async fn non_browser_requests_pass() {
    for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let (status, _, body) = guard_status(OriginGuardLayer::new(), request(&m, &[])).await;
        assert_eq!(status, StatusCode::OK, "{m}");
        assert_eq!(body, "ok");
    }
}

#[tokio::test]
async fn layers_work_around_an_axum_router() {
    use axum::Router;
    use axum::routing::post;
    let spec = CookieSpec::refresh("/auth").build().unwrap();
    let app = Router::new()
        .route(
            "/auth/refresh",
            post(|| async { ([(SET_COOKIE, "__Secure-refresh=v; Path=/")], "ok") }),
        )
        .layer(CookiePolicyLayer::new().enforce(&spec))
        .layer(OriginGuardLayer::new());
    let req = Request::post("/auth/refresh")
        .header("sec-fetch-site", "cross-site")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let req = Request::post("/auth/refresh")
        .header("sec-fetch-site", "same-origin")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[SET_COOKIE],
        "__Secure-refresh=v; HttpOnly; SameSite=Strict; Secure; Path=/auth"
    );
}
