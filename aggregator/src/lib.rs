//! # growth-aggregator
//!
//! Turns the growth views in ClickHouse into the numbers a product team reads every
//! morning: DAU / WAU / MAU, signup cohorts with D1/D3/D7/D30 retention, and running
//! totals per event. Every `--refresh-interval` it reads from the materialized views
//! (never the raw events) the days of users that changed since the last refresh
//! ([`day_sets`]), counts the metrics in memory and serves them:
//!
//! * `/metrics` — Prometheus text (OpenMetrics when the scraper asks for it);
//! * `/admin/metrics` — the HTML page, `/admin/metrics.txt` — the plain-text report
//!   ([`dashboard`]; behind [`access`] when `--admin-auth-file` is set);
//! * `/api/v1/*` — the JSON API (`docs/api.md`);
//! * `/healthz` (alive), `/readyz` (a good refresh happened recently).
//!
//! What it is not for: it receives no events (that is `growth-collector`) and it
//! owns no table definitions (those live in `growth-schema`).
//!
//! The rules (what "today", "active" and "cohort" mean) are pure functions in
//! [`definitions`]; [`queries`] asks ClickHouse and answers in [`rows`]; [`source`]
//! keeps what refreshes share ([`day_sets`], [`totals`]); [`snapshot`] assembles a
//! refresh; [`exposition`] and [`report`] render it; [`http`], [`api`] and
//! [`dashboard`] serve it from the [`state`] they share; [`lifecycle`] starts and stops
//! it all, and [`error`] says why it could not.
//!
//! Imports run one way, from the edge to the core: `http`, `api`, `dashboard` →
//! `state` → `refresh`, `snapshot`, `source` → `day_sets`, `totals` → `queries` →
//! `rows` → `growth-schema` (`scripts/check-modules` checks there is no cycle).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use growth_schema::service::ServiceCli;
//! let cli = growth_aggregator::config::Cli::try_parse_args(["growth-aggregator", "--timezone", "Europe/Berlin"])?;
//! // Serve until Ctrl-C, then stop.
//! growth_aggregator::serve(cli.run.into_config(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

pub mod access;
pub mod api;
pub mod config;
pub mod dashboard;
pub mod day_sets;
pub mod day_store;
pub mod definitions;
pub mod error;
pub mod exposition;
pub mod funnels;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod layer_parts;
pub mod lifecycle;
pub mod on_demand;
pub mod people;
pub mod queries;
pub mod refresh;
pub mod report;
pub mod rows;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod totals;

pub use error::AggregatorError;
pub use lifecycle::{Aggregator, migrate, serve};
