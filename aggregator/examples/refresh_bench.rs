//! How long a full metrics refresh takes from the materialized layer, against the
//! same metrics from the raw events (and from the first, retired layer), at growing
//! history with the same daily activity; sizes on disk; `/metrics` under concurrent
//! scrapers. Prints markdown tables (docs/benchmarks.md).
//!
//! Data is generated inside ClickHouse (`INSERT … SELECT FROM numbers()` into
//! `events`, so every materialized view fills as in production): users' first days
//! uniform over the period, ten events per user, returns decaying over days (days
//! 0, 0, 0, 1, 1, 2, 3, 7, 14, 30 after signup, capped at today), a user's events of a
//! day in one or two ten-minute sessions, five event names, three sources.
//!
//! Refreshes timed: "steady" (every interval of a running aggregator, a collector
//! batch of today before each), "restart" (the first refresh of a new aggregator that
//! finds the day cache its predecessor saved in `--state-dir`), "cold" (the first
//! refresh with nothing saved), "after an erasure" (the refresh after one user's rows
//! left the layer tables: the deletion check re-reads that user's months), beside the
//! metrics counted in SQL and from raw events. Every result is checked against the
//! metrics counted in SQL ("cache = SQL", after the erasure and after a restart).
//!
//! ```sh
//! scripts/clickhouse start --http-port 18123 --tcp-port 19000 --data-dir /tmp/bench-ch
//! cargo run --release -p growth-aggregator --example refresh_bench -- \
//!     --clickhouse-url http://127.0.0.1:18123 --sets 1000000:180,4000000:720
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::Listener;
use chrono::Utc;
use clap::Parser;
use clickhouse::sql::Identifier;
use growth_aggregator::access::AccessPolicy;
use growth_aggregator::config::Cli;
use growth_aggregator::dashboard::{DashboardSettings, DashboardState};
use growth_aggregator::day_store::DayStore;
use growth_aggregator::definitions::{MetricDefinitions, RefreshPlan, Window};
use growth_aggregator::http::{layered, listen, no_delay, router};
use growth_aggregator::snapshot::{compute, compute_in_sql};
use growth_aggregator::source::MetricsSource;
use growth_aggregator::state::AppState;
use growth_schema::migrate::migrate_to;
use growth_schema::service::ServiceCli;

#[derive(Parser)]
#[command(about = "Time a metrics refresh from the materialized layer vs the raw events")]
struct Args {
    /// ClickHouse HTTP endpoint.
    #[arg(
        long,
        env = "GROWTH_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// Data sets as USERS:DAYS (ten events a user), each in its own database.
    #[arg(long, value_delimiter = ',', default_value = "100000:180,400000:720")]
    sets: Vec<String>,
    /// Timed repetitions per variant (the median is shown).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also fill and time the first (retired) layer: user_activity + user_first_seen.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    previous_layer: bool,
    /// Concurrent /metrics scrapers (0: skip), each sending --scrapes requests.
    #[arg(long, default_value_t = 200)]
    scrapers: usize,
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// Pauses between one scraper's scrapes, in ms (0: back to back); a comma list
    /// runs the scrape test once per value.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
    scrape_pause_ms: Vec<u64>,
    /// Keep the databases (bench_refresh_*) for a look (or for --reuse).
    #[arg(long)]
    keep: bool,
    /// Reuse a set's database kept by an earlier --keep run instead of loading it.
    #[arg(long)]
    reuse: bool,
    /// Also record the peak memory of each ClickHouse query of a cold refresh, a
    /// steady refresh and the raw-events queries (a separate, untimed pass).
    #[arg(long)]
    peak_memory: bool,
    /// Time only the steady refreshes (interleaved), not the cold refresh, the SQL
    /// path or raw events: the quick check of "four times the history" on kept sets.
    #[arg(long)]
    steady_only: bool,
    /// Scrapers start together instead of at phases spread over the pause (to show
    /// what synchronized scrapers cost).
    #[arg(long)]
    synchronized_scrapers: bool,
    /// Where the "restart" aggregators keep their day cache (`--state-dir`; one file
    /// per set, removed at the end unless --keep).
    #[arg(long, default_value = "/tmp/refresh-bench-state")]
    state_dir: std::path::PathBuf,
}

