//! Keys: one `kid`, one algorithm, a prepared verifier and, to sign, a private part.

use std::fmt;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256,
    RsaEncoding, RsaKeyPair, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{DecodingKey, DecodingKeyKind, EncodingKey, Header};

use crate::{Algorithm, KeyError};

const MAX_KID_LEN: usize = 128;

/// One key: a `kid`, the one algorithm it is pinned to, its verification part and, when it can
/// sign, its private part.
///
/// Keys come from secret bytes (HMAC), PEM or DER, a JWK, or [`Key::generate`] for development.
///
/// ```
/// use baton_token::{Algorithm, Key};
///
/// let hmac = Key::hmac("k1", Algorithm::HS256, [7u8; 32]).unwrap();
/// assert_eq!(hmac.kid(), "k1");
/// assert!(Key::hmac("k2", Algorithm::HS256, [7u8; 16]).is_err(), "secret too short");
///
/// let ec = Key::generate("k3", Algorithm::ES256).unwrap();
/// assert!(ec.can_sign());
/// assert!(ec.private_pkcs8_pem().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
/// ```
pub struct Key {
    kid: Box<str>,
    alg: Algorithm,
    decoding: DecodingKey,
    prepared: Prepared,
    encoding: Option<EncodingKey>,
    /// The private part prepared to sign, when there is one.
    signer: Option<Signer>,
    pub(crate) public_jwk: Option<Jwk>,
    private_pem: Option<Box<str>>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("can_sign", &self.can_sign())
            .finish_non_exhaustive()
    }
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    if kid.is_empty() {
        return Err(KeyError::InvalidKid("empty"));
    }
    if kid.len() > MAX_KID_LEN {
        return Err(KeyError::InvalidKid("longer than 128 bytes"));
    }
    if kid.chars().any(char::is_control) {
        return Err(KeyError::InvalidKid("contains control characters"));
    }
    Ok(())
}

fn invalid(alg: Algorithm, reason: impl fmt::Display) -> KeyError {
    KeyError::Invalid {
        alg,
        reason: reason.to_string(),
    }
}

impl Key {
    fn assemble(
        kid: &str,
        alg: Algorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
        public_jwk: Option<Jwk>,
        private_pem: Option<String>,
    ) -> Result<Key, KeyError> {
        check_kid(kid)?;
        let public_jwk = public_jwk.map(|mut jwk| {
            jwk.common.key_id = Some(kid.to_owned());
            jwk.common.key_algorithm = Some(alg.to_key_algorithm());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk
        });
        let signer = encoding
            .as_ref()
            .map(|encoding| Signer::new(kid, alg, encoding))
            .transpose()?;
        Ok(Key {
            kid: kid.into(),
            alg,
            prepared: Prepared::new(alg, &decoding),
            decoding,
            encoding,
            signer,
            public_jwk,
            private_pem: private_pem.map(String::into_boxed_str),
        })
    }

    /// An HMAC key (HS256, HS384, HS512) from a shared secret of at least the hash's size.
    ///
    /// # Errors
    /// [`KeyError::WrongKeyType`] for a non-HMAC algorithm, [`KeyError::SecretTooShort`].
    pub fn hmac(
        kid: impl AsRef<str>,
        alg: Algorithm,
        secret: impl AsRef<[u8]>,
    ) -> Result<Key, KeyError> {
        let secret = secret.as_ref();
        if !alg.is_symmetric() {
            return Err(KeyError::WrongKeyType {
                alg,
                what: "an HMAC secret",
            });
        }
        if secret.len() < alg.min_secret_len() {
            return Err(KeyError::SecretTooShort {
                alg,
                len: secret.len(),
                min: alg.min_secret_len(),
            });
        }
        // jsonwebtoken refuses only an empty secret, which the length check above excludes.
        let decoding = DecodingKey::from_secret(secret).map_err(|e| invalid(alg, e))?;
        let encoding = EncodingKey::from_secret(secret).map_err(|e| invalid(alg, e))?;
        Key::assemble(kid.as_ref(), alg, decoding, Some(encoding), None, None)
    }

