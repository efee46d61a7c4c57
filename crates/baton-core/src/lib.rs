//! The shared vocabulary of the baton crates, at the bottom of the workspace:
//!
//! - [`Clock`]: time as an injectable dependency ([`SystemClock`]; `TestClock` with the
//!   `test-util` feature), read by token expiry, session lifetimes and revocation lists alike.
//! - Revocations: [`CheckRevocation`] (asked on every verified token), [`Revoke`] (where
//!   logouts are recorded), [`Revocation`], and [`RevocationList`], the in-memory list both
//!   point at. The Redis feed implements them without depending on the bearer layer.
//! - DPoP replay: [`ReplayCache`] (each proof accepted once), implemented in memory by the
//!   bearer layer and shared by the Redis crate, neither depending on the other.
//! - Error responses: [`RenderError`] builds every layer's error body, [`Refusal`] is what a
//!   layer refused, found in its response's extensions.
//!
//! Applications rarely name this crate: every type is re-exported where it is used
//! (`baton_token::Clock`, `baton_bearer::RevocationList`, `baton::RenderError`).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod error;
mod feed;
mod limit;
mod replay;
mod revocation;
mod revocation_list;
#[cfg(feature = "test-util")]
mod test_clock;

pub use clock::{Clock, SystemClock};
pub use error::{ErrorChain, JsonErrors, Refusal, RenderError, retry_after_secs};
pub use feed::{DisconnectPolicy, FeedState, FeedStatus, MAX_PENDING};
pub use limit::{LimitFuture, RateLimiter, Rule};
pub use replay::{ReplayCache, ReplayCheck, ReplayFuture, ReplayKey, ReplayUnknown};
pub use revocation::{CheckRevocation, TokenIdentity};
pub use revocation_list::{Revocation, RevocationList, Revoke, RevokeError, RevokeFuture};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use test_clock::TestClock;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
