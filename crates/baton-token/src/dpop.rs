//! DPoP proofs (RFC 9449): a client proves, request by request, that it holds the private key
//! an access token is bound to.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_core::{Clock, SystemClock};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use serde::Deserialize;

use crate::Algorithm;
use crate::key::Prepared;

/// The algorithms a proof may be signed with: ES256 and EdDSA (Ed25519). Never `none`, never a
/// shared secret, no RSA (its keys make every proof half a kilobyte).
pub const DPOP_ALGORITHMS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::EdDSA];

/// The members of a JWK that only a private key has: a proof carrying one is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused. Each description is safe to send to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// The proof is malformed or does not match the request (`invalid_dpop_proof`).
    #[error("{0}")]
    Invalid(&'static str),
    /// The proof carries no `nonce`, or not the server's current one (`use_dpop_nonce`).
    #[error("a fresh server nonce is required")]
    UseNonce,
}

impl DpopError {
    /// The RFC 9449 error code: `invalid_dpop_proof` or `use_dpop_nonce`.
    pub fn code(&self) -> &'static str {
        match self {
            DpopError::Invalid(_) => "invalid_dpop_proof",
            DpopError::UseNonce => "use_dpop_nonce",
        }
    }

    /// A description that leaks nothing.
    pub fn description(&self) -> &'static str {
        match self {
            DpopError::Invalid(d) => d,
            DpopError::UseNonce => "a fresh server nonce is required",
        }
    }
}

fn invalid(what: &'static str) -> DpopError {
    DpopError::Invalid(what)
}

/// The request a proof must match.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ProofRequest<'a> {
    /// The HTTP method (`htm`), as sent: method names are case-sensitive.
    pub method: &'a str,
    /// The target URI (`htu`) as the server is reached from outside: its public origin and the
    /// request's path (`https://api.example.com/orders`). Query and fragment are ignored.
    pub uri: &'a str,
    /// The access token the proof comes with: its hash must be the proof's `ath`. `None` for
    /// a proof sent to get a token (login, refresh).
    pub access_token: Option<&'a str>,
    /// The server nonce the proof must carry, when the server hands them out.
    pub nonce: Option<&'a str>,
    /// Other target URIs the request is as well (a service reached under two names).
    pub other_uris: &'a [String],
}

impl<'a> ProofRequest<'a> {
    /// A proof for `method` on `uri`, without an access token or nonce.
    pub fn new(method: &'a str, uri: &'a str) -> Self {
        ProofRequest {
            method,
            uri,
            access_token: None,
            nonce: None,
            other_uris: &[],
        }
    }

    /// Also accepts proofs naming any of `uris` (the same request under other names).
    #[must_use]
    pub fn with_other_uris(mut self, uris: &'a [String]) -> Self {
        self.other_uris = uris;
        self
    }

    /// The access token the proof must be bound to (`ath`).
    #[must_use]
    pub fn with_access_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }

    /// The server nonce the proof must carry.
    #[must_use]
    pub fn with_nonce(mut self, nonce: &'a str) -> Self {
        self.nonce = Some(nonce);
        self
    }
}

