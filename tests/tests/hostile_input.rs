//! Hostile input, table-driven, against the real collector and ClickHouse.
//!
//! Every case is one request (or one abused connection) with its documented answer
//! (docs/ingest.md, "Answers"). After each case the test checks: the answer,
//! the collector still ready, the good records of the same request stored (each good
//! record carries its case's name in the `case` attribute), and the collector's peak
//! RSS (`VmHWM`, reset through `/proc/<pid>/clear_refs` before every case) not more
//! than 64× the request's size above its RSS before the case, with a floor of 32 MiB
//! for small requests and never more than 256 MiB. Stalled connections run
//! concurrently and must be closed within seconds (the test sets short timeouts).

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use growth_e2e::{Collector, clickhouse, unique_database};
use growth_schema::user_hash::UserHasher;
use growth_testkit::otlp::{RawCodec, kv, s};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const APP: &str = "hostile";
const ALL_TOKEN: &str = "hostile-all-apps";
const ONE_TOKEN: &str = "hostile-one-app";
const MIB: usize = 1 << 20;
/// Secrets that must never be stored raw anywhere.
const RAW: [&str; 5] = [
    "raw-enduser-7",
    "raw@example.org",
    "203.0.113.77",
    "raw-nested-user",
    "raw-custom-secret",
];

// ── building requests ───────────────────────────────────────────────────────────

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// A growth record of `case`, `offset_s` seconds from now (a minute ago by default).
fn rec(case: &str, event: &str, offset_s: i64, attrs: Vec<KeyValue>) -> LogRecord {
    let time = now_nanos() + i128::from(offset_s) * 1_000_000_000;
    let mut attributes = vec![kv("case", s(case)), kv("user.id", s("hostile-user"))];
    attributes.extend(attrs);
    LogRecord {
        event_name: event.to_owned(),
        time_unix_nano: u64::try_from(time).unwrap_or(u64::MAX),
        attributes,
        ..Default::default()
    }
}

fn good(case: &str) -> LogRecord {
    rec(case, "expense_logged", -60, vec![])
}

fn resource(app: &str, records: Vec<LogRecord>) -> ResourceLogs {
    ResourceLogs {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(app))],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn req(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![resource(APP, records)],
    }
}

fn pb(request: &ExportLogsServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

fn len_field(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// About `bytes` of protobuf holding empty log records (2 bytes each): the
/// amplification attack of the finding.
fn empty_records(bytes: usize) -> Vec<u8> {
    let scope = [0x12_u8, 0x00].repeat(bytes / 2);
    let mut resource_logs = Vec::new();
    len_field(&mut resource_logs, 0x12, &scope);
    let mut out = Vec::new();
    len_field(&mut out, 0x0a, &resource_logs);
    out
}

/// One record with `n` empty attributes (2 bytes each).
fn empty_attributes(n: usize) -> Vec<u8> {
    let attrs = [0x32_u8, 0x00].repeat(n);
    let mut scope = Vec::new();
    len_field(&mut scope, 0x12, &attrs);
    let mut resource_logs = Vec::new();
    len_field(&mut resource_logs, 0x12, &scope);
    let mut out = Vec::new();
    len_field(&mut out, 0x0a, &resource_logs);
    out
}

/// A good record whose attribute `list` holds `n` empty array elements (2 bytes each),
/// written by hand: prost in a debug build takes seconds for a million elements.
fn tiny_array_elements(n: usize) -> Vec<u8> {
    let array = [0x0a_u8, 0x00].repeat(n);
    let mut any_value = Vec::new();
    len_field(&mut any_value, 0x2a, &array);
    let mut key_value = Vec::new();
    len_field(&mut key_value, 0x0a, b"list");
    len_field(&mut key_value, 0x12, &any_value);
    let mut record = rec("tiny_array_elements", "e", -60, vec![]).encode_to_vec();
    len_field(&mut record, 0x32, &key_value);
    let mut scope = Vec::new();
    len_field(&mut scope, 0x12, &record);
    let mut resource_logs = Vec::new();
    let app = Resource {
        attributes: vec![kv("service.name", s(APP))],
        ..Default::default()
    };
    len_field(&mut resource_logs, 0x0a, &app.encode_to_vec());
    len_field(&mut resource_logs, 0x12, &scope);
    let mut out = Vec::new();
    len_field(&mut out, 0x0a, &resource_logs);
    out
}

fn nested(depth: usize) -> AnyKind {
    let mut value = s("leaf");
    for _ in 0..depth {
        value = AnyKind::KvlistValue(KeyValueList {
            values: vec![kv("k", value)],
        });
    }
    value
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn json_record(case: &str, extra: Value) -> Value {
    let mut attributes = vec![
        json!({"key": "case", "value": {"stringValue": case}}),
        json!({"key": "user.id", "value": {"stringValue": "hostile-user"}}),
    ];
    if let Value::Array(more) = extra {
        attributes.extend(more);
    }
    json!({
        "timeUnixNano": (now_nanos() - 60_000_000_000).to_string(),
        "observed_time_unix_nano": null,
        "severityNumber": "SEVERITY_NUMBER_INFO",
        "eventName": "expense_logged",
        "attributes": attributes
    })
}

fn json_req(records: Vec<Value>) -> Vec<u8> {
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": APP}}]},
        "scopeLogs": [{"logRecords": records}]
    }]})
    .to_string()
    .into_bytes()
}

