//! The login app's page in a real headless Chromium, driven over WebDriver: register, log in,
//! tokens invisible to scripts, silent refresh after the access token expires, reload stays
//! logged in, two tabs share one refresh and one logout, logout sticks; and, on a
//! test-started Redis that stalls, a refresh answered 503 is waited out without signing the
//! user out; and, with a real OpenID provider (`oidc-provider` on node, started by the test),
//! "Sign in with ..." through the provider's own pages back to the app, signed in, the device
//! list showing the session, and a cancelled sign-in told on the page.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test skips loudly, unless
//! `BATON_REQUIRE_BROWSER=1` (`.ci/run` sets it and installs them). On failure a screenshot is
//! saved to `tests/output/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const ACCESS_TTL: u64 = 2;

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(binary: &PathBuf) -> Driver {
    let port = baton_test::free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

async fn text(client: &Client, id: &str) -> String {
    match client.find(Locator::Id(id)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn displayed(client: &Client, id: &str) -> bool {
    match client.find(Locator::Id(id)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Polls until `check` holds, for at most 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("timed out waiting for: {what}"))
}

async fn fill(client: &Client, id: &str, value: &str) -> Result<(), String> {
    let input = client
        .find(Locator::Id(id))
        .await
        .map_err(|e| e.to_string())?;
    input.clear().await.map_err(|e| e.to_string())?;
    input.send_keys(value).await.map_err(|e| e.to_string())
}

async fn click(client: &Client, id: &str) -> Result<(), String> {
    client
        .find(Locator::Id(id))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())
}

async fn script(client: &Client, source: &str) -> Result<serde_json::Value, String> {
    client
        .execute(source, vec![])
        .await
        .map_err(|e| e.to_string())
}

async fn css_click(client: &Client, css: &str) -> Result<(), String> {
    client
        .find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())
}

async fn present(client: &Client, css: &str) -> bool {
    client.find(Locator::Css(css)).await.is_ok()
}

/// "Sign in with Test Provider" on the page, the provider's own login and consent pages (in
/// this browser, over HTTPS), and back on the page signed in, the device list showing the
/// session; then a sign-in cancelled at the provider lands on the page with a message.
async fn oidc_scenario(client: &Client, url: &str, issuer: &str) -> Result<(), String> {
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually("the provider's button", || {
        displayed(client, "oidc-test-provider")
    })
    .await?;
    click(client, "oidc-test-provider").await?;
    eventually("the provider's login page", || {
        present(client, "input[name=login]")
    })
    .await?;
    let login = client
        .find(Locator::Css("input[name=login]"))
        .await
        .map_err(|e| e.to_string())?;
    login.send_keys("zoe").await.map_err(|e| e.to_string())?;
    let password = client
        .find(Locator::Css("input[name=password]"))
        .await
        .map_err(|e| e.to_string())?;
    password.send_keys("any").await.map_err(|e| e.to_string())?;
    css_click(client, "button[type=submit]").await?;
    eventually("the provider's consent page", || {
        present(client, "input[name=prompt][value=consent]")
    })
    .await?;
    css_click(client, "button[type=submit]").await?;
    eventually("back on the app, signed in as zoe", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as zoe (127.0.0.1)")
    })
    .await?;
    eventually("the device list shows the session", || async {
        text(client, "devices").await.contains("this device")
    })
    .await?;

    // Signed in at the provider still: the next sign-in comes straight back.
    click(client, "logout-button").await?;
    eventually("logged out", || displayed(client, "login-form")).await?;
    click(client, "oidc-test-provider").await?;
    eventually("back at once, signed in as zoe", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as zoe (127.0.0.1)")
    })
    .await?;

    // Signed out at the provider too (its cookies gone): it asks again, and the user cancels.
    click(client, "logout-button").await?;
    eventually("logged out", || displayed(client, "login-form")).await?;
    client
        .goto(&format!("{issuer}/.well-known/openid-configuration"))
        .await
        .map_err(|e| e.to_string())?;
    client
        .delete_all_cookies()
        .await
        .map_err(|e| e.to_string())?;
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually("the provider's button", || {
        displayed(client, "oidc-test-provider")
    })
    .await?;
    click(client, "oidc-test-provider").await?;
    eventually("the provider's login page again", || {
        present(client, "a[href$='/abort']")
    })
    .await?;
    css_click(client, "a[href$='/abort']").await?;
    eventually("the page says the sign-in was cancelled", || async {
        text(client, "status")
            .await
            .contains("Sign-in was cancelled.")
    })
    .await?;
    let address = client.current_url().await.map_err(|e| e.to_string())?;
    if address.query().is_some() {
        return Err(format!("the error code stayed in the address: {address}"));
    }
    Ok(())
}