/// A proof that passed every check but replay: the caller records `(jkt, jti)` as seen until
/// `iat` plus the verifier's window (see [`DpopVerifier::replay_window`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedProof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key, base64url: what an access token's
    /// `cnf.jkt` names.
    pub jkt: String,
    /// The proof's unique id.
    pub jti: String,
    /// When the proof was made, seconds since the epoch.
    pub iat: u64,
    /// The server nonce the proof carries, if any (checked already when the request named
    /// one; a server that accepts several checks it itself).
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct ProofHeader {
    typ: Option<String>,
    alg: String,
    jwk: Option<serde_json::Map<String, serde_json::Value>>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Checks DPoP proofs (RFC 9449 section 4.3), all but replay, which needs state shared by
/// the instances (the caller's replay cache): `typ` `dpop+jwt`; `alg` ES256 or EdDSA; the
/// `jwk` header a public key of that algorithm (no private members); the signature, checked
/// with the same prepared aws-lc-rs keys as access tokens; `htm` and `htu` equal to the
/// request's (the scheme and host compared without case, default ports dropped, query and
/// fragment ignored); `iat` within the window; `ath` the SHA-256 of the access token; `nonce`
/// when the server asks for one.
///
/// ```
/// use baton_token::{DpopError, DpopVerifier, ProofRequest};
///
/// let verifier = DpopVerifier::new();
/// let err = verifier.verify("not.a.proof", &ProofRequest::new("GET", "https://api.example/x")).unwrap_err();
/// assert_eq!(err.code(), "invalid_dpop_proof");
/// ```
#[derive(Clone)]
pub struct DpopVerifier {
    max_age: u64,
    future_skew: u64,
    max_len: usize,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyCache>,
}

/// A client's proof key, ready: parsed for aws-lc-rs, with its thumbprint.
struct ProofKey {
    key: Prepared,
    jkt: String,
}

/// The proof keys seen lately, by their JWK exactly as sent: a client signs every proof with
/// the same key, so the key is parsed (and the point checked, and the thumbprint hashed) once,
/// not on every request. At most [`KeyCache::MAX`] keys (a few hundred bytes each with
/// aws-lc-rs's own key memory); when full it starts over, so a stream of new keys costs each
/// its parse, as without the cache.
#[derive(Default)]
struct KeyCache {
    keys: RwLock<HashMap<String, Arc<ProofKey>>>,
}

impl KeyCache {
    const MAX: usize = 4096;

    fn get(&self, jwk: &str) -> Option<Arc<ProofKey>> {
        self.keys.read().ok()?.get(jwk).cloned()
    }

    fn insert(&self, jwk: String, key: Arc<ProofKey>) {
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() >= Self::MAX {
                keys.clear();
            }
            keys.insert(jwk, key);
        }
    }
}

impl fmt::Debug for DpopVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopVerifier")
            .field("max_age", &self.max_age)
            .field("future_skew", &self.future_skew)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl Default for DpopVerifier {
    fn default() -> Self {
        DpopVerifier::new()
    }
}

impl DpopVerifier {
    /// Proofs at most 60 s old and at most 60 s ahead of this clock (a client's clock may run
    /// ahead; the server hands out no nonces yet), at most 4 KiB.
    pub fn new() -> Self {
        DpopVerifier {
            max_age: 60,
            future_skew: 60,
            max_len: 4096,
            clock: Arc::new(SystemClock),
            keys: Arc::default(),
        }
    }

