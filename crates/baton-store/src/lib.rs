//! Refresh-token sessions for baton: the [`RefreshStore`] trait, the refresh-token format,
//! rotation with reuse detection and a grace window, per-device sessions, the in-memory
//! [`MemoryStore`], and the conformance suite every store runs.
//!
//! # The model
//! A *session* is one login on one device. Its refresh token is rotated on every use: the
//! presented token is spent and a successor issued. Presenting a spent token again means two
//! parties hold it, so the whole session is revoked ([`RotateError::Reused`]), except for the
//! immediate parent within a short grace window (two tabs refreshing at once), which gets the
//! *same* successor ([`RotationKind::Graced`]).
//!
//! # Refresh tokens
//! `v1.` and 87 base64url characters: the session id, the generation, a key id, and an
//! HMAC-SHA256 of them under a server key ([`RefreshKeys`]). So:
//! - a malformed or forged token is refused before any store access, and a forged token for a
//!   real session can never revoke it (only a genuine spent token does);
//! - the store keeps no secret at all, so a dump of it yields no usable token;
//! - the successor of any generation can be recomputed, which is how a graced caller gets the
//!   very token the first caller got without the store keeping it.
//!
//! # Example
//! ```
//! use baton_store::{Device, MemoryStore, Policy, RefreshKeys, RefreshStore, RotateContext, RotateError, RotationKind};
//! use baton_core::TestClock;
//! use std::{sync::Arc, time::Duration};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let clock = TestClock::at_secs(1_800_000_000);
//! let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new())
//!     .with_clock(Arc::new(clock.clone()));
//! let login = store.create("alice", Device::new(Some("Firefox"), None)).await.unwrap();
//! let first = store.rotate(login.token.expose(), RotateContext::default()).await.unwrap();
//! assert_eq!(first.kind, RotationKind::Rotated);
//!
//! // The login token is spent. Past the grace window, presenting it again is theft:
//! clock.advance(Duration::from_secs(60));
//! let err = store.rotate(login.token.expose(), RotateContext::default()).await.unwrap_err();
//! assert!(matches!(err, RotateError::Reused(_)));
//! // ... and the whole session is gone, the newest token with it.
//! let err = store.rotate(first.token.expose(), RotateContext::default()).await.unwrap_err();
//! assert_eq!(err, RotateError::Revoked);
//! # }
//! ```
//!
//! # Feature flags
//! - `conformance`: the [`conformance`] suite and the [`conformance_tests!`] macro, for
//!   anyone writing a store.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod memory;
mod policy;
mod session;
mod store;
mod token;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Cause, ConfigError, DeviceChange, RotateError, SessionRef, StoreError};
pub use memory::{MemoryStore, REVOKED_TOMBSTONE_MS};
pub use policy::{Network, NetworkChange, Policy, PolicyBuilder, ReuseDetection, UserAgentChange};
pub use session::{
    Authentication, Device, Login, MAX_AMR_VALUES, MAX_DEVICE_ID_LEN, MAX_DEVICE_NAME_LEN,
    MAX_DPOP_JKT_LEN, MAX_USER_AGENT_LEN, MAX_USER_ID_LEN, RotateContext, Session, check_device_id,
    check_dpop_jkt, check_login, check_user_id,
};
pub use store::{Created, RefreshStore, Rotation, RotationKind};
pub use token::{
    InvalidSessionId, RefreshKeys, RefreshToken, SessionId, VerifiedToken, user_tag_of,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
