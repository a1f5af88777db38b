//! Start-up, serving and graceful shutdown: the one place that wires
//! receivers → map → spool → writer → ClickHouse together and decides in which
//! order things start and stop.
//!
//! Start: bind every listener (a taken port fails at once), serve the admin
//! endpoints, open the spool (recovering what a previous run left), wait for
//! ClickHouse and migrate (retrying until `--startup-timeout`), start the writer,
//! then serve OTLP. Stop (on the shutdown signal), all within `--shutdown-timeout`:
//! `/readyz` turns 503, the receivers stop accepting and answer the requests in
//! flight once their events are synced to the spool; the spool closes, and the
//! writer inserts what is left without waiting for batches to fill. What is not in
//! ClickHouse when the time is up stays in the spool for the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use growth_schema::migrate::MigrationReport;
use growth_schema::service::tls::{self, ServerTls};
use growth_schema::service::{on_hangup, wait_and_migrate};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::admin::{self, DeliveryCheck, Phase, Readiness};
use crate::auth::Auth;
use crate::clickhouse::{ClickHouseSink, describe};
use crate::config::Config;
use crate::erasure::{self, Erasures, api::AdminTokens};
use crate::error::CollectorError;
use crate::receiver::{Intake, grpc, http, serve};
use crate::spool;
use crate::telemetry::Telemetry;
use crate::writer::{self, WriterHealth};

/// The addresses a bound [`Collector`] listens on (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP.
    pub otlp_http: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
}

/// A collector whose listeners are bound; [`Collector::run`] serves them.
#[derive(Debug)]
pub struct Collector {
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    tls: Option<PortsTls>,
}

/// The TLS of the three ports, from the same files; the admin port never asks for
/// client certificates.
#[derive(Debug, Clone)]
struct PortsTls {
    grpc: ServerTls,
    http: ServerTls,
    admin: ServerTls,
}

impl PortsTls {
    fn load(config: &Config) -> Result<Option<Self>, CollectorError> {
        let Some(files) = &config.tls else {
            return Ok(None);
        };
        Ok(Some(Self {
            grpc: ServerTls::load(files.clone(), tls::ALPN_H2)?,
            http: ServerTls::load(files.clone(), tls::ALPN_HTTP1)?,
            admin: ServerTls::load(files.without_client_auth(), tls::ALPN_HTTP1)?,
        }))
    }
}

impl Collector {
    /// Reads the TLS files (if any) and binds the three listeners.
    pub async fn bind(config: Config) -> Result<Self, CollectorError> {
        let tls = PortsTls::load(&config)?;
        let grpc = bind("OTLP/gRPC", config.otlp_grpc_addr).await?;
        let http = bind("OTLP/HTTP", config.otlp_http_addr).await?;
        let admin = bind("admin", config.admin_addr).await?;
        Ok(Self {
            config,
            grpc,
            http,
            admin,
            tls,
        })
    }

    /// Where the collector listens.
    pub fn addresses(&self) -> Addresses {
        let addr = |l: &TcpListener, configured| l.local_addr().unwrap_or(configured);
        Addresses {
            otlp_grpc: addr(&self.grpc, self.config.otlp_grpc_addr),
            otlp_http: addr(&self.http, self.config.otlp_http_addr),
            admin: addr(&self.admin, self.config.admin_addr),
        }
    }