    /// How old a proof may be (whole seconds, at least 1).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age.as_secs().max(1);
        self
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// How long a proof's `jti` must be remembered to refuse its replay: the age window plus
    /// the tolerated skew.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(self.max_age + self.future_skew)
    }

    /// Checks `proof` against `request` (see the type's docs).
    ///
    /// # Errors
    /// [`DpopError::Invalid`] naming the first check that failed, or
    /// [`DpopError::UseNonce`].
    pub fn verify(
        &self,
        proof: &str,
        request: &ProofRequest<'_>,
    ) -> Result<VerifiedProof, DpopError> {
        if proof.len() > self.max_len {
            return Err(invalid("the DPoP proof is too large"));
        }
        let mut parts = proof.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("the DPoP proof is not a compact JWS"));
        };
        let header: ProofHeader =
            decode_json(header_b64).ok_or_else(|| invalid("the DPoP proof header is not valid"))?;
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
        {
            return Err(invalid("the DPoP proof's typ must be dpop+jwt"));
        }
        if header.crit.is_some() {
            return Err(invalid("the DPoP proof has critical headers"));
        }
        let alg = match header.alg.as_str() {
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            _ => return Err(invalid("the DPoP proof's alg is not allowed")),
        };
        let members = header
            .jwk
            .ok_or_else(|| invalid("the DPoP proof has no jwk header"))?;
        if PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m)) {
            return Err(invalid("the DPoP proof's jwk holds a private key"));
        }
        let (kty, crv) = match alg {
            Algorithm::ES256 => ("EC", "P-256"),
            _ => ("OKP", "Ed25519"),
        };
        let member = |name: &str| members.get(name).and_then(serde_json::Value::as_str);
        if member("kty") != Some(kty) || member("crv") != Some(crv) {
            return Err(invalid("the DPoP proof's jwk does not fit its alg"));
        }
        // Coordinates of exactly the curve's size (RFC 7518 section 6.2.1.2, RFC 8037): a key
        // spelled with shifted or padded coordinates would have another thumbprint.
        let coordinate = |name: &str| {
            member(name)
                .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
                .is_some_and(|bytes| bytes.len() == 32)
        };
        let sized = match alg {
            Algorithm::ES256 => coordinate("x") && coordinate("y"),
            _ => coordinate("x"),
        };
        if !sized {
            return Err(invalid("the DPoP proof's jwk does not fit its alg"));
        }
        // Remembered by the whole JWK as sent (every member, not only the coordinates), so a
        // JWK the full parse would refuse is never taken for one it accepted.
        let jwk_text = serde_json::to_string(&members)
            .map_err(|_| invalid("the DPoP proof's jwk is not valid"))?;
        let proof_key = match self.keys.get(&jwk_text) {
            Some(known) => known,
            None => {
                let jwk: Jwk = serde_json::from_value(serde_json::Value::Object(members))
                    .map_err(|_| invalid("the DPoP proof's jwk is not valid"))?;
                let decoding = DecodingKey::from_jwk(&jwk)
                    .map_err(|_| invalid("the DPoP proof's jwk is not valid"))?;
                let jkt = jwk
                    .thumbprint(ThumbprintHash::SHA256)
                    .map_err(|_| invalid("the DPoP proof's jwk is not valid"))?;
                let fresh = Arc::new(ProofKey {
                    key: Prepared::new(alg, &decoding),
                    jkt,
                });
                // A key that does not parse (a point off the curve) is not remembered.
                if !matches!(fresh.key, Prepared::Unusable) {
                    self.keys.insert(jwk_text, fresh.clone());
                }
                fresh
            }
        };
        let key = &proof_key.key;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| invalid("the DPoP proof's signature is not base64url"))?;
        let signed = &proof[..header_b64.len() + 1 + claims_b64.len()];
        if !key.verify(signed.as_bytes(), &signature) {
            return Err(invalid("the DPoP proof's signature does not verify"));
        }
        let claims: ProofClaims = decode_json(claims_b64)
            .ok_or_else(|| invalid("the DPoP proof's claims are not valid"))?;
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(invalid("the DPoP proof's jti must be 1 to 256 bytes"));
        }
        if claims.htm != request.method {
            return Err(invalid("the DPoP proof is for another method"));
        }
        let htu = normalize_htu(&claims.htu);
        let matches = htu.is_some()
            && std::iter::once(request.uri)
                .chain(request.other_uris.iter().map(String::as_str))
                .any(|uri| normalize_htu(uri) == htu);
        if !matches {
            return Err(invalid("the DPoP proof is for another URI"));
        }
        let now = self.clock.now();
        if claims.iat > now.saturating_add(self.future_skew)
            || now.saturating_sub(claims.iat) > self.max_age
        {
            return Err(invalid("the DPoP proof is too old or from the future"));
        }
        if let Some(token) = request.access_token {
            let hash = digest::digest(&digest::SHA256, token.as_bytes());
            let ath = URL_SAFE_NO_PAD.encode(hash.as_ref());
            if claims.ath.as_deref() != Some(ath.as_str()) {
                return Err(invalid(
                    "the DPoP proof's ath does not match the access token",
                ));
            }
        }
        if let Some(nonce) = request.nonce
            && claims.nonce.as_deref() != Some(nonce)
        {
            return Err(DpopError::UseNonce);
        }
        Ok(VerifiedProof {
            jkt: proof_key.jkt.clone(),
            jti: claims.jti,
            iat: claims.iat,
            nonce: claims.nonce,
        })
    }
}

/// A client's DPoP key pair (P-256 for ES256, or Ed25519 for EdDSA), made with aws-lc-rs: it
/// signs a fresh proof for every request and never leaves the process.
///
/// ```
/// use baton_token::{Algorithm, DpopKey, DpopVerifier, ProofRequest};
///
/// let key = DpopKey::generate(Algorithm::ES256).unwrap();
/// let proof = key.proof("POST", "https://api.example/auth/refresh", None, None).unwrap();
/// let verified = DpopVerifier::new()
///     .verify(&proof, &ProofRequest::new("POST", "https://api.example/auth/refresh"))
///     .unwrap();
/// assert_eq!(verified.jkt, key.jkt());
/// ```
pub struct DpopKey {
    alg: Algorithm,
    pair: DpopPair,
    header_b64: String,
    jkt: String,
    clock: Arc<dyn Clock>,
}