    /// A signing key from a PEM private key: PKCS#8 (`PRIVATE KEY`) for every algorithm, or
    /// PKCS#1 (`RSA PRIVATE KEY`) for RSA. SEC1 (`EC PRIVATE KEY`) is not read: convert it
    /// with `openssl pkcs8 -topk8 -nocrypt`.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] when the PEM is not a private key for `alg` (an ES256 key on
    /// P-384, say); [`KeyError::WrongKeyType`] for an HMAC algorithm.
    pub fn from_pem(kid: impl AsRef<str>, alg: Algorithm, pem: &[u8]) -> Result<Key, KeyError> {
        let encoding = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem),
            _ => {
                return Err(KeyError::WrongKeyType {
                    alg,
                    what: "a PEM key",
                });
            }
        }
        .map_err(|e| invalid(alg, e))?;
        let pem_text = std::str::from_utf8(pem).map_err(|e| invalid(alg, e))?;
        Key::from_encoding(
            kid.as_ref(),
            alg,
            encoding,
            Some(pem_text.trim().to_owned()),
        )
    }

    /// A signing key from DER: PKCS#8 for every algorithm, or PKCS#1 `RSAPrivateKey` for RSA.
    ///
    /// # Errors
    /// As [`Key::from_pem`].
    pub fn from_der(kid: impl AsRef<str>, alg: Algorithm, der: &[u8]) -> Result<Key, KeyError> {
        if alg.is_symmetric() {
            return Err(KeyError::WrongKeyType {
                alg,
                what: "a DER key",
            });
        }
        let pkcs8_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        match Key::from_pem(kid.as_ref(), alg, pkcs8_pem.as_bytes()) {
            Ok(key) => Ok(key),
            Err(pkcs8_err) if matches!(alg, Algorithm::RS256 | Algorithm::PS256) => {
                let pkcs1_pem = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der));
                Key::from_pem(kid.as_ref(), alg, pkcs1_pem.as_bytes()).map_err(|_| pkcs8_err)
            }
            Err(e) => Err(e),
        }
    }

    fn from_encoding(
        kid: &str,
        alg: Algorithm,
        encoding: EncodingKey,
        private_pem: Option<String>,
    ) -> Result<Key, KeyError> {
        // Deriving the public JWK parses the private key, so a bad key fails here, not when
        // the first token is signed.
        let jwk = Jwk::from_encoding_key(&encoding, alg.to_jwt()).map_err(|e| invalid(alg, e))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(alg, e))?;
        Key::assemble(kid, alg, decoding, Some(encoding), Some(jwk), private_pem)
    }

    /// A verification-only key from a PEM public key (`PUBLIC KEY`, SubjectPublicKeyInfo; or
    /// `RSA PUBLIC KEY` for RSA).
    ///
    /// # Errors
    /// [`KeyError::Invalid`], [`KeyError::WrongKeyType`] for an HMAC algorithm.
    pub fn from_public_pem(
        kid: impl AsRef<str>,
        alg: Algorithm,
        pem: &[u8],
    ) -> Result<Key, KeyError> {
        let decoding = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            Algorithm::RS256 | Algorithm::PS256 => DecodingKey::from_rsa_pem(pem),
            _ => {
                return Err(KeyError::WrongKeyType {
                    alg,
                    what: "a public key",
                });
            }
        }
        .map_err(|e| invalid(alg, e))?;
        Key::from_decoding(kid.as_ref(), alg, &decoding)
    }

    /// A verification-only key from a JWK (RFC 7517). The JWK's `kid` is used when `kid` is
    /// `None`; its `alg`, when present, must equal `alg`. Symmetric (`oct`) JWKs are refused:
    /// a shared secret is never taken from a published document.
    ///
    /// # Errors
    /// [`KeyError::Jwks`] when the JWK has no usable `kid`, a different `alg`, or bad parameters.
    pub fn from_jwk(jwk_json: &str) -> Result<Key, KeyError> {
        let jwk: Jwk = serde_json::from_str(jwk_json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        Key::from_parsed_jwk(&jwk)
    }

    pub(crate) fn from_parsed_jwk(jwk: &Jwk) -> Result<Key, KeyError> {
        let kid = jwk
            .common
            .key_id
            .as_deref()
            .ok_or(KeyError::Jwks("a key has no kid".into()))?;
        let alg_name = jwk
            .common
            .key_algorithm
            .ok_or_else(|| KeyError::Jwks(format!("key {kid:?} has no alg")))?
            .to_string();
        let alg: Algorithm = alg_name
            .parse()
            .map_err(|e| KeyError::Jwks(format!("{e}")))?;
        if alg.is_symmetric() {
            return Err(KeyError::Jwks(format!("key {kid:?} is symmetric")));
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Jwks(e.to_string()))?;
        Key::from_decoding(kid, alg, &decoding)
    }

    fn from_decoding(kid: &str, alg: Algorithm, decoding: &DecodingKey) -> Result<Key, KeyError> {
        let jwk =
            Jwk::from_decoding_key(decoding, Some(alg.to_jwt())).map_err(|e| invalid(alg, e))?;
        // Re-derive from the JWK so every public key has the same in-memory shape.
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(alg, e))?;
        Key::assemble(kid, alg, decoding, None, Some(jwk), None)
    }

    /// Generates a fresh key for development: a random secret for HMAC (as long as the hash),
    /// P-256/P-384 for ECDSA, Ed25519, or RSA 2048 for RS256 and PS256.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the system random generator fails.
    pub fn generate(kid: impl AsRef<str>, alg: Algorithm) -> Result<Key, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8: Vec<u8> = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let mut secret = vec![0u8; alg.min_secret_len()];
                rng.fill(&mut secret).map_err(|_| KeyError::Random)?;
                return Key::hmac(kid, alg, &secret);
            }
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Random)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Random)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| KeyError::Random)?
                .as_ref()
                .to_vec(),
            Algorithm::RS256 | Algorithm::PS256 => {
                use aws_lc_rs::encoding::AsDer;
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| KeyError::Random)?;
                pair.as_der()
                    .map_err(|_| KeyError::Random)?
                    .as_ref()
                    .to_vec()
            }
        };
        Key::from_der(kid, alg, &pkcs8)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key is pinned to.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// `true` when the private part is known.
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    /// The private key as PKCS#8 PEM, for keys loaded from PEM/DER or generated (to write a key
    /// file). `None` for HMAC and verification-only keys.
    ///
    /// # Security
    /// This is secret key material: store it with owner-only permissions.
    pub fn private_pkcs8_pem(&self) -> Option<&str> {
        self.private_pem.as_deref()
    }

    /// The public key as a JWK JSON object (`kid`, `alg`, `use: "sig"`); `None` for HMAC keys.
    pub fn public_jwk_json(&self) -> Option<String> {
        self.public_jwk
            .as_ref()
            .and_then(|j| serde_json::to_string(j).ok())
    }

    pub(crate) fn encoding_key(&self) -> Option<&EncodingKey> {
        self.encoding.as_ref()
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    pub(crate) fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    pub(crate) fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }
}

