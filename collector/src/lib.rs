//! # growth-collector
//!
//! Receives OpenTelemetry log records over OTLP and stores the ones that are
//! growth events in ClickHouse, where `growth-aggregator` and analysts read them.
//!
//! ```text
//! OTLP/gRPC :4317 ─┐
//!                  ├─ receiver ─→ map (OTLP → growth event, hash user) ─→ spool (disk) ─→ writer ─→ ClickHouse `events`
//! OTLP/HTTP :4318 ─┘     ▲                                                   │
//!                        └────────── ack once the rows are on disk ──────────┘
//! admin :8888 — /healthz /readyz /metrics
//! ```
//!
//! * [`receiver`] — OTLP/gRPC ([`receiver::grpc`]) and OTLP/HTTP ([`receiver::http`],
//!   protobuf and JSON, gzip); both hand a request to [`receiver::Intake`], which
//!   admits it (or turns it away with a retry delay), maps it and waits until its
//!   rows are durable in the spool.
//! * [`map`] — the event contract (`docs/contract.md`): event name, user (a raw
//!   `user.id` is hashed here with [`UserHasher`](growth_schema::user_hash::UserHasher)
//!   and never stored), app, time, source, properties; rejects and counts what breaks
//!   it. It reads records through [`view`] (borrowed slices of the request: protobuf
//!   is read in place by [`receiver::decode`], OTLP/JSON is decoded first) and writes
//!   each accepted event as a [`rowbinary`] row.
//! * at the edge, before anything is stored: [`receiver::serve`] (timeouts),
//!   [`auth`] (bearer tokens per app), [`receiver::decode`] (bounded decoding),
//!   [`privacy`] (identifying attributes hashed or dropped), [`catalog`] (bounded
//!   apps and event names); their flags are in [`intake_config`], the rules and
//!   answers in `docs/ingest.md`.
//! * [`spool`] — the write-ahead spool. A request is acknowledged once its events
//!   are durable in the spool (written and, with `--spool-fsync always`, synced; one
//!   group commit serves every request that arrived meanwhile), never after
//!   ClickHouse; when the spool is full the sender is told to retry later.
//! * [`writer`] — drains the spool into ClickHouse in large inserts, exactly once
//!   (deduplication tokens), retrying transient failures and setting refused rows
//!   aside ([`deadletter`]); [`rows`] reads a batch back in chunks and [`native`]
//!   re-lays each chunk as the Native blocks that are sent.
//! * [`clickhouse`] — the sink: inserts, classifies failures. Waiting for
//!   ClickHouse at start-up and migrating is the start-up path both binaries share,
//!   [`growth_schema::service`].
//! * [`erasure`] — the right to erasure: an authenticated admin API (and the `erase`
//!   subcommand) that removes people from every table, the spool and the dead-letter
//!   file, in batches of one mutation per table.
//! * [`admin`] and [`telemetry`] — health, readiness and the collector's own metrics.
//! * [`config`] — flags and environment, parsed once; [`lifecycle`] — start and
//!   graceful shutdown; [`error`] — why it stopped.
//!
//! What it is not for: it computes no metrics (that is `growth-aggregator`) and
//! accepts only logs — not traces or metrics.
//!
//! ```no_run
//! # async fn example(config: growth_collector::Config) -> Result<(), growth_collector::CollectorError> {
//! // Serve until Ctrl-C, then drain and return.
//! growth_collector::run(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod clickhouse;
pub mod config;
pub mod deadletter;
pub mod delivery;
pub mod erasure;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod intake_config;
pub mod lifecycle;
pub mod map;
pub mod native;
pub mod privacy;
pub mod receiver;
pub mod rowbinary;
pub mod rows;
pub mod spool;
pub mod telemetry;
pub mod view;
pub mod writer;

#[cfg(test)]
mod testing;

pub use config::{BatchConfig, Cli, Command, Config};
pub use error::CollectorError;
pub use lifecycle::{Addresses, Collector, migrate, run};
