//! The SDK's benchmark: `track` latency on the caller's thread (with HMAC
//! hashing) with the collector up, down and hung; allocations per `track`; a
//! burst; a sustained rate with nothing dropped; a collector killed and restarted
//! under load; background CPU per event. It starts the real collector itself
//! (a database of its own on the given ClickHouse) and counts what ClickHouse
//! stored. Prints a Markdown table.
//!
//! ```text
//! cargo build --release -p growth-collector
//! scripts/clickhouse start   # or any ClickHouse; note its HTTP URL
//! cargo run --release -p growth-sdk --example sdk_bench -- \
//!     --collector target/release/growth-collector --clickhouse-url http://127.0.0.1:8123
//! # a short smoke run:
//! cargo run --release -p growth-sdk --example sdk_bench -- --collector ... --clickhouse-url ... \
//!     --sustain-secs 5 --restart-secs 5
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use growth_sdk::{AttributeValue, DeliveryReport, Protocol, Tracker};

/// Counts the allocations of the current thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

// The one `unsafe` in the workspace (which denies it): a global allocator cannot be
// written without it, and counting allocations is what this benchmark measures.
// SAFETY: delegates every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const KEY: &[u8] = b"bench-hash-key";

#[derive(Debug, Parser)]
#[command(about = "Benchmark growth-sdk against the real collector")]
struct Args {
    /// The growth-collector binary (release build).
    #[arg(long)]
    collector: PathBuf,
    /// ClickHouse HTTP URL the collector writes to.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// OTLP protocol.
    #[arg(long, default_value = "grpc")]
    protocol: Protocol,
    /// Events per second of the sustained run.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Length of the sustained run.
    #[arg(long, default_value_t = 60)]
    sustain_secs: u64,
    /// Events in the burst.
    #[arg(long, default_value_t = 100_000)]
    burst: u64,
    /// Length of the collector outage in the restart run.
    #[arg(long, default_value_t = 30)]
    restart_secs: u64,
    /// Events per second during the restart run.
    #[arg(long, default_value_t = 1_000)]
    restart_rate: u64,
    /// `track` calls measured per collector state.
    #[arg(long, default_value_t = 200_000)]
    latency_calls: u64,
    /// Scenarios to run: latency, burst, sustained, restart (comma list).
    #[arg(
        long,
        default_value = "latency,burst,sustained,restart",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// A Python with opentelemetry-sdk (e.g. .venv/bin/python): also benchmark
    /// sdk/python with sdk/python/examples/send_events.py.
    #[arg(long)]
    python: Option<PathBuf>,
}

