//! Settings `Oidc::discover` refuses, each with an error naming what is wrong; and a provider
//! that does not answer at start is a discovery error naming its issuer.

use std::time::Duration;

use baton_oidc::{OAuth2Endpoints, Oidc, OidcError, OidcOptions, ProviderConfig};

fn plain(id: &str) -> ProviderConfig {
    ProviderConfig::oauth2(
        id,
        "Plain",
        "client",
        OAuth2Endpoints::new(
            "https://p.example/a",
            "https://p.example/t",
            "https://p.example/me",
        ),
    )
}

async fn refused(
    origin: &str,
    base: &str,
    providers: Vec<ProviderConfig>,
    options: OidcOptions,
) -> String {
    match Oidc::discover(origin, base, providers, &[1; 32], options).await {
        Ok(oidc) => panic!("accepted: {oidc:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_settings_are_refused_with_what_is_wrong() {
    let o = OidcOptions::new;
    let err = refused("http://app.example", "/auth", vec![plain("p")], o()).await;
    assert!(err.contains("must be https"), "{err}");
    let err = refused("ftp://app.example", "/auth", vec![plain("p")], o()).await;
    assert!(err.contains("http(s) origin"), "{err}");
    let err = refused("https://app.example", "auth", vec![plain("p")], o()).await;
    assert!(err.contains("base path must start with /"), "{err}");
    let err = refused("https://app.example", "/auth", vec![plain("Bad ID")], o()).await;
    assert!(err.contains("\"Bad ID\""), "{err}");
    let err = refused(
        "https://app.example",
        "/auth",
        vec![plain("p"), plain("p")],
        o(),
    )
    .await;
    assert!(err.contains("given twice"), "{err}");
    let short = o().with_flow_ttl(Duration::from_secs(5));
    let err = refused("https://app.example", "/auth", vec![plain("p")], short).await;
    assert!(err.contains("flow lifetime"), "{err}");
    let bad_root = o().with_root_certificate(b"not a certificate".to_vec());
    let err = refused("https://app.example", "/auth", vec![plain("p")], bad_root).await;
    assert!(err.contains("root certificate"), "{err}");
    let http_endpoint = ProviderConfig::oauth2(
        "p",
        "Plain",
        "client",
        OAuth2Endpoints::new(
            "https://p.example/a",
            "http://p.example/t",
            "https://p.example/me",
        ),
    );
    let err = refused("https://app.example", "/auth", vec![http_endpoint], o()).await;
    assert!(err.contains("token endpoint must be https"), "{err}");
    // Two providers, one identity namespace: refused.
    let twin = |id: &str| {
        ProviderConfig::oauth2(
            id,
            "Tenant",
            "client",
            OAuth2Endpoints::new(
                format!("https://idp.example/{id}/a"),
                "https://idp.example/t",
                "https://idp.example/me",
            ),
        )
    };
    let err = refused(
        "https://app.example",
        "/auth",
        vec![twin("a"), twin("b")],
        o(),
    )
    .await;
    assert!(err.contains("share the issuer"), "{err}");
    let own = |id: &str| {
        ProviderConfig::oauth2(
            id,
            "Tenant",
            "client",
            OAuth2Endpoints::new(
                format!("https://idp.example/{id}/a"),
                "https://idp.example/t",
                "https://idp.example/me",
            )
            .identified_as(format!("https://idp.example/{id}")),
        )
    };
    assert!(
        Oidc::discover(
            "https://app.example",
            "/auth",
            vec![own("a"), own("b")],
            &[1; 32],
            o()
        )
        .await
        .is_ok()
    );
    // Local development over plain HTTP is allowed.
    assert!(
        Oidc::discover(
            "http://localhost:3000",
            "/auth",
            vec![plain("p")],
            &[1; 32],
            o()
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn a_provider_that_does_not_answer_is_a_discovery_error_naming_it() {
    // A loopback port nothing listens on.
    let port = baton_test::free_port();
    let issuer = format!("https://127.0.0.1:{port}");
    let config = ProviderConfig::new("down", "Down", &issuer, "client");
    let options = OidcOptions::new().with_timeout(Duration::from_secs(2));
    match Oidc::discover(
        "https://app.example",
        "/auth",
        vec![config],
        &[1; 32],
        options,
    )
    .await
    {
        Err(OidcError::Discovery {
            issuer: named,
            reason,
        }) => {
            assert_eq!(named, issuer);
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let err = refused(
        "https://app.example",
        "/auth",
        vec![ProviderConfig::new("bad", "Bad", "not a url", "client")],
        OidcOptions::new(),
    )
    .await;
    assert!(err.contains("not a url"), "{err}");
}