/// One request from a client that has the page's token and refresh cookie but not its key.
async fn without_the_key(url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", url.trim_end_matches('/')));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

/// The page's tokens are DPoP-bound: its calls carry `Authorization: DPoP` and a proof; the
/// access token, a captured proof and the refresh cookie replayed from elsewhere are refused,
/// and the page goes on working.
async fn dpop_scenario(client: &Client, url: &str) -> Result<(), String> {
    script(
        client,
        "window.__seen = []; const f = window.fetch; window.fetch = (input, init) => { \
         const h = (init && init.headers) || {}; \
         window.__seen.push({ url: String(input), auth: h.Authorization || null, dpop: h.DPoP || null }); \
         return f(input, init); }; return null",
    )
    .await?;
    click(client, "whoami-button").await?;
    eventually("a who-am-I call went out", || async {
        script(
            client,
            "return window.__seen.some(c => c.url.endsWith('/api/me') && c.auth)",
        )
        .await
        .is_ok_and(|v| v == json!(true))
    })
    .await?;
    let seen = script(
        client,
        "return window.__seen.filter(c => c.url.endsWith('/api/me') && c.auth).pop()",
    )
    .await?;
    let auth = seen["auth"].as_str().unwrap_or_default().to_owned();
    let proof = seen["dpop"].as_str().unwrap_or_default().to_owned();
    let Some(token) = auth.strip_prefix("DPoP ") else {
        return Err(format!("the page's API call is not DPoP: {auth:?}"));
    };
    if proof.split('.').count() != 3 {
        return Err(format!("the page's API call carries no proof: {proof:?}"));
    }
    // From elsewhere: the token alone, as Bearer, and with the page's own (spent) proof.
    let bearer = format!("Bearer {token}");
    for (what, headers) in [
        (
            "the token without a proof",
            vec![("authorization", auth.as_str())],
        ),
        (
            "the token as Bearer",
            vec![("authorization", bearer.as_str())],
        ),
        (
            "the token with the captured proof",
            vec![("authorization", auth.as_str()), ("dpop", proof.as_str())],
        ),
    ] {
        let status = without_the_key(url, "GET", "/api/me", &headers).await;
        if status != 401 {
            return Err(format!("{what} from a client without the key got {status}"));
        }
    }
    // The refresh cookie, read from the browser (WebDriver shows the cookies of the current
    // path: visit one under /auth, then come back), replayed without the key.
    let base = url.trim_end_matches('/');
    client
        .goto(&format!("{base}/auth/sessions"))
        .await
        .map_err(|e| e.to_string())?;
    let cookie = client
        .get_named_cookie("__Secure-refresh")
        .await
        .map_err(|e| format!("the refresh cookie: {e}"))?;
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually("signed in again after coming back", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as alice")
    })
    .await?;
    let header = format!("__Secure-refresh={}", cookie.value());
    let status =
        without_the_key(url, "POST", "/auth/refresh", &[("cookie", header.as_str())]).await;
    if status != 401 {
        return Err(format!(
            "the stolen refresh cookie without the key got {status}"
        ));
    }
    // The page itself still works.
    let before = text(client, "whoami-output").await;
    click(client, "whoami-button").await?;
    eventually("who am I answers after the replays", || async {
        let now = text(client, "whoami-output").await;
        now != before && now.contains("Signed in as alice")
    })
    .await
}

