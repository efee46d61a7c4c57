//! Keys, key sets with `kid` rotation, JWKS, and the lock-free shared [`KeyRing`].

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, RsaParameters, RsaPublicKeyComponents,
    VerificationAlgorithm,
};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{DecodingKey, DecodingKeyKind, EncodingKey};

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
    public_jwk: Option<Jwk>,
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
        Ok(Key {
            kid: kid.into(),
            alg,
            prepared: Prepared::new(alg, &decoding),
            decoding,
            encoding,
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

    /// A signing key from a PEM private key: PKCS#8 (`PRIVATE KEY`) for every algorithm, SEC1
    /// (`EC PRIVATE KEY`) for ECDSA, PKCS#1 (`RSA PRIVATE KEY`) for RSA.
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

    fn from_parsed_jwk(jwk: &Jwk) -> Result<Key, KeyError> {
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
    fn new(alg: Algorithm, decoding: &DecodingKey) -> Prepared {
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

/// A key set: at most one active signing key, an optional *next* key that is published and
/// accepted but not yet used to sign, and retired keys kept to verify tokens they signed.
///
/// Sets are immutable values: every change returns a new set, which a [`KeyRing`] swaps in
/// atomically.
///
/// # Rotation
/// 1. [`KeySet::with_next`]: publish the next key (verifiers fetching the JWKS learn it).
/// 2. [`KeySet::promote_next`]: the next key signs; the old one is kept for verification.
/// 3. [`KeySet::without`]: once the old key's last token has expired, drop it.
///
/// ```
/// use baton_token::{Algorithm, Key, KeySet};
///
/// let set = KeySet::new(Key::generate("2026-01", Algorithm::EdDSA).unwrap()).unwrap();
/// let set = set.with_next(Key::generate("2026-02", Algorithm::EdDSA).unwrap()).unwrap();
/// assert!(set.jwks_json().contains("2026-02"), "the next key is published before it signs");
/// let set = set.promote_next().unwrap();
/// assert_eq!(set.active().unwrap().kid(), "2026-02");
/// assert!(set.get("2026-01").is_some(), "the previous key still verifies");
/// let set = set.without("2026-01").unwrap();
/// assert!(set.get("2026-01").is_none());
/// ```
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Arc<Key>>,
    active: Option<usize>,
    next: Option<usize>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("active", &self.active().map(Key::kid))
            .field("next", &self.next.map(|i| self.keys[i].kid()))
            .field(
                "keys",
                &self.keys.iter().map(|k| k.kid()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeySet {
    /// A set whose only key, `active`, signs and verifies.
    ///
    /// # Errors
    /// [`KeyError::NotSigning`] when `active` has no private part.
    pub fn new(active: Key) -> Result<Self, KeyError> {
        if !active.can_sign() {
            return Err(KeyError::NotSigning(active.kid().to_owned()));
        }
        Ok(KeySet {
            keys: vec![Arc::new(active)],
            active: Some(0),
            next: None,
        })
    }

    /// A set that only verifies (no signing key), for services that accept tokens issued
    /// elsewhere.
    ///
    /// # Errors
    /// [`KeyError::DuplicateKid`].
    pub fn verify_only(keys: impl IntoIterator<Item = Key>) -> Result<Self, KeyError> {
        keys.into_iter()
            .try_fold(KeySet::default(), |set, key| set.with_key(key))
    }

    /// A verify-only set from a JWKS document (RFC 7517 section 5). Every key must carry a
    /// `kid` and an asymmetric `alg`.
    ///
    /// # Errors
    /// [`KeyError::Jwks`], [`KeyError::DuplicateKid`].
    pub fn from_jwks_json(json: &str) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let keys = set
            .keys
            .iter()
            .map(Key::from_parsed_jwk)
            .collect::<Result<Vec<_>, _>>()?;
        KeySet::verify_only(keys)
    }

    /// Adds a key that verifies but does not sign.
    ///
    /// # Errors
    /// [`KeyError::DuplicateKid`].
    pub fn with_key(&self, key: Key) -> Result<Self, KeyError> {
        if self.get(key.kid()).is_some() {
            return Err(KeyError::DuplicateKid(key.kid().to_owned()));
        }
        let mut set = self.clone();
        set.keys.push(Arc::new(key));
        Ok(set)
    }

    /// Publishes `next`: it verifies and appears in the JWKS, and [`KeySet::promote_next`]
    /// later makes it the signing key. Replaces an earlier next key.
    ///
    /// # Errors
    /// [`KeyError::NotSigning`], [`KeyError::DuplicateKid`].
    pub fn with_next(&self, next: Key) -> Result<Self, KeyError> {
        if !next.can_sign() {
            return Err(KeyError::NotSigning(next.kid().to_owned()));
        }
        let mut set = match self.next {
            Some(i) => self.without(self.keys[i].kid())?,
            None => self.clone(),
        };
        set = set.with_key(next)?;
        set.next = Some(set.keys.len() - 1);
        Ok(set)
    }

    /// Makes the next key the signing key; the previous signing key stays, verification only,
    /// so tokens it signed stay valid until they expire.
    ///
    /// # Errors
    /// [`KeyError::Missing`] when no next key was published.
    pub fn promote_next(&self) -> Result<Self, KeyError> {
        let next = self
            .next
            .ok_or(KeyError::Missing("no next key to promote"))?;
        let mut set = self.clone();
        set.active = Some(next);
        set.next = None;
        Ok(set)
    }

    /// Signs with `key` from now on, keeping the previous signing key for verification.
    /// Prefer [`KeySet::with_next`] + [`KeySet::promote_next`] when verifiers fetch the JWKS.
    ///
    /// # Errors
    /// [`KeyError::NotSigning`], [`KeyError::DuplicateKid`].
    pub fn rotate_to(&self, key: Key) -> Result<Self, KeyError> {
        if !key.can_sign() {
            return Err(KeyError::NotSigning(key.kid().to_owned()));
        }
        let mut set = self.with_key(key)?;
        set.active = Some(set.keys.len() - 1);
        Ok(set)
    }

    /// Removes the key `kid`: tokens it signed no longer verify.
    ///
    /// # Errors
    /// [`KeyError::Missing`] when there is no such key, or it is the active signing key.
    pub fn without(&self, kid: &str) -> Result<Self, KeyError> {
        let index = self
            .position(kid)
            .ok_or(KeyError::Missing("no key with that kid"))?;
        if self.active == Some(index) {
            return Err(KeyError::Missing(
                "the active signing key cannot be removed",
            ));
        }
        let shift = |i: usize| if i > index { i - 1 } else { i };
        let mut keys = self.keys.clone();
        keys.remove(index);
        Ok(KeySet {
            keys,
            active: self.active.map(shift),
            next: self.next.filter(|&n| n != index).map(shift),
        })
    }

    fn position(&self, kid: &str) -> Option<usize> {
        self.keys.iter().position(|k| &*k.kid == kid)
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().map(Arc::as_ref).find(|k| &*k.kid == kid)
    }

    /// The signing key.
    pub fn active(&self) -> Option<&Key> {
        self.active.map(|i| &*self.keys[i])
    }

    /// The published next key.
    pub fn next(&self) -> Option<&Key> {
        self.next.map(|i| &*self.keys[i])
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().map(Arc::as_ref)
    }

    /// The only key, when the set holds exactly one (used for tokens without `kid`).
    pub(crate) fn sole_arc(&self) -> Option<&Arc<Key>> {
        match self.keys.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// The key for a token's `kid`, or the sole key for a token without one.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Arc<Key>> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| &*k.kid == kid),
            None => self.sole_arc(),
        }
    }

    /// The set's handle on `key` if this very key (not merely one with the same `kid`) would
    /// still be selected for a token that selected it before: it is still in the set and, for
    /// a token without `kid`, still the only key.
    pub(crate) fn reselect(&self, key: &Arc<Key>, kid_less: bool) -> Option<&Arc<Key>> {
        if kid_less {
            self.sole_arc().filter(|k| Arc::ptr_eq(k, key))
        } else {
            self.keys.iter().find(|k| Arc::ptr_eq(k, key))
        }
    }

    /// Whether every key is an HMAC key (true of an empty set too).
    pub(crate) fn all_symmetric(&self) -> bool {
        self.keys.iter().all(|k| k.alg.is_symmetric())
    }

    /// The public keys as a JWKS document (`{"keys":[...]}`); HMAC secrets are never included.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<Jwk> = self
            .keys
            .iter()
            .filter_map(|k| k.public_jwk.clone())
            .collect();
        serde_json::to_string(&JwkSet { keys }).unwrap_or_else(|_| r#"{"keys":[]}"#.to_owned())
    }
}

/// A shared, atomically swappable [`KeySet`]: the issuer and every verifier hold clones of one
/// ring, and a rotation swaps the whole set at once. Reading it on a request takes no lock.
///
/// ```
/// use baton_token::{Algorithm, Key, KeyRing, KeySet};
///
/// let ring = KeyRing::new(KeySet::new(Key::generate("a", Algorithm::HS256).unwrap()).unwrap());
/// ring.update(|set| set.rotate_to(Key::generate("b", Algorithm::HS256)?)).unwrap();
/// assert_eq!(ring.load().active().unwrap().kid(), "b");
/// ```
#[derive(Clone)]
pub struct KeyRing {
    current: Arc<ArcSwap<KeySet>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyRing").field(&*self.load()).finish()
    }
}

/// A borrowed snapshot of a [`KeyRing`]'s current set.
pub struct KeySetGuard(arc_swap::Guard<Arc<KeySet>>);

impl Deref for KeySetGuard {
    type Target = KeySet;
    fn deref(&self) -> &KeySet {
        &self.0
    }
}

impl fmt::Debug for KeySetGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

impl KeyRing {
    /// A ring holding `set`.
    pub fn new(set: KeySet) -> Self {
        KeyRing {
            current: Arc::new(ArcSwap::from_pointee(set)),
        }
    }

    /// The current set, without taking a lock.
    pub fn load(&self) -> KeySetGuard {
        KeySetGuard(self.current.load())
    }

    /// Replaces the set.
    pub fn store(&self, set: KeySet) {
        self.current.store(Arc::new(set));
    }

    /// Replaces the set with `f(current)`, retrying if another writer swapped it meanwhile.
    ///
    /// # Errors
    /// Whatever `f` returns; the ring is then unchanged.
    pub fn update<F>(&self, mut f: F) -> Result<(), KeyError>
    where
        F: FnMut(&KeySet) -> Result<KeySet, KeyError>,
    {
        let mut current = self.current.load_full();
        loop {
            let new = Arc::new(f(&current)?);
            let previous = self.current.compare_and_swap(&current, new);
            if Arc::ptr_eq(&previous, &current) {
                return Ok(());
            }
            current = arc_swap::Guard::into_inner(previous);
        }
    }
}

impl From<KeySet> for KeyRing {
    fn from(set: KeySet) -> Self {
        KeyRing::new(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn jwks_round_trip_gives_verify_only_keys() {
        let set = KeySet::new(Key::generate("e", Algorithm::ES256).unwrap())
            .unwrap()
            .with_key(Key::generate("r", Algorithm::RS256).unwrap())
            .unwrap()
            .with_key(Key::generate("h", Algorithm::HS256).unwrap())
            .unwrap();
        let json = set.jwks_json();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            parsed["keys"].as_array().unwrap().len(),
            2,
            "no HMAC secret in {json}"
        );
        assert!(!json.contains("\"d\""), "no private parameter in {json}");
        let remote = KeySet::from_jwks_json(&json).unwrap();
        assert_eq!(remote.get("e").unwrap().algorithm(), Algorithm::ES256);
        assert!(!remote.get("r").unwrap().can_sign());
        assert!(remote.active().is_none());
        assert!(KeySet::from_jwks_json(r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).is_err());
    }

    #[test]
    fn the_active_key_cannot_be_removed_and_next_is_replaced() {
        let set = KeySet::new(Key::generate("a", Algorithm::HS256).unwrap()).unwrap();
        assert!(set.without("a").is_err());
        assert!(set.promote_next().is_err());
        let set = set
            .with_next(Key::generate("b", Algorithm::HS256).unwrap())
            .unwrap();
        let set = set
            .with_next(Key::generate("c", Algorithm::HS256).unwrap())
            .unwrap();
        assert!(set.get("b").is_none());
        assert_eq!(set.next().unwrap().kid(), "c");
        let set = set.promote_next().unwrap().without("a").unwrap();
        assert_eq!(set.active().unwrap().kid(), "c");
        assert_eq!(set.keys().count(), 1);
    }
}
