//! # growth-schema
//!
//! The one place where the growth telemetry contract is written down, shared by
//! the SDK (`growth-sdk`), the collector and the aggregator:
//!
//! * [`attributes`] — the OpenTelemetry attribute names that make a log record a
//!   growth event (`event.name`, `user.id`, `user.hash`, `source`, …);
//! * [`user_hash`] — how a raw user id becomes a [`UserHash`](user_hash::UserHash)
//!   (HMAC-SHA256 with `GROWTH_USER_HASH_KEY`, or plain SHA-256 without a key), so
//!   that the SDK and the collector hash the same user identically;
//! * [`limits`] — the bounds every network input is held to;
//! * with the `clickhouse` feature: [`tables`] (table names and row types) and
//!   [`migrate`] (the versioned SQL migrations in `schema/migrations/`, applied
//!   idempotently); with `cli`: [`connection`], the `--clickhouse-*` flags; with
//!   `service`: [`service`], the start-up path both binaries share (logging,
//!   signals, duration flags, the command line, wait-for-ClickHouse-then-migrate).
//!
//! What it is not for: it sends nothing and serves nothing. The SDK depends on it
//! without the `clickhouse` feature, so apps never compile a database client.
//!
//! ```
//! use growth_schema::user_hash::UserHasher;
//! let hasher = UserHasher::new(Some(b"secret".to_vec()));
//! let hash = hasher.hash("user-42");
//! assert_eq!(hash.as_str().len(), 64);
//! ```

pub mod attributes;
pub mod limits;
pub mod user_hash;

#[cfg(feature = "cli")]
pub mod connection;
#[cfg(feature = "clickhouse")]
pub mod migrate;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "clickhouse")]
pub mod tables;
