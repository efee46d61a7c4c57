//! Safe token cookies for baton.
//!
//! - [`CookieSpec`]: the refresh cookie (`__Secure-`, `HttpOnly; Secure; SameSite=Strict`,
//!   path restricted to the auth routes) and the access cookie of cookie-mode apps (`__Host-`,
//!   `Path=/`, no `Domain`), with `Max-Age` from the token lifetimes; specs that browsers
//!   would reject or that are unsafe fail when built. Setting, clearing, and reading them
//!   from requests (an ambiguous duplicate is an error, not a guess).
//! - [`CookiePolicyLayer`]: enforces attributes on every outgoing `Set-Cookie`, whatever the
//!   handlers do.
//! - [`OriginGuardLayer`]: refuses cross-site requests with unsafe methods (CSRF), by
//!   `Sec-Fetch-Site` and `Origin`.
//!
//! # Feature flags
//! - `tracing` (default): events with target `baton::cookie` for rewritten or stripped
//!   cookies and refused requests; never a cookie value.
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

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
