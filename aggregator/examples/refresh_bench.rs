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
use growth_aggregator::definitions::{MetricDefinitions, RefreshPlan, Window};
use growth_aggregator::http::{AppState, layered, listen, no_delay, router};
use growth_aggregator::queries::MetricsSource;
use growth_aggregator::snapshot::{compute, compute_in_sql};
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
    #[arg(long, value_delimiter = ',', default_value = "0,100")]
    scrape_pause_ms: Vec<u64>,
    /// Keep the databases (bench_refresh_*) for a look (or for --reuse).
    #[arg(long)]
    keep: bool,
    /// Reuse a set's database kept by an earlier --keep run instead of loading it.
    #[arg(long)]
    reuse: bool,
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
) -> anyhow::Result<(Duration, Duration, Duration, f64)> {
    let dashboard = DashboardState {
        app: state.clone(),
        settings: Arc::new(DashboardSettings::new(
            state.config.refresh_interval,
            Default::default(),
            Vec::new(),
            Vec::new(),
        )),
    };
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
    for _ in 0..scrapers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut times = Vec::with_capacity(scrapes);
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
                    tokio::time::sleep(pause).await;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = clickhouse::Client::default().with_url(&args.clickhouse_url);
    let config = Cli::try_parse_args(["refresh_bench", "--clickhouse-url", &args.clickhouse_url])?
        .run
        .into_config();
    let defs = config.definitions.clone();
    let mut sizes_table = Vec::new();
    let mut rows = Vec::new();
    let mut last_state = None;
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
        let new_source = || MetricsSource::new(client.clone(), Duration::from_secs(600));
        // Cold: a fresh aggregator's first refresh reads every needed day.
        let cold = median(args.runs, || async {
            compute(&new_source(), &defs, Utc::now()).await?;
            Ok(())
        })
        .await?;
        // Steady: what every --refresh-interval costs once running, with a collector
        // batch of today's events landing before each refresh.
        let source = new_source();
        compute(&source, &defs, Utc::now()).await?;
        let mut steady_times = Vec::new();
        for run in 0..args.runs.max(1) {
            trickle(&client, users, run as u64).await?;
            let t = Instant::now();
            compute(&source, &defs, Utc::now()).await?;
            steady_times.push(t.elapsed());
        }
        steady_times.sort();
        let steady = steady_times[steady_times.len() / 2];
        let in_sql = median(args.runs, || async {
            compute_in_sql(&source, &defs, Utc::now()).await?;
            Ok(())
        })
        .await?;
        let raw = median(args.runs, || async {
            raw_refresh(&client, &defs, &defs.plan(Utc::now())).await
        })
        .await?;
        let previous = if args.previous_layer {
            Some(
                median(args.runs, || async {
                    previous_layer_refresh(&client, &defs, &defs.plan(Utc::now())).await
                })
                .await?,
            )
        } else {
            None
        };
        // The cache must give exactly what counting in SQL gives.
        let now = Utc::now();
        let snapshot = compute(&source, &defs, now).await?;
        let checked = compute_in_sql(&source, &defs, now).await?;
        anyhow::ensure!(
            snapshot == checked,
            "the day cache and the SQL path disagree on {set}"
        );
        let cache_mib = source.day_sets().lock().await.bytes() as f64 / (1024.0 * 1024.0);
        let dau = snapshot
            .apps
            .get("bench")
            .map(|a| a.active(Window::Day))
            .unwrap_or(0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        rows.push(format!(
            "| {users} | {} | {days} | {load_s:.0} | {dau} | **{:.0}** | {:.0} | {:.0} | {} | {:.0} | **{:.1}×** | {:.1}× | {cache_mib:.1} | {} |",
            users * 10,
            ms(steady),
            ms(cold),
            ms(in_sql),
            previous.map_or("–".to_owned(), |p| format!("{:.0}", ms(p))),
            ms(raw),
            raw.as_secs_f64() / steady.as_secs_f64(),
            raw.as_secs_f64() / cold.as_secs_f64(),
            load_average()
        ));
        let parts: Vec<TableSize> = server
            .query("SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts WHERE database = ? AND active GROUP BY table ORDER BY table")
            .bind(&database)
            .fetch_all()
            .await?;
        for p in parts {
            sizes_table.push(format!(
                "| {users}:{days} | {} | {} | {:.1} |",
                p.table,
                p.rows,
                p.bytes as f64 / (1024.0 * 1024.0)
            ));
        }
        let state = AppState::new(config.clone(), source.clone());
        state.cache.publish(snapshot);
        last_state = Some(state);
        if !args.keep {
            server
                .query("DROP DATABASE IF EXISTS ?")
                .bind(Identifier(&database))
                .execute()
                .await?;
        }
    }
    println!(
        "| users | events | days | load (s) | DAU | refresh, steady (ms) | refresh, cold (ms) | counted in SQL (ms) | first layer (ms) | raw events (ms) | raw / steady | raw / cold | day cache (MiB) | load average |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!("\n| set | table | rows | MiB on disk |\n|---|---|---:|---:|");
    for r in sizes_table {
        println!("{r}");
    }
    if let (Some(state), true) = (last_state, args.scrapers > 0) {
        println!(
            "\n/metrics, {} concurrent scrapers × {} requests (keep-alive, gzip), load average {}:\n",
            args.scrapers,
            args.scrapes,
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
