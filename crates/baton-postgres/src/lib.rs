#![doc = include_str!("../README.md")]
//! ## The sessions table
//!
//! `migrations/0001_sessions.sql`, with the default prefix `baton_`:
//!
//! ```sql
#![doc = include_str!("../migrations/0001_sessions.sql")]
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod feed;
mod limit;
mod store;

pub use feed::{PgFeedOptions, PgRevocationFeed};
pub use limit::PgLimiter;
pub use store::{PostgresError, PostgresOptions, PostgresStore};
