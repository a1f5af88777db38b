//! How many growth events the collector takes in per second, and where the time goes.
//!
//! Three measurements, printed as Markdown tables on stdout (progress on stderr):
//!
//! 1. **Mapping, in process** — records/s of [`map_request`] (validation, user
//!    hashing, properties) and of protobuf decoding on one core, on a prebuilt
//!    request of realistic finance-app records.
//! 2. **End to end** — the real collector ([`Collector::bind`] + [`Collector::run`] in
//!    this process, on a Tokio runtime of its own as in its binary, every port chosen
//!    by the OS) against a real ClickHouse, a fresh database per table row: N records
//!    as OTLP/HTTP protobuf requests (pre-encoded bodies) and as OTLP/gRPC requests
//!    (`LogsServiceClient`, which clones and encodes each request like an exporter
//!    would), R records a request, C concurrent senders. Wall time runs from the first
//!    send until all N records are visible in ClickHouse (the collector acknowledges
//!    once a request is in its spool, on disk; acknowledgement latency is shown apart),
//!    and `SELECT count() FROM events` must equal N.
//!    With `--tls`, every end-to-end row runs twice, plain and over TLS
//!    (`--tls-cert`/`--tls-key` from a private CA made with `openssl`; the senders
//!    trust it), and the table shows the TLS/plain ratio of records/s.
//! 3. **Batching** — the same over HTTP for several `--batch-max-rows` /
//!    `--batch-max-delay` (and sender) settings, as ratios to the first.
//!
//! ClickHouse's own insert count and CPU are the change of `InsertQuery` and of
//! `UserTimeMicroseconds + SystemTimeMicroseconds` in `system.events` (chDB has no
//! `system.query_log`), so the server must not be shared while this runs. The
//! collector's and the senders' CPU come from `/proc/self/task` (their runtimes'
//! threads are named apart), so `–` elsewhere than Linux.
//!
//! ```sh
//! { read -r http; read -r tcp; } < <(scripts/free-port 2)
//! scripts/clickhouse start --http-port "$http" --tcp-port "$tcp" --data-dir /tmp/bench-ch
//! cargo run --release -p growth-collector --example ingest_bench -- --clickhouse-url "http://127.0.0.1:$http"
//! scripts/clickhouse stop --data-dir /tmp/bench-ch
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use chrono::Utc;
use clap::{Parser, ValueEnum};
use growth_collector::auth::AppAccess;
use growth_collector::catalog::Catalog;
use growth_collector::map::{MapRules, Mapper, map_request};
use growth_collector::receiver::decode::{DecodeLimits, protobuf, protobuf_visit};
use growth_collector::rowbinary::{RowBinarySink, encode_request};
use growth_collector::{Cli, Collector};
use growth_schema::service::ServiceCli;
use growth_schema::user_hash::UserHasher;
use growth_testkit::finance::{FinanceEvents, UserIds};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The HMAC key both the "app" (for `user.hash` records) and the collector use.
const BENCH_KEY: &str = "ingest-bench-user-hash-key";

#[derive(Parser)]
#[command(
    about = "Measure growth-collector throughput: mapping on one core, then end to end over OTLP/HTTP and OTLP/gRPC into a real ClickHouse",
    long_about = None
)]
struct Args {
    /// ClickHouse HTTP endpoint (use a server no one else writes to: insert counts are server-wide).
    #[arg(
        long,
        env = "GROWTH_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// Which measurements to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "map,e2e,batching"
    )]
    sections: Vec<Section>,
    /// Records sent per end-to-end row.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Log records per export request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    records_per_request: u64,
    /// Concurrent senders (each its own connection, one request in flight each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Protocols of the end-to-end table.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http,grpc")]
    protocols: Vec<Protocol>,
    /// The collector's --batch-max-rows in the end-to-end table
    /// [default: concurrency × records-per-request, so a batch fills once every sender waits].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    batch_max_rows: Option<u32>,
    /// The collector's --batch-max-delay in the end-to-end table.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    batch_max_delay: Duration,
    /// Batching table: ROWS:DELAY[:SENDERS] settings, compared with the first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000:1s:4,50000:1s:4,200000:1s:4,200000:200ms:4,200000:1s:32",
        value_parser = parse_variant
    )]
    batching: Vec<Variant>,
    /// Records sent per batching-table row (sent over OTLP/HTTP). Best a multiple of every
    /// ROWS: a last, partial batch waits its DELAY, and that wait is part of the wall time.
    #[arg(long, default_value_t = 200_000)]
    batching_records: u64,
    /// Distinct users the records are spread over.
    #[arg(long, default_value_t = 50_000)]
    users: u64,
    /// Share of records whose app already hashed the user (`user.hash`); the rest send `user.id`.
    #[arg(long, default_value_t = 0.5)]
    hashed_share: f64,
    /// Distinct prebuilt requests the senders cycle through.
    #[arg(long, default_value_t = 64)]
    distinct_requests: usize,
    /// Timed runs per mapping figure (the median is shown).
    #[arg(long, default_value_t = 5)]
    map_runs: usize,
    /// Minimum duration of one mapping run.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    map_run_time: Duration,
    /// Keep each row's database instead of dropping it.
    #[arg(long)]
    keep_databases: bool,
    /// Run every end-to-end row plain and then over TLS (certificates made with the
    /// `openssl` command in a temporary directory), and show the ratio.
    #[arg(long)]
    tls: bool,
}