async fn scenario(client: &Client, url: &str) -> Result<(), String> {
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually("the login form", || displayed(client, "login-form")).await?;

    fill(client, "register-username", "alice").await?;
    fill(client, "register-password", "correct horse battery").await?;
    click(client, "register-button").await?;
    eventually("who am I shows alice", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as alice")
    })
    .await?;

    // The device list names this browser from its user agent and marks it; signing out other
    // devices (there are none) keeps this one.
    eventually("the device list names this browser", || async {
        let devices = text(client, "devices").await;
        devices.contains("on Linux") && devices.contains("this device")
    })
    .await?;
    click(client, "logout-others-button").await?;
    // A slow machine may be past the recent-login window already: then the page asks for the
    // password (checked properly below).
    eventually(
        "other devices signed out, or the password asked",
        || async {
            text(client, "status")
                .await
                .contains("Signed out 0 other devices")
                || displayed(client, "reauth-form").await
        },
    )
    .await?;
    if displayed(client, "reauth-form").await {
        fill(client, "reauth-password", "correct horse battery").await?;
        click(client, "reauth-button").await?;
        eventually("other devices signed out", || async {
            text(client, "status")
                .await
                .contains("Signed out 0 other devices")
        })
        .await?;
    }
    if !text(client, "whoami-output")
        .await
        .contains("Signed in as alice")
    {
        return Err("signing out other devices signed this one out".into());
    }

    dpop_scenario(client, url).await?;

    // `BATON_SCREENSHOT=path` saves the signed-in page (the README's picture).
    if let Some(path) = std::env::var_os("BATON_SCREENSHOT") {
        eventually("the device list", || async {
            !text(client, "devices").await.is_empty()
        })
        .await?;
        let png = client.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| e.to_string())?;
    }

    // The refresh token is HttpOnly, and no token sits in any storage a script can read.
    let cookies = script(client, "return document.cookie").await?;
    let cookies = cookies.as_str().unwrap_or_default().to_owned();
    if cookies.contains("refresh") || cookies.contains("v1.") {
        return Err(format!(
            "document.cookie exposes the refresh token: {cookies:?}"
        ));
    }
    let storage = script(client, "return [localStorage.length, sessionStorage.length, JSON.stringify(localStorage) + JSON.stringify(sessionStorage)]").await?;
    if storage != json!([0, 0, "{}{}"]) {
        return Err(format!("tokens in web storage: {storage}"));
    }

    // Past the access token's life, "who am I" still works: the page refreshed silently.
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL + 1)).await;
    let before = text(client, "whoami-output").await;
    click(client, "whoami-button").await?;
    eventually("another who-am-I check", || async {
        let now = text(client, "whoami-output").await;
        now != before && now.contains("Signed in as alice")
    })
    .await?;
    if displayed(client, "login-form").await {
        return Err("the login form came back after the access token expired".into());
    }

    // The sign-in is now older than the app's recent-login window: signing out other devices
    // asks for the password first (a wrong one is refused and asked again), then goes on.
    if displayed(client, "reauth-form").await {
        return Err("the password form showed before it was needed".into());
    }
    click(client, "logout-others-button").await?;
    eventually("the page asks for the password", || {
        displayed(client, "reauth-form")
    })
    .await?;
    fill(client, "reauth-password", "not my password").await?;
    click(client, "reauth-button").await?;
    eventually("a wrong password is refused and asked again", || async {
        text(client, "status").await.contains("Wrong password")
            && displayed(client, "reauth-form").await
    })
    .await?;
    fill(client, "reauth-password", "correct horse battery").await?;
    click(client, "reauth-button").await?;
    eventually("other devices signed out after the password", || async {
        text(client, "status")
            .await
            .contains("Signed out 0 other devices")
            && !displayed(client, "reauth-form").await
    })
    .await?;

    // A reload keeps the user logged in (the page refreshes on load).
    client.refresh().await.map_err(|e| e.to_string())?;
    eventually("logged in after reload", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as alice")
    })
    .await?;

    // A second tab of the same browser signs in from the shared refresh cookie.
    let first = client.window().await.map_err(|e| e.to_string())?;
    let second = client
        .new_window(true)
        .await
        .map_err(|e| e.to_string())?
        .handle;
    client
        .switch_to_window(second.clone())
        .await
        .map_err(|e| e.to_string())?;
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually("the second tab is signed in", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as alice")
    })
    .await?;
    // Both tabs' access tokens expire; both need one at the same moment: one refresh in all
    // (the tabs take turns with a Web Lock and hand the new token over). A request answered
    // 400 for a fresh DPoP nonce is not counted: it is the same refresh, asked once more.
    const REFRESHES: &str = "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/auth/refresh') && e.responseStatus !== 400).length";
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL + 1)).await;
    let before_second = script(client, REFRESHES).await?.as_u64().unwrap_or(0);
    client
        .switch_to_window(first.clone())
        .await
        .map_err(|e| e.to_string())?;
    let before_first = script(client, REFRESHES).await?.as_u64().unwrap_or(0);
    script(
        client,
        "document.getElementById('whoami-button').click(); return null",
    )
    .await?;
    client
        .switch_to_window(second.clone())
        .await
        .map_err(|e| e.to_string())?;
    script(
        client,
        "document.getElementById('whoami-button').click(); return null",
    )
    .await?;
    eventually("who am I answered in the second tab", || async {
        text(client, "whoami-output").await.contains("(check 2)")
    })
    .await?;
    let after_second = script(client, REFRESHES).await?.as_u64().unwrap_or(0);
    client
        .switch_to_window(first.clone())
        .await
        .map_err(|e| e.to_string())?;
    eventually("who am I answered in the first tab", || async {
        text(client, "whoami-output").await.contains("(check 2)")
    })
    .await?;
    let after_first = script(client, REFRESHES).await?.as_u64().unwrap_or(0);
    let refreshes = (after_first - before_first) + (after_second - before_second);
    if refreshes != 1 {
        return Err(format!(
            "two tabs needing a token made {refreshes} refresh requests"
        ));
    }

    // Log out in the first tab: the second shows the login form by itself, at once.
    click(client, "logout-button").await?;
    let logged_out = Instant::now();
    client
        .switch_to_window(second.clone())
        .await
        .map_err(|e| e.to_string())?;
    eventually("the second tab signed out without a click", || {
        displayed(client, "login-form")
    })
    .await?;
    if logged_out.elapsed() > Duration::from_secs(2) {
        return Err(format!(
            "the second tab took {:?} to sign out",
            logged_out.elapsed()
        ));
    }
    client.close_window().await.map_err(|e| e.to_string())?;
    client
        .switch_to_window(first)
        .await
        .map_err(|e| e.to_string())?;

    // Logged out: the login form is back, and stays after a reload.
    eventually("the login form after logout", || {
        displayed(client, "login-form")
    })
    .await?;
    client.refresh().await.map_err(|e| e.to_string())?;
    eventually("the login form after reload", || {
        displayed(client, "login-form")
    })
    .await?;
    if displayed(client, "signed-in").await {
        return Err("still signed in after logout and reload".into());
    }
    Ok(())
}

