//! Round trip: what a real OTLP receiver gets from the tracker, over gRPC (a tonic
//! `LogsService` server) and over HTTP/protobuf (a raw HTTP/1.1 listener decoding
//! with prost). Checks the event contract field by field, and that the raw user id
//! appears nowhere in the bytes on the wire.

// A test file: its helpers (not only its #[test] functions) may unwrap; a panic is
// the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use growth_sdk::{Event, Protocol, Source, Tracker, UserHasher};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const KEY: &[u8] = b"roundtrip-key";
const APP: &str = "finbrain-test";

/// Everything the receiver got: decoded requests, their bytes, and HTTP request lines.
#[derive(Default)]
struct Captured {
    requests: Vec<ExportLogsServiceRequest>,
    bytes: Vec<u8>,
    request_lines: Vec<String>,
}

type Capture = Arc<Mutex<Captured>>;

fn record(capture: &Capture, request: ExportLogsServiceRequest, raw: &[u8]) {
    let mut captured = capture.lock().unwrap();
    captured.bytes.extend_from_slice(raw);
    captured.requests.push(request);
}

struct GrpcReceiver(Capture);

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let raw = request.encode_to_vec();
        record(&self.0, request, &raw);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn start_grpc(capture: Capture) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .serve_with_incoming(LogsServiceServer::new(GrpcReceiver(capture)), incoming),
    );
    format!("http://{addr}")
}

async fn start_http(capture: Capture) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_http(stream, Arc::clone(&capture)));
        }
    });
    format!("http://{addr}")
}

/// A minimal HTTP/1.1 OTLP receiver: one `Content-Length` body per request, keep-alive.
async fn serve_http(mut stream: TcpStream, capture: Capture) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body: Vec<u8> = buf.drain(..header_end + length).skip(header_end).collect();
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let content_type = head
            .lines()
            .find(|l| l.starts_with("content-type:"))
            .unwrap_or_default()
            .to_owned();
        capture
            .lock()
            .unwrap()
            .request_lines
            .push(format!("{request_line} | {content_type}"));
        let request = ExportLogsServiceRequest::decode(body.as_slice())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        record(&capture, request, &body);
        let response = ExportLogsServiceResponse::default().encode_to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            response.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&response).await?;
    }
}

fn text(value: &Option<AnyValue>) -> Option<&str> {
    match value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Every log record received, with the `service.name` and scope it came under.
fn records(capture: &Capture) -> Vec<(String, String, LogRecord)> {
    let captured = capture.lock().unwrap();
    let mut out = Vec::new();
    for request in &captured.requests {
        for resource_logs in &request.resource_logs {
            let resource = resource_logs.resource.clone().unwrap_or_default();
            let app = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(&kv.value))
                .unwrap_or_default()
                .to_owned();
            for scope_logs in &resource_logs.scope_logs {
                let scope = scope_logs.scope.clone().unwrap_or_default().name;
                for log in &scope_logs.log_records {
                    out.push((app.clone(), scope.clone(), log.clone()));
                }
            }
        }
    }
    out
}

fn by_event<'a>(records: &'a [(String, String, LogRecord)], name: &str) -> &'a LogRecord {
    let found: Vec<_> = records
        .iter()
        .filter(|(_, _, r)| string_attribute(&r.attributes, "event.name") == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "exactly one {name}");
    &found[0].2
}

