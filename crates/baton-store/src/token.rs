//! The refresh-token format, session ids, and the server-side keys that authenticate tokens.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::{ConfigError, StoreError};

const TAG_LEN: usize = 9;
const RANDOM_LEN: usize = 15;
const SID_LEN: usize = TAG_LEN + RANDOM_LEN;
const MAC_LEN: usize = 32;
/// sid, generation (u64 big-endian), key id, MAC.
const RAW_LEN: usize = SID_LEN + 8 + 1 + MAC_LEN;
const PREFIX: &str = "v1.";
/// `"v1."` and 65 bytes in unpadded base64url.
pub(crate) const TOKEN_LEN: usize = 3 + 87;
const MAC_CONTEXT: &[u8] = b"baton.refresh.v1";

/// The id of a session: one login on one device.
///
/// 24 random-looking bytes in base64url (32 characters). The first 9 bytes are a hash of the
/// user id (the *user tag*), so that every key of one user lands in one Redis hash slot; the
/// other 15 are random. Session ids are not secret: access tokens carry them as `sid`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; SID_LEN]);

impl SessionId {
    /// A new random session id for `user_id`.
    ///
    /// # Errors
    /// [`StoreError::Internal`] when the random generator fails.
    pub fn generate(user_id: &str) -> Result<Self, StoreError> {
        let mut bytes = [0u8; SID_LEN];
        bytes[..TAG_LEN].copy_from_slice(&user_tag(user_id));
        SystemRandom::new()
            .fill(&mut bytes[TAG_LEN..])
            .map_err(|_| StoreError::Internal("random generator failed"))?;
        Ok(SessionId(bytes))
    }

    /// The base64url user tag (12 characters): shared by all sessions of one user.
    pub fn user_tag(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0[..TAG_LEN])
    }

    /// The base64url random part (20 characters).
    pub fn random_part(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0[TAG_LEN..])
    }

    /// `true` when this session id was made for `user_id` (its tag matches).
    pub fn belongs_to(&self, user_id: &str) -> bool {
        self.0[..TAG_LEN] == user_tag(user_id)
    }

    /// The id's 24 bytes (a store keeping them in a binary column).
    pub fn as_bytes(&self) -> &[u8; SID_LEN] {
        &self.0
    }

    /// The id from its 24 bytes, as [`as_bytes`](Self::as_bytes) gave them.
    ///
    /// # Errors
    /// [`InvalidSessionId`] when `bytes` is not 24 bytes long.
    ///
    /// ```
    /// use baton_store::SessionId;
    /// let id = SessionId::generate("alice").unwrap();
    /// assert_eq!(SessionId::from_bytes(id.as_bytes()).unwrap(), id);
    /// assert!(SessionId::from_bytes(&[0; 23]).is_err());
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidSessionId> {
        <[u8; SID_LEN]>::try_from(bytes)
            .map(SessionId)
            .map_err(|_| InvalidSessionId)
    }
}

/// The user tag: the first 9 bytes of SHA-256 over a context string and the user id.
pub(crate) fn user_tag(user_id: &str) -> [u8; TAG_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"baton.user-tag.v1\0");
    ctx.update(user_id.as_bytes());
    let digest = ctx.finish();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&digest.as_ref()[..TAG_LEN]);
    tag
}

/// The base64url user tag of `user_id`, as in [`SessionId::user_tag`].
pub fn user_tag_of(user_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(user_tag(user_id))
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// A string that is not a session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session id")]
pub struct InvalidSessionId;

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(InvalidSessionId);
        }
        let mut bytes = [0u8; SID_LEN];
        match URL_SAFE_NO_PAD.decode_slice(s, &mut bytes) {
            Ok(SID_LEN) => Ok(SessionId(bytes)),
            _ => Err(InvalidSessionId),
        }
    }
}

/// An opaque refresh token, as handed to the client (in a cookie).
///
/// `v1.` followed by 87 base64url characters: the session id, the generation, the id of the
/// server key, and an HMAC-SHA256 over them with that key (256 bits the client cannot forge).
/// Cookie-safe, fixed length, so malformed tokens are refused without any store access.
/// `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// The token's text, to put in a cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The token's text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

/// A refresh token whose MAC verified: genuine, issued by this server for this session and
/// generation (whether it is still the live one is the store's question).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The session.
    pub session_id: SessionId,
    /// The generation the token was issued for (0 at login, +1 per rotation).
    pub generation: u64,
}