/// The signing half of a key, prepared once, with its JWS header already encoded.
///
/// `jsonwebtoken::encode` builds its signer from the key's bytes on every call: it parses the
/// private key again and, for ECDSA, checks the key (a point multiplication): together a third
/// of an ES256 token's cost. These are the same aws-lc-rs key types, parsed from the same
/// bytes as jsonwebtoken's aws-lc-rs backend parses them, so both sign alike: byte for byte
/// for the deterministic algorithms (`tests/sign_differential.rs`).
pub(crate) struct Signer {
    key: SigningKey,
    /// `base64url(JSON(header))` of every token this key signs: jsonwebtoken's `Header` with
    /// the key's `alg` and `kid`, serialized as `encode` serializes it.
    header_b64: Box<str>,
}

enum SigningKey {
    Hmac(Box<hmac::Key>),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
}

impl Signer {
    fn new(kid: &str, alg: Algorithm, encoding: &EncodingKey) -> Result<Signer, KeyError> {
        let bytes = encoding.as_bytes();
        let key = match alg {
            Algorithm::HS256 => Ok(SigningKey::Hmac(Box::new(hmac::Key::new(
                hmac::HMAC_SHA256,
                bytes,
            )))),
            Algorithm::HS384 => Ok(SigningKey::Hmac(Box::new(hmac::Key::new(
                hmac::HMAC_SHA384,
                bytes,
            )))),
            Algorithm::HS512 => Ok(SigningKey::Hmac(Box::new(hmac::Key::new(
                hmac::HMAC_SHA512,
                bytes,
            )))),
            Algorithm::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
                .map(SigningKey::Ecdsa)
                .map_err(|e| invalid(alg, e)),
            Algorithm::ES384 => EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, bytes)
                .map(SigningKey::Ecdsa)
                .map_err(|e| invalid(alg, e)),
            Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(bytes)
                .map(SigningKey::Ed25519)
                .map_err(|e| invalid(alg, e)),
            Algorithm::RS256 => RsaKeyPair::from_der(bytes)
                .map(|pair| SigningKey::Rsa(pair, &RSA_PKCS1_SHA256))
                .map_err(|e| invalid(alg, e)),
            Algorithm::PS256 => RsaKeyPair::from_der(bytes)
                .map(|pair| SigningKey::Rsa(pair, &RSA_PSS_SHA256))
                .map_err(|e| invalid(alg, e)),
        }?;
        let mut header = Header::new(alg.to_jwt());
        header.kid = Some(kid.to_owned());
        let header = serde_json::to_vec(&header).map_err(|e| invalid(alg, e))?;
        Ok(Signer {
            key,
            header_b64: URL_SAFE_NO_PAD.encode(header).into_boxed_str(),
        })
    }

    /// The compact JWS of `claims`: `header.payload.signature`, each base64url.
    pub(crate) fn sign<C: serde::Serialize>(
        &self,
        claims: &C,
    ) -> Result<String, crate::IssueError> {
        let failed = |e: &dyn fmt::Display| crate::IssueError::Signing(e.to_string());
        let payload = serde_json::to_vec(claims).map_err(|e| failed(&e))?;
        // header + '.' + payload + '.' + a signature of up to 1,024 bytes (RSA-8192).
        let mut token = String::with_capacity(
            self.header_b64.len() + 2 + (payload.len() * 4).div_ceil(3) + 1366,
        );
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let message = token.as_bytes();
        let signature = |bytes: &[u8], token: &mut String| {
            token.push('.');
            URL_SAFE_NO_PAD.encode_string(bytes, token);
        };
        match &self.key {
            SigningKey::Hmac(key) => {
                let tag = hmac::sign(key, message);
                signature(tag.as_ref(), &mut token);
            }
            SigningKey::Ecdsa(pair) => {
                let sig = pair
                    .sign(&SystemRandom::new(), message)
                    .map_err(|e| failed(&e))?;
                signature(sig.as_ref(), &mut token);
            }
            SigningKey::Ed25519(pair) => {
                let sig = pair.sign(message);
                signature(sig.as_ref(), &mut token);
            }
            SigningKey::Rsa(pair, encoding) => {
                let mut buf = [0u8; 1024];
                let mut heap;
                let out = match buf.get_mut(..pair.public_modulus_len()) {
                    Some(out) => out,
                    None => {
                        heap = vec![0u8; pair.public_modulus_len()];
                        &mut heap[..]
                    }
                };
                pair.sign(*encoding, &SystemRandom::new(), message, out)
                    .map_err(|e| failed(&e))?;
                signature(out, &mut token);
            }
        }
        Ok(token)
    }
}

