//! The three systems under test, each its own process so that its CPU and memory
//! can be read from `/proc/<pid>`:
//!
//! * `baseline` — this program's `sink` subcommand: an OTLP/gRPC server that decodes
//!   each request and answers OK, storing nothing (the floor any receiver pays);
//! * `rotel` — Rotel's agent with its ClickHouse exporter, into the OpenTelemetry
//!   `otel_logs` table (which it does not create: [`OTEL_LOGS_DDL`]);
//! * `growth` — the release `growth-collector` binary, spool on when it has one.
//!
//! Every run gets a fresh database, dropped afterwards.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::ValueEnum;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

use crate::probe::ClickHouse;
use crate::records::{SEQ_ATTRIBUTE, USER_HASH_KEY};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    Baseline,
    Rotel,
    Growth,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Baseline => "decode-only sink",
            System::Rotel => "Rotel → otel_logs",
            System::Growth => "growth-collector",
        }
    }
}

/// Where the programs are and where their files go.
pub struct Programs {
    pub rotel: Option<PathBuf>,
    pub collector: PathBuf,
    pub collector_args: Vec<String>,
    /// Whether the collector binary has `--spool-dir`.
    pub collector_has_spool: bool,
    pub work_dir: PathBuf,
    pub clickhouse_url: String,
}

/// A started system.
pub struct Running {
    pub system: System,
    pub pid: u32,
    pub grpc: SocketAddr,
    child: Child,
    database: String,
}

/// How many records a system stored, and how many distinct sequence numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored {
    pub rows: u64,
    pub unique: u64,
}