fn send_and_check(
    protocol: Protocol,
    start: fn(Capture) -> std::pin::Pin<Box<dyn Future<Output = String>>>,
) {
    let runtime = Runtime::new().unwrap();
    let capture = Capture::default();
    let endpoint = runtime.block_on(start(Arc::clone(&capture)));

    let tracker = Tracker::builder(APP)
        .endpoint(endpoint)
        .protocol(protocol)
        .user_hash_key(Some(KEY.to_vec()))
        .batch_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let at = UNIX_EPOCH + Duration::new(1_764_000_000, 123_456_789);
    let before = SystemTime::now();
    tracker
        .track_event(Event::expense_logged("alice-raw-id", 12.5, "groceries", Source::Form).at(at));
    tracker.track(
        "landing_viewed",
        None,
        &[("ab_test", true.into()), ("visits", 3.into())],
    );
    tracker.track_event(Event::new(format!("custom_{}", "event")).user("bob-raw-id"));
    tracker.track(
        "opened",
        Some("carol-raw-id"),
        &[("user.id", "carol-raw-id".into())],
    );
    let report = tracker.shutdown().unwrap();
    assert_eq!(
        (
            report.tracked,
            report.delivered,
            report.failed,
            report.dropped
        ),
        (4, 4, 0, 0)
    );
    assert_eq!(report.attributes_dropped, 1, "the user.id attribute");

    let records = records(&capture);
    assert_eq!(records.len(), 4);
    for (app, scope, _) in &records {
        assert_eq!((app.as_str(), scope.as_str()), (APP, "growth-sdk"));
    }
    let hasher = UserHasher::new(Some(KEY.to_vec()));

    let expense = by_event(&records, "expense_logged");
    assert_eq!(expense.event_name, "expense_logged");
    assert_eq!(
        string_attribute(&expense.attributes, "user.hash"),
        Some(hasher.hash("alice-raw-id").as_str())
    );
    assert_eq!(expense.time_unix_nano, 1_764_000_000_123_456_789);
    let observed = UNIX_EPOCH + Duration::from_nanos(expense.observed_time_unix_nano);
    assert!(observed >= before, "observed time is the send time");
    assert_eq!(
        string_attribute(&expense.attributes, "source"),
        Some("form")
    );
    assert_eq!(
        string_attribute(&expense.attributes, "category"),
        Some("groceries")
    );
    assert_eq!(
        attribute(&expense.attributes, "amount"),
        Some(&Value::DoubleValue(12.5))
    );

    let anonymous = by_event(&records, "landing_viewed");
    assert!(attribute(&anonymous.attributes, "user.hash").is_none());
    assert_eq!(
        attribute(&anonymous.attributes, "ab_test"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(
        attribute(&anonymous.attributes, "visits"),
        Some(&Value::IntValue(3))
    );
    let now = UNIX_EPOCH + Duration::from_nanos(anonymous.time_unix_nano);
    assert!(
        now >= before && now <= SystemTime::now(),
        "no explicit time: sent as now"
    );

    let dynamic = by_event(&records, "custom_event");
    assert_eq!(dynamic.event_name, "custom_event");
    assert_eq!(
        string_attribute(&dynamic.attributes, "user.hash"),
        Some(hasher.hash("bob-raw-id").as_str())
    );

    let opened = by_event(&records, "opened");
    assert!(attribute(&opened.attributes, "user.id").is_none());

    let captured = capture.lock().unwrap();
    for raw in ["alice-raw-id", "bob-raw-id", "carol-raw-id"] {
        let found = captured
            .bytes
            .windows(raw.len())
            .any(|w| w == raw.as_bytes());
        assert!(!found, "{raw} must never leave the process");
    }
    if protocol == Protocol::Http {
        assert!(!captured.request_lines.is_empty());
        for line in &captured.request_lines {
            assert_eq!(
                line,
                "post /v1/logs http/1.1 | content-type: application/x-protobuf"
            );
        }
    }
}

#[test]
fn grpc_round_trip_keeps_the_contract() {
    send_and_check(Protocol::Grpc, |capture| Box::pin(start_grpc(capture)));
}

#[test]
fn http_round_trip_keeps_the_contract() {
    send_and_check(Protocol::Http, |capture| Box::pin(start_http(capture)));
}

#[test]
fn many_events_arrive_exactly_once_and_flush_waits_for_them() {
    let runtime = Runtime::new().unwrap();
    let capture = Capture::default();
    let endpoint = runtime.block_on(start_grpc(Arc::clone(&capture)));
    let tracker = Tracker::builder(APP)
        .endpoint(endpoint)
        .batch_size(256)
        .build()
        .unwrap();
    for i in 0..5_000 {
        tracker.expense_logged(
            &format!("user-{}", i % 300),
            1.0 + i as f64,
            "transport",
            Source::Pwa,
        );
    }
    let flushed = tracker.flush().unwrap();
    assert_eq!((flushed.delivered, flushed.pending), (5_000, 0));
    assert_eq!(records(&capture).len(), 5_000);
    tracker.pwa_installed("user-1");
    let report = tracker.shutdown().unwrap();
    assert_eq!((report.tracked, report.delivered), (5_001, 5_001));
    assert_eq!(records(&capture).len(), 5_001);
}
