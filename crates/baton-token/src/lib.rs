//! Access tokens for baton: claims, key sets with `kid` rotation and JWKS, issuing and
//! verifying JWTs on [`jsonwebtoken`](https://docs.rs/jsonwebtoken) with the aws-lc-rs backend,
//! and an injectable clock.
//!
//! Access tokens are short-lived JWTs verified without any store round trip; refresh tokens are
//! opaque and live in `baton-store`. This crate knows nothing of HTTP: `baton-bearer` puts it
//! in front of a service.
//!
//! # Example
//! ```
//! use baton_token::{Algorithm, ErrorKind, Issuer, Key, KeyRing, KeySet, NoCustomClaims};
//!
//! // One ring shared by the issuer and every verifier; rotation swaps it atomically.
//! let ring = KeyRing::new(KeySet::new(Key::generate("2026-11", Algorithm::EdDSA)?)?);
//! let issuer = Issuer::new(ring.clone()).with_issuer("https://auth.example");
//! let verifier = issuer.verifier();
//!
//! let token = issuer.issue("user-42", Some("sess-1"), NoCustomClaims {})?.token;
//! let claims = verifier.verify::<NoCustomClaims>(&token)?;
//! assert_eq!(claims.sub, "user-42");
//!
//! // A tampered token fails with a typed error that maps to RFC 6750.
//! let mut forged = token.clone();
//! forged.push('A');
//! let err = verifier.verify::<NoCustomClaims>(&forged).unwrap_err();
//! assert_eq!(err.kind().rfc6750_code(), Some("invalid_token"));
//!
//! // Rotate: the new key signs; tokens of the old one keep verifying until removed.
//! ring.update(|set| set.rotate_to(Key::generate("2026-12", Algorithm::EdDSA)?))?;
//! assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());
//! ring.update(|set| set.without("2026-11"))?;
//! assert_eq!(verifier.verify::<NoCustomClaims>(&token).unwrap_err().kind(), ErrorKind::UnknownKey);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Speed
//! [`Verifier::verify`] prepares every key once (the aws-lc-rs HMAC key or parsed public key)
//! and decodes each part of a token once; [`Verifier::verify_reference`] is the same check
//! through `jsonwebtoken::crypto::verify`, kept as the reference the fast path is tested
//! against. A [`TokenCache`] ([`Verifier::with_cache`]) serves a repeated token from memory,
//! still checking `exp`, `nbf` and its key on every call.
//!
//! # Security
//! - Algorithms are pinned per key; `none` never verifies; the `jku`, `x5u`, `x5c` and `jwk`
//!   headers are ignored; an unknown `kid` is refused, never fetched.
//! - Tokens larger than the cap (8 KiB by default) are refused before any decoding.
//! - Requires `jsonwebtoken` 10.3 or later (earlier versions skipped `nbf`, CVE-2026-25537);
//!   the crypto backend is aws-lc-rs, chosen at build time, so no provider is picked at run time.
//!
//! # Feature flags
//! - `test-util`: [`TestClock`], a clock that moves only when a test says so. The crypto
//!   backend (aws-lc-rs) is fixed.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algorithm;
mod cache;
mod claims;
mod dpop;
mod error;
mod issue;
mod key;
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
pub use keyset::{KeyRing, KeySet, KeySetGuard};
pub use verify::{UnknownKeyHook, Verifier};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
