//! growth-collector side by side with Rotel and a decode-only sink, in one run, on
//! one ClickHouse, under one load generator. Run by `scripts/bench-ingest` (which
//! installs Rotel, starts the embedded ClickHouse and builds this in release mode);
//! the method and the figures are in docs/benchmarks.md ("Side by side with Rotel").
//!
//! For every concurrency, each system in turn gets the same load: OTLP/gRPC requests
//! of 512 finance-app growth events, every record numbered. Measured per run: events/s
//! from the first send until every event is visible in ClickHouse (`count()`), the
//! system's and the ClickHouse server's CPU from `/proc/<pid>/stat`, the system's peak
//! RSS (`VmHWM`), ClickHouse's insert count (`system.events`), and lost and
//! duplicated records (distinct sequence numbers against rows). Markdown on stdout,
//! progress on stderr.
//!
//! With `--duration`, a soak instead: full load for that long, RSS sampled every
//! `--sample-interval`, to show whether memory stays flat.

mod load;
mod probe;
mod records;
mod report;
mod systems;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::load::{Progress, Until};
use crate::probe::{ClickHouse, cpu_seconds, status_mb};
use crate::records::{MAX_SEQ, Templates};
use crate::report::{Outcome, Sample};
use crate::systems::{Programs, Running, System};

/// How often the row count is polled once every answer is in. Each `count()` costs
/// ClickHouse ~3 ms of CPU: every 50 ms would add ~1 CPU-s per million events to a
/// system whose rows trail its answers by 40 s, as Rotel's do.
const VISIBLE_POLL: Duration = Duration::from_millis(200);

#[derive(Parser)]
#[command(
    about = "growth-collector vs Rotel vs a decode-only OTLP sink, into one embedded ClickHouse",
    long_about = None
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// ClickHouse HTTP endpoint; the server must be this benchmark's alone (its
    /// insert counter and CPU are server-wide).
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// Process id of the ClickHouse server, for its CPU time.
    #[arg(long)]
    clickhouse_pid: Option<u32>,
    /// Rotel's `rotel-agent` binary.
    #[arg(long)]
    rotel_bin: Option<PathBuf>,
    /// The growth-collector binary (build it with --release).
    #[arg(long, default_value = "target/release/growth-collector")]
    collector_bin: PathBuf,
    /// Extra flags for growth-collector (repeat the option).
    #[arg(long = "collector-arg", allow_hyphen_values = true)]
    collector_args: Vec<String>,
    /// Systems to run, in this order within each concurrency.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "baseline,rotel,growth"
    )]
    systems: Vec<System>,
    /// Concurrent senders (each its own connection, one request in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Events sent per run (rounded up to whole requests).
    #[arg(long, default_value_t = 2_048_000)]
    events: u64,
    /// A short smoke run: 51,200 events a run (overrides --events).
    #[arg(long)]
    quick: bool,
    /// Growth events per request.
    #[arg(long, default_value_t = 512)]
    events_per_request: u64,
    /// Distinct users the events come from.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Give up waiting for rows once the count has not grown for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    settle_timeout: Duration,
    /// Soak: run each system at full load for this long (e.g. 10m) instead of the table.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Soak: senders.
    #[arg(long, default_value_t = 32)]
    soak_concurrency: usize,
    /// Soak: how often RSS is sampled.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sample_interval: Duration,
    /// Where logs, pid files and spools go.
    #[arg(long, default_value = "target/bench-ingest")]
    work_dir: PathBuf,
    /// Keep each run's database.
    #[arg(long)]
    keep_databases: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// (internal) The decode-only baseline sink.
    Sink {
        #[arg(long)]
        addr: SocketAddr,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Two workers: the load generator must not take more than its share of two cores.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(Sub::Sink { addr }) = args.command {
        return runtime.block_on(systems::serve_sink(addr));
    }
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let Some(clickhouse_pid) = args.clickhouse_pid else {
        bail!("--clickhouse-pid is needed (scripts/bench-ingest passes it)");
    };
    let clickhouse = ClickHouse::new(&args.clickhouse_url, clickhouse_pid);
    let help = std::process::Command::new(&args.collector_bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", args.collector_bin.display()))?;
    let programs = Programs {
        rotel: args.rotel_bin.clone(),
        collector: args.collector_bin.clone(),
        collector_args: args.collector_args.clone(),
        collector_has_spool: String::from_utf8_lossy(&help.stdout).contains("--spool-dir"),
        work_dir: std::fs::canonicalize(&args.work_dir)?,
        clickhouse_url: args.clickhouse_url.clone(),
    };
    let templates = Arc::new(Templates::new(64, args.events_per_request, args.users)?);
    let events = if args.quick { 51_200 } else { args.events };
    let requests = events.div_ceil(args.events_per_request);
    if requests * args.events_per_request > MAX_SEQ {
        bail!("too many events for the sequence numbers");
    }
    let load_before = loadavg();
    let header = report::Header {
        events: args
            .duration
            .is_none()
            .then_some(requests * args.events_per_request),
        events_per_request: args.events_per_request,
        request_bytes: templates.request_bytes(),
        spool: programs.collector_has_spool,
        collector_args: programs.collector_args.clone(),
    };

    if let Some(duration) = args.duration {
        for &system in &args.systems {
            let (samples, outcome) =
                soak(&args, &programs, &clickhouse, &templates, system, duration).await?;
            report::print_soak(
                &header,
                system,
                &samples,
                &outcome,
                &load_before,
                &loadavg(),
            );
        }
        return Ok(());
    }

    let mut outcomes = Vec::new();
    for &concurrency in &args.concurrency {
        for &system in &args.systems {
            eprintln!("… {} at concurrency {concurrency}", system.label());
            clickhouse.wait_idle(Duration::from_secs(60)).await?;
            // The system before may have left ClickHouse's merged parts dirty in the
            // page cache (Rotel's ~100 MB); written back during the next run, they
            // would slow its fsyncs and inserts. Each system starts with none.
            flush_page_cache().await;
            let running =
                Running::start(system, &format!("c{concurrency}"), &programs, &clickhouse).await?;
            let outcome = measure(
                &args,
                &clickhouse,
                running,
                &templates,
                concurrency,
                Until::Requests(requests),
                None,
            )
            .await?;
            eprintln!("  {}", report::one_line(&outcome));
            outcomes.push(outcome);
        }
    }
    report::print_table(&header, &outcomes, &load_before, &loadavg());
    Ok(())
}

/// Writes the OS's dirty pages to disk (`sync`) and waits for it.
async fn flush_page_cache() {
    match tokio::process::Command::new("sync").status().await {
        Ok(status) if status.success() => {}
        other => eprintln!("  (`sync` failed: {other:?}; the run may see leftover writeback)"),
    }
}

/// Full load for `duration`, sampling RSS; then the usual measurement.
async fn soak(
    args: &Args,
    programs: &Programs,
    clickhouse: &ClickHouse,
    templates: &Arc<Templates>,
    system: System,
    duration: Duration,
) -> anyhow::Result<(Vec<Sample>, Outcome)> {
    eprintln!("… soak: {} for {duration:?}", system.label());
    let running = Running::start(system, "soak", programs, clickhouse).await?;
    let (pid, per_request) = (running.pid, templates.per_request());
    let progress = Arc::new(Progress::default());
    let sampler = {
        let progress = Arc::clone(&progress);
        let interval = args.sample_interval;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            while started.elapsed() < duration {
                tokio::time::sleep(interval).await;
                let (Ok(rss_mb), Ok(cpu)) = (status_mb(pid, "VmRSS"), cpu_seconds(pid)) else {
                    break;
                };
                samples.push(Sample {
                    at: started.elapsed(),
                    rss_mb,
                    acked_events: progress.acked_requests() * per_request,
                    cpu_seconds: cpu,
                });
            }
            samples
        })
    };
    let until = Until::Deadline(Instant::now() + duration);
    let outcome = measure(
        args,
        clickhouse,
        running,
        templates,
        args.soak_concurrency,
        until,
        Some(progress),
    )
    .await?;
    Ok((sampler.await?, outcome))
}