/// A CA and a server certificate for 127.0.0.1, as PEM files (`openssl` CLI).
struct BenchTls {
    ca_pem: Vec<u8>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn bench_tls() -> &'static BenchTls {
    static TLS: std::sync::OnceLock<BenchTls> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ingest-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args:?}");
        };
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=bench CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        BenchTls {
            ca_pem: std::fs::read(dir.join("ca.pem")).expect("CA"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Map,
    E2e,
    Batching,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "OTLP/HTTP protobuf",
            Protocol::Grpc => "OTLP/gRPC",
        }
    }
}

/// One batching setting: the collector's batch flags and, optionally, other senders.
#[derive(Debug, Clone, Copy)]
struct Variant {
    max_rows: u32,
    max_delay: Duration,
    concurrency: Option<u64>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_variant(text: &str) -> Result<Variant, String> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(format!(
            "{text:?}: expected ROWS:DELAY[:SENDERS], e.g. 50000:1s"
        ));
    }
    let max_rows = parts[0]
        .parse()
        .map_err(|e| format!("{text:?}: rows: {e}"))?;
    let max_delay = parse_duration(parts[1])?;
    let concurrency = match parts.get(2) {
        Some(c) => Some(c.parse().map_err(|e| format!("{text:?}: senders: {e}"))?),
        None => None,
    };
    Ok(Variant {
        max_rows,
        max_delay,
        concurrency,
    })
}

// ---------------------------------------------------------------------------
// Realistic records
// ---------------------------------------------------------------------------

// The records: the finance app's events (growth_testkit::finance).

// ---------------------------------------------------------------------------
// 1. Mapping on one core
// ---------------------------------------------------------------------------

