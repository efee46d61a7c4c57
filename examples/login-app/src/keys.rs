//! The signing key: fresh at each start, or read from (or created in) a key file.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::hkdf;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use baton::store::RefreshKeys;
use baton::token::{Algorithm, Key, read_private_file};

/// The access-token signing key and the refresh-token MAC key derived from the same secret.
#[derive(Debug)]
pub struct AppKeys {
    /// Signs access tokens.
    pub signing: Key,
    /// Authenticates refresh tokens.
    pub refresh: RefreshKeys,
}

const KID: &str = "login-app";

/// The refresh-token MAC keys. Id 2 mints: HKDF-SHA256 (RFC 5869) over the signing key's
/// canonical bytes (see [`canonical`]), so the same key in any encoding (PKCS#8 v1 or v2,
/// PKCS#1, other line breaks) derives the same MAC key and a re-encoded key file logs nobody
/// out. Id 1, the earlier derivation (an HMAC of the key file's text), still verifies, so
/// sessions made before the upgrade go on; drop it one absolute session lifetime (90 days)
/// after every instance runs this version.
fn derive_refresh(canonical: &[u8], legacy: &[u8]) -> Result<RefreshKeys, String> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"baton login-app").extract(canonical);
    let mut derived = [0u8; 32];
    prk.expand(&[b"refresh-token MAC key v2"], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut derived))
        .map_err(|_| "key derivation failed")?;
    let old = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, legacy),
        b"baton login-app refresh-token key v1",
    );
    RefreshKeys::new(1, old.as_ref())
        .and_then(|keys| keys.rotate_to(2, derived))
        .map_err(|e| e.to_string())
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

/// One private key's bytes whatever its encoding: the HMAC secret, or the key re-encoded by
/// aws-lc-rs as PKCS#8 v1 DER (from PKCS#8 v1 or v2, or PKCS#1 for RSA).
fn canonical(alg: Algorithm, der: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair,
    };
    let unreadable = || format!("the {alg} key cannot be re-encoded");
    let bytes = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let curve = if alg == Algorithm::ES256 {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair = EcdsaKeyPair::from_private_key_der(curve, der).map_err(|_| unreadable())?;
            pair.to_pkcs8v1()
                .map_err(|_| unreadable())?
                .as_ref()
                .to_vec()
        }
        Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| unreadable())?
            .to_pkcs8v1()
            .map_err(|_| unreadable())?
            .as_ref()
            .to_vec(),
        _ => {
            let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(der)
                .or_else(|_| aws_lc_rs::rsa::KeyPair::from_der(der))
                .map_err(|_| unreadable())?;
            let pkcs8 = pair.as_der().map_err(|_| unreadable())?;
            pkcs8.as_ref().to_vec()
        }
    };
    Ok(bytes)
}

/// The key in `text` (what [`Key::from_text`] reads: PEM, a JWK, or an HMAC secret in
/// base64), its canonical bytes, and the bytes the earlier derivation used.
fn parse(alg: Algorithm, text: &str) -> Result<(Key, Vec<u8>, Vec<u8>), String> {
    let key = Key::from_text(KID, alg, text).map_err(|e| format!("key file: {e}"))?;
    let text = text.trim();
    if alg.as_str().starts_with("HS") {
        let secret = STANDARD
            .decode(text)
            .map_err(|e| format!("key file is not base64: {e}"))?;
        return Ok((key, secret.clone(), secret));
    }
    let pem = key
        .private_pkcs8_pem()
        .ok_or("the key file holds a public key; the app needs the private key to sign")?;
    let der = pem::parse(pem)
        .map_err(|e| format!("key file is not PEM: {e}"))?
        .into_contents();
    Ok((key, canonical(alg, &der)?, text.as_bytes().to_vec()))
}

