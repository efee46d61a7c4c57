//! Decoding a token's segments: base64url into a stack buffer on the fast path, into a fresh
//! allocation on the reference path.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;

/// Why a segment did not decode: not base64url, or not the expected JSON.
#[derive(Debug, thiserror::Error)]
pub(super) enum PartError {
    #[error("segment is not base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("segment is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Which signature check and segment decoding [`Verifier::verify_in`] uses.
#[derive(Clone, Copy)]
pub(super) enum Path {
    /// Prepared keys, stack buffers.
    Prepared,
    /// `jsonwebtoken::crypto::verify`, a fresh allocation per segment.
    Reference,
}

impl Path {
    /// Decodes one base64url (unpadded, as RFC 7515 requires) JSON segment.
    pub(super) fn decode<T: DeserializeOwned>(self, segment: &str) -> Result<T, PartError> {
        match self {
            Path::Prepared => with_decoded(segment, |bytes| serde_json::from_slice(bytes))?
                .map_err(PartError::from),
            Path::Reference => {
                let bytes = URL_SAFE_NO_PAD.decode(segment)?;
                Ok(serde_json::from_slice(&bytes)?)
            }
        }
    }
}

/// Decodes base64url `segment` (unpadded, strict: the engine jsonwebtoken uses) and hands the
/// bytes to `f`: from a stack buffer just large enough (128, 512 or 1,024 bytes: an RSA-8192
/// signature is 1,024), else from the heap.
pub(super) fn with_decoded<R>(
    segment: &str,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, base64::DecodeError> {
    match base64::decoded_len_estimate(segment.len()) {
        0..=128 => on_stack::<128, R>(segment, f),
        129..=512 => on_stack::<512, R>(segment, f),
        513..=1024 => on_stack::<1024, R>(segment, f),
        _ => URL_SAFE_NO_PAD.decode(segment).map(|bytes| f(&bytes)),
    }
}

fn on_stack<const N: usize, R>(
    segment: &str,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, base64::DecodeError> {
    let mut buf = [0u8; N];
    match URL_SAFE_NO_PAD.decode_slice(segment, &mut buf) {
        Ok(len) => Ok(f(&buf[..len])),
        Err(base64::DecodeSliceError::DecodeError(e)) => Err(e),
        // The estimate is an upper bound, so the buffer is always large enough; decode on the
        // heap all the same rather than trust that.
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
            URL_SAFE_NO_PAD.decode(segment).map(|bytes| f(&bytes))
        }
    }
}