/// Median of `runs` runs of records/s; each run repeats `f` (which returns records
/// handled) for at least `min_time`.
fn rate(runs: usize, min_time: Duration, mut f: impl FnMut() -> u64) -> f64 {
    let mut rates: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            let mut records = 0;
            while started.elapsed() < min_time {
                records += f();
            }
            records as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// A visitor that counts what it is shown: the cost of reading in place alone.
#[derive(Default)]
struct CountingVisitor {
    records: u64,
    attributes: usize,
}

impl<'a> growth_collector::view::Visitor<'a> for CountingVisitor {
    fn resource(&mut self, attributes: &[growth_collector::view::KeyValue<'a>]) {
        self.attributes += attributes.len();
    }

    fn record(&mut self, record: &growth_collector::view::LogRecord<'a, '_>) {
        self.records += 1;
        self.attributes += record.attributes.len();
    }
}

fn mapping_section(args: &Args) -> anyhow::Result<()> {
    let r = args.records_per_request;
    let keyed = UserHasher::new(Some(BENCH_KEY.as_bytes().to_vec()));
    let unkeyed = UserHasher::new(None);
    let keyed_rules = MapRules::new(keyed.clone());
    let unkeyed_rules = MapRules::new(unkeyed.clone());
    let mix =
        FinanceEvents::new(1, args.users, UserIds::Mix(args.hashed_share), BENCH_KEY).request(r);
    let raw = FinanceEvents::new(1, args.users, UserIds::AllRaw, BENCH_KEY).request(r);
    let hashed = FinanceEvents::new(1, args.users, UserIds::AllHashed, BENCH_KEY).request(r);
    let mix_bytes = mix.encode_to_vec();
    let bytes_per_record = mix_bytes.len() as f64 / r as f64;

    // The requests must map cleanly, or the figures would time the rejection path.
    for request in [&mix, &raw, &hashed] {
        let mapped = map_request(request, &keyed_rules, Utc::now());
        ensure!(
            mapped.rows.len() as u64 == r && mapped.rejected_total() == 0,
            "benchmark records do not map cleanly: {} rows, rejected {:?}",
            mapped.rows.len(),
            mapped.rejected
        );
    }

    let (runs, t) = (args.map_runs, args.map_run_time);
    let map = |request: &ExportLogsServiceRequest, rules: &MapRules| {
        rate(runs, t, || {
            black_box(map_request(black_box(request), rules, Utc::now())).received
        })
    };
    eprintln!("mapping: {r} records a request, {bytes_per_record:.0} protobuf bytes a record");
    let share = (args.hashed_share * 100.0).round();
    // (step, per second, whether the figure is records of the request)
    let mut rows: Vec<(String, f64, bool)> = Vec::new();
    let mut step = |name: String, per_s: f64| {
        eprintln!("  {name}: {per_s:.0}/s");
        let of_records = !name.contains("hashes/s");
        rows.push((name, per_s, of_records));
    };
    step(
        "protobuf decode (`ExportLogsServiceRequest::decode`)".into(),
        rate(runs, t, || {
            let decoded = ExportLogsServiceRequest::decode(black_box(mix_bytes.as_slice()));
            black_box(decoded).map_or(0, |_| r)
        }),
    );
    step(
        format!("`map_request`, mix ({share:.0} % `user.hash`, rest `user.id` HMAC)"),
        map(&mix, &keyed_rules),
    );
    step(
        "`map_request`, every user a `user.id` (HMAC-SHA256 key)".into(),
        map(&raw, &keyed_rules),
    );
    step(
        "`map_request`, every user a `user.id` (no key: SHA-256)".into(),
        map(&raw, &unkeyed_rules),
    );
    step(
        "`map_request`, every user a `user.hash` (app hashed)".into(),
        map(&hashed, &keyed_rules),
    );
    step(
        "decode + `map_request`, mix (collector CPU before ClickHouse)".into(),
        rate(runs, t, || {
            let decoded = ExportLogsServiceRequest::decode(black_box(mix_bytes.as_slice()))
                .unwrap_or_default();
            black_box(map_request(&decoded, &keyed_rules, Utc::now())).received
        }),
    );
    let limits = DecodeLimits::default();
    step(
        "intake before: bounded decode (walk + prost) + `map_request`, mix".into(),
        rate(runs, t, || {
            let decoded = protobuf(black_box(mix_bytes.as_slice()), &limits).unwrap_or_default();
            black_box(map_request(&decoded, &keyed_rules, Utc::now())).received
        }),
    );
    step(
        "reading in place alone: `protobuf_visit`, a visitor that only counts".into(),
        rate(runs, t, || {
            let mut counted = CountingVisitor::default();
            let read = protobuf_visit(black_box(mix_bytes.as_slice()), &limits, &mut counted);
            black_box(counted.attributes);
            black_box(read.map_or(0, |()| counted.records))
        }),
    );
    step(
        "intake now: `protobuf_visit` + `Mapper` (read in place), mix".into(),
        rate(runs, t, || {
            let mut mapper = Mapper::new(&keyed_rules, &AppAccess::All, Utc::now());
            let read = protobuf_visit(black_box(mix_bytes.as_slice()), &limits, &mut mapper);
            black_box(read.map_or(0, |()| mapper.finish().received))
        }),
    );
    // What the intake does up to the spool: map, admit against the catalog, encode.
    let catalog = Catalog::new(1_000, 1_000);
    step(
        "to RowBinary, before: `protobuf_visit` + `Mapper` rows + catalog + `encode_request`"
            .into(),
        rate(runs, t, || {
            let mut mapper = Mapper::new(&keyed_rules, &AppAccess::All, Utc::now());
            let read = protobuf_visit(black_box(mix_bytes.as_slice()), &limits, &mut mapper);
            let mut mapped = mapper.finish();
            catalog.admit(&mut mapped);
            let encoded = encode_request(&mapped.rows);
            black_box(encoded.bytes.len());
            black_box(read.map_or(0, |()| mapped.received))
        }),
    );
    step(
        "to RowBinary, now: `protobuf_visit` + `Mapper` into `RowBinarySink`".into(),
        rate(runs, t, || {
            let sink = RowBinarySink::new(&catalog, mix_bytes.len() * 5 / 4);
            let mut mapper = Mapper::with_sink(&keyed_rules, &AppAccess::All, Utc::now(), sink);
            let read = protobuf_visit(black_box(mix_bytes.as_slice()), &limits, &mut mapper);
            let (mapped, sink) = mapper.finish_with_sink();
            black_box(sink.finish().bytes.len());
            black_box(read.map_or(0, |()| mapped.received))
        }),
    );
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("tg-{}", 100_000_000 + i))
        .collect();
    step(
        "`UserHasher::hash` alone, HMAC (hashes/s)".into(),
        rate(runs, t, || {
            for id in &ids {
                black_box(keyed.hash(black_box(id)));
            }
            ids.len() as u64
        }),
    );
    step(
        "`UserHasher::hash` alone, SHA-256 (hashes/s)".into(),
        rate(runs, t, || {
            for id in &ids {
                black_box(unkeyed.hash(black_box(id)));
            }
            ids.len() as u64
        }),
    );
    step(
        "sender side: clone + encode a request (what the gRPC sender does per request)".into(),
        rate(runs, t, || {
            black_box(black_box(&mix).clone().encode_to_vec());
            r
        }),
    );

    println!("### Mapping on one core\n");
    println!(
        "{r} records a request, {bytes_per_record:.0} protobuf bytes a record; median of {runs} runs of ≥ {t:?}.\n"
    );
    println!("| step | records/s (1 core) | µs/record | MB/s of protobuf |");
    println!("|---|---:|---:|---:|");
    for (name, per_s, of_records) in rows {
        let mb_per_s = if of_records {
            format!("{:.0}", per_s * bytes_per_record / 1e6)
        } else {
            "–".into()
        };
        println!("| {name} | {per_s:.0} | {:.2} | {mb_per_s} |", 1e6 / per_s);
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------
// 2./3. End to end
// ---------------------------------------------------------------------------

/// What one end-to-end row sends.
#[derive(Debug, Clone, Copy)]
struct Load {
    protocol: Protocol,
    records: u64,
    per_request: u64,
    concurrency: u64,
    max_rows: u32,
    max_delay: Duration,
    /// Over TLS ([`bench_tls`]).
    tls: bool,
}

/// The prebuilt requests senders cycle through, plus a shorter last one.
struct Workload {
    requests: Vec<ExportLogsServiceRequest>,
    bodies: Vec<Bytes>,
    tail: Option<(ExportLogsServiceRequest, Bytes, u64)>,
    total_requests: u64,
    per_request: u64,
}

impl Workload {
    fn new(args: &Args, records: u64, per_request: u64) -> Self {
        let total_requests = records.div_ceil(per_request);
        let distinct = (args.distinct_requests.max(1) as u64).min(total_requests.max(1));
        let mut source =
            FinanceEvents::new(7, args.users, UserIds::Mix(args.hashed_share), BENCH_KEY);
        let requests: Vec<_> = (0..distinct).map(|_| source.request(per_request)).collect();
        let bodies = requests
            .iter()
            .map(|r| Bytes::from(r.encode_to_vec()))
            .collect();
        let rest = records % per_request;
        let tail = (rest != 0).then(|| {
            let request = source.request(rest);
            let body = Bytes::from(request.encode_to_vec());
            (request, body, rest)
        });
        Self {
            requests,
            bodies,
            tail,
            total_requests,
            per_request,
        }
    }

    fn is_tail(&self, i: u64) -> bool {
        self.tail.is_some() && i + 1 == self.total_requests
    }

    fn body(&self, i: u64) -> (Bytes, u64) {
        match &self.tail {
            Some((_, body, n)) if self.is_tail(i) => (body.clone(), *n),
            _ => (
                self.bodies[(i % self.bodies.len() as u64) as usize].clone(),
                self.per_request,
            ),
        }
    }

    fn request(&self, i: u64) -> (&ExportLogsServiceRequest, usize, u64) {
        match &self.tail {
            Some((request, body, n)) if self.is_tail(i) => (request, body.len(), *n),
            _ => {
                let k = (i % self.requests.len() as u64) as usize;
                (&self.requests[k], self.bodies[k].len(), self.per_request)
            }
        }
    }
}

/// What one end-to-end row measured.
struct Outcome {
    wall: Duration,
    records: u64,
    bytes: u64,
    p50: Duration,
    p99: Duration,
    inserts: u64,
    inserted_rows: u64,
    batches: u64,
    /// CPU of ClickHouse's threads (queries, views, merges) during the row.
    server_cpu: Duration,
    /// CPU of the collector's threads and of the senders' threads during the row.
    own_cpu: Option<ThreadCpu>,
}

impl Outcome {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
}

/// Shared between the senders of one row.
struct Progress {
    next: AtomicUsize,
    acked: AtomicU64,
    bytes: AtomicU64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn check_response(response: &ExportLogsServiceResponse) -> anyhow::Result<()> {
    match &response.partial_success {
        Some(p) if p.rejected_log_records != 0 => Err(anyhow!(
            "the collector rejected {} records: {}",
            p.rejected_log_records,
            p.error_message
        )),
        _ => Ok(()),
    }
}

async fn http_sender(
    client: reqwest::Client,
    url: String,
    workload: Arc<Workload>,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    loop {
        let i = progress.next.fetch_add(1, Ordering::Relaxed) as u64;
        if i >= workload.total_requests {
            return Ok(latencies);
        }
        let (body, records) = workload.body(i);
        let size = body.len() as u64;
        let started = Instant::now();
        let response = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .context("OTLP/HTTP request")?;
        let status = response.status();
        let answer = response.bytes().await.context("OTLP/HTTP response body")?;
        ensure!(
            status.is_success(),
            "OTLP/HTTP answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        check_response(&ExportLogsServiceResponse::decode(answer)?)?;
        latencies.push(started.elapsed());
        progress.acked.fetch_add(records, Ordering::Relaxed);
        progress.bytes.fetch_add(size, Ordering::Relaxed);
    }
}

/// Reads a counter from the collector's own `/metrics`.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// ClickHouse's server-wide counters (chDB has no `system.query_log`).
#[derive(Debug, Clone, Copy)]
struct ServerCounters {
    inserts: u64,
    inserted_rows: u64,
    cpu_us: u64,
}

async fn server_counters(server: &clickhouse::Client) -> anyhow::Result<ServerCounters> {
    let (inserts, inserted_rows, cpu_us) = server
        .query(
            "SELECT sumIf(value, event = 'InsertQuery'),
                    sumIf(value, event = 'InsertedRows'),
                    sumIf(value, event IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds'))
             FROM system.events",
        )
        .fetch_one::<(u64, u64, u64)>()
        .await?;
    Ok(ServerCounters {
        inserts,
        inserted_rows,
        cpu_us,
    })
}

/// Names of the threads of the two runtimes, to tell their CPU apart.
const COLLECTOR_THREADS: &str = "collector";
const SENDER_THREADS: &str = "senders";

/// CPU used so far by the collector's runtime and by the senders' runtime.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCpu {
    collector: Duration,
    senders: Duration,
}

impl ThreadCpu {
    /// From /proc/self/task/*/{comm,schedstat}: time on CPU in ns (Linux; `None` elsewhere).
    fn now() -> Option<Self> {
        let mut cpu = ThreadCpu::default();
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let dir = task.ok()?.path();
            // A thread may end between listing and reading: skip it.
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("schedstat")),
            ) else {
                continue;
            };
            let Some(nanos) = stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let used = Duration::from_nanos(nanos);
            if name.starts_with(COLLECTOR_THREADS) || name.starts_with("growth-spool") {
                cpu.collector += used;
            } else if name.starts_with(SENDER_THREADS) {
                cpu.senders += used;
            }
        }
        Some(cpu)
    }

    fn since(self, before: Self) -> Self {
        ThreadCpu {
            collector: self.collector.saturating_sub(before.collector),
            senders: self.senders.saturating_sub(before.senders),
        }
    }
}

async fn run_row(
    args: &Args,
    collector_rt: &Handle,
    load: Load,
    database: &str,
) -> anyhow::Result<Outcome> {
    let workload = Arc::new(Workload::new(args, load.records, load.per_request));
    let spool_dir = std::env::temp_dir().join(format!("ingest-bench-spool-{database}"));
    let tls_flags = if load.tls {
        let tls = bench_tls();
        vec![
            format!("--tls-cert={}", tls.cert.display()),
            format!("--tls-key={}", tls.key.display()),
        ]
    } else {
        Vec::new()
    };
    let config = Cli::try_parse_args(
        [
            "growth-collector".to_owned(),
            format!("--clickhouse-url={}", args.clickhouse_url),
            format!("--clickhouse-database={database}"),
            "--otlp-grpc-addr=127.0.0.1:0".into(),
            "--otlp-http-addr=127.0.0.1:0".into(),
            "--admin-addr=127.0.0.1:0".into(),
            format!("--batch-max-rows={}", load.max_rows),
            format!(
                "--batch-max-delay={}",
                humantime::format_duration(load.max_delay)
            ),
            format!("--spool-dir={}", spool_dir.display()),
        ]
        .into_iter()
        .chain(tls_flags),
    )
    .map_err(|e| anyhow!("collector flags: {e}"))?
    .run
    .into_config(Some(BENCH_KEY.into()))?;
    // The collector runs on its own runtime (as in its binary), so that its CPU can be
    // told apart from the senders'; it binds there, where its sockets are polled.
    let (stop, stopped) = oneshot::channel::<()>();
    let (bound, addresses) = oneshot::channel();
    let running = collector_rt.spawn(async move {
        let collector = Collector::bind(config).await?;
        let _ = bound.send(collector.addresses());
        collector
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let Ok(addresses) = addresses.await else {
        running.await??;
        bail!("the collector stopped before it was bound");
    };

    let result = drive(args, load, &workload, addresses, &running, database).await;

    let _ = stop.send(());
    let finished = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .context("the collector did not stop within 60 s")?
        .context("collector task")?;
    let _ = std::fs::remove_dir_all(&spool_dir);
    let outcome = result?;
    finished.context("the collector failed")?;

    // Every acknowledged record must be stored, and no other.
    let client = clickhouse::Client::default()
        .with_url(&args.clickhouse_url)
        .with_database(database);
    let stored: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await?;
    if stored != load.records {
        bail!(
            "COUNT MISMATCH in database {database}: sent and acknowledged {} records, `SELECT count() FROM events` says {stored}",
            load.records
        );
    }
    Ok(outcome)
}

/// Waits for readiness, sends the workload, and reads the counters.
async fn drive(
    args: &Args,
    load: Load,
    workload: &Arc<Workload>,
    addresses: growth_collector::Addresses,
    running: &tokio::task::JoinHandle<Result<(), growth_collector::CollectorError>>,
    database: &str,
) -> anyhow::Result<Outcome> {
    let scheme = if load.tls { "https" } else { "http" };
    let admin = format!("{scheme}://{}", addresses.admin);
    let mut http = reqwest::Client::builder()
        .use_rustls_tls()
        .pool_max_idle_per_host(load.concurrency as usize);
    if load.tls {
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&bench_tls().ca_pem)?);
    }
    let http = http.build()?;
    let waiting = Instant::now();
    loop {
        ensure!(
            !running.is_finished(),
            "the collector stopped during start-up"
        );
        let ready = http.get(format!("{admin}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "the collector was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = clickhouse::Client::default().with_url(&args.clickhouse_url);
    let before = server_counters(&server).await?;
    let own_before = ThreadCpu::now();

    let progress = Arc::new(Progress {
        next: AtomicUsize::new(0),
        acked: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let mut senders = JoinSet::new();
    let mut grpc_clients = Vec::new();
    if load.protocol == Protocol::Grpc {
        // Connect first, so that the clock measures exports, not handshakes.
        for _ in 0..load.concurrency {
            let mut endpoint = tonic::transport::Endpoint::from_shared(format!(
                "{scheme}://{}",
                addresses.otlp_grpc
            ))?;
            if load.tls {
                endpoint = endpoint.tls_config(
                    tonic::transport::ClientTlsConfig::new().ca_certificate(
                        tonic::transport::Certificate::from_pem(&bench_tls().ca_pem),
                    ),
                )?;
            }
            let channel = endpoint.connect().await.context("connect OTLP/gRPC")?;
            let client = LogsServiceClient::new(channel);
            grpc_clients.push(client);
        }
    }
    let started = Instant::now();
    match load.protocol {
        Protocol::Http => {
            let url = format!("{scheme}://{}/v1/logs", addresses.otlp_http);
            for _ in 0..load.concurrency {
                senders.spawn(http_sender(
                    http.clone(),
                    url.clone(),
                    workload.clone(),
                    progress.clone(),
                ));
            }
        }
        Protocol::Grpc => {
            for client in grpc_clients {
                senders.spawn(grpc_export_loop(client, workload.clone(), progress.clone()));
            }
        }
    }
    let reporter = tokio::spawn({
        let progress = progress.clone();
        let total = load.records;
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let acked = progress.acked.load(Ordering::Relaxed);
                eprintln!(
                    "    {acked}/{total} records acknowledged, {:.0} records/s so far",
                    acked as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    });
    let mut latencies = Vec::new();
    let mut failure = None;
    while let Some(joined) = senders.join_next().await {
        match joined {
            Ok(Ok(mut l)) => latencies.append(&mut l),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                senders.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failure.get_or_insert(anyhow!("sender task: {e}"));
            }
        }
    }
    reporter.abort();
    // Acknowledged means spooled: the clock stops once every record is in ClickHouse.
    let stored = server.clone().with_database(database);
    loop {
        let count: u64 = stored
            .query("SELECT count() FROM events")
            .fetch_one()
            .await?;
        if count >= load.records || started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed();
    let after = server_counters(&server).await?;
    let own = ThreadCpu::now()
        .zip(own_before)
        .map(|(after, before)| after.since(before));
    if let Some(e) = failure {
        return Err(e);
    }
    let acked = progress.acked.load(Ordering::Relaxed);
    ensure!(
        acked == load.records,
        "only {acked} of {} records were acknowledged",
        load.records
    );
    latencies.sort();
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let batches = metric(&metrics, "growth_collector_batches_total").unwrap_or(0);
    Ok(Outcome {
        wall,
        records: acked,
        bytes: progress.bytes.load(Ordering::Relaxed),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        inserts: after.inserts - before.inserts,
        inserted_rows: after.inserted_rows - before.inserted_rows,
        batches,
        server_cpu: Duration::from_micros(after.cpu_us - before.cpu_us),
        own_cpu: own,
    })
}

async fn grpc_export_loop(
    mut client: LogsServiceClient<tonic::transport::Channel>,
    workload: Arc<Workload>,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    loop {
        let i = progress.next.fetch_add(1, Ordering::Relaxed) as u64;
        if i >= workload.total_requests {
            return Ok(latencies);
        }
        let (request, size, records) = workload.request(i);
        let started = Instant::now();
        // An exporter builds a fresh request per export; the clone stands in for that.
        let response = client
            .export(request.clone())
            .await
            .map_err(|status| anyhow!("OTLP/gRPC export failed: {status}"))?;
        check_response(response.get_ref())?;
        latencies.push(started.elapsed());
        progress.acked.fetch_add(records, Ordering::Relaxed);
        progress.bytes.fetch_add(size as u64, Ordering::Relaxed);
    }
}

async fn drop_database(args: &Args, database: &str) -> anyhow::Result<()> {
    if args.keep_databases {
        return Ok(());
    }
    clickhouse::Client::default()
        .with_url(&args.clickhouse_url)
        .query("DROP DATABASE IF EXISTS ?")
        .bind(clickhouse::sql::Identifier(database))
        .execute()
        .await
        .with_context(|| format!("ClickHouse at {}", args.clickhouse_url))?;
    Ok(())
}

async fn measure(
    args: &Args,
    collector_rt: &Handle,
    load: Load,
    row: usize,
) -> anyhow::Result<Outcome> {
    let database = format!("bench_ingest_{}_{row}", std::process::id());
    drop_database(args, &database).await?;
    eprintln!(
        "  {}{} · {} records · {}/request · {} senders · batch {} rows / {} · database {database}",
        load.protocol.name(),
        if load.tls { " over TLS" } else { "" },
        load.records,
        load.per_request,
        load.concurrency,
        load.max_rows,
        humantime::format_duration(load.max_delay)
    );
    let outcome = run_row(args, collector_rt, load, &database)
        .await
        .with_context(|| format!("row {row} ({database} kept for inspection)"))?;
    eprintln!(
        "    done: {:.1} s, {:.0} records/s, {} ClickHouse inserts ({} rows written incl. views), collector batches {}, CPU µs/record {}; count() = {} ✓",
        outcome.wall.as_secs_f64(),
        outcome.records_per_s(),
        outcome.inserts,
        outcome.inserted_rows,
        outcome.batches,
        cpu_per_record(&outcome),
        load.records
    );
    drop_database(args, &database).await?;
    Ok(outcome)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn rows_per_insert(o: &Outcome) -> String {
    if o.inserts == 0 {
        "–".into()
    } else {
        format!("{:.0}", o.records as f64 / o.inserts as f64)
    }
}

/// CPU µs a record: collector / senders / ClickHouse.
fn cpu_per_record(o: &Outcome) -> String {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / o.records as f64;
    match o.own_cpu {
        Some(own) => format!(
            "{:.1} / {:.1} / {:.1}",
            per(own.collector),
            per(own.senders),
            per(o.server_cpu)
        ),
        None => format!("– / – / {:.1}", per(o.server_cpu)),
    }
}

async fn e2e_section(args: &Args, collector_rt: &Handle, row: &mut usize) -> anyhow::Result<()> {
    let max_rows = args.batch_max_rows.unwrap_or_else(|| {
        u32::try_from(args.concurrency * args.records_per_request)
            .unwrap_or(10_000_000)
            .clamp(1, 10_000_000)
    });
    eprintln!("end to end:");
    let mut lines = Vec::new();
    let modes: &[bool] = if args.tls { &[false, true] } else { &[false] };
    for &protocol in &args.protocols {
        let mut plain = None;
        for &tls in modes {
            let load = Load {
                protocol,
                records: args.records,
                per_request: args.records_per_request,
                concurrency: args.concurrency,
                max_rows,
                max_delay: args.batch_max_delay,
                tls,
            };
            *row += 1;
            let o = measure(args, collector_rt, load, *row).await?;
            let base = *plain.get_or_insert(o.records_per_s());
            lines.push(format!(
            "| {}{} | {} | {} | {} | {} / {} | {:.1} | {:.0} | {:.2}× | {:.1} | {} / {} | {} | {} | {} | {} ✓ |",
            protocol.name(),
            if tls { " over TLS" } else { "" },
            load.records,
            load.per_request,
            load.concurrency,
            load.max_rows,
            humantime::format_duration(load.max_delay),
            o.wall.as_secs_f64(),
            o.records_per_s(),
            o.records_per_s() / base,
            o.bytes as f64 / o.wall.as_secs_f64() / 1e6,
            ms(o.p50),
            ms(o.p99),
            o.inserts,
            rows_per_insert(&o),
            cpu_per_record(&o),
            load.records,
        ));
        }
    }
    println!("### End to end: OTLP → collector → ClickHouse\n");
    println!(
        "| protocol | records | records/request | senders | batch rows / delay | wall (s) | records/s | vs plain | MB/s (request protobuf) | ack p50 / p99 (ms) | ClickHouse inserts | rows/insert | CPU µs/record: collector / senders / ClickHouse | `count()` |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|---:|");
    for line in lines {
        println!("{line}");
    }
    println!();
    Ok(())
}

async fn batching_section(
    args: &Args,
    collector_rt: &Handle,
    row: &mut usize,
) -> anyhow::Result<()> {
    eprintln!("batching:");
    let mut lines = Vec::new();
    let mut first: Option<f64> = None;
    for variant in &args.batching {
        let load = Load {
            protocol: Protocol::Http,
            records: args.batching_records,
            per_request: args.records_per_request,
            concurrency: variant.concurrency.unwrap_or(args.concurrency),
            max_rows: variant.max_rows,
            max_delay: variant.max_delay,
            tls: false,
        };
        *row += 1;
        let o = measure(args, collector_rt, load, *row).await?;
        let base = *first.get_or_insert(o.records_per_s());
        lines.push(format!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.2}× | {} | {} | {} / {} | {} |",
            load.max_rows,
            humantime::format_duration(load.max_delay),
            load.concurrency,
            o.wall.as_secs_f64(),
            o.records_per_s(),
            o.records_per_s() / base,
            o.inserts,
            rows_per_insert(&o),
            ms(o.p50),
            ms(o.p99),
            cpu_per_record(&o),
        ));
    }
    println!(
        "### Batching: OTLP/HTTP, {} records a row, {} records/request\n",
        args.batching_records, args.records_per_request
    );
    println!(
        "| --batch-max-rows | --batch-max-delay | senders | wall (s) | records/s | vs first | ClickHouse inserts | rows/insert | ack p50 / p99 (ms) | CPU µs/record: collector / senders / ClickHouse |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for line in lines {
        println!("{line}");
    }
    println!();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if args.sections.contains(&Section::Map) {
        mapping_section(&args)?;
    }
    if !args.sections.contains(&Section::E2e) && !args.sections.contains(&Section::Batching) {
        return Ok(());
    }
    // One worker per core each, like the collector binary's #[tokio::main].
    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(COLLECTOR_THREADS)
        .build()?;
    let senders_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(SENDER_THREADS)
        .build()?;
    let handle = collector_rt.handle().clone();
    let result = senders_rt.block_on(async {
        let mut row = 0;
        if args.sections.contains(&Section::E2e) {
            e2e_section(&args, &handle, &mut row).await?;
        }
        if args.sections.contains(&Section::Batching) {
            batching_section(&args, &handle, &mut row).await?;
        }
        anyhow::Ok(())
    });
    collector_rt.shutdown_timeout(Duration::from_secs(5));
    result
}
