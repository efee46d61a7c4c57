//! The fast path's header reader: a header byte for byte the same as the last one selects the
//! same key without decoding; the usual header (`alg`, `kid`, `typ` as plain strings) is read
//! without allocating; anything else goes through jsonwebtoken's `Header`, as on the reference
//! path. `tests/differential.rs` holds it to the reference path and to jsonwebtoken's `decode`.

use std::sync::Arc;

use jsonwebtoken::Header;

use super::Verifier;
use super::segment::{PartError, with_decoded};
use crate::{ErrorKind, Key, KeySet, VerifyError};

impl Verifier {
    /// The key a token's header selected last time, if this header is byte for byte the same
    /// and that key is still in `keys` (and, for a header without `kid`, still the only one):
    /// the same bytes decode to the same header and select the same key, so decoding them again
    /// can be skipped.
    pub(super) fn remembered_header<'k>(
        &self,
        header_b64: &str,
        keys: &'k KeySet,
    ) -> Option<(&'k Arc<Key>, bool)> {
        let memo = self.inner.header_memo.load();
        let memo = memo.as_ref()?;
        if &*memo.header_b64 != header_b64 {
            return None;
        }
        Some((keys.reselect(&memo.key, memo.kid_less)?, memo.kid_less))
    }

    /// Decodes the header and selects its key (steps 2 and 3), and remembers the header.
    pub(super) fn read_header<'k>(
        &self,
        header_b64: &str,
        keys: &'k KeySet,
    ) -> Result<(&'k Arc<Key>, bool), VerifyError> {
        let (key, kid_less) = with_decoded(header_b64, |bytes| {
            // The common header ({"alg","typ","kid"} as plain strings) is read without
            // allocating; anything else goes through jsonwebtoken's `Header`, as on the
            // reference path, so both accept and refuse the same headers.
            // (A derived struct also reads from a JSON array, which `Header` refuses:
            // only an object takes the short route.)
            let simple = match bytes.first() {
                Some(b'{') => serde_json::from_slice::<SimpleHeader<'_>>(bytes).ok(),
                _ => None,
            };
            match simple {
                Some(h) => self.select_key(keys, h.alg, h.kid, false),
                None => match serde_json::from_slice::<Header>(bytes) {
                    Ok(h) => self.select_key(keys, h.alg, h.kid.as_deref(), is_critical(&h)),
                    Err(e) => Err(header_error(e)),
                },
            }
        })
        .map_err(header_error)
        .and_then(|key| key)?;
        // Headers are short; a longer one (odd extra members) is not worth remembering.
        if header_b64.len() <= 256 {
            self.inner.header_memo.store(Some(Arc::new(HeaderMemo {
                header_b64: header_b64.into(),
                key: Arc::clone(key),
                kid_less,
            })));
        }
        Ok((key, kid_less))
    }

    /// Steps 2 and 3 once the header is read: no `crit` (nor an unencoded payload), a key for
    /// the `kid`, the key's algorithm.
    pub(super) fn select_key<'k>(
        &self,
        keys: &'k KeySet,
        alg: jsonwebtoken::Algorithm,
        kid: Option<&str>,
        crit: bool,
    ) -> Result<(&'k Arc<Key>, bool), VerifyError> {
        if crit {
            return Err(VerifyError::new(
                ErrorKind::Malformed,
                "critical header parameters are not supported",
            ));
        }
        let key = keys.find(kid).ok_or_else(|| {
            if let Some(hook) = &self.inner.unknown_key {
                hook(kid.unwrap_or(""));
            }
            VerifyError::new(ErrorKind::UnknownKey, "unknown signing key")
        })?;
        if alg != key.algorithm().to_jwt() {
            return Err(VerifyError::new(
                ErrorKind::WrongAlgorithm,
                "algorithm does not match the signing key",
            ));
        }
        Ok((key, kid.is_none()))
    }
}

/// The last header that selected a key (see [`Verifier::verify`]'s fast path).
pub(super) struct HeaderMemo {
    pub(super) header_b64: Box<str>,
    pub(super) key: Arc<Key>,
    pub(super) kid_less: bool,
}

/// `true` for a header that asks for something baton does not do: any `crit` (RFC 7515
/// section 4.1.11), or a `b64` other than `true` (RFC 7797's unencoded payload, which
/// jsonwebtoken 12 refuses too).
pub(super) fn is_critical(header: &Header) -> bool {
    header.crit.is_some() || !matches!(header.extras.get::<bool>("b64"), Ok(None | Some(true)))
}

/// The usual header, borrowed from the decoded bytes: nothing but these members, each a plain
/// string (escaped strings cannot be borrowed and take the `Header` route).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SimpleHeader<'a> {
    alg: jsonwebtoken::Algorithm,
    #[serde(default, borrow)]
    kid: Option<&'a str>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    typ: Option<&'a str>,
}

pub(super) fn header_error(e: impl Into<PartError>) -> VerifyError {
    VerifyError::new(ErrorKind::Malformed, "token header is not valid").with_source(e.into())
}
