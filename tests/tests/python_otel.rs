//! (b) Events sent by the official OpenTelemetry Python SDK (from PyPI), over gRPC
//! and over HTTP, arrive mapped per the event contract; `user.id` is hashed at the
//! collector and the raw id is found nowhere in ClickHouse nor in the collector's log.

use std::io::Write;
use std::process::{Command, Stdio};

use growth_e2e::{Collector, clickhouse, python, repo_root, unique_database};
use growth_schema::tables::EventRow;
use growth_schema::user_hash::UserHasher;
use serde_json::json;

const KEY: &str = "python-test-key";
const RAW_IDS: [&str; 2] = ["raw-alice-9f3c1", "raw-bob-77e2d"];
const EVENT_TIME_NS: u64 = 1_795_000_000_123_000_000;

fn send(endpoint: &str, protocol: &str, service: &str, records: &serde_json::Value) {
    let script = repo_root().join("tests/python/otel_send.py");
    let mut child = Command::new(python())
        .arg(script)
        .args([
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--service-name",
            service,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(records.to_string().as_bytes())
        .expect("write records");
    let out = child.wait_with_output().expect("python finishes");
    assert!(
        out.status.success(),
        "python OTel sender failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn records(prehashed: &str) -> serde_json::Value {
    json!([
        // LogRecord.event_name (OTLP >= 1.5) with a raw user id and properties.
        {"event_name": "expense_logged", "time_unix_nano": EVENT_TIME_NS,
         "attributes": {"user.id": RAW_IDS[0], "amount": 12.5, "category": "groceries", "source": "messenger", "receipt_count": 2}},
        // The attribute event.name, no timestamp: observed time is used.
        {"attributes": {"event.name": "report_requested", "user.id": RAW_IDS[1], "report_type": "monthly"}},
        // An app that hashes itself sends user.hash.
        {"attributes": {"event.name": "pwa_installed", "user.hash": prehashed}},
        // Anonymous: counts for totals only.
        {"attributes": {"event.name": "challenge_started", "challenge": "no-coffee-week"}},
        // An ordinary log line: not a growth event.
        {"body": "user signed in", "attributes": {"user.id": RAW_IDS[0]}}
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_events_arrive_mapped_and_hashed() {
    let database = unique_database("python");
    // EVENT_TIME_NS is a fixed date: keep it inside the event-time window for years.
    let collector =
        Collector::start_with(&database, Some(KEY), &["--max-event-age=2555days"]).await;
    let prehashed = UserHasher::new(None).hash("self-hashing-user");
    let started = chrono::Utc::now();

    let endpoints = [
        ("grpc", collector.grpc_endpoint.clone(), "py-grpc"),
        ("http", collector.http_endpoint.clone(), "py-http"),
    ];
    for (protocol, endpoint, service) in &endpoints {
        let recs = records(prehashed.as_str());
        let (endpoint, protocol, service) =
            (endpoint.clone(), protocol.to_string(), service.to_string());
        tokio::task::spawn_blocking(move || send(&endpoint, &protocol, &service, &recs))
            .await
            .expect("sender");
    }

    // Acknowledged means spooled: wait until the writer has stored it.
    collector.settled().await;
    let ch = clickhouse(&database);
    let keyed = UserHasher::new(Some(KEY.as_bytes().to_vec()));
    for (_, _, service) in &endpoints {
        let rows: Vec<EventRow> = ch
            .query("SELECT ?fields FROM events WHERE app = ? ORDER BY event")
            .bind(*service)
            .fetch_all()
            .await
            .expect("select");
        let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "challenge_started",
                "expense_logged",
                "pwa_installed",
                "report_requested"
            ],
            "{service}"
        );

        let expense = &rows[1];
        assert_eq!(
            expense.user_hash,
            keyed.hash(RAW_IDS[0]).as_str(),
            "user.id must be HMAC-hashed with the collector's key"
        );
        assert_eq!(expense.source, "messenger");
        assert_eq!(
            expense.event_time.timestamp_nanos_opt(),
            Some(EVENT_TIME_NS as i64),
            "time_unix_nano is the event time"
        );
        let prop = |k: &str| {
            expense
                .properties
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let num = |k: &str| {
            expense
                .numbers
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| *v)
        };
        assert_eq!(prop("category").as_deref(), Some("groceries"));
        assert_eq!(prop("amount").as_deref(), Some("12.5"));
        assert_eq!(num("amount"), Some(12.5));
        assert_eq!(num("receipt_count"), Some(2.0));
        for reserved in ["user.id", "user.hash", "event.name", "source"] {
            assert!(
                prop(reserved).is_none(),
                "{reserved} must not be kept as a property"
            );
        }

        let report = &rows[3];
        assert_eq!(report.user_hash, keyed.hash(RAW_IDS[1]).as_str());
        assert!(
            report.event_time >= started - chrono::Duration::seconds(5),
            "observed time is used when time_unix_nano is unset"
        );
        assert_eq!(
            rows[2].user_hash,
            prehashed.as_str(),
            "user.hash is stored as sent"
        );
        assert_eq!(rows[0].user_hash, "", "anonymous event has no user");
    }

    // The raw ids are nowhere: not in any column or property of events, not in the views.
    for raw in RAW_IDS {
        let hits: u64 = ch
            .query(
                "SELECT toUInt64(assumeNotNull(
                        (SELECT count() FROM events WHERE position(concat(app, event, user_hash, source, toString(properties), toString(numbers)), ?) > 0)
                      + (SELECT count() FROM user_first_seen WHERE position(user_hash, ?) > 0)))",
            )
            .bind(raw)
            .bind(raw)
            .fetch_one()
            .await
            .expect("search");
        assert_eq!(hits, 0, "raw user id {raw} found in ClickHouse");
        assert!(
            !collector.process.output().contains(raw),
            "raw user id {raw} found in the collector's log"
        );
    }

    // The log line without an event name was counted, not stored.
    let metrics = reqwest::get(format!("{}/metrics", collector.admin))
        .await
        .expect("admin")
        .text()
        .await
        .expect("body");
    let not_growth: f64 = metrics
        .lines()
        .find(|l| l.starts_with("growth_collector_records_not_growth_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no not-growth counter in collector metrics:\n{metrics}"));
    assert_eq!(not_growth, 2.0, "one non-growth record per protocol");
    let stored: u64 = ch
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(stored, 8);
}