/// The verification half of a key, prepared once: the aws-lc-rs HMAC key or parsed public key
/// that `jsonwebtoken::crypto::verify` would otherwise rebuild from the raw key bytes on every
/// call. The same aws-lc-rs algorithms as jsonwebtoken's aws-lc-rs backend, so both verify and
/// refuse the same signatures.
pub(crate) enum Prepared {
    Hmac(Box<hmac::Key>),
    Public(ParsedPublicKey),
    /// Key bytes aws-lc-rs does not accept: jsonwebtoken would fail every verification with
    /// them, and so does this.
    Unusable,
}

impl Prepared {
    pub(crate) fn new(alg: Algorithm, decoding: &DecodingKey) -> Prepared {
        let parsed = |params: &'static dyn VerificationAlgorithm| match decoding.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(params, bytes).ok(),
            DecodingKeyKind::RsaModulusExponent { .. } => None,
        };
        let rsa = |params: &'static RsaParameters| match decoding.kind() {
            DecodingKeyKind::SecretOrDer(der) => ParsedPublicKey::new(params, der).ok(),
            DecodingKeyKind::RsaModulusExponent { n, e } => RsaPublicKeyComponents { n, e }
                .to_parsed_public_key(params)
                .ok(),
        };
        let hmac = |alg: hmac::Algorithm| match decoding.kind() {
            DecodingKeyKind::SecretOrDer(secret) => Some(Box::new(hmac::Key::new(alg, secret))),
            DecodingKeyKind::RsaModulusExponent { .. } => None,
        };
        let prepared = match alg {
            Algorithm::HS256 => hmac(hmac::HMAC_SHA256).map(Prepared::Hmac),
            Algorithm::HS384 => hmac(hmac::HMAC_SHA384).map(Prepared::Hmac),
            Algorithm::HS512 => hmac(hmac::HMAC_SHA512).map(Prepared::Hmac),
            Algorithm::ES256 => parsed(&ECDSA_P256_SHA256_FIXED).map(Prepared::Public),
            Algorithm::ES384 => parsed(&ECDSA_P384_SHA384_FIXED).map(Prepared::Public),
            Algorithm::EdDSA => parsed(&ED25519).map(Prepared::Public),
            Algorithm::RS256 => rsa(&RSA_PKCS1_2048_8192_SHA256).map(Prepared::Public),
            Algorithm::PS256 => rsa(&RSA_PSS_2048_8192_SHA256).map(Prepared::Public),
        };
        prepared.unwrap_or(Prepared::Unusable)
    }

    /// Whether `signature` (already base64-decoded) signs `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Prepared::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Prepared::Public(key) => key.verify_sig(message, signature).is_ok(),
            Prepared::Unusable => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeySet;

    #[test]
    fn every_algorithm_generates_and_publishes_asymmetric_keys_only() {
        for alg in Algorithm::ALL {
            let key = Key::generate(format!("k-{alg}"), alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            assert!(key.can_sign());
            assert_eq!(
                key.public_jwk_json().is_some(),
                !alg.is_symmetric(),
                "{alg}"
            );
        }
    }

    #[test]
    fn pem_round_trip_keeps_the_public_key() {
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::RS256,
        ] {
            let key = Key::generate("a", alg).unwrap();
            let again =
                Key::from_pem("a", alg, key.private_pkcs8_pem().unwrap().as_bytes()).unwrap();
            assert_eq!(key.public_jwk_json(), again.public_jwk_json(), "{alg}");
        }
    }

    #[test]
    fn a_key_for_the_wrong_curve_or_type_is_refused() {
        let p256 = Key::generate("a", Algorithm::ES256).unwrap();
        let pem = p256.private_pkcs8_pem().unwrap().as_bytes();
        assert!(Key::from_pem("a", Algorithm::ES384, pem).is_err());
        assert!(Key::from_pem("a", Algorithm::RS256, pem).is_err());
        assert!(Key::from_pem("a", Algorithm::HS256, pem).is_err());
        assert!(Key::from_pem("a", Algorithm::ES256, b"not a pem").is_err());
        assert!(Key::from_der("a", Algorithm::EdDSA, &[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }

    #[test]
    fn kids_are_checked() {
        assert!(Key::hmac("", Algorithm::HS256, [0; 32]).is_err());
        assert!(Key::hmac("a\nb", Algorithm::HS256, [0; 32]).is_err());
        assert!(Key::hmac("x".repeat(129), Algorithm::HS256, [0; 32]).is_err());
        let set = KeySet::new(Key::hmac("a", Algorithm::HS256, [0; 32]).unwrap()).unwrap();
        assert!(matches!(
            set.with_key(Key::hmac("a", Algorithm::HS256, [1; 32]).unwrap()),
            Err(KeyError::DuplicateKid(_))
        ));
    }
}
