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
async fn a_provider_required_reachable_that_does_not_answer_fails_the_start() {
    // A loopback port nothing listens on.
    let port = baton_test::free_port();
    let issuer = format!("https://127.0.0.1:{port}");
    let config = ProviderConfig::new("down", "Down", &issuer, "client");
    let options = OidcOptions::new()
        .with_timeout(Duration::from_secs(2))
        .require_reachable();
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

/// A provider that cannot be reached at start does not keep the application from starting:
/// its sign-ins answer `provider_unavailable` until it answers, then work, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_tried_again_at_its_sign_ins() {
    use baton_test::{OidcClient, OidcServer};
    let client = OidcClient {
        id: "app".to_owned(),
        secret: "app-secret".to_owned(),
        redirect_uri: "http://127.0.0.1:3000/auth/oidc/late/callback".to_owned(),
    };
    let Some(mut server) = OidcServer::start(&[client], Duration::from_secs(3600)) else {
        return;
    };
    let issuer = server.issuer();
    server.stop();
    let config = ProviderConfig::new("late", "Late", &issuer, "app").with_secret("app-secret");
    let options = OidcOptions::new()
        .with_root_certificate(server.ca_der().to_vec())
        .with_timeout(Duration::from_secs(2));
    // Required reachable: the start fails, naming the issuer.
    match Oidc::discover(
        "http://127.0.0.1:3000",
        "/auth",
        vec![config.clone()],
        &[1; 32],
        options.clone().require_reachable(),
    )
    .await
    {
        Err(OidcError::Discovery { issuer: named, .. }) => assert_eq!(named, issuer),
        other => panic!("{other:?}"),
    }
    // By default: started without it.
    let oidc = Oidc::discover(
        "http://127.0.0.1:3000",
        "/auth",
        vec![config],
        &[1; 32],
        options,
    )
    .await
    .unwrap();
    let down = oidc.start("late", None, None).await.unwrap_err();
    assert_eq!(down.code(), "provider_unavailable");
    // Tried again at most every 10 s: at once, still down, without reaching out.
    let again = oidc.start("late", None, None).await.unwrap_err();
    assert_eq!(again.code(), "provider_unavailable");
    server.restart();
    assert_eq!(server.issuer(), issuer, "the same port");
    let started = std::time::Instant::now();
    loop {
        match oidc.start("late", Some("/x"), None).await {
            Ok(started) => {
                assert!(
                    started.redirect.starts_with(&issuer),
                    "{}",
                    started.redirect
                );
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), "provider_unavailable");
                assert!(started.elapsed() < Duration::from_secs(15), "never retried");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