// ── the table ───────────────────────────────────────────────────────────────────

#[derive(Clone, Copy)]
enum Token {
    All,
    One,
    Wrong,
    Basic,
    Missing,
}

impl Token {
    fn header(self) -> Option<String> {
        match self {
            Token::All => Some(format!("Bearer {ALL_TOKEN}")),
            Token::One => Some(format!("Bearer {ONE_TOKEN}")),
            Token::Wrong => Some("Bearer not-a-token".into()),
            Token::Basic => Some("Basic aG9zdGlsZTpvbmU=".into()),
            Token::Missing => None,
        }
    }
}

enum Send {
    Http {
        content_type: Option<&'static str>,
        encoding: Option<&'static str>,
        token: Token,
        body: Vec<u8>,
    },
    Grpc {
        token: Token,
        messages: Vec<Vec<u8>>,
        gzip: bool,
    },
}

enum Expect {
    /// HTTP status, and a piece of the message.
    Http(u16, &'static str),
    /// gRPC status code, and a piece of the message.
    Grpc(Code, &'static str),
    /// Accepted; this many records rejected, the message naming the reason.
    Partial(i64, &'static str),
}

struct Case {
    name: &'static str,
    send: Send,
    expect: Expect,
    /// Good records of the request that must be stored.
    stored: u64,
}

fn http(content_type: &'static str, body: Vec<u8>) -> Send {
    Send::Http {
        content_type: Some(content_type),
        encoding: None,
        token: Token::All,
        body,
    }
}

fn proto(body: Vec<u8>) -> Send {
    http("application/x-protobuf", body)
}

fn grpc(messages: Vec<Vec<u8>>) -> Send {
    Send::Grpc {
        token: Token::All,
        messages,
        gzip: false,
    }
}

fn case(name: &'static str, send: Send, expect: Expect, stored: u64) -> Case {
    Case {
        name,
        send,
        expect,
        stored,
    }
}

fn cases() -> Vec<Case> {
    use Expect::{Grpc as G, Http as H, Partial as P};
    let truncated = {
        let body = pb(&req(vec![good("x"), good("x")]));
        body[..body.len() / 2].to_vec()
    };
    let identifying = rec(
        "identifying_attributes",
        "expense_logged",
        -60,
        vec![
            kv("enduser.id", s(RAW[0])),
            kv("user.email", s(RAW[1])),
            kv("client.address", s(RAW[2])),
            kv(
                "ctx",
                AnyKind::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(AnyKind::KvlistValue(KeyValueList {
                            values: vec![kv("user.id", s(RAW[3]))],
                        })),
                    }],
                }),
            ),
            kv("my.secret", s(RAW[4])),
        ],
    );
    let many_apps = ExportLogsServiceRequest {
        resource_logs: (0..10)
            .map(|i| {
                resource(
                    &format!("many-{i}"),
                    vec![rec("many_apps", "e", -60, vec![])],
                )
            })
            .collect(),
    };
    let many_names = ExportLogsServiceRequest {
        resource_logs: vec![resource(
            "many-0",
            (0..10)
                .map(|i| rec("many_event_names", &format!("name-{i}"), -60, vec![]))
                .collect(),
        )],
    };
    let two_apps = ExportLogsServiceRequest {
        resource_logs: vec![
            resource(APP, vec![good("token_one_app_partial")]),
            resource("other-app", vec![good("token_one_app_partial")]),
        ],
    };
    let other_app = ExportLogsServiceRequest {
        resource_logs: vec![resource("other-app", vec![good("token_forbidden")])],
    };
    let json_mapping = json_req(vec![json_record(
        "json_mapping",
        json!([
            {"key": "nan", "value": {"doubleValue": "NaN"}},
            {"key": "inf", "value": {"doubleValue": "Infinity"}},
            {"key": "ninf", "value": {"double_value": "-Infinity"}},
            {"key": "big", "value": {"intValue": "9223372036854775807"}},
            {"key": "sev", "value": {"stringValue": "x"}}
        ]),
    )]);
    let json_deep = {
        let mut value = json!({"stringValue": "leaf"});
        for _ in 0..200 {
            value = json!({"arrayValue": {"values": [value]}});
        }
        json_req(vec![json_record(
            "json_deep",
            json!([{"key": "deep", "value": value}]),
        )])
    };
    let json_many = {
        let records = vec![json!({}); 70_000];
        json_req(records)
    };
    let huge_value = pb(&req(vec![rec(
        "huge_value",
        "expense_logged",
        -60,
        vec![kv("note", s(&"v".repeat(8 * MIB)))],
    )]));
    let huge_name = pb(&req(vec![
        good("huge_event_name"),
        rec("huge_event_name", &"n".repeat(200), -60, vec![]),
    ]));
    let bad_app = pb(&ExportLogsServiceRequest {
        resource_logs: vec![
            resource("bad\napp", vec![good("control_char_app")]),
            resource(APP, vec![good("control_char_app")]),
        ],
    });
    // 17 gzip members of 1 MiB of zeros each: a valid gzip stream (RFC 1952), small.
    let gzip_bomb = gzip(&vec![0_u8; MIB]).repeat(17);
    let far_future = |name| {
        pb(&req(vec![
            good(name),
            rec(name, "e", 180 * 365 * 86_400, vec![]),
        ]))
    };
    let grpc_two = pb(&req(vec![good("grpc_two_messages")]));

    vec![
        // ── protobuf over HTTP
        case(
            "garbage_protobuf",
            proto(vec![0xff; 64]),
            H(400, "not a protobuf"),
            0,
        ),
        case(
            "truncated_protobuf",
            proto(truncated.clone()),
            H(400, "protobuf"),
            0,
        ),
        case("empty_protobuf", proto(Vec::new()), H(200, ""), 0),
        case(
            "tiny_records_4mib",
            proto(empty_records(4 * MIB)),
            H(400, "more than 65536 log records"),
            0,
        ),
        case(
            "tiny_records_15mib",
            proto(empty_records(15 * MIB)),
            H(400, "more than 65536 log records"),
            0,
        ),
        case(
            "tiny_attributes_3mib",
            proto(empty_attributes(1_500_000)),
            H(400, "more than 1048576 attributes"),
            0,
        ),
        case(
            "tiny_attributes_at_the_limit",
            proto(empty_attributes(1_000_000)),
            H(200, ""),
            0,
        ),
        case(
            "tiny_array_elements",
            proto(tiny_array_elements(1_000_000)),
            H(200, ""),
            1,
        ),
        case(
            "tiny_resource_groups_4mib",
            proto([0x0a_u8, 0x00].repeat(2 * MIB)),
            H(400, "resource/scope groups"),
            0,
        ),
        case(
            "deep_nesting_protobuf",
            proto(pb(&req(vec![rec(
                "deep",
                "e",
                -60,
                vec![kv("d", nested(50))],
            )]))),
            H(400, "deeper than 8"),
            0,
        ),
        case(
            "deep_nesting_ok",
            proto(pb(&req(vec![rec(
                "deep_nesting_ok",
                "e",
                -60,
                vec![kv("d", nested(7))],
            )]))),
            H(200, ""),
            1,
        ),
        case("huge_value", proto(huge_value), H(200, ""), 1),
        case(
            "huge_event_name",
            proto(huge_name),
            P(1, "invalid_event_name"),
            1,
        ),
        case(
            "oversize_body",
            proto(vec![0; 17 * MIB]),
            H(413, "larger than"),
            0,
        ),
        case(
            "gzip_bomb",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: Some("gzip"),
                token: Token::All,
                body: gzip_bomb,
            },
            H(413, "after decompression"),
            0,
        ),
        case(
            "corrupt_gzip",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: Some("gzip"),
                token: Token::All,
                body: b"not gzip at all".to_vec(),
            },
            H(400, "gzip"),
            0,
        ),
        case(
            "brotli_encoding",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: Some("br"),
                token: Token::All,
                body: pb(&req(vec![good("x")])),
            },
            H(415, "\"br\" is not supported"),
            0,
        ),
        case(
            "double_gzip_encoding",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: Some("gzip, gzip"),
                token: Token::All,
                body: gzip(&gzip(&pb(&req(vec![good("x")])))),
            },
            H(415, "is not supported"),
            0,
        ),
        case(
            "text_plain",
            http("text/plain", b"hello".to_vec()),
            H(415, "Content-Type must be"),
            0,
        ),
        case(
            "no_content_type",
            Send::Http {
                content_type: None,
                encoding: None,
                token: Token::All,
                body: b"{}".to_vec(),
            },
            H(415, "Content-Type must be"),
            0,
        ),
        // ── OTLP/JSON
        case(
            "truncated_json",
            http("application/json", b"{\"resourceLogs\": [".to_vec()),
            H(400, "OTLP/JSON"),
            0,
        ),
        case(
            "not_json",
            http("application/json", b"hello".to_vec()),
            H(400, "OTLP/JSON"),
            0,
        ),
        case(
            "json_mapping",
            http("application/json", json_mapping),
            H(200, ""),
            1,
        ),
        case(
            "json_deep_nesting",
            http("application/json", json_deep),
            H(400, "deeper than 8"),
            0,
        ),
        case(
            "json_tiny_records",
            http("application/json", json_many),
            H(400, "more than 65536 log records"),
            0,
        ),
        case(
            "json_bad_double",
            http(
                "application/json",
                json_req(vec![json_record(
                    "x",
                    json!([{"key": "d", "value": {"doubleValue": "nan"}}]),
                )]),
            ),
            H(400, "not a double"),
            0,
        ),
        // ── records that break the contract, beside good ones
        case(
            "far_future_2200",
            proto(far_future("far_future_2200")),
            P(1, "time_in_future"),
            1,
        ),
        case(
            "far_past_1970",
            proto(pb(&req(vec![
                good("far_past_1970"),
                LogRecord {
                    time_unix_nano: 1,
                    ..good("far_past_1970")
                },
            ]))),
            P(1, "time_too_old"),
            1,
        ),
        case(
            "two_hours_ahead",
            proto(pb(&req(vec![
                good("two_hours_ahead"),
                rec("two_hours_ahead", "e", 7_200, vec![]),
            ]))),
            P(1, "time_in_future"),
            1,
        ),
        case(
            "forty_days_ago",
            proto(pb(&req(vec![
                good("forty_days_ago"),
                rec("forty_days_ago", "e", -40 * 86_400, vec![]),
            ]))),
            P(1, "time_too_old"),
            1,
        ),
        case(
            "max_u64_time",
            proto(pb(&req(vec![
                good("max_u64_time"),
                LogRecord {
                    time_unix_nano: u64::MAX,
                    ..good("max_u64_time")
                },
            ]))),
            P(1, "invalid_time"),
            1,
        ),
        case(
            "bad_user_hash",
            proto(pb(&req(vec![
                good("bad_user_hash"),
                rec(
                    "bad_user_hash",
                    "e",
                    -60,
                    vec![kv("user.hash", s("NOT-A-HASH"))],
                ),
            ]))),
            P(1, "invalid_user_hash"),
            1,
        ),
        case(
            "huge_user_id",
            proto(pb(&req(vec![
                good("huge_user_id"),
                LogRecord {
                    attributes: vec![
                        kv("case", s("huge_user_id")),
                        kv("user.id", s(&"u".repeat(2000))),
                    ],
                    ..good("huge_user_id")
                },
            ]))),
            P(1, "invalid_user_id"),
            1,
        ),
        case("control_char_app", proto(bad_app), P(1, "invalid_app"), 1),
        case(
            "identifying_attributes",
            proto(pb(&req(vec![identifying]))),
            H(200, ""),
            1,
        ),
        case("many_apps", proto(pb(&many_apps)), P(5, "too_many_apps"), 5),
        case(
            "many_event_names",
            proto(pb(&many_names)),
            P(5, "too_many_event_names"),
            5,
        ),
        // ── authentication
        case(
            "http_missing_token",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: None,
                token: Token::Missing,
                body: pb(&req(vec![good("x")])),
            },
            H(401, "missing bearer token"),
            0,
        ),
        case(
            "http_wrong_token",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: None,
                token: Token::Wrong,
                body: pb(&req(vec![good("x")])),
            },
            H(401, "unknown bearer token"),
            0,
        ),
        case(
            "http_basic_auth",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: None,
                token: Token::Basic,
                body: pb(&req(vec![good("x")])),
            },
            H(401, "not `Bearer"),
            0,
        ),
        case(
            "token_forbidden",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: None,
                token: Token::One,
                body: pb(&other_app),
            },
            H(403, "may not write"),
            0,
        ),
        case(
            "token_one_app_partial",
            Send::Http {
                content_type: Some("application/x-protobuf"),
                encoding: None,
                token: Token::One,
                body: pb(&two_apps),
            },
            P(1, "app_not_allowed"),
            1,
        ),
        // ── gRPC
        case(
            "grpc_garbage",
            grpc(vec![vec![0xff; 64]]),
            G(Code::InvalidArgument, "not a protobuf"),
            0,
        ),
        case(
            "grpc_truncated",
            grpc(vec![truncated]),
            G(Code::InvalidArgument, "protobuf"),
            0,
        ),
        case(
            "grpc_oversize",
            grpc(vec![vec![0; 17 * MIB]]),
            G(Code::InvalidArgument, "too large"),
            0,
        ),
        case(
            "grpc_two_messages",
            grpc(vec![grpc_two.clone(), grpc_two]),
            G(Code::InvalidArgument, "more than one message"),
            0,
        ),
        case(
            "grpc_no_message",
            grpc(vec![]),
            G(Code::InvalidArgument, "issing request message"),
            0,
        ),
        case(
            "grpc_tiny_records_4mib",
            grpc(vec![empty_records(4 * MIB)]),
            G(Code::InvalidArgument, "more than 65536 log records"),
            0,
        ),
        case(
            "grpc_deep_nesting",
            grpc(vec![pb(&req(vec![rec(
                "deep",
                "e",
                -60,
                vec![kv("d", nested(500))],
            )]))]),
            G(Code::InvalidArgument, "deeper than 8"),
            0,
        ),
        case(
            "grpc_missing_token",
            Send::Grpc {
                token: Token::Missing,
                messages: vec![pb(&req(vec![good("x")]))],
                gzip: false,
            },
            G(Code::Unauthenticated, "missing bearer token"),
            0,
        ),
        case(
            "grpc_wrong_token",
            Send::Grpc {
                token: Token::Wrong,
                messages: vec![pb(&req(vec![good("x")]))],
                gzip: false,
            },
            G(Code::Unauthenticated, "unknown bearer token"),
            0,
        ),
        case(
            "grpc_forbidden",
            Send::Grpc {
                token: Token::One,
                messages: vec![pb(&other_app)],
                gzip: false,
            },
            G(Code::PermissionDenied, "may not write"),
            0,
        ),
        case(
            "grpc_gzip_far_future",
            Send::Grpc {
                token: Token::All,
                messages: vec![far_future("grpc_gzip_far_future")],
                gzip: true,
            },
            P(1, "time_in_future"),
            1,
        ),
    ]
}