async fn median<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn range(plan: &RefreshPlan, w: Window, previous: bool) -> (i64, i64) {
    let list = if previous {
        &plan.previous_windows
    } else {
        &plan.windows
    };
    list.iter()
        .find(|(x, _)| *x == w)
        .map(|(_, r)| (r.start.timestamp(), r.end.timestamp()))
        .unwrap_or_default()
}

/// The refresh's metrics computed by an analyst's plain SQL on `events`: active
/// users (current and previous windows), cohort sizes and day-N retention over the
/// same cohorts, totals.
async fn raw_refresh(
    client: &clickhouse::Client,
    defs: &MetricDefinitions,
    plan: &RefreshPlan,
) -> anyhow::Result<()> {
    let tz = defs.timezone.name();
    let (day_from, end) = range(plan, Window::Day, false);
    let (week_from, _) = range(plan, Window::Week, false);
    let (month_from, _) = range(plan, Window::Month, false);
    let (prev_month_from, _) = range(plan, Window::Month, true);
    let active = client
        .query(
            "SELECT app, uniqExactIf(user_key, event_time >= toDateTime64(?, 3)), uniqExactIf(user_key, event_time >= toDateTime64(?, 3)),
                    uniqExactIf(user_key, event_time >= toDateTime64(?, 3)), uniqExactIf(user_key, event_time < toDateTime64(?, 3))
             FROM events WHERE user_key != 0 AND day >= toDate(toDateTime(?)) - 1 AND event_time >= toDateTime64(?, 3) AND event_time < toDateTime64(?, 3)
             GROUP BY app FORMAT Null",
        )
        .bind(day_from)
        .bind(week_from)
        .bind(month_from)
        .bind(month_from)
        .bind(prev_month_from)
        .bind(prev_month_from)
        .bind(end)
        .execute();
    let cohorts = client
        .query(
            "WITH members AS (SELECT app, user_key, toDate(min(event_time), ?) AS cohort FROM events WHERE user_key != 0 GROUP BY app, user_key
                              HAVING min(event_time) >= toDateTime64(?, 3) AND min(event_time) < toDateTime64(?, 3))
             SELECT app, cohort, count() FROM members GROUP BY app, cohort
             UNION ALL
             SELECT c.app, c.cohort, count() FROM (SELECT DISTINCT app, user_key, toDate(event_time, ?) AS d FROM events
                                                   WHERE user_key != 0 AND event_time >= toDateTime64(?, 3) AND event_time < toDateTime64(?, 3)) AS e
             INNER JOIN members AS c ON e.app = c.app AND e.user_key = c.user_key
             WHERE dateDiff('day', c.cohort, e.d) IN (1, 3, 7, 30) GROUP BY c.app, c.cohort, dateDiff('day', c.cohort, e.d) FORMAT Null",
        )
        .bind(tz)
        .bind(plan.cohort_range.start.timestamp())
        .bind(plan.cohort_range.end.timestamp())
        .bind(tz)
        .bind(plan.retention_activity_range.start.timestamp())
        .bind(plan.retention_activity_range.end.timestamp())
        .execute();
    let totals = client
        .query("SELECT app, event, count() FROM events GROUP BY app, event FORMAT Null")
        .execute();
    tokio::try_join!(active, cohorts, totals)?;
    Ok(())
}

