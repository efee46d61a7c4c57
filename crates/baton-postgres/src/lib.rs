//! Refresh-token sessions in PostgreSQL for baton: [`PostgresStore`] implements
//! [`RefreshStore`](baton_store::RefreshStore) with exactly the semantics of the memory and
//! Redis stores (the same conformance suite runs against it).
//!
//! - One row per session, in PostgreSQL's own types (`bytea` ids, `timestamptz` times,
//!   `inet` and `cidr` addresses, `text[]` authentication methods).
//! - A rotation is one statement: a PL/pgSQL function that locks the session's row, decides,
//!   and writes, in one transaction. Fifty concurrent rotations of one token give one
//!   `Rotated`; the others are graced with the same successor or refused.
//! - A creation takes an advisory lock on its user, so the per-user cap holds between
//!   instances.
//! - Every write carries an attempt id: sent again after a lost reply (a connection killed
//!   under it), it gets the first try's outcome, never a second session or a false theft alarm.
//!   A write whose connection fails is sent again on a fresh one, within the store's deadline;
//!   past it the answer is [`StoreError::Unavailable`](baton_store::StoreError::Unavailable)
//!   (503 with `Retry-After` through the facade).
//! - The schema comes from embedded migrations (`sqlx::migrate!`), under a table prefix of
//!   your choice; dead rows are removed by a bounded sweep (at most a batch per statement),
//!   never an unbounded `DELETE`.
//! - [`PgRevocationFeed`] shares revocations between instances through the same database
//!   (a log table, `LISTEN`/`NOTIFY` for speed, reconnect and catch-up), with the guarantees
//!   of the Redis feed: a logout is acknowledged only once it is recorded.
//! - [`PgLimiter`] shares rate limits between instances (one atomic statement per check).
//!
//! ```no_run
//! use baton_postgres::{PostgresOptions, PostgresStore};
//! use baton_store::{Device, Policy, RefreshKeys, RefreshStore, RotateContext};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect(
//!     "postgres://baton@127.0.0.1/app",
//!     RefreshKeys::generate()?,
//!     Policy::new(),
//!     PostgresOptions::new(),
//! )
//! .await?;
//! let created = store.create("alice", Device::new(Some("Firefox"), None)).await?;
//! let rotated = store.rotate(created.token.expose(), RotateContext::default()).await?;
//! # let _ = rotated;
//! # Ok(()) }
//! ```
//!
//! # Schema
//!
//! With the default prefix `baton_` (migrations `0001_sessions.sql` and `0002_functions.sql`):
//!
//! ```sql
#![doc = include_str!("../migrations/0001_sessions.sql")]
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod feed;
mod limit;
mod store;

pub use feed::{PgFeedOptions, PgRevocationFeed};
pub use limit::PgLimiter;
pub use store::{PostgresError, PostgresOptions, PostgresStore};
