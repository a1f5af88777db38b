//! # growth-aggregator
//!
//! Turns the growth views in ClickHouse into the numbers a product team reads every
//! morning: DAU / WAU / MAU, signup cohorts with D1/D3/D7/D30 retention, and running
//! totals per event. Every `--refresh-interval` it asks ClickHouse four questions on
//! the materialized views (never the raw events), keeps the answer in memory and
//! serves it:
//!
//! * `/metrics` — Prometheus text (OpenMetrics when the scraper asks for it);
//! * `/admin/metrics` — the HTML page, `/admin/metrics.txt` — the plain-text report;
//! * `/api/v1/*` — the JSON API (`docs/api.md`);
//! * `/healthz` (alive), `/readyz` (a good refresh happened recently).
//!
//! What it is not for: it receives no events (that is `growth-collector`) and it
//! owns no table definitions (those live in `growth-schema`).
//!
//! The rules (what "today", "active" and "cohort" mean) are pure functions in
//! [`definitions`]; [`queries`] asks ClickHouse; [`snapshot`] assembles a refresh;
//! [`exposition`] and [`report`] render it; [`http`] serves it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cli = growth_aggregator::config::Cli::try_parse_args(["growth-aggregator", "--timezone", "Europe/Berlin"])?;
//! growth_aggregator::serve(cli.run.into_config(), std::future::pending()).await
//! # }
//! ```

pub mod api;
pub mod config;
pub mod definitions;
pub mod exposition;
pub mod http;
pub mod on_demand;
pub mod queries;
pub mod refresh;
pub mod report;
pub mod snapshot;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use growth_schema::migrate::migrate;

use crate::config::Config;
use crate::http::AppState;
use crate::queries::MetricsSource;
use crate::refresh::{refresh_loop, refresh_once};

/// Applies the migrations, waiting up to `timeout` for ClickHouse to answer.
pub async fn migrate_with_retry(config: &Config) -> anyhow::Result<()> {
    let deadline = Instant::now() + config.startup_timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        match migrate(
            &config.clickhouse.server_client(),
            &config.clickhouse.database,
        )
        .await
        {
            Ok(report) => {
                tracing::info!(database = %config.clickhouse.database, version = report.current, applied = ?report.applied, "schema is up to date");
                return Ok(());
            }
            Err(e) if Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, url = %config.clickhouse.url, "ClickHouse not ready, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "could not migrate {} at {}",
                        config.clickhouse.database, config.clickhouse.url
                    )
                });
            }
        }
    }
}

/// Migrates, then refreshes the metrics every interval and serves them until
/// `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    migrate_with_retry(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another aggregator running?)",
                config.listen_addr
            )
        })?;
    tracing::info!(addr = %config.listen_addr, timezone = config.definitions.timezone.name(), refresh = ?config.refresh_interval, "serving /metrics, /admin/metrics, /admin/metrics.txt, /api/v1, /healthz, /readyz");

    let source = MetricsSource::new(config.clickhouse.client(), config.query_timeout);
    let state = AppState::new(config.clone(), source.clone());
    // The first refresh happens before the first request is answered, so a client that
    // sees /healthz answer also finds /metrics filled (unless that refresh failed).
    refresh_once(&source, &config, &state.cache, &state.health).await;
    let refresher = tokio::spawn(refresh_loop(
        source,
        state.config.clone(),
        state.cache.clone(),
        state.health.clone(),
    ));
    let result = axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    refresher.abort();
    result.context("HTTP server failed")
}
