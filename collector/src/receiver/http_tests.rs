//! Decoding tests of the OTLP/HTTP receiver, run against the router in memory.

use std::io::Write as _;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use flate2::Compression;
use flate2::write::GzEncoder;
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tower::ServiceExt as _;

use super::*;
use crate::receiver::EdgeRules;
use crate::testing::SpooledIntake;

const LIMIT: usize = 64 * 1024;

/// A JSON body as the OTLP specification's example and JS/curl senders write it:
/// camelCase, int64 as strings, hex (here upper-case) ids, an enum as a number.
const SPEC_JSON: &str = r#"{
  "resourceLogs": [{
    "resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "finbrain"}},
      {"key": "telemetry.sdk.language", "value": {"stringValue": "python"}}
    ]},
    "scopeLogs": [{
      "scope": {"name": "growth", "version": "1.0.0"},
      "logRecords": [{
        "timeUnixNano": "1764000000123456789",
        "observedTimeUnixNano": "1764000000200000000",
        "severityNumber": 9,
        "severityText": "INFO",
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "eee19b7ec3c1b174",
        "body": {"stringValue": "expense logged"},
        "attributes": [
          {"key": "event.name", "value": {"stringValue": "expense_logged"}},
          {"key": "user.id", "value": {"stringValue": "raw-id-7"}},
          {"key": "source", "value": {"stringValue": "messenger"}},
          {"key": "amount", "value": {"doubleValue": 12.5}},
          {"key": "items", "value": {"intValue": "3"}},
          {"key": "count", "value": {"intValue": 4}},
          {"key": "recurring", "value": {"boolValue": true}},
          {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}
        ]
      }, {
        "eventName": "report_requested",
        "attributes": [{"key": "user.hash", "value": {"stringValue": "NOT-A-HASH"}}]
      }, {
        "body": {"stringValue": "an ordinary log line"}
      }]
    }]
  }]
}"#;

struct Harness {
    router: Router,
    /// What was acknowledged is in the spool: `store.rows()` reads it back.
    store: SpooledIntake,
}

fn harness_with_spool(max_bytes: u64) -> Harness {
    let store = SpooledIntake::new(max_bytes);
    // SPEC_JSON's times are fixed (2025-11): widen the window so they stay accepted.
    let mut rules = EdgeRules::new(UserHasher::new(None));
    rules.map.time_window.max_age = crate::map::TimeWindow::MAX_AGE;
    let intake = store.intake.clone().with_rules(rules);
    Harness {
        router: router(intake, LIMIT, Duration::from_secs(5)),
        store,
    }
}

fn harness() -> Harness {
    harness_with_spool(1 << 30)
}

