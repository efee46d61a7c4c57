//! A real OpenID provider for tests: `oidc-provider` (the certified Node.js implementation) on
//! node, over HTTPS on a free loopback port with a certificate from a test authority made
//! here, started and stopped by pid.
//!
//! Its npm packages are installed into `tests/oidc/node_modules` (`npm ci`, from the lock
//! file) on first use. Without `node` and `npm`, [`OidcServer::start`] prints a loud message and
//! returns `None` (the test then skips), unless `BATON_REQUIRE_OIDC=1`, when it panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::{COUNTER, free_port};

fn required() -> bool {
    std::env::var("BATON_REQUIRE_OIDC").is_ok_and(|v| v == "1")
}

/// The folder with the provider's script and its npm packages.
fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One install at a time in this process (tests start servers in parallel).
static INSTALL: Mutex<()> = Mutex::new(());

fn install() -> Result<(), String> {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = provider_dir();
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "npm ci in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A client the provider knows.
#[derive(Clone, Debug)]
pub struct OidcClient {
    /// Its id.
    pub id: String,
    /// Its secret.
    pub secret: String,
    /// Its one redirect URI.
    pub redirect_uri: String,
}

/// A running `oidc-provider`, stopped (by pid) when dropped.
#[derive(Debug)]
pub struct OidcServer {
    child: Child,
    port: u16,
    ca_der: Vec<u8>,
    dir: PathBuf,
    clients: String,
    id_token_ttl: Duration,
}

impl OidcServer {
    /// Starts a provider that knows `clients`, its ID tokens living `id_token_ttl`.
    ///
    /// # Panics
    /// When node or npm is missing and `BATON_REQUIRE_OIDC=1`, or when the provider does not
    /// start.
    pub fn start(clients: &[OidcClient], id_token_ttl: Duration) -> Option<Self> {
        if !(available("node") && available("npm")) {
            assert!(
                !required(),
                "node or npm not found and BATON_REQUIRE_OIDC=1"
            );
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: no node/npm here; install nodejs and npm to run the OpenID\n\
                 provider tests. BATON_REQUIRE_OIDC=1 makes them fail instead.\n\
                 ********************************************************************\n"
            );
            return None;
        }
        if let Err(e) = install() {
            assert!(!required(), "{e}");
            eprintln!("SKIPPED: the OpenID provider could not be installed: {e}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("baton-oidc-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the provider's directory");
        let (ca_der, cert_pem, key_pem) = certificates();
        std::fs::write(dir.join("cert.pem"), cert_pem).expect("write the certificate");
        std::fs::write(dir.join("key.pem"), key_pem).expect("write the key");
        let clients: Vec<String> = clients
            .iter()
            .map(|c| {
                format!(
                    r#"{{"client_id":{},"client_secret":{},"redirect_uris":[{}],"grant_types":["authorization_code"],"response_types":["code"]}}"#,
                    json_string(&c.id),
                    json_string(&c.secret),
                    json_string(&c.redirect_uri)
                )
            })
            .collect();
        let clients = format!("[{}]", clients.join(","));
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(&dir, port, &clients, id_token_ttl) {
                return Some(OidcServer {
                    child,
                    port,
                    ca_der,
                    dir,
                    clients,
                    id_token_ttl,
                });
            }
        }
        panic!("oidc-provider did not start");
    }

    /// The issuer: `https://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The test authority's certificate (DER), to trust.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The provider's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the provider and starts it again on the same port: a provider restarted with
    /// new signing keys (its development keys are made at start), as after a key rotation.
    ///
    /// # Panics
    /// When it does not start again.
    pub fn restart(&mut self) {
        self.stop();
        // A loaded machine can take a node start well past its usual second. A start that
        // fails (the port briefly taken) or hangs (each is given 30 s) is tried again, waiting
        // longer each time, until 90 s have passed since the first.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut pause = Duration::from_millis(100);
        loop {
            if let Some(child) = spawn(&self.dir, self.port, &self.clients, self.id_token_ttl) {
                self.child = child;
                return;
            }
            assert!(
                Instant::now() + pause < deadline,
                "oidc-provider did not start again on port {}",
                self.port
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Stops the provider (the test's "provider is down").
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the provider on `port`, waiting until it listens; `None` when it does not.
fn spawn(dir: &std::path::Path, port: u16, clients: &str, id_token_ttl: Duration) -> Option<Child> {
    // The provider's output goes to a file (a pipe nobody reads would kill it at its first
    // notice); "ready" there says it listens.
    let log = dir.join(format!("provider-{port}.log"));
    let out = std::fs::File::create(&log).expect("the provider's log");
    let mut child = Command::new("node")
        .arg(provider_dir().join("provider.mjs"))
        .env("PORT", port.to_string())
        .env("TLS_CERT", dir.join("cert.pem"))
        .env("TLS_KEY", dir.join("key.pem"))
        .env("CLIENTS", clients)
        .env("ID_TOKEN_TTL", id_token_ttl.as_secs().max(1).to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("the provider's log"))
        .stderr(out)
        .spawn()
        .expect("spawn node");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let exited = loop {
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready https://")) {
            return Some(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let how = match exited {
        Some(status) => format!("exited ({status}) after {:?}", started.elapsed()),
        None => format!("not listening after {:?}, stopped", started.elapsed()),
    };
    eprintln!(
        "oidc-provider on port {port} {how}; its output:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    None
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A test authority, and a certificate for 127.0.0.1 from it: (CA DER, cert PEM, key PEM).
fn certificates() -> (Vec<u8>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    (ca.der().to_vec(), cert.pem(), key.serialize_pem())
}

/// A user agent for the provider's pages: keeps its cookies, follows its redirects, fills in
/// its development login and consent forms, and stops at the redirect to the application.
pub struct ProviderBrowser {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    cookies: Vec<(String, String)>,
    app: String,
}

impl std::fmt::Debug for ProviderBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderBrowser")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl ProviderBrowser {
    /// A browser trusting `ca` (the provider's test authority) that stops at the redirect
    /// to `app` (the application's origin).
    pub fn new(ca: &[u8], app: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(ca.to_vec()))
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        ProviderBrowser {
            http: Client::builder(TokioExecutor::new()).build(https),
            cookies: Vec::new(),
            app: app.to_owned(),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        form: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut req = Request::builder().method(method).uri(url);
        if !self.cookies.is_empty() {
            let line: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header(header::COOKIE, line.join("; "));
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(form.unwrap_or_default().to_owned()));
        let res = match self.http.request(req.body(body).unwrap()).await {
            Ok(res) => res,
            Err(e) => panic!("{url}: {e:?}"),
        };
        for set in res.headers().get_all(header::SET_COOKIE) {
            let c = cookie::Cookie::parse(set.to_str().unwrap().to_owned()).unwrap();
            self.cookies.retain(|(k, _)| k != c.name());
            if !c.value().is_empty() {
                self.cookies
                    .push((c.name().to_owned(), c.value().to_owned()));
            }
        }
        let status = res.status();
        let location = res
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        (status, location, body)
    }

    /// Goes from the authorization URL through the provider's login (as `login`) and consent
    /// (or its cancel) to the redirect back to the application: that redirect's query.
    /// # Panics
    /// When the provider answers something other than its pages and redirects.
    pub async fn sign_in(
        &mut self,
        issuer: &str,
        authorize: &str,
        login: &str,
        cancel: bool,
    ) -> String {
        let mut url = authorize.to_owned();
        for _ in 0..12 {
            let absolute = if url.starts_with('/') {
                format!("{issuer}{url}")
            } else {
                url.clone()
            };
            if absolute.starts_with(&self.app) {
                return absolute
                    .split_once('?')
                    .map(|(_, q)| q.to_owned())
                    .unwrap_or_default();
            }
            let (status, location, body) = self.send(Method::GET, &absolute, None).await;
            if status.is_redirection() {
                url = location;
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{absolute}: {body}");
            let form = if body.contains(r#"name="prompt" value="login""#) {
                format!("prompt=login&login={login}&password=any")
            } else if cancel {
                let (_, location, _) = self
                    .send(Method::GET, &format!("{absolute}/abort"), None)
                    .await;
                url = location;
                continue;
            } else {
                "prompt=consent".to_owned()
            };
            let (status, location, body) = self.send(Method::POST, &absolute, Some(&form)).await;
            assert!(status.is_redirection(), "{status}: {body}");
            url = location;
        }
        panic!("the provider never sent the browser back");
    }
}
