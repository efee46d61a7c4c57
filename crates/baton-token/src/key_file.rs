//! Keys from a file or an environment variable: the text read (a file only after checking
//! that no other user can read or change it), then parsed as whatever it holds.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::{Algorithm, Key, KeyError};

/// Why a key (or a secret) could not be loaded from a file or an environment variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file cannot be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Other users may read or write the file (Unix mode bits `0o026`).
    #[error("{} holds a secret but is open to other users (mode {mode:o}); chmod 600 it", path.display())]
    OpenToOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another user owns the file (Linux).
    #[error("{} is owned by another user (uid {uid}); a file holding a secret must be this user's own", path.display())]
    OtherOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The environment variable is not set, or not UTF-8.
    #[error("environment variable {name} is not set (or not UTF-8)")]
    NotSet {
        /// The variable.
        name: String,
    },
    /// The file or variable holds nothing but white space.
    #[error("{origin} is empty")]
    Empty {
        /// The file or the variable, as a message names it.
        origin: String,
    },
    /// What it holds is not a key for the algorithm.
    #[error("{origin}: {source}")]
    Key {
        /// The file or the variable, as a message names it.
        origin: String,
        /// What is wrong with the key.
        #[source]
        source: KeyError,
    },
}

/// Reads a file holding a secret (a private key, a client secret) through one handle, after
/// checking that handle: on Unix, neither readable by others nor writable by group or others
/// (mode `0o026` clear), and on Linux owned by this process's user or by root (a secret the
/// platform mounts, such as a Kubernetes secret with `defaultMode: 0440`). The text is
/// returned whole; what it holds is the caller's to parse.
///
/// # Errors
/// [`KeyFileError::Read`], [`KeyFileError::OpenToOthers`], [`KeyFileError::OtherOwner`].
pub fn read_private_file(path: impl AsRef<Path>) -> Result<String, KeyFileError> {
    use std::io::Read;
    let path = path.as_ref();
    let read_error = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(read_error)?;
        let mode = meta.mode() & 0o777;
        if mode & 0o026 != 0 {
            return Err(KeyFileError::OpenToOthers {
                path: path.to_owned(),
                mode,
            });
        }
        // Linux tells this process's user through /proc; elsewhere the mode check stands alone.
        // Root's files are taken too (secrets mounted by the platform, mode 0400/0440).
        if let Ok(me) = std::fs::metadata("/proc/self")
            && meta.uid() != me.uid()
            && meta.uid() != 0
        {
            return Err(KeyFileError::OtherOwner {
                path: path.to_owned(),
                uid: meta.uid(),
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    Ok(text)
}

impl Key {
    /// A key from its text, as a key file or variable holds it: for an HMAC algorithm the
    /// secret in base64 (standard or URL-safe, padded or not); otherwise a PEM private key
    /// (PKCS#8, or PKCS#1 for RSA), a PEM public key (verification only), or a JWK: private
    /// (`d`) for EC and Ed25519 keys, public for every asymmetric one. A JWK's `alg`, when
    /// present, must be `alg`; its own `kid` is not used (the key is `kid`).
    ///
    /// ```
    /// use baton_token::{Algorithm, Key};
    ///
    /// let pem = Key::generate("k", Algorithm::ES256).unwrap().private_pkcs8_pem().unwrap().to_owned();
    /// assert!(Key::from_text("k1", Algorithm::ES256, &pem).unwrap().can_sign());
    /// let jwk = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    /// assert!(Key::from_text("k2", Algorithm::EdDSA, jwk).unwrap().can_sign());
    /// let err = Key::from_text("k3", Algorithm::HS256, "not base64!").unwrap_err();
    /// assert!(err.to_string().contains("base64"), "{err}");
    /// ```
    ///
    /// # Errors
    /// [`KeyError`] naming what is wrong: not base64, not PEM or JSON, a PEM or JWK that is
    /// not a key for `alg`, a secret too short.
    pub fn from_text(kid: impl AsRef<str>, alg: Algorithm, text: &str) -> Result<Key, KeyError> {
        let kid = kid.as_ref();
        let text = text.trim();
        if alg.is_symmetric() {
            let secret = STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|e| KeyError::Invalid {
                    alg,
                    reason: format!("the HMAC secret is not base64 ({e})"),
                })?;
            return Key::hmac(kid, alg, secret);
        }
        if text.starts_with('{') {
            return from_jwk_text(kid, alg, text);
        }
        if !text.starts_with("-----BEGIN ") {
            return Err(KeyError::Invalid {
                alg,
                reason: "neither PEM (-----BEGIN ...) nor a JSON Web Key".to_owned(),
            });
        }
        if text.starts_with("-----BEGIN PUBLIC KEY-----")
            || text.starts_with("-----BEGIN RSA PUBLIC KEY-----")
        {
            Key::from_public_pem(kid, alg, text.as_bytes())
        } else {
            Key::from_pem(kid, alg, text.as_bytes())
        }
    }

    /// A key from the file at `path` (see [`from_text`](Self::from_text) for what it may
    /// hold), read only after [`read_private_file`]'s checks: a key file other users can
    /// read or change is refused, whatever it holds.
    ///
    /// # Errors
    /// [`KeyFileError`] naming the file and what is wrong with it or with its key.
    pub fn from_file(
        kid: impl AsRef<str>,
        alg: Algorithm,
        path: impl AsRef<Path>,
    ) -> Result<Key, KeyFileError> {
        let path = path.as_ref();
        let text = read_private_file(path)?;
        from_loaded(kid.as_ref(), alg, &text, path.display().to_string())
    }

    /// A key from the environment variable `name` (see [`from_text`](Self::from_text) for
    /// what it may hold).
    ///
    /// # Errors
    /// [`KeyFileError::NotSet`], [`KeyFileError::Empty`], [`KeyFileError::Key`].
    pub fn from_env(kid: impl AsRef<str>, alg: Algorithm, name: &str) -> Result<Key, KeyFileError> {
        let text = std::env::var(name).map_err(|_| KeyFileError::NotSet {
            name: name.to_owned(),
        })?;
        from_loaded(
            kid.as_ref(),
            alg,
            &text,
            format!("environment variable {name}"),
        )
    }
}

fn from_loaded(kid: &str, alg: Algorithm, text: &str, origin: String) -> Result<Key, KeyFileError> {
    if text.trim().is_empty() {
        return Err(KeyFileError::Empty { origin });
    }
    Key::from_text(kid, alg, text).map_err(|source| KeyFileError::Key { origin, source })
}

/// A JWK's text: a private EC or Ed25519 key (re-encoded as PKCS#8), or a public key.
fn from_jwk_text(kid: &str, alg: Algorithm, text: &str) -> Result<Key, KeyError> {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair,
    };
    let invalid = |reason: String| KeyError::Invalid { alg, reason };
    let jwk: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a JSON Web Key ({e})")))?;
    let field = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
    if let Some(named) = field("alg")
        && named != alg.as_str()
    {
        return Err(invalid(format!("the JWK is for {named}")));
    }
    let bytes = |name: &str| -> Result<Vec<u8>, KeyError> {
        let value = field(name).ok_or_else(|| invalid(format!("the JWK has no {name:?}")))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|e| invalid(format!("the JWK's {name:?} is not base64url ({e})")))
    };
    let (kty, crv) = (field("kty").unwrap_or_default(), field("crv"));
    let expected = match alg {
        Algorithm::ES256 => ("EC", Some("P-256")),
        Algorithm::ES384 => ("EC", Some("P-384")),
        Algorithm::EdDSA => ("OKP", Some("Ed25519")),
        _ => ("RSA", None),
    };
    if (kty, crv) != expected && !(expected.0 == "RSA" && kty == "RSA") {
        return Err(invalid(format!(
            "the JWK is kty {kty:?} crv {:?}, not a {alg} key",
            crv.unwrap_or("")
        )));
    }
    if jwk.get("d").is_none() {
        // Public: verification only, through the JWK path every other public key takes.
        let mut public = jwk.clone();
        public.insert("kid".to_owned(), kid.into());
        public.insert("alg".to_owned(), alg.as_str().into());
        return Key::from_jwk(&serde_json::Value::Object(public).to_string());
    }
    let unreadable = |_| invalid("the JWK's private key does not match its public key".to_owned());
    let pkcs8 = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let curve = if alg == Algorithm::ES256 {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            };
            // The uncompressed point: 0x04 || x || y.
            let mut point = vec![4u8];
            point.extend(bytes("x")?);
            point.extend(bytes("y")?);
            EcdsaKeyPair::from_private_key_and_public_key(curve, &bytes("d")?, &point)
                .map_err(unreadable)?
                .to_pkcs8v1()
                .map_err(|_| invalid("the key cannot be encoded".to_owned()))?
                .as_ref()
                .to_vec()
        }
        Algorithm::EdDSA => Ed25519KeyPair::from_seed_and_public_key(&bytes("d")?, &bytes("x")?)
            .map_err(unreadable)?
            .to_pkcs8v1()
            .map_err(|_| invalid("the key cannot be encoded".to_owned()))?
            .as_ref()
            .to_vec(),
        _ => {
            return Err(invalid(
                "a private RSA JWK is not read; give the key as PEM (PKCS#8 or PKCS#1)".to_owned(),
            ));
        }
    };
    Key::from_der(kid, alg, &pkcs8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, text: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-key-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    fn token_roundtrip(key: Key, verify_with: Key) {
        let issuer = crate::Issuer::new(crate::KeySet::new(key).unwrap());
        let token = issuer
            .issue("alice", None, crate::NoCustomClaims {})
            .unwrap()
            .token;
        let verifier = crate::Verifier::new(crate::KeySet::verify_only([verify_with]).unwrap());
        verifier
            .verify::<crate::NoCustomClaims>(&token)
            .expect("the loaded key's tokens verify");
    }

    #[test]
    fn every_kind_of_key_text_loads_from_a_private_file() {
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::RS256,
        ] {
            let generated = Key::generate("g", alg).unwrap();
            let pem = generated.private_pkcs8_pem().unwrap().to_owned();
            let path = scratch(&format!("{alg}.pem"), &pem, 0o600);
            let loaded = Key::from_file("k1", alg, &path).unwrap();
            assert!(loaded.can_sign());
            assert_eq!(loaded.kid(), "k1");
            // Its public JWK, as a verification key from text.
            let public = generated.public_jwk_json().unwrap();
            let verify = Key::from_text("k1", alg, &public).unwrap();
            assert!(!verify.can_sign());
            token_roundtrip(loaded, verify);
        }
        let secret = STANDARD.encode([9u8; 32]);
        let path = scratch("hs256.key", &format!("{secret}\n"), 0o400);
        let loaded = Key::from_file("k1", Algorithm::HS256, &path).unwrap();
        token_roundtrip(
            loaded,
            Key::hmac("k1", Algorithm::HS256, [9u8; 32]).unwrap(),
        );
    }

    #[test]
    fn private_jwks_of_ec_keys_load_and_sign() {
        // RFC 7515 appendix A.3's P-256 key.
        let jwk = r#"{"kty":"EC","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
        let key = Key::from_text("k1", Algorithm::ES256, jwk).unwrap();
        assert!(key.can_sign());
        let public = r#"{"kty":"EC","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        token_roundtrip(key, Key::from_text("k1", Algorithm::ES256, public).unwrap());
        // A private part that is not the public part's.
        let mismatched = jwk.replace("jpsQnnGQmL", "kpsQnnGQmL");
        let err = Key::from_text("k1", Algorithm::ES256, &mismatched).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn bad_input_is_named() {
        let cases: [(Algorithm, &str, &str); 6] = [
            (Algorithm::ES256, "hello", "neither PEM"),
            (Algorithm::ES256, "{not json", "not a JSON Web Key"),
            (
                Algorithm::ES256,
                r#"{"kty":"OKP","crv":"Ed25519","x":"AA"}"#,
                "not a ES256 key",
            ),
            (
                Algorithm::ES256,
                r#"{"kty":"EC","crv":"P-256","alg":"ES384"}"#,
                "the JWK is for ES384",
            ),
            (
                Algorithm::RS256,
                r#"{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}"#,
                "give the key as PEM",
            ),
            (Algorithm::HS256, "c2hvcnQ=", "at least 32"),
        ];
        for (alg, text, expected) in cases {
            let err = Key::from_text("k1", alg, text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let missing = std::env::temp_dir().join("baton-no-such-key-file");
        let err = Key::from_file("k1", Algorithm::ES256, &missing).unwrap_err();
        assert!(matches!(err, KeyFileError::Read { .. }), "{err}");
        assert!(err.to_string().contains("baton-no-such-key-file"), "{err}");
        let empty = scratch("empty.pem", "\n", 0o600);
        let err = Key::from_file("k1", Algorithm::ES256, &empty).unwrap_err();
        assert!(matches!(err, KeyFileError::Empty { .. }), "{err}");
        let junk = scratch(
            "junk.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            0o600,
        );
        let err = Key::from_file("k1", Algorithm::ES256, &junk).unwrap_err();
        assert!(
            err.to_string().starts_with(&junk.display().to_string()),
            "{err}"
        );
        let err = Key::from_env("k1", Algorithm::ES256, "BATON_TEST_NO_SUCH_VARIABLE").unwrap_err();
        assert!(
            err.to_string().contains("BATON_TEST_NO_SUCH_VARIABLE"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_other_users_can_read_or_write_is_refused() {
        let pem = Key::generate("g", Algorithm::ES256)
            .unwrap()
            .private_pkcs8_pem()
            .unwrap()
            .to_owned();
        for mode in [0o644, 0o620, 0o604] {
            let path = scratch(&format!("open-{mode:o}.pem"), &pem, mode);
            let err = Key::from_file("k1", Algorithm::ES256, &path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::OpenToOthers { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        // Group may read (0o640): a deployment's group of services sharing a key.
        let path = scratch("group.pem", &pem, 0o640);
        assert!(Key::from_file("k1", Algorithm::ES256, &path).is_ok());
    }
}
