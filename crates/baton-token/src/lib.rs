#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algorithm;
mod cache;
mod claims;
mod dpop;
mod error;
mod issue;
mod key;
mod key_file;
mod keyset;
mod verify;

pub use algorithm::{Algorithm, UnsupportedAlgorithm};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use baton_core::TestClock;
pub use baton_core::{Clock, SystemClock};
pub use cache::TokenCache;
pub use claims::{Audience, Claims, Confirmation, NoCustomClaims};
pub use dpop::{
    DPOP_ALGORITHMS, DpopError, DpopKey, DpopVerifier, ProofRequest, VerifiedProof, normalize_htu,
};
pub use error::{ErrorKind, IssueError, KeyError, VerifyError};
pub use issue::{AccessToken, Issuer};
pub use key::Key;
pub use key_file::{KeyFileError, read_private_file};
pub use keyset::{KeyRing, KeySet, KeySetGuard};
pub use verify::{UnknownKeyHook, Verifier};
