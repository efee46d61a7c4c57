//! Key sets with `kid` rotation, JWKS, and the lock-free shared [`KeyRing`].

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::{Key, KeyError};

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
        self.keys.iter().position(|k| k.kid() == kid)
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().map(Arc::as_ref).find(|k| k.kid() == kid)
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
            Some(kid) => self.keys.iter().find(|k| k.kid() == kid),
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
        self.keys.iter().all(|k| k.algorithm().is_symmetric())
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
    use crate::Algorithm;

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