/// Rotel's logs table: the OpenTelemetry ClickHouse exporter's `otel_logs` (Map
/// attributes), which Rotel writes but does not create.
const OTEL_LOGS_DDL: &str = "
CREATE TABLE {db}.otel_logs (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = MergeTree
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1";

/// A port the OS says is free now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Running {
    /// Starts `system` for the run named `run` (e.g. `c8`) and waits until it takes requests.
    pub async fn start(
        system: System,
        run: &str,
        programs: &Programs,
        clickhouse: &ClickHouse,
    ) -> anyhow::Result<Self> {
        let grpc = loopback(free_port()?);
        let database = format!("bench_sbs_{}_{run}", format!("{system:?}").to_lowercase());
        let log = programs.work_dir.join(format!("{database}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command;
        let mut ready_url = None;
        match system {
            System::Baseline => {
                command = Command::new(std::env::current_exe()?);
                command.args(["sink", "--addr", &grpc.to_string()]);
                command.stdout(Stdio::piped());
            }
            System::Rotel => {
                let rotel = programs
                    .rotel
                    .as_ref()
                    .ok_or_else(|| anyhow!("--rotel-bin is needed for the rotel system"))?;
                clickhouse
                    .execute(&format!("DROP DATABASE IF EXISTS {database}"))
                    .await?;
                clickhouse
                    .execute(&format!("CREATE DATABASE {database}"))
                    .await?;
                clickhouse
                    .execute(&OTEL_LOGS_DDL.replace("{db}", &database))
                    .await?;
                let http = loopback(free_port()?);
                command = Command::new(rotel);
                command
                    .arg("start")
                    .args(["--otlp-grpc-endpoint", &grpc.to_string()])
                    .args(["--otlp-http-endpoint", &http.to_string()])
                    .args([
                        "--otlp-receiver-traces-disabled",
                        "--otlp-receiver-metrics-disabled",
                    ])
                    .args(["--exporter", "clickhouse"])
                    .args(["--clickhouse-exporter-endpoint", &programs.clickhouse_url])
                    .args(["--clickhouse-exporter-database", &database])
                    .arg("--pid-file")
                    .arg(programs.work_dir.join(format!("{database}.pid")))
                    .arg("--log-file")
                    .arg(&log)
                    .stdout(Stdio::null());
            }
            System::Growth => {
                clickhouse
                    .execute(&format!("DROP DATABASE IF EXISTS {database}"))
                    .await?;
                let (http, admin) = (loopback(free_port()?), loopback(free_port()?));
                command = Command::new(&programs.collector);
                command
                    .args(["--clickhouse-url", &programs.clickhouse_url])
                    .args(["--clickhouse-database", &database])
                    .args(["--otlp-grpc-addr", &grpc.to_string()])
                    .args(["--otlp-http-addr", &http.to_string()])
                    .args(["--admin-addr", &admin.to_string()])
                    .env("GROWTH_USER_HASH_KEY", USER_HASH_KEY)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null());
                if programs.collector_has_spool {
                    let spool = programs.work_dir.join(format!("{database}.spool"));
                    let _ = std::fs::remove_dir_all(&spool);
                    command.arg("--spool-dir").arg(spool);
                }
                command.args(&programs.collector_args);
                ready_url = Some(format!("http://{admin}/readyz"));
            }
        }
        let child = command
            .stderr(log_file)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {system:?}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{system:?} exited at once"))?;
        let mut running = Running {
            system,
            pid,
            grpc,
            child,
            database,
        };
        running.wait_ready(ready_url.as_deref(), &log).await?;
        Ok(running)
    }

    async fn wait_ready(&mut self, ready_url: Option<&str>, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{:?} exited during start-up ({status}); see {}",
                    self.system,
                    log.display()
                );
            }
            let ready = match ready_url {
                Some(url) => http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => TcpStream::connect(self.grpc).is_ok(),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} not ready within 60 s; see {}",
                    self.system,
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rows stored so far (for the sink: nothing is stored; `None`). The distinct count
    /// is over the sequence numbers as integers: a soak stores ~100M rows, and a set of
    /// that many strings outgrows ClickHouse's memory limit here (10.8 GiB).
    pub async fn stored(&self, clickhouse: &ClickHouse) -> anyhow::Result<Option<Stored>> {
        let (table, seq) = match self.system {
            System::Baseline => return Ok(None),
            System::Rotel => ("otel_logs", "LogAttributes"),
            System::Growth => ("events", "properties"),
        };
        let sql = format!(
            "SELECT toUInt64(count()), toUInt64(uniqExact(toUInt64({seq}['{SEQ_ATTRIBUTE}']))) FROM {}.{table}",
            self.database
        );
        let (rows, unique) = clickhouse
            .client
            .query(&sql)
            .fetch_one::<(u64, u64)>()
            .await?;
        Ok(Some(Stored { rows, unique }))
    }

    /// Rows visible so far (cheap: no distinct count).
    pub async fn visible(&self, clickhouse: &ClickHouse) -> anyhow::Result<u64> {
        let table = match self.system {
            System::Baseline => return Ok(0),
            System::Rotel => "otel_logs",
            System::Growth => "events",
        };
        let sql = format!("SELECT toUInt64(count()) FROM {}.{table}", self.database);
        Ok(clickhouse.client.query(&sql).fetch_one::<u64>().await?)
    }

    /// SIGTERM, then SIGKILL after 30 s; drops the database unless `keep`. For the
    /// sink, returns the records it decoded.
    pub async fn stop(
        mut self,
        clickhouse: &ClickHouse,
        keep: bool,
    ) -> anyhow::Result<Option<u64>> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        let mut received = None;
        if let Some(mut out) = self.child.stdout.take() {
            let mut text = String::new();
            out.read_to_string(&mut text).await?;
            received = text
                .trim()
                .strip_prefix("received ")
                .and_then(|n| n.parse().ok());
        }
        if self.system != System::Baseline && !keep {
            clickhouse
                .execute(&format!("DROP DATABASE IF EXISTS {}", self.database))
                .await?;
        }
        Ok(received)
    }
}

/// The decode-only sink: decodes every request (tonic + prost, as every Rust OTLP
/// receiver does), counts its records, answers OK. Prints `received N` on SIGTERM.
pub async fn serve_sink(addr: SocketAddr) -> anyhow::Result<()> {
    let sink = Sink::default();
    let received = Arc::clone(&sink.records);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .add_service(LogsServiceServer::new(sink).max_decoding_message_size(64 << 20))
        .serve_with_shutdown(addr, async move {
            terminate.recv().await;
        })
        .await?;
    println!("received {}", received.load(Ordering::Relaxed));
    Ok(())
}

#[derive(Default)]
struct Sink {
    records: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let records: usize = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}