    /// Serves until `shutdown` completes, then drains and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), CollectorError> {
        let addresses = self.addresses();
        let Collector {
            config,
            grpc,
            http,
            admin,
            tls,
        } = self;
        log_start(&config, addresses);
        if let Some(tls) = &tls {
            tracing::info!(
                client_certificates = tls.grpc.requires_client_cert(),
                "serving TLS on the OTLP and admin ports"
            );
            tls::reload_on_hangup(
                "collector",
                vec![tls.grpc.clone(), tls.http.clone(), tls.admin.clone()],
            );
        }
        // Before anything is served: a broken tokens file is a start-up error.
        let mut rules = config.intake.rules(config.hasher.clone())?;
        rules.map.previous = config
            .keys
            .previous_hasher()
            .map(|h| crate::map::Previous::new(h.clone()));
        reload_tokens_on_sighup(rules.auth.clone());

        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_on_signal = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop_on_signal.send_replace(true);
        });

        let admin_tokens = match &config.admin_token_file {
            Some(path) => Some(AdminTokens::load(path)?),
            None => None,
        };
        let erasures = Erasures::open(&config.spool.dir)?;

        let telemetry = Arc::new(Telemetry::new());
        let readiness = Arc::new(Readiness::default());
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin_task = spawn_server("admin", {
            let router = admin::router(telemetry.clone(), readiness.clone()).merge(
                erasure::api::router_with_previous(
                    Some(erasures.clone()),
                    admin_tokens,
                    config.hasher.clone(),
                    config.keys.previous_hasher().cloned(),
                ),
            );
            let tls = tls.as_ref().map(|tls| tls.admin.clone());
            async move {
                let stop = stopped(admin_stop_rx);
                match tls {
                    None => {
                        axum::serve(admin, router)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                    Some(tls) => {
                        axum::serve(tls.listener(admin, tls::HANDSHAKE_TIMEOUT), router)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                }
                .map_err(|e| e.to_string())
            }
        });

        let (spool, tail, spool_thread) = match spool::open(&config.spool, telemetry.clone()) {
            Ok(opened) => opened,
            Err(e) => {
                readiness.set(Phase::Starting(e.to_string()));
                stop_server(admin_stop, admin_task).await;
                return Err(e.into());
            }
        };
        telemetry.watch_spool(tail.usage.clone());

        let started = tokio::select! {
            result = wait_and_migrate(&config.clickhouse, config.startup_timeout, |e| {
                readiness.set(Phase::Starting(format!("waiting for ClickHouse: {}", describe(e))));
            }) => Some(result),
            () = stopped(stop_rx.clone()) => None,
        };
        match started {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                readiness.set(Phase::Starting(e.to_string()));
                spool.close();
                spool_thread.join().await;
                stop_server(admin_stop, admin_task).await;
                return Err(e.into());
            }
            None => {
                tracing::info!("stopped before ClickHouse was ready");
                spool.close();
                spool_thread.join().await;
                stop_server(admin_stop, admin_task).await;
                return Ok(());
            }
        }
        match rules.catalog.learn_from(&config.clickhouse.client()).await {
            Ok(pairs) => tracing::info!(
                pairs,
                apps = rules.catalog.apps(),
                "known apps and event names loaded"
            ),
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot load the known apps and event names; starting from none")
            }
        }

        let health = Arc::new(WriterHealth::default());
        let sink = ClickHouseSink::new(&config.clickhouse);
        let writer = writer::spawn(sink, tail, config.batch, telemetry.clone(), health.clone());
        readiness.watch_delivery(DeliveryCheck {
            spool: spool.clone(),
            high_water_bytes: config.delivery.spool_high_water_bytes,
            health,
            stall_timeout: config.delivery.write_stall_timeout,
        });
        let erasure_task = erasure::Worker {
            erasures,
            spool: spool.clone(),
            writer: writer.control(),
            client: config.clickhouse.client(),
            spool_dir: config.spool.dir.clone(),
        }
        .spawn(stop_rx.clone());
        let closer = spool.clone();
        let connections =
            serve::Connections::new(config.delivery.max_connections, telemetry.clone());
        let intake = Intake::new(config.hasher.clone(), spool, &config.delivery, telemetry)
            .with_rules(rules);
        let timeouts = config.intake.timeouts;
        let mut receivers = JoinSet::new();
        receivers.spawn(named(
            "OTLP/gRPC",
            serve::grpc(
                grpc,
                grpc::service(intake.clone(), config.max_request_bytes),
                timeouts,
                connections.clone(),
                tls.as_ref().map(|tls| tls.grpc.clone()),
                stopped(stop_rx.clone()),
            ),
        ));
        receivers.spawn(named(
            "OTLP/HTTP",
            serve::http(
                http,
                http::router(intake, config.max_request_bytes, timeouts.request_read),
                timeouts,
                connections,
                tls.map(|tls| tls.http),
                stopped(stop_rx.clone()),
            ),
        ));
        readiness.set(Phase::Serving);
        tracing::info!(grpc = %addresses.otlp_grpc, http = %addresses.otlp_http, "receiving OTLP logs");

        // Run until the signal, or until a receiver stops on its own (a failure).
        let mut failure = tokio::select! {
            () = stopped(stop_rx.clone()) => None,
            Some(joined) = receivers.join_next() => receiver_failure(joined),
        };
        tracing::info!("shutting down: finishing requests in flight");
        let deadline = Instant::now() + config.delivery.shutdown_timeout;
        readiness.set(Phase::Draining);
        stop_tx.send_replace(true);
        writer.start_draining();
        // An erasure under way stops where it is; it resumes at the next start.
        let _ = erasure_task.await;
        let drained = tokio::time::timeout_at(deadline.into(), async {
            while let Some(joined) = receivers.join_next().await {
                let this = receiver_failure(joined);
                failure = failure.take().or(this);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout: closing connections still open");
            receivers.abort_all();
            while receivers.join_next().await.is_some() {}
        }
        // The servers are gone: the spool writes what it was given and closes (a
        // connection that lingers is refused from now on); the writer inserts what
        // is left.
        closer.close();
        spool_thread.join().await;
        writer
            .join(deadline.saturating_duration_since(Instant::now()))
            .await;
        stop_server(admin_stop, admin_task).await;
        match failure {
            None => {
                tracing::info!("stopped");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

/// Binds, waits for ClickHouse, migrates and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    Collector::bind(config).await?.run(shutdown).await
}

/// Waits for ClickHouse (up to `--startup-timeout`), applies the migrations and returns.
pub async fn migrate(config: &Config) -> Result<MigrationReport, CollectorError> {
    Ok(wait_and_migrate(&config.clickhouse, config.startup_timeout, |_| {}).await?)
}

/// `rotate-keys finish|status`: migrates (the job's tables), then runs the job,
/// progress on stderr, the outcome on stdout.
pub async fn rotate_keys(
    config: &Config,
    job: crate::config::RotateKeysCommand,
) -> Result<(), CollectorError> {
    use crate::config::RotateKeysCommand;
    migrate(config).await?;
    let client = config.clickhouse.client();
    match job {
        RotateKeysCommand::Status => {
            for (app, pairs) in crate::rotation::status(&client).await? {
                println!("{app}\t{pairs}");
            }
        }
        RotateKeysCommand::Finish => {
            let done = crate::rotation::finish(&client, |line| eprintln!("{line}")).await?;
            println!("pairs\t{}", done.pairs);
            for (table, rows) in done.rewritten {
                println!("{table}\t{rows}");
            }
        }
    }
    Ok(())
}

/// Reads the tokens file again on every SIGHUP (a failed reload keeps the old tokens).
fn reload_tokens_on_sighup(auth: Auth) {
    if !auth.is_on() {
        return;
    }
    on_hangup("tokens will not be reloaded", move || match auth.reload() {
        Ok(tokens) => tracing::info!(tokens, "auth tokens reloaded"),
        Err(e) => tracing::error!(error = %e, "auth tokens not reloaded; the old ones stay"),
    });
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, CollectorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Bind { what, addr, source })
}

type ServerTask = JoinHandle<Result<(), String>>;

fn spawn_server(
    what: &'static str,
    server: impl Future<Output = Result<(), String>> + Send + 'static,
) -> ServerTask {
    tokio::spawn(async move {
        let result = server.await;
        if let Err(e) = &result {
            tracing::error!(server = what, error = %e, "server failed");
        }
        result
    })
}

/// A receiver's outcome, labelled with its name.
async fn named(
    what: &'static str,
    server: impl Future<Output = Result<(), String>>,
) -> (&'static str, Result<(), String>) {
    (what, server.await)
}

/// `None` when the receiver ended cleanly, else why it failed.
fn receiver_failure(
    joined: Result<(&'static str, Result<(), String>), tokio::task::JoinError>,
) -> Option<CollectorError> {
    match joined {
        Ok((_, Ok(()))) => None,
        Ok((what, Err(message))) => {
            tracing::error!(server = what, error = %message, "receiver failed");
            Some(CollectorError::Serve { what, message })
        }
        Err(e) => Some(CollectorError::Serve {
            what: "receiver",
            message: e.to_string(),
        }),
    }
}

async fn stop_server(stop: watch::Sender<bool>, task: ServerTask) {
    stop.send_replace(true);
    let _ = task.await;
}

/// Completes once `true` is sent (or every sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn log_start(config: &Config, addresses: Addresses) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        clickhouse = %config.clickhouse.url,
        database = %config.clickhouse.database,
        admin = %addresses.admin,
        spool_dir = %config.spool.dir.display(),
        spool_max_bytes = config.spool.max_bytes,
        spool_fsync = ?config.spool.fsync,
        batch_max_rows = config.batch.max_rows,
        batch_max_bytes = config.batch.max_bytes,
        batch_max_delay = ?config.batch.max_delay,
        batch_quiet_rows = config.batch.quiet_rows,
        batch_quiet = ?config.batch.quiet,
        max_request_bytes = config.max_request_bytes,
        user_hash_key_id = %config.keys.current_id,
        "starting growth-collector"
    );
    if let Some(previous) = config.keys.previous_id() {
        // Ids only: a key never reaches a log line.
        tracing::info!(
            current_key_id = %config.keys.current_id,
            previous_key_id = %previous,
            "user-hash key rotation overlap: users are hashed with both keys and the pairs recorded; \
             after the overlap run with the current key alone, then `growth-collector rotate-keys finish`"
        );
    }
    if !config.hasher.is_keyed() {
        tracing::warn!(
            "no user-hash key configured (GROWTH_USER_HASH_KEY or --user-hash-key-file): \
             raw user ids are hashed with plain SHA-256, which anyone can reverse for guessable ids; \
             set a secret key in production"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use growth_schema::service::{ServiceCli, StartupError};

    use super::*;
    use crate::config::Cli;

    /// Every port chosen by the OS; ClickHouse on a port where nothing listens.
    fn config(startup_timeout: &str) -> Config {
        Cli::try_parse_args([
            "growth-collector",
            "--clickhouse-url=http://127.0.0.1:9",
            "--otlp-grpc-addr=127.0.0.1:0",
            "--otlp-http-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            "--allow-unkeyed-hash",
            "--startup-timeout",
            startup_timeout,
        ])
        .expect("flags")
        .run
        .into_config(None)
        .map(|mut config| {
            config.spool.dir = crate::testing::temp_dir("lifecycle");
            config
        })
        .expect("config")
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn admin_answers_while_waiting_for_clickhouse_and_stops_on_signal() {
        let collector = Collector::bind(config("60s")).await.expect("bind");
        let addresses = collector.addresses();
        assert_ne!(addresses.admin.port(), 0);
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(collector.run(async {
            let _ = stopped.await;
        }));

        let health = get(addresses.admin, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let ready = get(addresses.admin, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("waiting for ClickHouse"), "{ready}");

        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stops promptly")
            .expect("joins");
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn gives_up_after_the_startup_timeout() {
        let result = run(config("300ms"), std::future::pending()).await;
        assert!(
            matches!(
                result,
                Err(CollectorError::Startup(StartupError::GaveUp { .. }))
            ),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_taken_port_fails_at_once() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut config = config("60s");
        config.otlp_http_addr = taken.local_addr().expect("addr");
        let result = Collector::bind(config).await;
        assert!(
            matches!(
                result,
                Err(CollectorError::Bind {
                    what: "OTLP/HTTP",
                    ..
                })
            ),
            "{result:?}"
        );
    }
}
