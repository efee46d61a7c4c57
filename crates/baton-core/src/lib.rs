#![doc = include_str!("../README.md")]
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
