//! The signing key: fresh at each start, or read from (or created in) a key file.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use baton::store::RefreshKeys;
use baton::token::{Algorithm, Key};

/// The access-token signing key and the refresh-token MAC key derived from the same secret.
#[derive(Debug)]
pub struct AppKeys {
    /// Signs access tokens.
    pub signing: Key,
    /// Authenticates refresh tokens.
    pub refresh: RefreshKeys,
}

const KID: &str = "login-app";

fn derive_refresh(secret: &[u8]) -> Result<RefreshKeys, String> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let derived = hmac::sign(&key, b"baton login-app refresh-token key v1");
    RefreshKeys::new(1, derived.as_ref()).map_err(|e| e.to_string())
}

/// The file's text: PKCS#8 PEM for asymmetric algorithms, base64 of the secret for HMAC.
fn generate(alg: Algorithm) -> Result<(Key, String), String> {
    if alg.as_str().starts_with("HS") {
        let mut secret = vec![0u8; 64];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| "random generator failed")?;
        let key = Key::hmac(KID, alg, &secret).map_err(|e| e.to_string())?;
        return Ok((key, STANDARD.encode(&secret)));
    }
    let key = Key::generate(KID, alg).map_err(|e| e.to_string())?;
    let pem = key
        .private_pkcs8_pem()
        .ok_or("no PEM for this key")?
        .to_owned();
    Ok((key, pem))
}

fn parse(alg: Algorithm, text: &str) -> Result<(Key, Vec<u8>), String> {
    let text = text.trim();
    if alg.as_str().starts_with("HS") {
        let secret = STANDARD
            .decode(text)
            .map_err(|e| format!("key file is not base64: {e}"))?;
        let key = Key::hmac(KID, alg, &secret).map_err(|e| e.to_string())?;
        return Ok((key, secret));
    }
    let key = Key::from_pem(KID, alg, text.as_bytes()).map_err(|e| e.to_string())?;
    Ok((key, text.as_bytes().to_vec()))
}

/// Keys for `alg`: from `file` when it exists, else generated (and written to `file` with
/// mode 0600 when a path is given), so restarts and several instances share one key.
///
/// # Errors
/// A message for a file that cannot be read, written or parsed.
pub fn load_or_create(alg: Algorithm, file: Option<&Path>) -> Result<AppKeys, String> {
    let (signing, secret) = match file {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            parse(alg, &text)?
        }
        Some(path) => {
            let (key, text) = generate(alg)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            f.write_all(text.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let (_, secret) = parse(alg, &text)?;
            (key, secret)
        }
        None => {
            let (key, text) = generate(alg)?;
            let (_, secret) = parse(alg, &text)?;
            (key, secret)
        }
    };
    Ok(AppKeys {
        refresh: derive_refresh(&secret)?,
        signing,
    })
}