async fn post(
    h: &Harness,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::post(LOGS_PATH);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    if let Some(ce) = encoding {
        request = request.header(header::CONTENT_ENCODING, ce);
    }
    let request = request.body(Body::from(body)).expect("request");
    let response = h.router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn protobuf_request(events: usize) -> ExportLogsServiceRequest {
    let records = (0..events)
        .map(|i| LogRecord {
            event_name: "expense_logged".into(),
            attributes: vec![KeyValue {
                key: "user.id".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(format!("user-{i}"))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}

#[tokio::test]
async fn otlp_json_as_the_spec_writes_it() {
    let h = harness();
    let (status, headers, body) = post(
        &h,
        Some("application/json"),
        None,
        SPEC_JSON.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body = json(&body);
    assert_eq!(body["partialSuccess"]["rejectedLogRecords"], 1);
    assert!(
        body["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("invalid_user_hash=1")
    );

    let rows = h.store.rows();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.app.as_str(), row.event.as_str(), row.source.as_str()),
        ("finbrain", "expense_logged", "messenger")
    );
    assert_eq!(row.event_time.timestamp_millis(), 1_764_000_000_123);
    assert_eq!(
        row.user_hash,
        UserHasher::new(None).hash("raw-id-7").as_str()
    );
    assert_eq!(
        row.numbers,
        vec![
            ("amount".to_owned(), 12.5),
            ("items".to_owned(), 3.0),
            ("count".to_owned(), 4.0)
        ]
    );
    assert!(
        row.properties
            .contains(&("tags".to_owned(), r#"["a"]"#.to_owned()))
    );
    assert!(!format!("{rows:?}").contains("raw-id-7"));
}

#[tokio::test]
async fn full_success_is_an_empty_object() {
    let h = harness();
    let body = serde_json::to_vec(&protobuf_request(2)).expect("serialize");
    let (status, _, body) = post(&h, Some("application/json; charset=utf-8"), None, body).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"{}"[..]));
    assert_eq!(h.store.rows().len(), 2);
}

#[tokio::test]
async fn protobuf_is_answered_in_protobuf() {
    let h = harness();
    let (status, headers, body) = post(
        &h,
        Some("application/x-protobuf"),
        None,
        protobuf_request(3).encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-protobuf");
    let response = ExportLogsServiceResponse::decode(body.as_slice()).expect("protobuf response");
    assert_eq!(response.partial_success, None);
    assert_eq!(h.store.rows().len(), 3);
}

#[tokio::test]
async fn gzip_bodies_are_decompressed() {
    let h = harness();
    let body = gzip(&protobuf_request(2).encode_to_vec());
    let (status, _, _) = post(&h, Some("application/x-protobuf"), Some("gzip"), body).await;
    assert_eq!(status, StatusCode::OK);
    let body = gzip(SPEC_JSON.as_bytes());
    let (status, _, _) = post(&h, Some("application/json"), Some("gzip"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.store.rows().len(), 3);
}

#[tokio::test]
async fn undecodable_bodies_are_400_with_a_reason() {
    let h = harness();
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "application/x-protobuf",
            None,
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("application/json", None, b"{\"resourceLogs\": [".to_vec()),
        ("application/json", None, b"not json at all".to_vec()),
        ("application/json", None, Vec::new()),
        (
            "application/json",
            None,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#
                .to_vec(),
        ),
        (
            "application/json",
            None,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}"#.to_vec(),
        ),
        (
            "application/x-protobuf",
            Some("gzip"),
            b"this is not gzip".to_vec(),
        ),
    ];
    for (content_type, encoding, body) in cases {
        let (status, headers, body) = post(&h, Some(content_type), encoding, body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{content_type} {encoding:?}"
        );
        assert_eq!(headers[header::CONTENT_TYPE], content_type);
        let message = if content_type == "application/json" {
            json(&body)["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            RpcStatus::decode(body.as_slice())
                .expect("google.rpc.Status")
                .message
        };
        assert!(
            !message.is_empty(),
            "no reason given for {content_type} {encoding:?}"
        );
    }
    assert!(h.store.rows().is_empty());
}

#[tokio::test]
async fn unsupported_content_types_are_415() {
    let h = harness();
    for content_type in [None, Some("text/plain"), Some("application/grpc")] {
        let (status, _, body) = post(&h, content_type, None, b"{}".to_vec()).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));
    }
    let (status, _, _) = post(&h, Some("application/json"), Some("br"), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_also_after_decompression() {
    let h = harness();
    let big = protobuf_request(5_000).encode_to_vec();
    assert!(big.len() > LIMIT);
    let (status, _, _) = post(&h, Some("application/x-protobuf"), None, big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let compressed = gzip(&big);
    assert!(compressed.len() < LIMIT, "the compressed body alone fits");
    let (status, _, body) =
        post(&h, Some("application/x-protobuf"), Some("gzip"), compressed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        RpcStatus::decode(body.as_slice())
            .expect("status")
            .message
            .contains("larger than")
    );
    assert!(h.store.rows().is_empty());
}

#[tokio::test]
async fn a_full_spool_is_429_with_retry_after_so_senders_retry() {
    let h = harness_with_spool(64);
    let (status, headers, body) = post(
        &h,
        Some("application/json"),
        None,
        SPEC_JSON.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "2");
    assert_eq!(json(&body)["code"], 8);
    assert!(h.store.rows().is_empty());
}

#[tokio::test]
async fn requests_without_events_are_answered_without_storage() {
    // Not-growth records never reach the spool, so a full spool does not matter.
    let h = harness_with_spool(64);
    let body =
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hi"}}]}]}]}"#;
    let (status, _, body) = post(&h, Some("application/json"), None, body.to_vec()).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"{}"[..]));
}

#[tokio::test]
async fn other_paths_and_methods_are_not_served() {
    let h = harness();
    let response = h
        .router
        .clone()
        .oneshot(
            Request::get(LOGS_PATH)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = h
        .router
        .clone()
        .oneshot(
            Request::post("/v1/traces")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn names_of_a_request_refused_as_undecodable_are_not_learned() {
    let store = SpooledIntake::new(1 << 30);
    let mut rules = EdgeRules::new(UserHasher::new(None));
    // Room for one app only.
    rules.catalog = std::sync::Arc::new(crate::catalog::Catalog::new(1, 10));
    let catalog = rules.catalog.clone();
    let intake = store.intake.clone().with_rules(rules);
    let h = Harness {
        router: router(intake, LIMIT, Duration::from_secs(5)),
        store,
    };
    let of_app = |app: &str| {
        let mut request = protobuf_request(1);
        request.resource_logs[0].resource = Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(app.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        request.encode_to_vec()
    };
    // A whole first resource of app "ghost", then a truncated field: refused whole.
    let mut damaged = of_app("ghost");
    damaged.extend_from_slice(&[0x0a, 0x05, 0x01]);
    let (status, _, _) = post(&h, Some("application/x-protobuf"), None, damaged).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(catalog.apps(), 0, "the refused request's app is not kept");
    // So the one slot is still free for a real app.
    let (status, _, body) = post(&h, Some("application/x-protobuf"), None, of_app("real")).await;
    assert_eq!(status, StatusCode::OK);
    let answer = ExportLogsServiceResponse::decode(body.as_slice()).expect("answer");
    assert_eq!(answer.partial_success, None, "nothing rejected");
    let rows = h.store.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].app, "real");
}