/// The same metrics from the first layer (retired by migration 0012), as its
/// aggregator asked them: quarter-hour × event × user rows, first-seen grouped over
/// every user ever seen.
async fn previous_layer_refresh(
    client: &clickhouse::Client,
    defs: &MetricDefinitions,
    plan: &RefreshPlan,
) -> anyhow::Result<()> {
    let tz = defs.timezone.name();
    let (day_from, end) = range(plan, Window::Day, false);
    let (week_from, _) = range(plan, Window::Week, false);
    let (month_from, _) = range(plan, Window::Month, false);
    let (prev_month_from, _) = range(plan, Window::Month, true);
    let active = client
        .query(
            "SELECT app, uniqExactIf(user_key, bucket >= toDateTime(?)), uniqExactIf(user_key, bucket >= toDateTime(?)),
                    uniqExactIf(user_key, bucket >= toDateTime(?)), uniqExactIf(user_key, bucket < toDateTime(?))
             FROM user_activity WHERE bucket >= toDateTime(?) AND bucket < toDateTime(?) GROUP BY app FORMAT Null",
        )
        .bind(day_from)
        .bind(week_from)
        .bind(month_from)
        .bind(month_from)
        .bind(prev_month_from)
        .bind(end)
        .execute();
    let sizes = client
        .query(
            "SELECT app, toDate(first_at, ?) AS cohort, count() FROM (SELECT app, user_key, min(first_seen) AS first_at FROM user_first_seen GROUP BY app, user_key)
             WHERE first_at >= toDateTime64(?, 3) AND first_at < toDateTime64(?, 3) GROUP BY app, cohort FORMAT Null",
        )
        .bind(tz)
        .bind(plan.cohort_range.start.timestamp())
        .bind(plan.cohort_range.end.timestamp())
        .execute();
    let retained = client
        .query(
            "SELECT c.app, c.cohort, toUInt32(dateDiff('day', c.cohort, toDate(a.bucket, ?))) AS n, uniqExact(a.user_key)
             FROM user_activity AS a INNER JOIN (
                 SELECT app, user_key, min(first_seen) AS first_at, toDate(first_at, ?) AS cohort FROM user_first_seen GROUP BY app, user_key
                 HAVING first_at >= toDateTime64(?, 3) AND first_at < toDateTime64(?, 3)) AS c ON a.app = c.app AND a.user_key = c.user_key
             WHERE a.bucket >= toDateTime(?) AND a.bucket < toDateTime(?) GROUP BY c.app, c.cohort, n HAVING n IN (1, 3, 7, 30) FORMAT Null",
        )
        .bind(tz)
        .bind(tz)
        .bind(plan.cohort_range.start.timestamp())
        .bind(plan.cohort_range.end.timestamp())
        .bind(plan.retention_activity_range.start.timestamp())
        .bind(plan.retention_activity_range.end.timestamp())
        .execute();
    let totals = client
        .query("SELECT app, event, sum(events) FROM event_counts GROUP BY app, event FORMAT Null")
        .execute();
    tokio::try_join!(active, sizes, retained, totals)?;
    Ok(())
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct TableSize {
    table: String,
    rows: u64,
    bytes: u64,
}

/// A collector batch landing between two refreshes: 10,000 events of returning users
/// in the last minute (today), so a steady refresh has today's changes to read.
async fn trickle(client: &clickhouse::Client, users: u64, seed: u64) -> anyhow::Result<()> {
    client
        .query(
            "INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at)
             SELECT 'bench', 'expense_logged', now64(3) - toIntervalMillisecond(number % 60000),
                    lower(hex(SHA256(toString(intHash64(number + {seed:UInt64} * 1000003) % {users:UInt64})))),
                    'pwa', map(), map(), now64(3)
             FROM numbers(10000)",
        )
        .param("seed", seed)
        .param("users", users)
        .execute()
        .await?;
    Ok(())
}

/// Users per INSERT … SELECT: ten events each, so 5M rows an insert, in 1M-row blocks.
const LOAD_CHUNK_USERS: u64 = 500_000;

/// Loads `users` users (ten events each) in chunks of users, with progress on stderr.
async fn load(client: &clickhouse::Client, users: u64, days: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut first = 0;
    while first < users {
        let count = LOAD_CHUNK_USERS.min(users - first);
        load_users(client, first, count, days).await?;
        first += count;
        eprintln!(
            "  loaded {first} of {users} users ({} events) in {:.0} s, load average {}",
            first * 10,
            started.elapsed().as_secs_f64(),
            load_average()
        );
    }
    Ok(())
}

/// Users `first..first + count`: their events are rows `10 * first ..` of the sequence.
async fn load_users(
    client: &clickhouse::Client,
    first: u64,
    count: u64,
    days: u64,
) -> anyhow::Result<()> {
    client
        .query(
            "INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at)
             SELECT 'bench',
                    ['expense_logged','expense_logged','expense_edited','report_requested','challenge_started'][1 + intHash64(number) % 5],
                    now64(3) - toIntervalSecond(day_ago * 86400 + intHash64(u * 7919 + day_ago) % 86000 + if(k % 2 = 1, 10800, 0) + (k * 53) % 600),
                    lower(hex(SHA256(toString(u)))),
                    ['messenger','form','pwa'][1 + intHash64(number + 1) % 3],
                    map('category', 'groceries'), map('amount', toFloat64(number % 100)), now64(3)
             FROM (
                 SELECT number, intDiv(number, 10) AS u, number % 10 AS k,
                        intHash64(u) % {days:UInt64} AS signup_ago,
                        [0, 0, 0, 1, 1, 2, 3, 7, 14, 30][k + 1] AS back_after,
                        toUInt64(if(back_after > signup_ago, toUInt64(signup_ago), toUInt64(signup_ago - back_after))) AS day_ago
                 FROM numbers({first:UInt64}, {events:UInt64})
             )",
        )
        .param("days", days)
        .param("first", first * 10)
        .param("events", count * 10)
        .with_setting("max_insert_block_size", "1000000")
        .with_setting("min_insert_block_size_rows", "1000000")
        .with_setting("max_execution_time", "0")
        .execute()
        .await?;
    Ok(())
}

/// p50 / p99 / max of `/metrics` with `scrapers` concurrent clients on one server.
///
/// The server is the production stack (`http::listen`, `http::layered`) on its own
/// two-thread runtime, as the binary runs it; the scrapers run on another runtime,
/// like a Prometheus in another process on the same two cores. Each scraper keeps
/// one keep-alive connection, asks for gzip as Prometheus does, and scrapes
/// `scrapes` times, pausing `pause` between scrapes; every request is timed from
/// send to the last byte of the body (the first one includes the connect).
async fn scrape_latency(
    state: AppState,
    scrapers: usize,
    scrapes: usize,
    pause: Duration,
    synchronized: bool,
) -> anyhow::Result<(Duration, Duration, Duration, f64)> {
    let dashboard = dashboard_state(&state);
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = {
        let _guard = server_runtime.enter();
        no_delay(listen("127.0.0.1:0".parse()?)?)
    };
    let addr = listener.local_addr()?;
    let app = layered(router(state, dashboard), AccessPolicy::open());
    let server = server_runtime.spawn(async move { axum::serve(listener, app).await });
    let url = Arc::new(format!("http://{addr}/metrics"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..scrapers {
        let url = url.clone();
        // Prometheus spreads its targets' scrapes over the interval (a fixed offset per
        // target); scrapers that all start at once and sleep the same pause would
        // instead arrive together every pause, the last one waiting for all the others.
        let phase = if synchronized {
            Duration::ZERO
        } else {
            pause.mul_f64(i as f64 / scrapers as f64)
        };
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut times = Vec::with_capacity(scrapes);
            tokio::time::sleep(phase).await;
            let mut next_at = tokio::time::Instant::now();
            for _ in 0..scrapes {
                let t = Instant::now();
                let body = http
                    .get(url.as_str())
                    .header("accept-encoding", "gzip")
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                anyhow::ensure!(!body.is_empty(), "empty /metrics");
                times.push(t.elapsed());
                if !pause.is_zero() {
                    // Pace by the clock, not by the pause after each answer: the
                    // offsets stay spread however long an answer took.
                    next_at += pause;
                    tokio::time::sleep_until(next_at).await;
                }
            }
            Ok::<_, anyhow::Error>(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = started.elapsed();
    server.abort();
    server_runtime.shutdown_background();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok((
        at(0.5),
        at(0.99),
        at(1.0),
        all.len() as f64 / wall.as_secs_f64(),
    ))
}

/// The 1-minute load average, printed beside every table (other work on the cores).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The server's own time per `/metrics` request: the production router and layers
/// called in process (no socket, no client), one request after another.
async fn server_time_per_request(state: AppState, requests: usize) -> anyhow::Result<Duration> {
    use tower::ServiceExt as _;
    let dashboard = dashboard_state(&state);
    let app = layered(router(state, dashboard), AccessPolicy::open());
    let request = || {
        axum::http::Request::get("/metrics")
            .header("accept-encoding", "gzip")
            .body(axum::body::Body::empty())
    };
    // Warm: the first request renders and gzips the body once.
    app.clone().oneshot(request()?).await?;
    let started = Instant::now();
    for _ in 0..requests {
        let response = app.clone().oneshot(request()?).await?;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        anyhow::ensure!(!body.is_empty(), "empty /metrics");
    }
    Ok(started.elapsed() / requests as u32)
}

fn dashboard_state(state: &AppState) -> DashboardState {
    DashboardState {
        app: state.clone(),
        settings: Arc::new(DashboardSettings::new(
            state.config.refresh_interval,
            Default::default(),
            Vec::new(),
            Vec::new(),
        )),
    }
}

/// Peak memory of every ClickHouse query that runs while `f` runs, by query (the
/// first words of its text), polled from `system.processes` every 2 ms (chDB keeps
/// no `system.query_log`). A query shorter than the poll can be missed: those are
/// the small ones.
async fn peak_memory<F, Fut>(
    server: &clickhouse::Client,
    f: F,
) -> anyhow::Result<Vec<(String, u64)>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Running {
        query: String,
        peak: i64,
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let mut peaks: std::collections::BTreeMap<String, u64> = Default::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let running: Vec<Running> = server
                    .query("SELECT query, peak_memory_usage AS peak FROM system.processes WHERE query NOT LIKE '%system.processes%' AND query NOT LIKE '%sleepEachRow%' AND NOT startsWith(query, 'INSERT')")
                    .fetch_all()
                    .await?;
                for r in running {
                    let head: String = r
                        .query
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .chars()
                        .take(90)
                        .collect();
                    let peak = peaks.entry(head).or_default();
                    *peak = (*peak).max(r.peak.max(0) as u64);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, anyhow::Error>(peaks)
        })
    };
    let outcome = f().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peaks = poller.await??;
    outcome?;
    let mut peaks: Vec<(String, u64)> = peaks.into_iter().collect();
    peaks.sort_by_key(|(_, p)| std::cmp::Reverse(*p));
    Ok(peaks)
}

/// A measurement left out (`--steady-only`).
const NOT_RUN: &str = "not run";

/// One data set of the run: its database and what was measured on it.
struct Set {
    label: String,
    users: u64,
    days: u64,
    database: String,
    client: clickhouse::Client,
    load_s: f64,
    /// The aggregator whose steady refreshes are timed (kept warm between runs).
    source: MetricsSource,
    steady: Vec<Duration>,
    cold: Duration,
    /// The first refresh of an aggregator that finds the day cache its predecessor saved.
    restart: Duration,
    /// The refresh after one user's rows were deleted from the layer (an erasure).
    erased: Option<Duration>,
    in_sql: Result<Duration, String>,
    raw: Result<Duration, String>,
    previous: Option<Duration>,
    load_average: String,
}

fn median_of(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = args.runs.max(1);
    let server = clickhouse::Client::default().with_url(&args.clickhouse_url);
    let config = Cli::try_parse_args(["refresh_bench", "--clickhouse-url", &args.clickhouse_url])?
        .run
        .into_config();
    let defs = config.definitions.clone();
    let mut sets: Vec<Set> = Vec::new();
    // Load (or reuse) every set first: they are all kept loaded, so the steady
    // refreshes of all sets can be timed interleaved.
    for set in &args.sets {
        let (users, days) = set
            .split_once(':')
            .and_then(|(u, d)| Some((u.parse::<u64>().ok()?, d.parse::<u64>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--sets takes USERS:DAYS, got {set}"))?;
        let database = format!("bench_refresh_{users}_{days}");
        let client = server.clone().with_database(&database);
        let loaded = args.reuse
            && server
                .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'events'")
                .bind(&database)
                .fetch_one::<u64>()
                .await?
                > 0;
        let started = Instant::now();
        if !loaded {
            server
                .query("DROP DATABASE IF EXISTS ?")
                .bind(Identifier(&database))
                .execute()
                .await?;
            // Without 0012 the first layer's views stay on, so both layers fill from one load.
            migrate_to(
                &server,
                &database,
                if args.previous_layer { 11 } else { u32::MAX },
            )
            .await?;
            load(&client, users, days).await?;
        } else {
            // A kept database may predate newer migrations.
            migrate_to(&server, &database, u32::MAX).await?;
        }
        let load_s = started.elapsed().as_secs_f64();
        eprintln!(
            "{set}: ready after {load_s:.0} s, load average {}",
            load_average()
        );
        sets.push(Set {
            label: set.clone(),
            users,
            days,
            database,
            source: MetricsSource::new(client.clone(), Duration::from_secs(600)),
            client,
            load_s,
            steady: Vec::new(),
            cold: Duration::ZERO,
            restart: Duration::ZERO,
            erased: None,
            in_sql: Err(NOT_RUN.to_owned()),
            raw: Err(NOT_RUN.to_owned()),
            previous: None,
            load_average: String::new(),
        });
    }

    // What grows with the data: a fresh aggregator's first refresh, the metrics
    // counted in SQL, raw events. A failure (e.g. the 1 GiB query memory cap of the
    // SQL path at 10M users) is reported, not fatal.
    for s in sets.iter_mut().filter(|_| !args.steady_only) {
        let new_source = || MetricsSource::new(s.client.clone(), Duration::from_secs(600));
        s.cold = median(runs, || async {
            compute(&new_source(), &defs, Utc::now()).await?;
            Ok(())
        })
        .await?;
        // Restart: an aggregator saves its days, a new one starts on them.
        let (state_dir, database) = (args.state_dir.clone(), s.database.clone());
        let saving_source = || new_source().with_state_dir(&state_dir, &database);
        let _ = std::fs::remove_file(DayStore::new(&state_dir, &database).path());
        let first = saving_source();
        compute(&first, &defs, Utc::now()).await?;
        first.flush_day_store(&defs, Utc::now()).await;
        s.restart = median(runs, || async {
            compute(&saving_source(), &defs, Utc::now()).await?;
            Ok(())
        })
        .await?;
        s.in_sql = median(runs, || async {
            compute_in_sql(&s.source, &defs, Utc::now()).await?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string());
        s.raw = median(runs, || async {
            raw_refresh(&s.client, &defs, &defs.plan(Utc::now())).await
        })
        .await
        .map_err(|e| e.to_string());
        if args.previous_layer {
            s.previous = Some(
                median(runs, || async {
                    previous_layer_refresh(&s.client, &defs, &defs.plan(Utc::now())).await
                })
                .await?,
            );
        }
        s.load_average = load_average();
        eprintln!(
            "{}: cold, SQL and raw timed, load average {}",
            s.label, s.load_average
        );
    }

    // Steady: what every --refresh-interval costs once running, with a collector
    // batch of today's events landing before each refresh. The sets take turns
    // (the order alternating), so drift of the machine's load hits all of them alike.
    for s in &sets {
        compute(&s.source, &defs, Utc::now()).await?;
    }
    for run in 0..runs {
        let order: Vec<usize> = if run % 2 == 0 {
            (0..sets.len()).collect()
        } else {
            (0..sets.len()).rev().collect()
        };
        for i in order {
            let s = &mut sets[i];
            trickle(&s.client, s.users, run as u64).await?;
            let t = Instant::now();
            compute(&s.source, &defs, Utc::now()).await?;
            s.steady.push(t.elapsed());
        }
    }
    let steady_load_average = load_average();

    // An erasure: one user active yesterday leaves the layer (a lightweight DELETE and a
    // mutation, not timed); the next refresh re-reads the months that user was in.
    for s in sets.iter_mut().filter(|_| !args.steady_only) {
        let key: Option<u64> = s
            .client
            .query("SELECT user_key FROM user_quarter_hours WHERE bucket >= now() - INTERVAL 1 DAY LIMIT 1")
            .fetch_optional()
            .await?;
        let Some(key) = key else { continue };
        s.client
            .query("DELETE FROM user_quarter_hours WHERE user_key = ?")
            .bind(key)
            .execute()
            .await?;
        s.client
            .query("ALTER TABLE first_seen_changes DELETE WHERE user_key = ?")
            .bind(key)
            .with_setting("mutations_sync", "1")
            .execute()
            .await?;
        let t = Instant::now();
        compute(&s.source, &defs, Utc::now()).await?;
        s.erased = Some(t.elapsed());
    }

    let mut rows = Vec::new();
    let mut sizes_table = Vec::new();
    let mut memory_table = Vec::new();
    let mut last_state = None;
    for s in &sets {
        // The cache must give exactly what counting in SQL gives.
        let now = Utc::now();
        let snapshot = compute(&s.source, &defs, now).await?;
        let checked = if s.in_sql.is_ok() {
            let checked = compute_in_sql(&s.source, &defs, now).await?;
            anyhow::ensure!(
                snapshot == checked,
                "the day cache and the SQL path disagree on {}",
                s.label
            );
            if !args.steady_only {
                let restarted = MetricsSource::new(s.client.clone(), Duration::from_secs(600))
                    .with_state_dir(&args.state_dir, &s.database);
                anyhow::ensure!(
                    compute(&restarted, &defs, now).await? == checked,
                    "a restart on the saved day cache and the SQL path disagree on {}",
                    s.label
                );
            }
            "✓"
        } else {
            "not checked"
        };
        let cache_mib = s.source.day_sets().lock().await.bytes() as f64 / (1024.0 * 1024.0);
        let dau = snapshot
            .apps
            .get("bench")
            .map(|a| a.active(Window::Day))
            .unwrap_or(0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let steady = median_of(&s.steady);
        let or_failed = |r: &Result<Duration, String>| match r {
            Ok(d) => format!("{:.0}", ms(*d)),
            Err(e) if e == NOT_RUN => "–".to_owned(),
            Err(e) => format!("failed: {}", e.chars().take(80).collect::<String>()),
        };
        let ratio = |d: Duration| match &s.raw {
            Ok(raw) if !d.is_zero() => format!("{:.1}×", raw.as_secs_f64() / d.as_secs_f64()),
            _ => "–".to_owned(),
        };
        rows.push(format!(
            "| {} | {} | {} | {:.0} | {dau} | **{:.0}** | **{:.0}** | {} | {:.0} | {} | {} | {} | **{}** | **{}** | {} | {cache_mib:.1} | {checked} | {} |",
            s.users,
            s.users * 10,
            s.days,
            s.load_s,
            ms(steady),
            ms(s.restart),
            s.erased.map_or("–".to_owned(), |e| format!("{:.0}", ms(e))),
            ms(s.cold),
            or_failed(&s.in_sql),
            s.previous.map_or("–".to_owned(), |p| format!("{:.0}", ms(p))),
            or_failed(&s.raw),
            ratio(steady),
            ratio(s.restart),
            ratio(s.cold),
            s.load_average
        ));
        let parts: Vec<TableSize> = server
            .query("SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts WHERE database = ? AND active GROUP BY table ORDER BY table")
            .bind(&s.database)
            .fetch_all()
            .await?;
        for p in parts {
            sizes_table.push(format!(
                "| {} | {} | {} | {:.1} |",
                s.label,
                p.table,
                p.rows,
                p.bytes as f64 / (1024.0 * 1024.0)
            ));
        }
        if args.peak_memory {
            let phases = [
                ("cold refresh", 0),
                ("steady refresh", 1),
                ("raw events", 2),
            ];
            for (phase, which) in phases {
                let peaks = peak_memory(&server, || async {
                    match which {
                        0 => {
                            let fresh =
                                MetricsSource::new(s.client.clone(), Duration::from_secs(600));
                            compute(&fresh, &defs, Utc::now()).await?;
                        }
                        1 => {
                            trickle(&s.client, s.users, 1_000).await?;
                            compute(&s.source, &defs, Utc::now()).await?;
                        }
                        _ => raw_refresh(&s.client, &defs, &defs.plan(Utc::now())).await?,
                    }
                    Ok(())
                })
                .await?;
                for (query, peak) in peaks.iter().take(6) {
                    memory_table.push(format!(
                        "| {} | {phase} | `{}…` | {:.1} |",
                        s.label,
                        query.replace('|', "\\|"),
                        *peak as f64 / (1024.0 * 1024.0)
                    ));
                }
            }
        }
        let state = AppState::new(config.clone(), s.source.clone());
        state.cache.publish(snapshot);
        last_state = Some(state);
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&args.state_dir);
        for s in &sets {
            server
                .query("DROP DATABASE IF EXISTS ?")
                .bind(Identifier(&s.database))
                .execute()
                .await?;
        }
    }
    println!(
        "| users | events | days | load (s) | DAU | refresh, steady (ms) | refresh, restart (ms) | refresh after an erasure (ms) | refresh, cold (ms) | counted in SQL (ms) | first layer (ms) | raw events (ms) | raw / steady | raw / restart | raw / cold | day cache (MiB) | cache = SQL | load average |"
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nSteady refreshes, interleaved ({runs} each, load average at the end {steady_load_average}):\n"
    );
    println!("| set | steady refreshes (ms), in run order | median (ms) |\n|---|---|---:|");
    for s in &sets {
        let each: Vec<String> = s
            .steady
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect();
        println!(
            "| {} | {} | {:.0} |",
            s.label,
            each.join(", "),
            median_of(&s.steady).as_secs_f64() * 1000.0
        );
    }
    if let (Some(first), Some(last)) = (sets.first(), sets.last())
        && sets.len() > 1
    {
        let mut paired: Vec<f64> = first
            .steady
            .iter()
            .zip(&last.steady)
            .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64())
            .collect();
        paired.sort_by(f64::total_cmp);
        println!(
            "\n{} vs {}: steady refresh {:.2}× (ratio of medians), {:.2}× (median of the {} paired runs)",
            last.label,
            first.label,
            median_of(&last.steady).as_secs_f64() / median_of(&first.steady).as_secs_f64(),
            paired[paired.len() / 2],
            paired.len()
        );
    }
    println!("\n| set | table | rows | MiB on disk |\n|---|---|---:|---:|");
    for r in sizes_table {
        println!("{r}");
    }
    if args.peak_memory {
        println!(
            "\nPeak memory per ClickHouse query (system.processes every 2 ms; the largest six a phase):\n"
        );
        println!("| set | phase | query | peak (MiB) |\n|---|---|---|---:|");
        for r in memory_table {
            println!("{r}");
        }
    }
    if let (Some(state), true) = (last_state, args.scrapers > 0) {
        let per_request = server_time_per_request(state.clone(), 20_000).await?;
        println!(
            "\nServer time per /metrics request (router and layers in process, no socket): {:.1} µs",
            per_request.as_secs_f64() * 1e6
        );
        println!(
            "\n/metrics, {} concurrent scrapers × {} requests (keep-alive, gzip; {}), load average {}:\n",
            args.scrapers,
            args.scrapes,
            if args.synchronized_scrapers {
                "all scrapers start together"
            } else {
                "paced scrapers start at phases spread evenly over the pause"
            },
            load_average()
        );
        println!(
            "| pause between a scraper's scrapes | p50 (ms) | p99 (ms) | max (ms) | requests/s |\n|---|---:|---:|---:|---:|"
        );
        for &pause in &args.scrape_pause_ms {
            let (p50, p99, max, rps) = scrape_latency(
                state.clone(),
                args.scrapers,
                args.scrapes,
                Duration::from_millis(pause),
                args.synchronized_scrapers,
            )
            .await?;
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "| {pause} ms | {:.2} | {:.2} | {:.2} | {rps:.0} |",
                ms(p50),
                ms(p99),
                ms(max)
            );
        }
    }
    Ok(())
}
