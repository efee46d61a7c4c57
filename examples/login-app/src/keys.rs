//! The signing key: fresh at each start, or read from (or created in) a key file.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::hkdf;
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

/// The refresh-token MAC key, derived with HKDF-SHA256 (RFC 5869) from the signing key's
/// bytes: the HMAC secret, or the private key's DER (what the PEM armours), so the same key
/// written with other line breaks or line endings derives the same MAC key and nobody is
/// logged out by a re-encoded key file. Key id 2 (id 1 was an earlier derivation, from the
/// PEM text: its tokens are refused as unknown, once).
fn derive_refresh(key_bytes: &[u8]) -> Result<RefreshKeys, String> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"baton login-app").extract(key_bytes);
    let mut derived = [0u8; 32];
    prk.expand(&[b"refresh-token MAC key"], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut derived))
        .map_err(|_| "key derivation failed")?;
    RefreshKeys::new(2, derived).map_err(|e| e.to_string())
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
    let der = pem::parse(text)
        .map_err(|e| format!("key file is not PEM: {e}"))?
        .into_contents();
    Ok((key, der))
}

/// Refuses a key file that users other than its owner and group can read or write.
#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(format!(
            "{} is open to every user (mode {:o}): it holds the signing key; chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<(), String> {
    Ok(())
}

/// Keys for `alg`: from `file` when it exists, else generated (and written to `file` with
/// mode 0600 when a path is given), so restarts and several instances share one key.
///
/// # Errors
/// A message for a file that cannot be read, written or parsed, or that every user of the
/// machine may read (on Unix).
pub fn load_or_create(alg: Algorithm, file: Option<&Path>) -> Result<AppKeys, String> {
    let (signing, secret) = match file {
        Some(path) if path.exists() => {
            check_permissions(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("login-app-keys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn a_reencoded_key_file_keeps_the_refresh_key() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256] {
            let path = scratch(alg.as_str());
            let first = load_or_create(alg, Some(&path)).unwrap();
            let token = first
                .refresh
                .mint(&baton::store::SessionId::generate("u").unwrap(), 0);
            // The same key with CRLF line endings and surrounding blank lines.
            let text = std::fs::read_to_string(&path).unwrap();
            let reencoded = format!("\n{}\r\n\n", text.trim().replace('\n', "\r\n"));
            std::fs::write(&path, reencoded).unwrap();
            let again = load_or_create(alg, Some(&path)).unwrap();
            assert!(again.refresh.verify(token.expose()).is_some(), "{alg:?}");
            // A different key derives a different MAC key.
            let other = load_or_create(alg, None).unwrap();
            assert!(other.refresh.verify(token.expose()).is_none(), "{alg:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_every_user_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path = scratch("open");
        load_or_create(Algorithm::ES256, Some(&path)).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "created private"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(Algorithm::ES256, Some(&path)).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            load_or_create(Algorithm::ES256, Some(&path)).is_ok(),
            "group-readable is kept"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