/// The server-side keys that authenticate refresh tokens: one active key that mints, and
/// older keys (by one-byte id) that still verify.
///
/// The store never sees these keys, so a dump of the store alone yields no usable token, and
/// the token for any generation can be recomputed by the server (which is how two tabs that
/// refresh together get the *same* successor).
///
/// ```
/// use baton_store::RefreshKeys;
///
/// let keys = RefreshKeys::new(1, [7u8; 32]).unwrap();
/// assert!(RefreshKeys::new(1, [7u8; 16]).is_err(), "at least 32 bytes");
/// let rotated = keys.rotate_to(2, [8u8; 32]).unwrap();
/// assert_eq!(rotated.active_id(), 2);
/// ```
#[derive(Clone)]
pub struct RefreshKeys {
    active: u8,
    keys: Vec<(u8, hmac::Key)>,
}

impl fmt::Debug for RefreshKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshKeys")
            .field("active", &self.active)
            .field(
                "ids",
                &self.keys.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RefreshKeys {
    /// Minimum secret length in bytes.
    pub const MIN_SECRET_LEN: usize = 32;

    /// Keys with one active secret, id `id`.
    ///
    /// # Errors
    /// [`ConfigError`] when the secret is shorter than 32 bytes.
    pub fn new(id: u8, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        Ok(RefreshKeys {
            active: id,
            keys: vec![(id, Self::key(secret.as_ref())?)],
        })
    }

    /// A random key, for development and tests: tokens do not survive a restart.
    ///
    /// # Errors
    /// [`StoreError::Internal`] when the random generator fails.
    pub fn generate() -> Result<Self, StoreError> {
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| StoreError::Internal("random generator failed"))?;
        Self::new(0, secret).map_err(|e| StoreError::Internal(e.what()))
    }

    fn key(secret: &[u8]) -> Result<hmac::Key, ConfigError> {
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(ConfigError::new("refresh key secret shorter than 32 bytes"));
        }
        Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Mints with a new key from now on; the previous keys keep verifying.
    ///
    /// # Errors
    /// [`ConfigError`] for a short secret or an id already in use.
    pub fn rotate_to(&self, id: u8, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        if self.keys.iter().any(|(k, _)| *k == id) {
            return Err(ConfigError::new("refresh key id already in use"));
        }
        let mut keys = self.clone();
        keys.keys.push((id, Self::key(secret.as_ref())?));
        keys.active = id;
        Ok(keys)
    }

    /// Stops accepting tokens minted with key `id` (not the active one).
    pub fn without(&self, id: u8) -> Self {
        let mut keys = self.clone();
        keys.keys.retain(|(k, _)| *k != id || *k == self.active);
        keys
    }

    /// The id of the minting key.
    pub fn active_id(&self) -> u8 {
        self.active
    }

    fn find(&self, id: u8) -> Option<&hmac::Key> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    fn mac(key: &hmac::Key, sid: &SessionId, generation: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(MAC_CONTEXT);
        ctx.update(&sid.0);
        ctx.update(&generation.to_be_bytes());
        ctx.sign()
    }

    /// The token for `session_id` at `generation`, under the active key.
    pub fn mint(&self, session_id: &SessionId, generation: u64) -> RefreshToken {
        let key = self
            .find(self.active)
            .expect("the active key is always in the set");
        let mut raw = [0u8; RAW_LEN];
        raw[..SID_LEN].copy_from_slice(&session_id.0);
        raw[SID_LEN..SID_LEN + 8].copy_from_slice(&generation.to_be_bytes());
        raw[SID_LEN + 8] = self.active;
        raw[SID_LEN + 9..].copy_from_slice(Self::mac(key, session_id, generation).as_ref());
        let mut text = String::with_capacity(TOKEN_LEN);
        text.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut text);
        RefreshToken(text)
    }

    /// A tag binding `data` under `context` (another use of the same keys, such as a device
    /// cookie): the active key's id and 16 bytes of HMAC-SHA256.
    pub fn tag(&self, context: &[u8], data: &[u8]) -> [u8; 17] {
        let key = self
            .find(self.active)
            .expect("the active key is always in the set");
        let mut out = [0u8; 17];
        out[0] = self.active;
        out[1..].copy_from_slice(&Self::tag_mac(key, context, data)[..16]);
        out
    }

    /// `true` when `tag` is [`tag`](Self::tag) of `data` under `context` by one of the keys
    /// (compared in constant time).
    pub fn check_tag(&self, context: &[u8], data: &[u8], tag: &[u8]) -> bool {
        let Some((&id, mac)) = tag.split_first() else {
            return false;
        };
        let Some(key) = self.find(id) else {
            return false;
        };
        mac.len() == 16 && bool::from(Self::tag_mac(key, context, data)[..16].ct_eq(mac))
    }

    fn tag_mac(key: &hmac::Key, context: &[u8], data: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(b"baton tag v1\0");
        ctx.update(&(context.len() as u64).to_be_bytes());
        ctx.update(context);
        ctx.update(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Checks a presented token: shape, key id, and MAC (compared in constant time). Never
    /// touches a store; `None` for anything malformed or forged.
    pub fn verify(&self, token: &str) -> Option<VerifiedToken> {
        let body = token.strip_prefix(PREFIX)?;
        if token.len() != TOKEN_LEN {
            return None;
        }
        let mut raw = [0u8; RAW_LEN];
        if URL_SAFE_NO_PAD.decode_slice(body, &mut raw).ok()? != RAW_LEN {
            return None;
        }
        let mut sid = [0u8; SID_LEN];
        sid.copy_from_slice(&raw[..SID_LEN]);
        let session_id = SessionId(sid);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&raw[SID_LEN..SID_LEN + 8]);
        let generation = u64::from_be_bytes(generation);
        let key = self.find(raw[SID_LEN + 8])?;
        let expected = Self::mac(key, &session_id, generation);
        if bool::from(expected.as_ref().ct_eq(&raw[SID_LEN + 9..])) {
            Some(VerifiedToken {
                session_id,
                generation,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_forgeries_do_not() {
        let keys = RefreshKeys::new(3, [1u8; 32]).unwrap();
        let sid = SessionId::generate("alice").unwrap();
        let token = keys.mint(&sid, 7);
        assert_eq!(token.expose().len(), TOKEN_LEN);
        assert!(
            token
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_eq!(
            keys.verify(token.expose()),
            Some(VerifiedToken {
                session_id: sid,
                generation: 7
            })
        );

        let other = RefreshKeys::new(3, [2u8; 32]).unwrap();
        assert_eq!(other.verify(token.expose()), None, "another server's key");
        let mut forged = token.expose().to_owned();
        forged.replace_range(TOKEN_LEN - 2.., "AA");
        assert_eq!(keys.verify(&forged), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(keys.verify("v1."), None);
        assert_eq!(keys.verify(&token.expose()[..TOKEN_LEN - 1]), None);
        assert_eq!(keys.verify(&format!("{}A", token.expose())), None);
        assert_eq!(keys.verify(&token.expose().replace("v1.", "v2.")), None);
        assert_eq!(keys.verify(&"é".repeat(45)), None);
    }

    #[test]
    fn rotated_keys_keep_verifying_old_tokens_until_removed() {
        let keys = RefreshKeys::new(1, [1u8; 32]).unwrap();
        let sid = SessionId::generate("bob").unwrap();
        let old = keys.mint(&sid, 0);
        let keys = keys.rotate_to(2, [2u8; 32]).unwrap();
        assert!(keys.verify(old.expose()).is_some());
        assert!(keys.verify(keys.mint(&sid, 1).expose()).is_some());
        let keys = keys.without(1);
        assert!(keys.verify(old.expose()).is_none());
        assert!(keys.rotate_to(2, [3u8; 32]).is_err());
    }

    #[test]
    fn session_ids_parse_and_carry_the_user_tag() {
        let sid = SessionId::generate("carol").unwrap();
        assert!(sid.belongs_to("carol"));
        assert!(!sid.belongs_to("dave"));
        assert_eq!(sid.to_string().parse::<SessionId>().unwrap(), sid);
        assert_eq!(sid.user_tag(), user_tag_of("carol"));
        assert_eq!(sid.user_tag().len(), 12);
        assert_eq!(sid.random_part().len(), 20);
        assert!("short".parse::<SessionId>().is_err());
        assert!("!".repeat(32).parse::<SessionId>().is_err());
    }
}
