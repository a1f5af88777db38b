//! Start-up, serving and graceful shutdown: the one place that decides in which
//! order the aggregator's parts start and stop.
//!
//! Start: read the files the flags name (a typo stops the start), bind the listen
//! address (a taken port fails at once), wait for ClickHouse and migrate (retrying
//! until `--startup-timeout`, the shared start-up path of
//! [`growth_schema::service::startup`]), compute the first snapshot, then serve and
//! refresh every `--refresh-interval`. Requests that arrive before the first
//! snapshot wait in the listen queue, so whoever sees `/healthz` answer also finds
//! `/metrics` filled (unless that refresh failed). Stop (on the shutdown signal):
//! stop accepting, let requests in flight finish for at most [`SHUTDOWN_GRACE`],
//! stop refreshing.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use growth_schema::migrate::MigrationReport;
use growth_schema::service::tls::{self, ServerTls};
use growth_schema::service::wait_and_migrate;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access::{AccessPolicy, Credentials};
use crate::config::Config;
use crate::dashboard::{DashboardSettings, DashboardState, settings::read_labels_file};
use crate::error::AggregatorError;
use crate::http;
use crate::refresh::{refresh_loop, refresh_once};
use crate::source::MetricsSource;
use crate::state::AppState;

/// Longest requests in flight may take to finish once the shutdown signal came.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// An aggregator whose files are read and whose listener is bound;
/// [`Aggregator::run`] serves it.
pub struct Aggregator {
    config: Config,
    listener: TcpListener,
    access: AccessPolicy,
    settings: DashboardSettings,
    tls: Option<ServerTls>,
}

impl Aggregator {
    /// Reads the credentials and labels files, then binds `--listen-addr`.
    pub async fn bind(config: Config) -> Result<Self, AggregatorError> {
        let access = access_policy(&config)?;
        let settings = dashboard_settings(&config)?;
        let tls = match &config.tls {
            Some(files) => Some(ServerTls::load(files.clone(), tls::ALPN_HTTP1)?),
            None => None,
        };
        let listener =
            http::listen(config.listen_addr).map_err(|source| AggregatorError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        Ok(Self {
            config,
            listener,
            access,
            settings,
            tls,
        })
    }

    /// Where the aggregator listens (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// Waits for ClickHouse, migrates, serves until `shutdown` completes, then stops.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AggregatorError> {
        let addr = self.local_addr();
        let Aggregator {
            config,
            listener,
            access,
            settings,
            tls,
        } = self;
        if let Some(tls) = &tls {
            tracing::info!(cert = %tls.files().cert.display(), "serving HTTPS");
            tls::reload_on_hangup("aggregator", vec![tls.clone()]);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down");
            stop_tx.send_replace(true);
        });

        let started = tokio::select! {
            result = wait_and_migrate(&config.clickhouse, config.startup_timeout, |_| {}) => Some(result),
            () = stopped(stop_rx.clone()) => None,
        };
        match started {
            Some(result) => drop(result?),
            None => {
                tracing::info!("stopped before ClickHouse was ready");
                return Ok(());
            }
        }
        tracing::info!(%addr, timezone = config.definitions.timezone.name(), refresh = ?config.refresh_interval, "serving /metrics, /admin/metrics, /admin/metrics.txt, /api/v1, /healthz, /readyz");

        let source = MetricsSource::new(config.clickhouse.client(), config.query_timeout)
            .with_state_dir(&config.state_dir, &config.clickhouse.database);
        let state = AppState::new(config.clone(), source.clone());
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
        // The client's address keys the password-check throttle (`access.rs`).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stop = stopped(stop_rx.clone());
        let server = async {
            match tls {
                None => {
                    axum::serve(http::no_delay(listener), app)
                        .with_graceful_shutdown(stop)
                        .await
                }
                Some(tls) => {
                    let listener = tls.listener(listener, tls::HANDSHAKE_TIMEOUT);
                    axum::serve(listener.tap_io(http::no_tap), app)
                        .with_graceful_shutdown(stop)
                        .await
                }
            }
        };
        let grace_over = async {
            stopped(stop_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            result = server => result.map_err(AggregatorError::Serve),
            () = grace_over => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown timeout: closing connections still open");
                Ok(())
            }
        };
        refresher.abort();
        if result.is_ok() {
            tracing::info!("stopped");
        }
        result
    }
}

/// Binds, waits for ClickHouse, migrates, then serves until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    Aggregator::bind(config).await?.run(shutdown).await
}

/// Waits for ClickHouse (up to `--startup-timeout`), applies the migrations and returns.
pub async fn migrate(config: &Config) -> Result<MigrationReport, AggregatorError> {
    Ok(wait_and_migrate(&config.clickhouse, config.startup_timeout, |_| {}).await?)
}

/// Completes once `true` is sent (or every sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn access_policy(config: &Config) -> Result<AccessPolicy, AggregatorError> {
    match &config.access.auth_file {
        Some(path) => {
            let credentials = Credentials::load(path)?
                .with_login_attempts(config.access.login_attempts_per_minute);
            tracing::info!(file = %path.display(), all_paths = config.access.protect_all, "admin credentials required");
            Ok(AccessPolicy::new(credentials, config.access.protect_all))
        }
        None => Ok(AccessPolicy::open()),
    }
}

fn dashboard_settings(config: &Config) -> Result<DashboardSettings, AggregatorError> {
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

#[cfg(test)]
mod tests {
    use growth_schema::service::{ServiceCli, StartupError};

    use super::*;
    use crate::config::Cli;

    /// Any free port; ClickHouse on a port where nothing listens.
    fn config(startup_timeout: &str) -> Config {
        Cli::try_parse_args([
            "growth-aggregator",
            "--clickhouse-url=http://127.0.0.1:9",
            "--listen-addr=127.0.0.1:0",
            "--startup-timeout",
            startup_timeout,
        ])
        .expect("flags")
        .run
        .into_config()
    }

    #[tokio::test]
    async fn a_taken_port_fails_at_once() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut config = config("60s");
        config.listen_addr = taken.local_addr().expect("addr");
        let result = tokio::time::timeout(Duration::from_secs(5), Aggregator::bind(config))
            .await
            .expect("does not wait for ClickHouse");
        assert!(
            matches!(result, Err(AggregatorError::Bind { .. })),
            "{:?}",
            result.err()
        );
    }

    #[tokio::test]
    async fn stops_on_signal_while_waiting_for_clickhouse() {
        let aggregator = Aggregator::bind(config("60s")).await.expect("bind");
        assert_ne!(aggregator.local_addr().port(), 0);
        let signal = tokio::time::sleep(Duration::from_millis(300));
        let stopped = tokio::time::timeout(Duration::from_secs(5), aggregator.run(signal)).await;
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    }

    #[tokio::test]
    async fn start_up_errors_are_typed() {
        let gave_up = |r: Result<(), AggregatorError>| {
            matches!(
                r,
                Err(AggregatorError::Startup(StartupError::GaveUp { .. }))
            )
        };
        assert!(gave_up(
            serve(config("300ms"), std::future::pending()).await
        ));
        assert!(gave_up(migrate(&config("300ms")).await.map(drop)));
    }
}
