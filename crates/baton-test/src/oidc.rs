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
            // The provider's output goes to a file (a pipe nobody reads would kill it at its
            // first notice); "ready" there says it listens.
            let log = dir.join(format!("provider-{port}.log"));
            let out = std::fs::File::create(&log).expect("the provider's log");
            let mut child = Command::new("node")
                .arg(provider_dir().join("provider.mjs"))
                .env("PORT", port.to_string())
                .env("TLS_CERT", dir.join("cert.pem"))
                .env("TLS_KEY", dir.join("key.pem"))
                .env("CLIENTS", &clients)
                .env("ID_TOKEN_TTL", id_token_ttl.as_secs().max(1).to_string())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("the provider's log"))
                .stderr(out)
                .spawn()
                .expect("spawn node");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready https://")) {
                    break true;
                }
                if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return Some(OidcServer {
                    child,
                    port,
                    ca_der,
                    dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "oidc-provider on port {port} did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
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