/// Reads a client secret kept in a file (a provider's `--oidc-client-secret-file`), with the
/// key file's checks ([`baton::token::read_private_file`]): this user's own, not writable by
/// group or others nor readable by others. Surrounding whitespace (the file's last newline)
/// is not part of the secret.
///
/// # Errors
/// A message for a file that cannot be read, is open to other users, or is empty.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = read_private_file(path).map_err(|e| e.to_string())?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

/// Keys for `alg`: from `file` when it exists, else generated (and written to `file` with
/// mode 0600 when a path is given), so restarts and several instances share one key.
///
/// # Errors
/// A message for a file that cannot be read, written or parsed, or, on Unix, that other users
/// may write or read, or that another user owns.
pub fn load_or_create(alg: Algorithm, file: Option<&Path>) -> Result<AppKeys, String> {
    let text = match file {
        Some(path) if path.exists() => read_private_file(path).map_err(|e| e.to_string())?,
        Some(path) => {
            let (_, text) = generate(alg)?;
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
            text
        }
        None => generate(alg)?.1,
    };
    let (signing, canonical, legacy) = parse(alg, &text)?;
    Ok(AppKeys {
        refresh: derive_refresh(&canonical, &legacy)?,
        signing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton::store::SessionId;

    fn scratch(name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("login-app-keys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn token(keys: &AppKeys) -> String {
        keys.refresh
            .mint(&SessionId::generate("u").unwrap(), 0)
            .expose()
            .to_owned()
    }

    #[test]
    fn a_reencoded_key_file_keeps_the_refresh_key() {
        for alg in [
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::RS256,
            Algorithm::HS256,
        ] {
            let path = scratch(alg.as_str());
            let first = load_or_create(alg, Some(&path)).unwrap();
            let minted = token(&first);
            // The same key with CRLF line endings and surrounding blank lines.
            let text = std::fs::read_to_string(&path).unwrap();
            let reencoded = format!("\n{}\r\n\n", text.trim().replace('\n', "\r\n"));
            std::fs::write(&path, reencoded).unwrap();
            let again = load_or_create(alg, Some(&path)).unwrap();
            assert!(again.refresh.verify(&minted).is_some(), "{alg:?}");
            // A different key derives a different MAC key.
            let other = load_or_create(alg, None).unwrap();
            assert!(other.refresh.verify(&minted).is_none(), "{alg:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn pkcs8_v1_and_v2_of_one_key_derive_the_same_refresh_key() {
        use aws_lc_rs::signature::Ed25519KeyPair;
        let pair = Ed25519KeyPair::generate().unwrap();
        let v1 = pair.to_pkcs8v1().unwrap();
        let v2 = pair.to_pkcs8().unwrap();
        assert_ne!(v1.as_ref(), v2.as_ref());
        let a = canonical(Algorithm::EdDSA, v1.as_ref()).unwrap();
        let b = canonical(Algorithm::EdDSA, v2.as_ref()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, v1.as_ref(), "v1 is the canonical form");
    }

    #[test]
    fn sessions_made_before_the_new_derivation_go_on() {
        let path = scratch("legacy");
        let keys = load_or_create(Algorithm::ES256, Some(&path)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // What the earlier version minted with: key id 1, an HMAC of the file's text.
        let old = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, text.trim().as_bytes()),
            b"baton login-app refresh-token key v1",
        );
        let before = RefreshKeys::new(1, old.as_ref()).unwrap();
        let minted = before.mint(&SessionId::generate("u").unwrap(), 3);
        assert!(keys.refresh.verify(minted.expose()).is_some());
        assert_eq!(keys.refresh.active_id(), 2, "new tokens use the new key");
        std::fs::remove_file(&path).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_or_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path = scratch("open");
        load_or_create(Algorithm::ES256, Some(&path)).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "created private"
        );
        for mode in [0o644, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create(Algorithm::ES256, Some(&path)).unwrap_err();
            assert!(err.contains("chmod 600"), "{mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            load_or_create(Algorithm::ES256, Some(&path)).is_ok(),
            "group-readable is kept"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