enum DpopPair {
    Ec(aws_lc_rs::signature::EcdsaKeyPair),
    Ed(aws_lc_rs::signature::Ed25519KeyPair),
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.alg)
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A fresh key pair for `alg` (ES256 or EdDSA).
    ///
    /// # Errors
    /// [`KeyError::WrongKeyType`](crate::KeyError) for another algorithm, [`KeyError::Random`](
    /// crate::KeyError) when the system random generator fails.
    pub fn generate(alg: Algorithm) -> Result<Self, crate::KeyError> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        };
        let (pair, jwk) = match alg {
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| crate::KeyError::Random)?;
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(crate::KeyError::Random);
                }
                let jwk = serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                });
                (DpopPair::Ec(pair), jwk)
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().map_err(|_| crate::KeyError::Random)?;
                let jwk = serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                });
                (DpopPair::Ed(pair), jwk)
            }
            other => {
                return Err(crate::KeyError::WrongKeyType {
                    alg: other,
                    what: "a DPoP key (ES256 or EdDSA only)",
                });
            }
        };
        let parsed: Jwk =
            serde_json::from_value(jwk.clone()).map_err(|_| crate::KeyError::Random)?;
        let jkt = parsed
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| crate::KeyError::Random)?;
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": alg.to_string(), "jwk": jwk });
        Ok(DpopKey {
            alg,
            pair,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            jkt,
            clock: Arc::new(SystemClock),
        })
    }

    /// Reads time from `clock` (the proofs' `iat`).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The RFC 7638 thumbprint of the public key: what bound tokens carry as `cnf.jkt`.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// A proof for `method` on `htu` (query and fragment are dropped), bound to
    /// `access_token` when given (`ath`) and carrying the server's `nonce` when given, with a
    /// fresh random `jti` and `iat` now.
    ///
    /// # Errors
    /// [`KeyError::Random`](crate::KeyError) when the random generator or the signer fails.
    pub fn proof(
        &self,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, crate::KeyError> {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        let rng = SystemRandom::new();
        let mut jti = [0u8; 16];
        rng.fill(&mut jti).map_err(|_| crate::KeyError::Random)?;
        let htu = htu.split(['?', '#']).next().unwrap_or_default();
        let mut claims = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "htm": method,
            "htu": htu,
            "iat": self.clock.now(),
        });
        if let Some(token) = access_token {
            let hash = digest::digest(&digest::SHA256, token.as_bytes());
            claims["ath"] = URL_SAFE_NO_PAD.encode(hash.as_ref()).into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let signing_input = format!(
            "{}.{}",
            self.header_b64,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.pair {
            DpopPair::Ec(pair) => pair
                .sign(&rng, signing_input.as_bytes())
                .map_err(|_| crate::KeyError::Random)?
                .as_ref()
                .to_vec(),
            DpopPair::Ed(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// An `htu` in the form two URIs compare in: `scheme://host[:port]/path`, the scheme and host
/// lower-cased, the scheme's default port dropped, an empty path as `/`, query and fragment
/// gone. `None` for anything but an absolute `http` or `https` URI.
///
/// ```
/// use baton_token::normalize_htu;
/// assert_eq!(normalize_htu("HTTPS://API.Example.com:443/a/b?x=1#f").as_deref(), Some("https://api.example.com/a/b"));
/// assert_eq!(normalize_htu("http://localhost:3000").as_deref(), Some("http://localhost:3000/"));
/// assert_eq!(normalize_htu("/relative"), None);
/// assert_eq!(normalize_htu("https://user@host/"), None);
/// ```
pub fn normalize_htu(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next()?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // A host name or address, or a bracketed IPv6 literal, then at most one `:port`.
    let bracketed = authority.starts_with('[');
    let (host, port) = if bracketed {
        match authority[1..].split_once(']') {
            Some((literal, port)) => (literal, port),
            None => return None,
        }
    } else {
        match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    let valid_host = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || (bracketed && b == b':')
        });
    let valid_port = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let valid_authority = valid_host && valid_port;
    let valid_path = path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if !valid_authority || !valid_path {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    Some(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalisation() {
        let n = |s| normalize_htu(s);
        assert_eq!(n("https://a.example/x"), n("HTTPS://A.EXAMPLE:443/x?q#f"));
        assert_ne!(n("https://a.example/x"), n("https://a.example/X"));
        assert_ne!(n("https://a.example/x"), n("http://a.example/x"));
        assert_ne!(n("https://a.example/x"), n("https://a.example:8443/x"));
        assert_eq!(n("http://[::1]:80/"), Some("http://[::1]/".to_owned()));
        for bad in [
            "",
            "a.example/x",
            "ftp://a/x",
            "https:///x",
            "https://a b/",
            "https://a/\\",
            "http://h:8080:80/x",
            "http://h:/x",
            "http://[::1/x",
            "http://h[1]/x",
            "http://h:123456/x",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }
}