/// One run: the load, then wait until every acknowledged event is visible, then read
/// the counters and stop the system.
async fn measure(
    args: &Args,
    clickhouse: &ClickHouse,
    running: Running,
    templates: &Arc<Templates>,
    concurrency: usize,
    until: Until,
    progress: Option<Arc<Progress>>,
) -> anyhow::Result<Outcome> {
    let ch_before = clickhouse.counters().await?;
    let cpu_before = cpu_seconds(running.pid)?;
    let progress = progress.unwrap_or_default();
    let load = load::run(
        running.grpc,
        Arc::clone(templates),
        concurrency,
        until,
        progress,
    )
    .await;
    let load = match load {
        Ok(load) => load,
        Err(e) => {
            let _ = running.stop(clickhouse, args.keep_databases).await;
            return Err(e.context(format!(
                "{} at concurrency {concurrency}",
                running_label(until)
            )));
        }
    };
    let sent = load.acked_requests * templates.per_request();
    let expected = sent - load.rejected;

    // Until visible: poll the row count; give up once it stops growing.
    let mut visible_after = load.elapsed;
    if running.system != System::Baseline {
        let (mut last, mut last_change) = (u64::MAX, Instant::now());
        loop {
            let rows = running.visible(clickhouse).await?;
            if rows >= expected {
                visible_after = load.started.elapsed();
                break;
            }
            if rows != last {
                (last, last_change) = (rows, Instant::now());
            } else if last_change.elapsed() > args.settle_timeout {
                eprintln!("  gave up waiting: {rows} of {expected} rows visible");
                visible_after = last_change.duration_since(load.started);
                break;
            }
            tokio::time::sleep(VISIBLE_POLL).await;
        }
    }
    let collector_cpu = cpu_seconds(running.pid)? - cpu_before;
    let peak_rss_mb = status_mb(running.pid, "VmHWM")?;
    clickhouse.wait_for_merges(Duration::from_secs(30)).await?;
    let ch_after = clickhouse.counters().await?;
    // After the counters: this query reads every row, its CPU is not the system's.
    let stored = running.stored(clickhouse).await?;
    let system = running.system;
    let received = running.stop(clickhouse, args.keep_databases).await?;
    Ok(Outcome {
        system,
        concurrency,
        sent,
        rejected: load.rejected,
        retries: load.retries,
        acked_after: load.elapsed,
        visible_after,
        collector_cpu,
        clickhouse_cpu: ch_after.cpu_seconds - ch_before.cpu_seconds,
        inserts: ch_after.inserts - ch_before.inserts,
        profile: ch_after.profile_since(&ch_before),
        peak_rss_mb,
        stored,
        received,
    })
}

fn running_label(until: Until) -> &'static str {
    match until {
        Until::Requests(_) => "run",
        Until::Deadline(_) => "soak",
    }
}

/// The 1-, 5- and 15-minute load averages, as `uptime` shows them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