/// A collector process of our own.
struct CollectorProcess {
    child: Option<Child>,
    args: Vec<String>,
    binary: PathBuf,
    grpc: String,
    http: String,
    admin: u16,
    /// Its `--spool-dir`, removed at the end.
    spool: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl CollectorProcess {
    fn start(binary: PathBuf, clickhouse_url: &str, database: &str) -> Self {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let spool = std::env::temp_dir().join(format!("growth-sdk-bench-spool-{database}"));
        let args = vec![
            "--clickhouse-url".to_owned(),
            clickhouse_url.to_owned(),
            "--clickhouse-database".to_owned(),
            database.to_owned(),
            "--otlp-grpc-addr".to_owned(),
            format!("127.0.0.1:{grpc}"),
            "--otlp-http-addr".to_owned(),
            format!("127.0.0.1:{http}"),
            "--admin-addr".to_owned(),
            format!("127.0.0.1:{admin}"),
            // Kept across the restart scenario's kill, like a real deployment's.
            "--spool-dir".to_owned(),
            spool.to_string_lossy().into_owned(),
        ];
        let mut collector = CollectorProcess {
            child: None,
            args,
            binary,
            grpc: format!("http://127.0.0.1:{grpc}"),
            http: format!("http://127.0.0.1:{http}"),
            admin,
            spool,
        };
        collector.spawn();
        collector
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env(
                "GROWTH_USER_HASH_KEY",
                String::from_utf8_lossy(KEY).as_ref(),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the collector starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&format!("127.0.0.1:{}", self.admin), "/readyz")
            .is_none_or(|(code, _)| code != 200)
        {
            assert!(Instant::now() < deadline, "collector not ready after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoint(&self, protocol: Protocol) -> &str {
        match protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Http => &self.http,
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

/// A plain HTTP/1.0 GET: (status, body).
fn http_get(host: &str, path_and_query: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

/// `SELECT uniqExact(seq), count()` for an app, from ClickHouse.
fn stored(clickhouse_url: &str, database: &str, app: &str) -> (u64, u64) {
    let host = clickhouse_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let query = format!(
        "SELECT uniqExact(properties['seq']), count() FROM {database}.events WHERE app = '{app}' FORMAT TSV"
    );
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = http_get(host, &format!("/?query={encoded}")).expect("ClickHouse answers");
    let mut parts = body.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Waits until ClickHouse shows `expected` distinct events (the collector's batch delay).
fn stored_eventually(args: &Args, database: &str, app: &str, expected: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = stored(&args.clickhouse_url, database, app);
        if counts.0 >= expected || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CPU ticks (utime + stime) of every `growth-sdk-delivery` thread, by tid.
fn delivery_cpu() -> HashMap<String, u64> {
    let mut ticks = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return ticks;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("growth-sdk-deli") {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14, stime 15 (1-based).
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks.insert(
            task.file_name().to_string_lossy().into_owned(),
            utime + stime,
        );
    }
    ticks
}

/// Minor page faults of the calling thread so far (first touches of fresh memory).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0)
}

/// Seconds of delivery-thread CPU since `before`.
fn delivery_cpu_since(before: &HashMap<String, u64>) -> f64 {
    let after = delivery_cpu();
    let ticks: u64 = after
        .iter()
        .map(|(tid, now)| now.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

fn tracker(app: &str, endpoint: &str, protocol: Protocol) -> Tracker {
    Tracker::builder(app)
        .env_vars::<&str, &str>([])
        .endpoint(endpoint)
        .protocol(protocol)
        .user_hash_key(Some(KEY.to_vec()))
        .shutdown_timeout(Duration::from_secs(120))
        .build()
        .expect("SDK builds")
}

/// User ids prepared up front so the measurement is the SDK's, not `format!`'s.
fn user_ids() -> Vec<String> {
    (0..10_000)
        .map(|i| format!("user-{i:05}@example.com"))
        .collect()
}

fn attributes(seq: u64) -> [(&'static str, AttributeValue); 4] {
    [
        ("seq", (seq as i64).into()),
        ("amount", 12.5.into()),
        ("category", "groceries".into()),
        ("source", "form".into()),
    ]
}

fn track_one(tracker: &Tracker, users: &[String], seq: u64) {
    tracker.track(
        "expense_logged",
        Some(&users[(seq % users.len() as u64) as usize]),
        &attributes(seq),
    );
}

/// Tracks `count` events at `rate` a second (in 1 ms slices), calling `each`
/// around every call; returns the time taken.
fn paced(count: u64, rate: u64, mut each: impl FnMut(u64)) -> Duration {
    let started = Instant::now();
    let per_ms = (rate / 1000).max(1);
    let mut seq = 0;
    let mut slice = 0u64;
    while seq < count {
        for _ in 0..per_ms.min(count - seq) {
            each(seq);
            seq += 1;
        }
        slice += 1;
        let next = started + Duration::from_secs_f64((slice * per_ms) as f64 / rate as f64);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    started.elapsed()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

struct Row {
    scenario: String,
    result: String,
}

/// `hash_on_caller`: also hash the user on the calling thread inside the timed
/// span (`hash_user`), as `track` itself did before the hash moved to the
/// delivery thread: what the app would pay with an inline hash.
fn latency_row(
    args: &Args,
    state: &str,
    endpoint: &str,
    users: &[String],
    hash_on_caller: bool,
) -> Row {
    let tracker = tracker(&format!("bench-latency-{state}"), endpoint, args.protocol);
    let mut nanos = Vec::with_capacity(args.latency_calls as usize);
    let mut allocs = 0u64;
    let faults_before = minor_faults();
    // 50,000 calls a second: the delivery thread works alongside, as in an app.
    paced(args.latency_calls, 50_000, |seq| {
        // The app's own values are built outside the measurement.
        let user = &users[(seq % users.len() as u64) as usize];
        let attributes = attributes(seq);
        let before = allocations();
        let started = Instant::now();
        if hash_on_caller {
            std::hint::black_box(tracker.hash_user(user));
        }
        tracker.track("expense_logged", Some(user), &attributes);
        nanos.push(started.elapsed().as_nanos() as u64);
        allocs += allocations() - before;
    });
    let faults = minor_faults() - faults_before;
    let report = tracker.report();
    drop(tracker.shutdown_with_timeout(Duration::from_secs(if state == "up" { 60 } else { 1 })));
    nanos.sort_unstable();
    Row {
        scenario: format!(
            "{} latency, collector {state} ({} calls at 50k/s, HMAC key set)",
            if hash_on_caller {
                "for comparison, `hash_user` + `track` (the hash on the caller's thread)"
            } else {
                "`track`"
            },
            args.latency_calls
        ),
        result: format!(
            "p50 {} ns, p99 {} ns, p99.9 {} ns, max {} µs; {:.2} allocations and {:.3} page faults per call; dropped {}",
            percentile(&nanos, 0.5),
            percentile(&nanos, 0.99),
            percentile(&nanos, 0.999),
            nanos.last().copied().unwrap_or(0) / 1000,
            allocs as f64 / args.latency_calls as f64,
            faults as f64 / args.latency_calls as f64,
            report.dropped
        ),
    }
}

fn outcome(report: &Result<DeliveryReport, growth_sdk::SdkError>) -> DeliveryReport {
    match report {
        Ok(report) => report.clone(),
        Err(error) => error.report().cloned().unwrap_or_default(),
    }
}

fn main() {
    let args = Args::parse();
    let database = format!("sdk_bench_{}", std::process::id());
    let mut collector =
        CollectorProcess::start(args.collector.clone(), &args.clickhouse_url, &database);
    let users = user_ids();
    let mut rows = Vec::new();

    let run = |name: &str| args.scenarios.iter().any(|s| s == name);
    // 1. `track` latency and allocations, collector up / down / hung.
    let up = collector.endpoint(args.protocol).to_owned();
    if run("latency") {
        rows.push(latency_row(&args, "up", &up, &users, false));
        rows.push(latency_row(&args, "up", &up, &users, true));
        let down = format!("http://127.0.0.1:{}", free_port());
        rows.push(latency_row(&args, "down", &down, &users, false));
        let hung = TcpListener::bind("127.0.0.1:0").expect("listener");
        let hung_endpoint = format!("http://{}", hung.local_addr().expect("addr"));
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in hung.incoming().flatten() {
                held.push(stream); // accepted, never answered
            }
        });
        rows.push(latency_row(&args, "hung", &hung_endpoint, &users, false));
    }

    // 2. The burst: as fast as one thread can track.
    if run("burst") {
        let tracker = tracker("bench-burst", &up, args.protocol);
        let started = Instant::now();
        for seq in 0..args.burst {
            track_one(&tracker, &users, seq);
        }
        let tracked_in = started.elapsed();
        let report = outcome(&tracker.shutdown());
        let delivered_in = started.elapsed();
        let (distinct, _) = stored_eventually(&args, &database, "bench-burst", args.burst);
        rows.push(Row {
            scenario: format!("burst of {} events", args.burst),
            result: format!(
                "tracked in {} ms, all acknowledged after {} ms; delivered {}, dropped {}, failed {}; stored in ClickHouse {}",
                tracked_in.as_millis(),
                delivered_in.as_millis(),
                report.delivered,
                report.dropped,
                report.failed,
                distinct
            ),
        });
    }

    // 3. Sustained rate.
    if run("sustained") {
        let tracker = tracker("bench-sustained", &up, args.protocol);
        let cpu_before = delivery_cpu();
        let count = args.rate * args.sustain_secs;
        let took = paced(count, args.rate, |seq| track_one(&tracker, &users, seq));
        let _ = tracker.flush_with_timeout(Duration::from_secs(120));
        let cpu = delivery_cpu_since(&cpu_before);
        let report = outcome(&tracker.shutdown());
        let (distinct, _) = stored_eventually(&args, &database, "bench-sustained", count);
        rows.push(Row {
            scenario: format!("sustained {} events/s for {} s", args.rate, args.sustain_secs),
            result: format!(
                "achieved {:.0} events/s; delivered {}, dropped {}, failed {}; stored {}; delivery thread {:.2} CPU-s = {:.2} µs per event",
                count as f64 / took.as_secs_f64(),
                report.delivered,
                report.dropped,
                report.failed,
                distinct,
                cpu,
                cpu * 1e6 / count.max(1) as f64
            ),
        });
    }

    // 4. The collector killed (SIGKILL) and restarted after `restart_secs`.
    if run("restart") {
        let tracker = tracker("bench-restart", &up, args.protocol);
        let total = Duration::from_secs(args.restart_secs + 10);
        let count = args.restart_rate * total.as_secs();
        let mut killed = false;
        let mut restarted = false;
        let started = Instant::now();
        paced(count, args.restart_rate, |seq| {
            track_one(&tracker, &users, seq);
            let at = started.elapsed();
            if !killed && at >= Duration::from_secs(5) {
                collector.kill();
                killed = true;
            }
            if killed && !restarted && at >= Duration::from_secs(5 + args.restart_secs) {
                collector.spawn();
                restarted = true;
            }
        });
        let report = outcome(&tracker.shutdown());
        let (distinct, rows_stored) = stored_eventually(&args, &database, "bench-restart", count);
        rows.push(Row {
            scenario: format!(
                "collector SIGKILLed for {} s under {} events/s ({count} events)",
                args.restart_secs, args.restart_rate
            ),
            result: format!(
                "delivered {}, lost {} (dropped {}, failed {}), {} retries; stored {} distinct ({} rows: {} sent twice)",
                report.delivered,
                report.tracked - report.delivered,
                report.dropped,
                report.failed,
                report.retries,
                distinct,
                rows_stored,
                rows_stored.saturating_sub(distinct)
            ),
        });
    }

    if let Some(python) = &args.python {
        rows.extend(python_rows(&args, python, &mut collector, &database));
    }

    println!("| scenario ({}) | result |", args.protocol);
    println!("|---|---|");
    for row in rows {
        println!("| {} | {} |", row.scenario, row.result);
    }
}

/// Runs sdk/python/examples/send_events.py; returns its JSON report.
fn python_sender(args: &Args, python: &PathBuf, endpoint: &str, extra: &[String]) -> Child {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Command::new(python)
        .arg(root.join("python/examples/send_events.py"))
        .args(extra)
        .env("PYTHONPATH", root.join("python"))
        .env(
            "GROWTH_USER_HASH_KEY",
            String::from_utf8_lossy(KEY).as_ref(),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            match args.protocol {
                Protocol::Grpc => "grpc",
                Protocol::Http => "http/protobuf",
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python starts")
}

fn python_report(child: Child) -> String {
    let output = child.wait_with_output().expect("python ends");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn python_rows(
    args: &Args,
    python: &PathBuf,
    collector: &mut CollectorProcess,
    database: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let endpoint = collector.endpoint(args.protocol).to_owned();
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let burst = args.burst.to_string();
    let report = python_report(python_sender(
        args,
        python,
        &endpoint,
        &strings(&[
            "--app",
            "bench-py-burst",
            "--count",
            &burst,
            "--rate",
            "0",
            "--latency",
        ]),
    ));
    let (distinct, _) = stored_eventually(args, database, "bench-py-burst", args.burst);
    rows.push(Row {
        scenario: format!(
            "Python: burst of {} events, `track` latency (collector up)",
            args.burst
        ),
        result: format!("{report}; stored {distinct}"),
    });

    let secs = (args.restart_secs + 10).to_string();
    let started = Instant::now();
    let child = python_sender(
        args,
        python,
        &endpoint,
        &strings(&[
            "--app",
            "bench-py-restart",
            "--rate",
            "200",
            "--seconds",
            &secs,
        ]),
    );
    std::thread::sleep(Duration::from_secs(5));
    collector.kill();
    std::thread::sleep(Duration::from_secs(args.restart_secs));
    collector.spawn();
    let report = python_report(child);
    let tracked = report
        .split("\"tracked\": ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    // Acknowledged means spooled by the collector: wait until it is all stored.
    let (distinct, rows_stored) = stored_eventually(args, database, "bench-py-restart", tracked);
    rows.push(Row {
        scenario: format!(
            "Python: collector SIGKILLed for {} s under 200 events/s",
            args.restart_secs
        ),
        result: format!(
            "{report}; stored {distinct} distinct ({rows_stored} rows), run {} s",
            started.elapsed().as_secs()
        ),
    });
    rows
}
