//! A load that retries as OTLP exporters do, every record tagged with a unique number.
//!
//! Each request is built once and resent byte for byte until the collector accepts
//! it: 429/503 wait for `Retry-After`, a refused or broken connection (a collector
//! being killed or restarted) waits a moment. Records carry the attribute `seq`
//! (stored in `numbers['seq']`), so a test counts what ClickHouse holds per number:
//! none missing, none twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// The collector's OTLP/HTTP base URL.
    pub endpoint: String,
    /// `service.name`.
    pub app: String,
    /// Records in all; numbered 0..total.
    pub total: u64,
    /// Records per request.
    pub per_request: u64,
    /// Senders, one request in flight each.
    pub concurrency: u64,
    /// Pause between two requests of one sender (pacing), none when zero.
    pub pause: Duration,
    /// A record whose number is here gets `source = "poison"`.
    pub poison: Vec<u64>,
}

/// What happened, counted by the senders.
#[derive(Debug, Default)]
pub struct Report {
    /// Records whose request was answered 200.
    pub acked: u64,
    /// Requests sent again after a retryable answer or a connection error.
    pub retries: u64,
    /// Answers by status (`"200"`, `"429"`, `"503"`, `"connection"`).
    pub answers: BTreeMap<String, u64>,
    /// The longest time from a request's first try to its acknowledgement.
    pub slowest: Duration,
}

/// Records acknowledged so far, readable while the load runs.
pub type Progress = Arc<AtomicU64>;

/// Runs `load` to the end (every request acknowledged) or panics after `deadline`.
pub async fn run(load: Load, progress: Progress, deadline: Duration) -> Report {
    let requests = load.total.div_ceil(load.per_request);
    let next = Arc::new(AtomicU64::new(0));
    let base = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..load.concurrency {
        let (load, next, progress) = (load.clone(), next.clone(), progress.clone());
        senders.spawn(async move {
            let http = reqwest::Client::new();
            let mut report = Report::default();
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= requests {
                    return report;
                }
                let first = index * load.per_request;
                let last = (first + load.per_request).min(load.total);
                let body = request(&load, base, first..last).encode_to_vec();
                let asked = Instant::now();
                loop {
                    assert!(
                        started.elapsed() < deadline,
                        "the load did not finish within {deadline:?}: {report:?}"
                    );
                    let answer = http
                        .post(format!("{}/v1/logs", load.endpoint))
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let wait = match answer {
                        Ok(r) if r.status() == 200 => {
                            *report.answers.entry("200".into()).or_default() += 1;
                            break;
                        }
                        Ok(r) if r.status() == 429 || r.status() == 503 => {
                            *report
                                .answers
                                .entry(r.status().as_str().into())
                                .or_default() += 1;
                            let seconds = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .expect("a retryable answer has Retry-After");
                            Duration::from_secs(seconds)
                        }
                        Ok(r) => {
                            let status = r.status();
                            panic!(
                                "unexpected answer {status}: {}",
                                r.text().await.unwrap_or_default()
                            );
                        }
                        Err(_) => {
                            *report.answers.entry("connection".into()).or_default() += 1;
                            Duration::from_millis(100)
                        }
                    };
                    report.retries += 1;
                    tokio::time::sleep(wait).await;
                }
                report.slowest = report.slowest.max(asked.elapsed());
                report.acked += last - first;
                progress.fetch_add(last - first, Ordering::SeqCst);
                if !load.pause.is_zero() {
                    tokio::time::sleep(load.pause).await;
                }
            }
        });
    }
    let mut total = Report::default();
    while let Some(joined) = senders.join_next().await {
        let report = joined.expect("sender");
        total.acked += report.acked;
        total.retries += report.retries;
        for (k, v) in report.answers {
            *total.answers.entry(k).or_default() += v;
        }
        total.slowest = total.slowest.max(report.slowest);
    }
    total
}

fn text(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// The same bytes every time for the same numbers: a retry is the same request.
fn request(load: &Load, base: u64, seqs: std::ops::Range<u64>) -> ExportLogsServiceRequest {
    let records = seqs
        .map(|seq| {
            let mut attributes = vec![
                text("user.hash", format!("{:064x}", seq % 97 + 1)),
                KeyValue {
                    key: "seq".into(),
                    value: Some(AnyValue {
                        value: Some(Value::IntValue(seq as i64)),
                    }),
                    ..Default::default()
                },
            ];
            if load.poison.contains(&seq) {
                attributes.push(text("source", "poison".into()));
            }
            LogRecord {
                event_name: "fault_test".into(),
                time_unix_nano: base + seq * 1_000,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![text("service.name", load.app.clone())],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What ClickHouse holds for `app`: rows, distinct numbers, and the sum of numbers.
pub async fn stored(database: &str, app: &str) -> (u64, u64, u64) {
    growth_e2e::clickhouse(database)
        .query(
            "SELECT count(), uniqExact(toUInt64(numbers['seq'])), sum(toUInt64(numbers['seq'])) \
             FROM events WHERE app = ?",
        )
        .bind(app)
        .fetch_one::<(u64, u64, u64)>()
        .await
        .expect("count")
}

/// Asserts every number 0..total, except `missing_by_design`, is stored exactly once.
pub async fn assert_exactly_once(database: &str, app: &str, total: u64, missing_by_design: &[u64]) {
    let (rows, distinct, sum) = stored(database, app).await;
    let expected_rows = total - missing_by_design.len() as u64;
    let expected_sum =
        total * (total.saturating_sub(1)) / 2 - missing_by_design.iter().sum::<u64>();
    assert_eq!(
        (rows, distinct, sum),
        (expected_rows, expected_rows, expected_sum),
        "(rows, distinct numbers, sum of numbers) in ClickHouse: {} missing, {} stored twice",
        expected_rows.saturating_sub(distinct),
        rows - distinct
    );
}
