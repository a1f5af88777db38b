//! How long a full metrics refresh takes, from the views and from the raw table.
//!
//! Loads a synthetic data set into a fresh database (generated inside ClickHouse,
//! so loading is fast and goes through the materialized views like real inserts),
//! then times `snapshot::compute` — what the aggregator does every refresh — against
//! the same metrics computed by scanning `events`. Prints a table.
//!
//! ```sh
//! scripts/clickhouse start
//! cargo run --release -p growth-aggregator --example refresh_bench -- --events 1000000 --users 20000
//! ```

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use growth_aggregator::definitions::MetricDefinitions;
use growth_aggregator::queries::MetricsSource;
use growth_aggregator::snapshot::compute;
use growth_schema::migrate::migrate;

#[derive(Parser)]
#[command(about = "Time a full metrics refresh from the views vs from the raw events table")]
struct Args {
    /// ClickHouse HTTP endpoint.
    #[arg(
        long,
        env = "GROWTH_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// Comma list of event counts to load (each in its own database).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    events: Vec<u64>,
    /// Distinct users.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Days the events span, ending now.
    #[arg(long, default_value_t = 90)]
    days: u64,
    /// Timed repetitions per variant (the median is shown).
    #[arg(long, default_value_t = 5)]
    runs: usize,
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

/// The same four metrics, computed by scanning the raw events.
async fn raw_refresh(
    client: &clickhouse::Client,
    from_30d: i64,
    from_7d: i64,
    from_1d: i64,
) -> anyhow::Result<()> {
    client
        .query(
            "SELECT app, uniqExactIf(user_key, event_time >= toDateTime64(?, 3)), uniqExactIf(user_key, event_time >= toDateTime64(?, 3)), uniqExact(user_key)
             FROM events WHERE user_key != 0 AND event_time >= toDateTime64(?, 3) GROUP BY app FORMAT Null",
        )
        .bind(from_1d)
        .bind(from_7d)
        .bind(from_30d)
        .execute()
        .await?;
    client
        .query("SELECT app, toDate(f) AS c, count() FROM (SELECT app, user_key, min(event_time) AS f FROM events WHERE user_key != 0 GROUP BY app, user_key) WHERE f >= toDateTime64(?, 3) GROUP BY app, c FORMAT Null")
        .bind(from_7d)
        .execute()
        .await?;
    client
        .query(
            "SELECT c.app, c.c, dateDiff('day', c.c, toDate(e.event_time)) AS n, uniqExact(e.user_key)
             FROM events AS e INNER JOIN (SELECT app, user_key, toDate(min(event_time)) AS c FROM events WHERE user_key != 0 GROUP BY app, user_key HAVING c >= toDate(toDateTime64(?, 3))) AS c
             ON e.app = c.app AND e.user_key = c.user_key
             WHERE e.event_time >= toDateTime64(?, 3) GROUP BY c.app, c.c, n HAVING n IN (1, 3, 7, 30) FORMAT Null",
        )
        .bind(from_7d)
        .bind(from_7d)
        .execute()
        .await?;
    client
        .query("SELECT app, event, count() FROM events GROUP BY app, event FORMAT Null")
        .execute()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = clickhouse::Client::default().with_url(&args.clickhouse_url);
    let defs = MetricDefinitions {
        timezone: chrono_tz::Tz::UTC,
        active_events: vec![],
        retention_days: vec![1, 3, 7, 30],
        cohorts: 7,
    };
    println!(
        "| events | users | load (s) | refresh from views (ms) | same metrics from raw events (ms) | raw / views |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &events in &args.events {
        let database = format!("bench_refresh_{events}_{}", std::process::id());
        migrate(&server, &database).await?;
        let client = server.clone().with_database(&database);
        let load = Instant::now();
        // Users sign up spread over the period; each event picks a user and a moment.
        client
            .query(
                "INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at)
                 SELECT 'bench',
                        ['expense_logged','expense_edited','report_requested','pwa_installed','challenge_started'][1 + number % 5],
                        now64(3) - toIntervalSecond(intHash64(number) % (? * 86400)),
                        lower(hex(SHA256(toString(intHash64(number * 7) % ?)))),
                        ['messenger','form','pwa'][1 + number % 3],
                        map('category', 'groceries'), map('amount', toFloat64(number % 100)), now64(3)
                 FROM numbers(?)",
            )
            .bind(args.days)
            .bind(args.users)
            .bind(events)
            .with_setting("max_insert_block_size", "1000000")
            .execute()
            .await?;
        let load = load.elapsed();
        let source = MetricsSource::new(client.clone(), Duration::from_secs(60));
        let plan = defs.plan(Utc::now());
        let at = |i: usize| plan.windows[i].1.start.timestamp();
        let views = median(args.runs, || async {
            compute(&source, &defs, Utc::now()).await?;
            Ok(())
        })
        .await?;
        let raw = median(args.runs, || raw_refresh(&client, at(2), at(1), at(0))).await?;
        println!(
            "| {events} | {} | {:.1} | {:.0} | {:.0} | {:.1}× |",
            args.users,
            load.as_secs_f64(),
            views.as_secs_f64() * 1000.0,
            raw.as_secs_f64() * 1000.0,
            raw.as_secs_f64() / views.as_secs_f64()
        );
        server
            .query("DROP DATABASE IF EXISTS ?")
            .bind(clickhouse::sql::Identifier(&database))
            .execute()
            .await?;
    }
    Ok(())
}
