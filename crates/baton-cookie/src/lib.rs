#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod origin;
pub mod policy;
mod spec;

pub use origin::{
    CrossSiteRejection, LeftFuture, OriginGuard, OriginGuardError, OriginGuardFuture,
    OriginGuardLayer,
};
pub use policy::{CookiePolicy, CookiePolicyLayer, Match, Requirements, looks_like_credential};
pub use spec::{CookieError, CookieSpec, CookieSpecBuilder, MAX_COOKIE_HEADER_LEN, read_cookie};

/// `SameSite`, re-exported from the `cookie` crate.
pub use cookie::SameSite;
