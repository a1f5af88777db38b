//! # growth-aggregator
//!
//! Turns the growth views in ClickHouse into the numbers a product team reads every
//! morning: DAU / WAU / MAU, signup cohorts with D1/D3/D7/D30 retention, and running
//! totals per event. Every `--refresh-interval` it asks ClickHouse four questions on
//! the materialized views (never the raw events), keeps the answer in memory and
//! serves it:
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
//! [`definitions`]; [`queries`] asks ClickHouse; [`snapshot`] assembles a refresh;
//! [`exposition`] and [`report`] render it; [`http`] serves it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cli = growth_aggregator::config::Cli::try_parse_args(["growth-aggregator", "--timezone", "Europe/Berlin"])?;
//! growth_aggregator::serve(cli.run.into_config(), std::future::pending()).await
//! # }
//! ```

pub mod access;
pub mod api;
pub mod config;
pub mod dashboard;
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

use crate::access::{AccessPolicy, Credentials};
use crate::config::Config;
use crate::dashboard::{DashboardSettings, DashboardState, settings::read_labels_file};
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
    // Files named by flags are read before anything else, so a typo stops the start.
    let access = access_policy(&config)?;
    let settings = dashboard_settings(&config)?;
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
    let dashboard = DashboardState {
        app: state.clone(),
        settings: std::sync::Arc::new(settings),
    };
    let refresher = tokio::spawn(refresh_loop(
        source,
        state.config.clone(),
        state.cache.clone(),
        state.health.clone(),
    ));
    let app = http::layered(http::router(state, dashboard), access);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    refresher.abort();
    result.context("HTTP server failed")
}

fn access_policy(config: &Config) -> anyhow::Result<AccessPolicy> {
    match &config.access.auth_file {
        Some(path) => {
            let credentials = Credentials::load(path)?;
            tracing::info!(file = %path.display(), all_paths = config.access.protect_all, "admin credentials required");
            Ok(AccessPolicy::new(credentials, config.access.protect_all))
        }
        None => Ok(AccessPolicy::open()),
    }
}

fn dashboard_settings(config: &Config) -> anyhow::Result<DashboardSettings> {
    let d = &config.dashboard;
    let from_file = match &d.event_labels_file {
        Some(path) => read_labels_file(path)?,
        None => Vec::new(),
    };
    Ok(DashboardSettings::new(
        d.refresh,
        d.thresholds,
        from_file,
        d.event_labels.clone(),
    ))
}