/// Redis stalls while the page needs a refresh: the page says it is retrying, never shows the
/// login form, and carries on once Redis is back.
async fn stall_scenario(
    client: &Client,
    url: &str,
    redis: &baton_test::RedisServer,
) -> Result<(), String> {
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually("the login form", || displayed(client, "login-form")).await?;
    fill(client, "register-username", "bob").await?;
    fill(client, "register-password", "correct horse battery").await?;
    click(client, "register-button").await?;
    eventually("who am I shows bob", || async {
        text(client, "whoami-output")
            .await
            .contains("Signed in as bob")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL + 1)).await;
    redis.pause();
    click(client, "whoami-button").await?;
    let waited = eventually("the page says it is retrying", || async {
        text(client, "status").await.contains("retrying")
    })
    .await;
    let signed_out = displayed(client, "login-form").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.resume();
    waited?;
    if signed_out {
        return Err("the page signed out for a 503".into());
    }
    eventually("who am I works again", || async {
        text(client, "whoami-output").await.contains("(check 2)")
    })
    .await?;
    if displayed(client, "login-form").await {
        return Err("the login form showed up after the stall".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_real_browser() {
    let required = std::env::var("BATON_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(chromium), Some(driver)) = (
        find_binary(&["chromium", "chromium-browser"]),
        find_binary(&["chromedriver"]),
    ) else {
        assert!(
            !required,
            "chromium or chromedriver not found and BATON_REQUIRE_BROWSER=1"
        );
        eprintln!(
            "\n********************************************************************\n\
             SKIPPED: no chromium/chromedriver here (apt-get install chromium\n\
             chromium-driver). BATON_REQUIRE_BROWSER=1 makes this test fail instead.\n\
             ********************************************************************\n"
        );
        return;
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let url = format!("{origin}/");
    // DPoP on: the page signs every token request and API call with its own key.
    let config = login_app::Config {
        access_ttl: Duration::from_secs(ACCESS_TTL),
        recent_login: Some(Duration::from_secs(ACCESS_TTL)),
        public_urls: vec![origin.clone()],
        // Server nonces that turn during the scenario: the page is asked for fresh ones at
        // its token requests and API calls, and answers each with one more try.
        dpop_nonces: Some(Duration::from_secs(3)),
        ..login_app::Config::default()
    };
    let app = login_app::app(&config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(login_app::serve(listener, app, async {
        let _ = stopped.await;
    }));

    let driver = start_driver(&driver);
    let profile = std::env::temp_dir().join(format!("baton-chromium-{}", std::process::id()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1024,860",
                // The test provider's certificate is from an authority made by the test.
                "--ignore-certificate-errors",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session");

    let mut outcome = scenario(&client, &url).await;
    // Sign-in with a real OpenID provider.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let oidc_origin = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let provider = baton_test::OidcServer::start(
        &[baton_test::OidcClient {
            id: "app".to_owned(),
            secret: "app-secret".to_owned(),
            redirect_uri: format!("{oidc_origin}/auth/oidc/test-provider/callback"),
        }],
        Duration::from_secs(3600),
    );
    if outcome.is_ok()
        && let Some(provider) = &provider
    {
        let config = login_app::Config {
            public_urls: vec![oidc_origin.clone()],
            oidc: vec![login_app::OidcProvider {
                name: "Test Provider".to_owned(),
                issuer: provider.issuer(),
                client_id: "app".to_owned(),
                client_secret: Some("app-secret".to_owned()),
            }],
            oidc_roots: vec![provider.ca_der().to_vec()],
            ..login_app::Config::default()
        };
        let app = login_app::app(&config).await.unwrap();
        tokio::spawn(login_app::serve(listener, app, std::future::pending()));
        outcome = oidc_scenario(&client, &format!("{oidc_origin}/"), &provider.issuer()).await;
    }
    // The same page on Redis, which stalls mid-session.
    let redis = baton_test::RedisServer::start();
    if outcome.is_ok()
        && let Some(redis) = &redis
    {
        // The app is told another public address than the one the browser uses: the page's
        // proofs are refused as made out for another address, and it carries on with bearer
        // tokens (the whole stall scenario runs that way).
        let config = login_app::Config {
            access_ttl: Duration::from_secs(ACCESS_TTL),
            redis_url: Some(redis.url()),
            public_urls: vec!["http://login.example".to_owned()],
            ..login_app::Config::default()
        };
        let app = login_app::app(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stall_url = format!(
            "http://localhost:{}/",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(login_app::serve(listener, app, std::future::pending()));
        outcome = stall_scenario(&client, &stall_url, redis).await;
        redis.resume();
    }
    if let Err(why) = &outcome {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("output");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(png) = client.screenshot().await {
            let path = dir.join("browser-failure.png");
            let _ = std::fs::write(&path, png);
            eprintln!("screenshot: {}", path.display());
        }
        eprintln!("browser scenario failed: {why}");
    }
    let _ = client.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    let _ = stop.send(());
    let _ = server.await;
    outcome.unwrap();
}