// ── sending ─────────────────────────────────────────────────────────────────────

/// What came back: an HTTP status or a gRPC code, the message, and partial success.
#[derive(Debug)]
struct Answer {
    http: Option<u16>,
    grpc: Option<Code>,
    message: String,
    rejected: i64,
}

async fn send(client: &reqwest::Client, collector: &Collector, send: &Send) -> Answer {
    match send {
        Send::Http {
            content_type,
            encoding,
            token,
            body,
        } => {
            let mut request = client
                .post(format!("{}/v1/logs", collector.http_endpoint))
                .body(body.clone());
            if let Some(ct) = content_type {
                request = request.header("content-type", *ct);
            }
            if let Some(ce) = encoding {
                request = request.header("content-encoding", *ce);
            }
            if let Some(auth) = token.header() {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let protobuf = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
            let bytes = response.bytes().await.expect("body");
            let (message, rejected) = if status == 200 && protobuf {
                let answer =
                    ExportLogsServiceResponse::decode(bytes.as_ref()).expect("protobuf answer");
                let partial = answer.partial_success.unwrap_or_default();
                (partial.error_message, partial.rejected_log_records)
            } else if status == 200 {
                let answer: Value = serde_json::from_slice(&bytes).expect("json answer");
                let partial = &answer["partialSuccess"];
                let rejected = partial["rejectedLogRecords"]
                    .as_i64()
                    .or_else(|| {
                        partial["rejectedLogRecords"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                    })
                    .unwrap_or(0);
                (
                    partial["errorMessage"].as_str().unwrap_or("").to_owned(),
                    rejected,
                )
            } else if protobuf {
                (rpc_status_message(&bytes), 0)
            } else {
                (String::from_utf8_lossy(&bytes).into_owned(), 0)
            };
            Answer {
                http: Some(status),
                grpc: None,
                message,
                rejected,
            }
        }
        Send::Grpc {
            token,
            messages,
            gzip,
        } => grpc_send(&collector.grpc_endpoint, *token, messages.clone(), *gzip).await,
    }
}

/// The message of a `google.rpc.Status` (field 2), decoded by hand.
fn rpc_status_message(bytes: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    RpcStatus::decode(bytes)
        .map(|s| s.message)
        .unwrap_or_else(|e| format!("undecodable status: {e}"))
}

async fn grpc_send(endpoint: &str, token: Token, messages: Vec<Vec<u8>>, gzip: bool) -> Answer {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connects");
    let mut client = tonic::client::Grpc::new(channel);
    if gzip {
        client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    client.ready().await.expect("ready");
    let mut request =
        tonic::Request::new(tokio_stream::iter(messages.into_iter().map(Bytes::from)));
    if let Some(auth) = token.header() {
        request
            .metadata_mut()
            .insert("authorization", auth.parse().expect("metadata"));
    }
    let path = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        .parse()
        .expect("path");
    // Client streaming, so that zero or two messages can be sent on a unary method.
    match client.client_streaming(request, path, RawCodec).await {
        Ok(response) => {
            let partial = response.into_inner().partial_success.unwrap_or_default();
            Answer {
                http: None,
                grpc: Some(Code::Ok),
                message: partial.error_message,
                rejected: partial.rejected_log_records,
            }
        }
        Err(status) => Answer {
            http: None,
            grpc: Some(status.code()),
            message: status.message().to_owned(),
            rejected: 0,
        },
    }
}

fn check(case: &Case, answer: &Answer) {
    let name = case.name;
    match case.expect {
        Expect::Http(status, needle) => {
            assert_eq!(answer.http, Some(status), "{name}: {answer:?}");
            assert!(
                answer.message.contains(needle),
                "{name}: message {:?} lacks {needle:?}",
                answer.message
            );
            if status >= 400 {
                assert!(
                    !answer.message.trim().is_empty(),
                    "{name}: a {status} must say what was wrong"
                );
            } else {
                assert_eq!(answer.rejected, 0, "{name}: {answer:?}");
            }
        }
        Expect::Grpc(code, needle) => {
            assert_eq!(answer.grpc, Some(code), "{name}: {answer:?}");
            assert!(
                answer.message.contains(needle),
                "{name}: message {:?} lacks {needle:?}",
                answer.message
            );
        }
        Expect::Partial(rejected, reason) => {
            assert!(
                answer.http == Some(200) || answer.grpc == Some(Code::Ok),
                "{name}: {answer:?}"
            );
            assert_eq!(answer.rejected, rejected, "{name}: {answer:?}");
            assert!(answer.message.contains(reason), "{name}: {answer:?}");
        }
    }
}

// ── memory ──────────────────────────────────────────────────────────────────────

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resets the peak (VmHWM) to the current RSS; returns the current RSS in bytes.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
    status_kib(pid, "VmRSS:") * 1024
}

/// What a request may expand to before decoding: its bytes, or for a gzip body its
/// decompressed bytes up to --max-request-bytes (16 MiB), where the collector stops.
fn request_size(send: &Send) -> usize {
    match send {
        Send::Http {
            body,
            encoding: Some("gzip"),
            ..
        } => {
            let mut inflated = Vec::new();
            let decoder = flate2::read::MultiGzDecoder::new(body.as_slice());
            let _ = std::io::Read::read_to_end(
                &mut std::io::Read::take(decoder, 16 * MIB as u64),
                &mut inflated,
            );
            body.len().max(inflated.len())
        }
        Send::Http { body, .. } => body.len(),
        Send::Grpc { messages, .. } => messages.iter().map(Vec::len).sum(),
    }
}

/// The bound of the issue: 64× the request, at most 256 MiB; 32 MiB for small ones
/// (allocator and runtime noise).
fn memory_bound(size: usize) -> u64 {
    (64 * size as u64).clamp(32 * MIB as u64, 256 * MIB as u64)
}

// ── stalled connections ─────────────────────────────────────────────────────────

/// Writes `first`, then one byte of `drip` every `every`; returns how long until the
/// server closed the connection (and what it answered, if anything).
async fn stall(addr: String, first: Vec<u8>, drip: Vec<u8>, every: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.write_all(&first).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0_u8; 1024];
    let mut drip = drip.into_iter();
    loop {
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                if started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                if let Some(byte) = drip.next()
                    && stream.write_all(&[byte]).await.is_err()
                {
                    break;
                }
            }
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

// ── the test ────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_their_documented_answers() {
    let database = unique_database("hostile");
    let dir = std::env::temp_dir().join(format!("growth-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join("tokens.jsonl");
    std::fs::write(
        &tokens,
        format!(
            "{{\"token\": \"{ALL_TOKEN}\", \"apps\": [\"*\"]}}\n{{\"token_sha256\": \"{}\", \"apps\": [\"{APP}\"]}}\n",
            UserHasher::new(None).hash(ONE_TOKEN).as_str()
        ),
    )
    .expect("tokens file");
    let tokens_flag = format!("--auth-tokens-file={}", tokens.display());
    let mut collector = Collector::start_with(
        &database,
        Some("hostile-key"),
        &[
            &tokens_flag,
            "--max-apps=6",
            "--max-events-per-app=6",
            "--identifying-attributes=my.secret",
            "--header-read-timeout=2s",
            "--request-read-timeout=3s",
            "--idle-timeout=3s",
        ],
    )
    .await;
    let pid = collector.process.pid();
    let http_addr = collector
        .http_endpoint
        .trim_start_matches("http://")
        .to_owned();
    let grpc_addr = collector
        .grpc_endpoint
        .trim_start_matches("http://")
        .to_owned();

    // Stalled connections, all at once, while the table runs.
    let second = Duration::from_secs(1);
    let half = Duration::from_millis(500);
    let stalled = vec![
        ("http_unfinished_headers", tokio::spawn(stall(http_addr.clone(), b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n".to_vec(), vec![], second))),
        ("http_headers_byte_by_byte", tokio::spawn(stall(http_addr.clone(), b"POST /v1/logs HTTP/1.1\r\n".to_vec(), b"Host: slowly-but-surely-sending-headers\r\n".to_vec(), half))),
        ("http_body_byte_by_byte", tokio::spawn(stall(
            http_addr.clone(),
            format!("POST /v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALL_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{").into_bytes(),
            vec![b' '; 200],
            half,
        ))),
        ("http_idle_connection", tokio::spawn(stall(http_addr.clone(), vec![], vec![], second))),
        ("http2_half_preface", tokio::spawn(stall(grpc_addr.clone(), b"PRI * HTTP/2.0\r\n".to_vec(), vec![], second))),
        ("grpc_idle_connection", tokio::spawn(stall(grpc_addr.clone(), vec![], vec![], second))),
    ];

    // A fresh connection per case: a connection the collector closes after refusing a
    // body unread (413) must not be reused for the next case (seen: IncompleteMessage).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let started = Instant::now();
    let baseline = reset_peak(pid);
    let mut report = Vec::new();
    let built = Instant::now();
    let cases = cases();
    eprintln!("built the requests in {:?}", built.elapsed());
    assert!(
        cases.len() + stalled.len() >= 40,
        "the issue asks for at least 40 hostile requests"
    );
    for case in &cases {
        let before = reset_peak(pid);
        let sent = Instant::now();
        let answer = send(&client, &collector, &case.send).await;
        let took = sent.elapsed();
        let peak = status_kib(pid, "VmHWM:") * 1024;
        check(case, &answer);
        let size = request_size(&case.send);
        let rise = peak.saturating_sub(before);
        report.push(format!(
            "{:<28} {:>9} B  peak +{:>6.1} MiB  {:>5} ms",
            case.name,
            size,
            rise as f64 / MIB as f64,
            took.as_millis()
        ));
        assert!(
            rise <= memory_bound(size),
            "{}: a {size}-byte request raised peak RSS by {rise} bytes (bound {})",
            case.name,
            memory_bound(size)
        );
        assert!(
            collector.process.is_running(),
            "{}: the collector died:\n{}",
            case.name,
            collector.process.output()
        );
        let ready = client
            .get(format!("{}/readyz", collector.admin))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200, "{}: not ready afterwards", case.name);
    }
    eprintln!("{}", report.join("\n"));

    for (name, handle) in stalled {
        let (took, answer) = handle.await.expect("stall task");
        eprintln!(
            "{name:<28} closed after {took:?} {:?}",
            answer.lines().next().unwrap_or("")
        );
        assert!(
            took < Duration::from_secs(15),
            "{name}: still open after {took:?}"
        );
        if name == "http_body_byte_by_byte" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{name}: {answer}");
            assert!(answer.contains("request-read-timeout"), "{name}: {answer}");
        }
    }

    // The good records of every case are stored, and nothing else. Acknowledged means
    // spooled: wait until the writer has stored it.
    collector.settled().await;
    let ch = clickhouse(&database);
    let stored: Vec<(String, u64)> = ch
        .query("SELECT properties['case'] AS c, count() FROM events GROUP BY c ORDER BY c")
        .fetch_all()
        .await
        .expect("select");
    let mut expected: Vec<(String, u64)> = cases
        .iter()
        .filter(|c| c.stored > 0)
        .map(|c| (c.name.to_owned(), c.stored))
        .collect();
    expected.sort();
    assert_eq!(stored, expected, "stored records per case");
    let (note_len, nan, inf): (u64, String, String) = ch
        .query("SELECT length(properties['note']), properties['nan'], properties['inf'] FROM events WHERE properties['case'] IN ('huge_value', 'json_mapping') ORDER BY properties['case']")
        .fetch_all::<(u64, String, String)>()
        .await
        .expect("select")
        .into_iter()
        .fold((0, String::new(), String::new()), |acc, row| (acc.0.max(row.0), if row.1.is_empty() { acc.1 } else { row.1 }, if row.2.is_empty() { acc.2 } else { row.2 }));
    assert_eq!(note_len, 1024, "a huge value is cut to the property limit");
    assert_eq!(
        (nan.as_str(), inf.as_str()),
        ("NaN", "Infinity"),
        "non-finite doubles are kept as text"
    );
    let numbers: u64 = ch
        .query("SELECT count() FROM events WHERE properties['case'] = 'json_mapping' AND (has(mapKeys(numbers), 'nan') OR has(mapKeys(numbers), 'inf'))")
        .fetch_one()
        .await
        .expect("select");
    assert_eq!(numbers, 0, "non-finite doubles are not numbers");

    // The event-time window keeps a batch within this many monthly partitions
    // (docs/ingest.md): the server must allow at least that many per insert.
    let partitions: String = ch
        .query("SELECT value FROM system.settings WHERE name = 'max_partitions_per_insert_block'")
        .fetch_one()
        .await
        .expect("setting");
    let partitions: u64 = partitions.parse().expect("a number");
    assert!(
        partitions == 0 || partitions >= 86,
        "max_partitions_per_insert_block = {partitions} < 86"
    );

    // Nothing identifying is stored raw, in any table.
    let tables: Vec<String> = ch
        .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        .fetch_all()
        .await
        .expect("tables");
    assert!(tables.len() >= 4, "{tables:?}");
    for table in &tables {
        for raw in RAW.iter().chain(["hostile-user"].iter()) {
            let found: u64 = ch
                .query(&format!("SELECT count() FROM `{table}` WHERE position(formatRowNoNewline('TSV', *), ?) > 0"))
                .bind(*raw)
                .fetch_one()
                .await
                .expect("scan");
            assert_eq!(found, 0, "{raw} stored raw in {table}");
        }
    }
    let hashed_email: u64 = ch
        .query("SELECT count() FROM events WHERE properties['user.email'] = ?")
        .bind(
            UserHasher::new(Some(b"hostile-key".to_vec()))
                .hash(RAW[1])
                .as_str(),
        )
        .fetch_one()
        .await
        .expect("select");
    assert_eq!(
        hashed_email, 1,
        "identifying values are hashed with the user-hash key"
    );

    // Counted by reason on /metrics.
    let metrics = client
        .get(format!("{}/metrics", collector.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for line in [
        "growth_collector_records_rejected_total{reason=\"time_in_future\"} 3",
        "growth_collector_records_rejected_total{reason=\"too_many_apps\"} 5",
        "growth_collector_requests_refused_total{reason=\"unauthenticated\"} 5",
        "growth_collector_requests_refused_total{reason=\"forbidden\"} 2",
        "growth_collector_requests_refused_total{reason=\"read_timeout\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?}:\n{metrics}"
        );
    }
    let rss = status_kib(pid, "VmRSS:") * 1024;
    eprintln!(
        "{} cases in {:?}; RSS {} MiB at start, {} MiB at the end",
        cases.len(),
        started.elapsed(),
        baseline / MIB as u64,
        rss / MIB as u64
    );
    assert!(
        rss < baseline + 256 * MIB as u64,
        "memory not given back: {rss} bytes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
