//! Fault injection against the real collector and ClickHouse: the collector killed
//! (-9) or stopped (TERM) under load, ClickHouse stopped for 20 s under load, the spool
//! full, a poison record, and a batch ClickHouse already has replayed. Senders retry
//! as OTLP exporters do; every record carries a unique number, and in each case every
//! number is stored exactly once and the collector's own counters agree.

mod faults;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faults::load::{self, Load};
use faults::{assert_counters_agree, metric_after_settling};
use growth_e2e::{
    Collector, clickhouse, eventually, free_port, repo_root, temp_spool_dir, unique_database,
};

fn load(collector: &Collector, app: &str, total: u64) -> Load {
    Load {
        endpoint: collector.http_endpoint.clone(),
        app: app.into(),
        total,
        per_request: 100,
        concurrency: 4,
        pause: Duration::ZERO,
        poison: vec![],
    }
}

async fn wait_for_acks(progress: &load::Progress, at_least: u64) {
    eventually("acknowledgements", Duration::from_secs(60), || async {
        (progress.load(Ordering::SeqCst) >= at_least).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_killed_under_load_loses_and_doubles_nothing() {
    let database = unique_database("kill");
    let mut collector = Collector::start(&database, None).await;
    let total = 30_000;
    let progress = load::Progress::default();
    let sending = tokio::spawn(load::run(
        load(&collector, "kill9", total),
        progress.clone(),
        Duration::from_secs(90),
    ));
    wait_for_acks(&progress, total / 3).await;
    collector.process.signal("KILL");
    collector.process.wait_exit(Duration::from_secs(5));
    let acked_before_restart = progress.load(Ordering::SeqCst);
    collector.restart().await;
    let report = sending.await.expect("load");
    assert_eq!(report.acked, total);
    assert!(
        acked_before_restart < total && report.answers.contains_key("connection"),
        "the kill landed under load: {report:?}"
    );
    collector.settled().await;
    load::assert_exactly_once(&database, "kill9", total, &[]).await;
    assert_counters_agree(&collector).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_stopped_under_load_exits_in_time_and_resumes() {
    let database = unique_database("term");
    let mut collector = Collector::start_with(&database, None, &["--shutdown-timeout", "5s"]).await;
    let total = 20_000;
    let progress = load::Progress::default();
    let sending = tokio::spawn(load::run(
        load(&collector, "term", total),
        progress.clone(),
        Duration::from_secs(90),
    ));
    wait_for_acks(&progress, total / 3).await;
    let asked = Instant::now();
    collector.process.signal("TERM");
    let status = collector
        .process
        .wait_exit(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", collector.process.output());
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "took {:?}",
        asked.elapsed()
    );
    collector.restart().await;
    let report = sending.await.expect("load");
    assert_eq!(report.acked, total);
    collector.settled().await;
    load::assert_exactly_once(&database, "term", total, &[]).await;
    assert_counters_agree(&collector).await;
}

/// A ClickHouse of the test's own, so that stopping it disturbs no other test.
struct OwnClickHouse {
    data_dir: std::path::PathBuf,
    http_port: u16,
    tcp_port: u16,
}

impl OwnClickHouse {
    fn start() -> Self {
        let own = Self {
            data_dir: std::env::temp_dir()
                .join("growth-e2e")
                .join(format!("clickhouse-outage-{}", std::process::id())),
            http_port: free_port(),
            tcp_port: free_port(),
        };
        let _ = std::fs::remove_dir_all(&own.data_dir);
        own.run("start");
        own
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn run(&self, command: &str) {
        let status = std::process::Command::new(repo_root().join("scripts/clickhouse"))
            .arg(command)
            .args(["--http-port", &self.http_port.to_string()])
            .args(["--tcp-port", &self.tcp_port.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("scripts/clickhouse runs");
        assert!(status.success(), "scripts/clickhouse {command} failed");
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_away_for_20s_stalls_no_sender_and_loses_nothing() {
    let own = OwnClickHouse::start();
    let database = unique_database("outage");
    let collector =
        Collector::start_on(&own.url(), &database, None, &[], temp_spool_dir("outage")).await;
    // Paced: ~1,600 records/s for ~25 s, so the outage falls in the middle.
    let total = 40_000;
    let progress = load::Progress::default();
    let mut paced = load(&collector, "outage", total);
    paced.pause = Duration::from_millis(250);
    let sending = tokio::spawn(load::run(paced, progress.clone(), Duration::from_secs(120)));
    wait_for_acks(&progress, 3_000).await;
    own.run("stop");
    let stopped = Instant::now();
    let acked_when_stopped = progress.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let acked_during_outage = progress.load(Ordering::SeqCst) - acked_when_stopped;
    own.run("start");
    eprintln!("ClickHouse was away for {:?}", stopped.elapsed());
    let report = sending.await.expect("load");
    assert_eq!(report.acked, total);
    assert!(
        acked_during_outage > 20_000,
        "senders went on while ClickHouse was away: {acked_during_outage} acknowledged"
    );
    assert!(
        report.slowest < Duration::from_secs(2),
        "a sender stalled: {report:?}"
    );
    collector.settled().await;
    let ch = clickhouse_at(&own.url(), &database);
    let (rows, distinct): (u64, u64) = ch
        .query("SELECT count(), uniqExact(toUInt64(numbers['seq'])) FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!((rows, distinct), (total, total));
    assert_counters_agree(&collector).await;
    let m = collector.metrics().await;
    assert!(m.value("growth_collector_insert_retries_total") > 0.0);
}

fn clickhouse_at(url: &str, database: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_database(database)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_pushes_back_then_recovers() {
    let database = unique_database("full");
    let collector = Collector::start_with(
        &database,
        None,
        &["--spool-max-bytes", "1MiB", "--batch-max-delay", "2s"],
    )
    .await;
    let total = 20_000;
    let progress = load::Progress::default();
    let sending = tokio::spawn(load::run(
        load(&collector, "full", total),
        progress.clone(),
        Duration::from_secs(90),
    ));
    // While the spool is full, /readyz says so.
    let unready = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let (unready, readyz) = (unready.clone(), format!("{}/readyz", collector.admin));
        async move {
            loop {
                if let Ok(r) = reqwest::get(&readyz).await
                    && r.status() == 503
                {
                    unready.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let report = sending.await.expect("load");
    watcher.abort();
    assert_eq!(report.acked, total);
    assert!(
        report.answers.get("429").is_some_and(|n| *n > 0),
        "{report:?}"
    );
    assert!(
        unready.load(Ordering::SeqCst) > 0,
        "/readyz never said the spool was full"
    );
    let full = metric_after_settling(&collector, "growth_collector_backpressure_total").await;
    let refusals = report.answers.get("429").copied().unwrap_or(0)
        + report.answers.get("503").copied().unwrap_or(0);
    assert_eq!(full, refusals as f64, "every 429 and 503 counted");
    load::assert_exactly_once(&database, "full", total, &[]).await;
    assert_counters_agree(&collector).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_is_dead_lettered_and_blocks_nothing() {
    let database = unique_database("poison");
    let collector = Collector::start(&database, None).await;
    // A constraint an analyst added: ClickHouse refuses the whole insert that holds
    // such a row (VIOLATED_CONSTRAINT), every time.
    clickhouse(&database)
        .query("ALTER TABLE events ADD CONSTRAINT no_poison CHECK source != 'poison'")
        .execute()
        .await
        .expect("constraint");
    let total = 20_000;
    let poison = 12_345;
    let mut with_poison = load(&collector, "poison", total);
    with_poison.poison = vec![poison];
    let report = load::run(
        with_poison,
        load::Progress::default(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(report.acked, total);
    let dead = metric_after_settling(&collector, "growth_collector_rows_dead_lettered_total").await;
    assert_eq!(dead, 1.0);
    load::assert_exactly_once(&database, "poison", total, &[poison]).await;
    let letters = std::fs::read_to_string(collector.spool_dir.join("dead-letter.jsonl"))
        .expect("dead-letter file");
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(letters.contains("VIOLATED_CONSTRAINT"), "{letters}");
    assert!(letters.contains("\"source\":\"poison\""), "{letters}");
    assert_counters_agree(&collector).await;
    // Later batches go through.
    let after = load::run(
        load(&collector, "after", 500),
        load::Progress::default(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(after.acked, 500);
    collector.settled().await;
    load::assert_exactly_once(&database, "after", 500, &[]).await;
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct TableInfo {
    name: String,
    engine: String,
    create_table_query: String,
    dependencies_table: Vec<String>,
}

/// Every table fed, directly or through other views, by inserts into `events`.
async fn tables_downstream_of_events(database: &str) -> Vec<(String, String)> {
    let tables: Vec<TableInfo> = clickhouse(database)
        .query("SELECT name, engine, create_table_query, dependencies_table FROM system.tables WHERE database = ?")
        .bind(database)
        .fetch_all()
        .await
        .expect("tables");
    let find = |name: &str| tables.iter().find(|t| t.name == name);
    let mut found = vec![];
    let mut queue = vec!["events".to_owned()];
    while let Some(name) = queue.pop() {
        let Some(table) = find(&name) else {
            continue;
        };
        if found.iter().any(|(n, _)| *n == name) {
            continue;
        }
        found.push((name.clone(), table.engine.clone()));
        for view in &table.dependencies_table {
            let Some(create) = find(view).map(|v| &v.create_table_query) else {
                continue;
            };
            // CREATE MATERIALIZED VIEW db.v TO db.target (...)
            let target = create
                .split_once(" TO ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(|t| {
                    t.rsplit('.')
                        .next()
                        .unwrap_or(t)
                        .trim_matches('`')
                        .to_owned()
                })
                .expect("a view with TO");
            queue.push(target);
        }
    }
    found
}

/// What a table holds, in a form that merges do not change: row count and the sum of
/// every numeric column, read with FINAL where the engine folds rows.
async fn fingerprint(database: &str, table: &str, engine: &str) -> Vec<String> {
    let columns: Vec<String> = clickhouse(database)
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ? AND (type LIKE '%Int%' OR type LIKE '%Float%' OR type LIKE '%Decimal%') AND type NOT LIKE '%Array(%' AND type NOT LIKE 'Map(%' ORDER BY name")
        .bind(database)
        .bind(table)
        .fetch_all()
        .await
        .expect("columns");
    let sums: String = columns
        .iter()
        .map(|c| format!(", toString(sum(toFloat64(`{c}`)))"))
        .collect();
    let last = if engine == "MergeTree" { "" } else { " FINAL" };
    let sql = format!("SELECT [toString(count()){sums}] FROM `{table}`{last}");
    clickhouse(database)
        .query(&sql)
        .fetch_one::<Vec<String>>()
        .await
        .expect("fingerprint")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_clickhouse_already_has_is_stored_once_in_every_table() {
    let database = unique_database("replay");
    let spool = temp_spool_dir("replay");
    // A collector that spools but never gets to insert: killed with everything spooled.
    let mut first = Collector::start_in(
        &database,
        None,
        &["--batch-max-delay", "60s"],
        spool.clone(),
    )
    .await;
    let total = 5_000;
    let report = load::run(
        load(&first, "replay", total),
        load::Progress::default(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(report.acked, total);
    first.process.signal("KILL");
    first.process.wait_exit(Duration::from_secs(5));
    // The same spool twice: the second copy will replay a batch ClickHouse already has.
    let copy = temp_spool_dir("replay-copy");
    std::fs::create_dir_all(&copy).expect("copy dir");
    for entry in std::fs::read_dir(&spool).expect("spool") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, copy.join(path.file_name().expect("name"))).expect("copy");
    }

    let second = Collector::start_in(&database, None, &[], spool).await;
    second.settled().await;
    drop(second);
    load::assert_exactly_once(&database, "replay", total, &[]).await;
    let tables = tables_downstream_of_events(&database).await;
    eprintln!("tables downstream of events: {tables:?}");
    assert!(
        tables.len() >= 2,
        "events and at least one view table: {tables:?}"
    );
    let mut before = vec![];
    for (table, engine) in &tables {
        before.push(fingerprint(&database, table, engine).await);
    }

    let third = Collector::start_in(&database, None, &[], copy).await;
    let stored = metric_after_settling(&third, "growth_collector_events_stored_total").await;
    assert_eq!(
        stored, total as f64,
        "ClickHouse took the replay (and dropped it)"
    );
    load::assert_exactly_once(&database, "replay", total, &[]).await;
    for ((table, engine), before) in tables.iter().zip(before) {
        assert_eq!(
            fingerprint(&database, table, engine).await,
            before,
            "{table} changed on the replay"
        );
    }
}
