//! The sign-in flow's state between the redirect to the provider and the callback: sealed
//! (AES-256-GCM, aws-lc-rs) into a short-lived cookie, so the server keeps nothing and the
//! browser can neither read the PKCE verifier nor change a field.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::OidcError;

/// What the callback needs to finish a sign-in the start began.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FlowState {
    /// The provider the flow went to.
    pub(crate) provider: String,
    /// The `state` sent: the callback's must equal it.
    pub(crate) state: String,
    /// The `nonce` sent: the ID token's must equal it.
    pub(crate) nonce: String,
    /// The PKCE verifier of the challenge sent.
    pub(crate) verifier: String,
    /// Where to go once signed in: a same-origin path.
    pub(crate) return_to: String,
    /// Linking: the signed-in user the identity is for.
    pub(crate) link_user: Option<String>,
    /// Seconds since the epoch after which the flow is void.
    pub(crate) expires: u64,
}

/// Seals and opens flow states.
pub(crate) struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer with `secret` (32 bytes).
    pub(crate) fn new(secret: &[u8; 32]) -> Result<Self, OidcError> {
        let key = UnboundKey::new(&AES_256_GCM, secret)
            .map_err(|_| OidcError::Config("the flow key is not usable".to_owned()))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `state` sealed for `provider`'s callback cookie.
    pub(crate) fn seal(&self, state: &FlowState) -> Result<String, OidcError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| OidcError::Config("the random generator failed".to_owned()))?;
        let mut data =
            serde_json::to_vec(state).map_err(|e| OidcError::Config(format!("flow state: {e}")))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(state.provider.as_bytes()),
                &mut data,
            )
            .map_err(|_| OidcError::Config("sealing failed".to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The state sealed in `value` for `provider`, if it is one this sealer made (for that
    /// provider) and it has not expired at `now`.
    pub(crate) fn open(&self, value: &str, provider: &str, now: u64) -> Option<FlowState> {
        let mut bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(provider.as_bytes()), &mut sealed)
            .ok()?;
        let state: FlowState = serde_json::from_slice(plain).ok()?;
        (state.provider == provider && now <= state.expires).then_some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FlowState {
        FlowState {
            provider: "google".into(),
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_to: "/".into(),
            link_user: None,
            expires: 100,
        }
    }

    #[test]
    fn a_sealed_state_opens_for_its_provider_until_it_expires() {
        let sealer = Sealer::new(&[3; 32]).unwrap();
        let sealed = sealer.seal(&state()).unwrap();
        assert_eq!(sealer.open(&sealed, "google", 100), Some(state()));
        assert_eq!(sealer.open(&sealed, "google", 101), None, "expired");
        assert_eq!(sealer.open(&sealed, "kakao", 50), None, "another provider");
        assert_eq!(
            Sealer::new(&[4; 32]).unwrap().open(&sealed, "google", 50),
            None
        );
        let mut tampered = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            sealer.open(&URL_SAFE_NO_PAD.encode(tampered), "google", 50),
            None
        );
        assert_eq!(sealer.open("not base64 !", "google", 50), None);
        assert_eq!(sealer.open("", "google", 50), None);
    }
}
