//! How long erasing people takes, and whether ingest keeps acknowledging meanwhile.
//!
//! A fresh database gets N events (default 10M, ten per user, over 30 days) generated
//! inside ClickHouse (`INSERT … SELECT FROM numbers()`, one million rows an insert, so
//! the materialized views fill as from the collector). A real collector runs in this
//! process with an admin token; while senders post small OTLP/HTTP requests without
//! pause, P people (default 1,000, spread over the users) are erased with one
//! `POST /admin/erasures` of their raw ids, and the status is polled until done.
//! Printed (Markdown, stdout): the erasure's wall time, the rows removed per table,
//! and the senders' requests acknowledged during it with their latency.
//!
//! ```sh
//! { read -r http; read -r tcp; } < <(scripts/free-port 2)
//! scripts/clickhouse start --http-port "$http" --tcp-port "$tcp" --data-dir /tmp/bench-ch
//! cargo run --release -p growth-collector --example erasure_bench -- --clickhouse-url "http://127.0.0.1:$http"
//! scripts/clickhouse stop --data-dir /tmp/bench-ch
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use growth_collector::Cli;
use growth_schema::service::ServiceCli as _;
use sha2::{Digest as _, Sha256};

const TOKEN: &str = "bench-admin-token";
const DATABASE: &str = "erasure_bench";

struct Args {
    url: String,
    events: u64,
    people: u64,
    days: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: String::new(),
        events: 10_000_000,
        people: 1_000,
        days: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--clickhouse-url" => args.url = value,
            "--events" => args.events = value.parse()?,
            "--people" => args.people = value.parse()?,
            "--days" => args.days = value.parse()?,
            other => bail!("unknown flag {other} (--clickhouse-url, --events, --people, --days)"),
        }
    }
    if args.url.is_empty() {
        bail!("--clickhouse-url is required");
    }
    Ok(args)
}

async fn load(client: &clickhouse::Client, events: u64, days: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let chunk = 1_000_000u64;
    let mut first = 0;
    while first < events {
        let count = chunk.min(events - first);
        client
            .query(
                "INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at)
                 SELECT 'bench',
                        ['expense_logged','expense_logged','expense_edited','report_requested','challenge_started'][1 + intHash64(number) % 5],
                        now64(3) - toIntervalSecond(intHash64(number) % ({days:UInt64} * 86400)),
                        lower(hex(SHA256(toString(intDiv(number, 10))))),
                        ['messenger','form','pwa'][1 + intHash64(number + 1) % 3],
                        map('category', 'groceries'), map('amount', toFloat64(number % 100)), now64(3)
                 FROM numbers({first:UInt64}, {count:UInt64})",
            )
            .param("days", days)
            .param("first", first)
            .param("count", count)
            .with_setting("max_insert_block_size", "1000000")
            .with_setting("min_insert_block_size_rows", "1000000")
            .with_setting("max_execution_time", "0")
            .execute()
            .await?;
        first += count;
        eprintln!(
            "  loaded {first} of {events} events in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn otlp_json(n: u64, records: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let logs: Vec<serde_json::Value> = (0..records)
        .map(|i| {
            serde_json::json!({
                "timeUnixNano": (now + u128::from(i)).to_string(),
                "attributes": [
                    {"key": "event.name", "value": {"stringValue": "expense_logged"}},
                    {"key": "user.id", "value": {"stringValue": format!("live-{}", (n * records + i) % 5000)}}
                ]
            })
        })
        .collect();
    serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bench"}}]},
        "scopeLogs": [{"logRecords": logs}]
    }]})
    .to_string()
}

#[derive(Default)]
struct Senders {
    during: AtomicU64,
    failed: AtomicU64,
    max_latency_us: AtomicU64,
    total_latency_us: AtomicU64,
}

async fn sender(
    url: String,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<Senders>,
) {
    let http = reqwest::Client::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = otlp_json(n, 100);
        n += 1;
        let started = Instant::now();
        let ok = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let us = started.elapsed().as_micros() as u64;
        if measuring.load(Ordering::Relaxed) {
            if ok {
                stats.during.fetch_add(1, Ordering::Relaxed);
                stats.total_latency_us.fetch_add(us, Ordering::Relaxed);
                stats.max_latency_us.fetch_max(us, Ordering::Relaxed);
            } else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let root = clickhouse::Client::default().with_url(&args.url);
    root.query("DROP DATABASE IF EXISTS ?")
        .bind(clickhouse::sql::Identifier(DATABASE))
        .execute()
        .await?;
    let dir = std::env::temp_dir().join(format!("growth-erasure-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tokens = dir.join("admin-tokens");
    std::fs::write(
        &tokens,
        format!("sha256:{}\n", hex::encode(Sha256::digest(TOKEN))),
    )?;
    let spool = dir.join("spool");
    let config = Cli::try_parse_args([
        "growth-collector",
        "--clickhouse-url",
        &args.url,
        "--clickhouse-database",
        DATABASE,
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--spool-dir",
        spool.to_str().context("path")?,
        "--admin-token-file",
        tokens.to_str().context("path")?,
        // The generated users are hashed with plain SHA-256 inside ClickHouse.
        "--allow-unkeyed-hash",
    ])?
    .run
    .into_config(None)?;
    let collector = growth_collector::Collector::bind(config).await?;
    let addresses = collector.addresses();
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(collector.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let admin = format!("http://{}", addresses.admin);
    for _ in 0..600 {
        if http
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = clickhouse::Client::default()
        .with_url(&args.url)
        .with_database(DATABASE);
    eprintln!("loading {} events", args.events);
    load(&client, args.events, args.days).await?;
    let users = args.events / 10;
    let step = (users / args.people).max(1);
    let ids: Vec<String> = (0..args.people).map(|i| (i * step).to_string()).collect();

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Senders::default());
    let senders: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(sender(
                format!("http://{}/v1/logs", addresses.otlp_http),
                measuring.clone(),
                stop.clone(),
                stats.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    eprintln!("erasing {} people", ids.len());
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let answer: serde_json::Value = http
        .post(format!("{admin}/admin/erasures"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "user_ids": ids }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = answer["id"].as_str().context("an erasure id")?.to_owned();
    let status = loop {
        let status: serde_json::Value = http
            .get(format!("{admin}/admin/erasures/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if status["state"] == "done" {
            break status;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("not done after 30 minutes: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let left: u64 = client
        .query("SELECT count() FROM events WHERE user_hash IN (SELECT lower(hex(SHA256(arrayJoin({ids:Array(String)})))))")
        .param("ids", &ids)
        .fetch_one()
        .await?;

    let during = stats.during.load(Ordering::Relaxed);
    println!(
        "| events | people erased | erasure wall time | rows left | ingest requests acknowledged during it (100 records each) | refused | mean / max acknowledgement |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.1} s | {left} | {during} | {} | {:.0} ms / {:.0} ms |",
        args.events,
        args.people,
        took.as_secs_f64(),
        stats.failed.load(Ordering::Relaxed),
        stats.total_latency_us.load(Ordering::Relaxed) as f64 / during.max(1) as f64 / 1000.0,
        stats.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    println!();
    println!("| table | rows removed |");
    println!("|---|---:|");
    if let Some(removed) = status["removed"].as_object() {
        for (table, rows) in removed {
            println!("| {table} | {rows} |");
        }
    }
    let _ = stop_collector.send(());
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
