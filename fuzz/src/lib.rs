//! What the fuzz targets share: the seed inputs, built from the same kinds of
//! requests the tests send. `scripts/fuzz --seeds` runs each target with
//! `GROWTH_FUZZ_WRITE_SEEDS=<dir>`: its `init` writes the seeds there and exits, and
//! the files are kept in `fuzz/corpus/<target>/` (the corpus grows from them).

use std::time::{Duration, SystemTime};

use growth_schema::user_hash::UserHasher;
use growth_sdk::{AttributeValue, Event};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// When `GROWTH_FUZZ_WRITE_SEEDS` names a directory: writes `seeds` there (one file
/// each) and exits. Otherwise does nothing.
pub fn write_seeds_if_asked(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("GROWTH_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for (i, seed) in seeds().into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
    }
    std::process::exit(0);
}

/// Attribute value helpers.
pub fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    })
}

fn any(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        ..Default::default()
    }
}

fn record(event: &str, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_779_990_000_000_000_000,
        observed_time_unix_nano: 1_779_990_000_000_000_001,
        event_name: event.to_owned(),
        attributes,
        ..Default::default()
    }
}

fn request(app: Option<&str>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: app
                    .map(|a| kv("service.name", string(a)))
                    .into_iter()
                    .collect(),
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

/// Requests like the tests': good events, every value type, nesting, identifying
/// attributes, several resources, and records the mapping rejects.
pub fn requests() -> Vec<ExportLogsServiceRequest> {
    let nested = any(Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(Value::IntValue(1)),
            },
            AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("email", string("carol@example.com")),
                        kv(
                            "deeper",
                            any(Value::ArrayValue(ArrayValue {
                                values: vec![AnyValue {
                                    value: Some(Value::BoolValue(true)),
                                }],
                            })),
                        ),
                    ],
                })),
            },
            AnyValue { value: None },
        ],
    }));
    let mut many = vec![kv("user.id", string("user-many-attrs"))];
    for i in 0..70 {
        many.push(kv(&format!("p{i}"), any(Value::IntValue(i))));
    }
    many.push(kv("long", string(&"é".repeat(700))));
    let mut two = request(Some("shop"), vec![record("signup", vec![])]);
    two.resource_logs.push(ResourceLogs {
        resource: None,
        scope_logs: vec![
            ScopeLogs::default(),
            ScopeLogs {
                log_records: vec![
                    record("", vec![kv("event.name", string("checkout"))]),
                    record("", vec![]),
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    vec![
        ExportLogsServiceRequest::default(),
        request(
            Some("shop"),
            vec![record(
                "expense_logged",
                vec![
                    kv("user.id", string("alice-1234")),
                    kv("source", string("web")),
                    kv("plan", string("pro")),
                    kv("amount", any(Value::DoubleValue(12.5))),
                    kv("count", any(Value::IntValue(3))),
                    kv("trial", any(Value::BoolValue(false))),
                ],
            )],
        ),
        request(
            None,
            vec![record(
                "",
                vec![
                    kv("event.name", string("landing_viewed")),
                    kv(
                        "user.hash",
                        string("bb82030dbc2bcaba32a90bf2e207a84a856fc5f033b77c480836ab6f77f40f19"),
                    ),
                ],
            )],
        ),
        request(
            Some("crm"),
            vec![record(
                "contact_added",
                vec![
                    kv("user.id", any(Value::IntValue(420_042))),
                    kv("email", string("bob@example.com")),
                    kv("client.address", string("192.0.2.7")),
                    kv("X-Customer", string("ACME-77")),
                    kv("tags", nested),
                    kv("raw", any(Value::BytesValue(vec![0, 159, 146, 150]))),
                    kv("nan", any(Value::DoubleValue(f64::NAN))),
                    kv("inf", any(Value::DoubleValue(f64::NEG_INFINITY))),
                ],
            )],
        ),
        request(Some("shop"), vec![record("bulk_import", many)]),
        request(
            Some("shop"),
            vec![
                record(
                    "identify",
                    vec![
                        kv("user.id", string("grace-4321")),
                        kv("anonymous.id", string("anon-device-77")),
                    ],
                ),
                record(
                    "merge",
                    vec![
                        kv("user.id", string("grace-4321")),
                        kv("merged.id", string("grace-old-account")),
                    ],
                ),
            ],
        ),
        two,
        request(
            Some("bad"),
            vec![
                record("x", vec![kv("user.hash", string("not-a-hash"))]),
                record("y", vec![kv("user.id", any(Value::BoolValue(true)))]),
                record("bad\nname", vec![]),
                record("z", vec![kv("source", string("has space\u{7}"))]),
                LogRecord {
                    time_unix_nano: u64::MAX,
                    ..record("late", vec![])
                },
                LogRecord {
                    time_unix_nano: 1,
                    ..record("early", vec![])
                },
            ],
        ),
    ]
}

/// A request as the Rust SDK encodes it (its hand-written protobuf).
pub fn sdk_request() -> Vec<u8> {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_779_990_000);
    let events = [
        Event::new("expense_logged")
            .user("dave-5678")
            .attr("amount", 12.5)
            .attr("list", vec![AttributeValue::from(1), "two".into()])
            .source("form"),
        Event::new("report_viewed").attr("email", "erin@example.com"),
    ];
    let resource = [("service.name".to_owned(), "budget".to_owned())];
    growth_sdk::fuzzing::encode_request(
        &resource,
        UserHasher::new(Some(b"k".to_vec())),
        &events,
        at,
    )
    .0
}

/// The seed requests in protobuf.
pub fn protobuf_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = requests().iter().map(Message::encode_to_vec).collect();
    seeds.push(sdk_request());
    seeds
}

/// The seed requests in OTLP/JSON, and spellings the JSON mapping allows.
pub fn json_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = requests()
        .iter()
        .filter_map(|r| serde_json::to_vec(r).ok())
        .collect();
    for text in [
        r#"{"resource_logs": [{"resource": null, "scopeLogs": [{"log_records": [{
            "time_unix_nano": 1.7e18, "observedTimeUnixNano": "1700000000000000001",
            "severityNumber": "SEVERITY_NUMBER_WARN", "flags": "1", "traceId": "",
            "unknownField": {"nested": [1, 2]}, "eventName": "signup",
            "attributes": [
                {"key": "nan", "value": {"doubleValue": "NaN"}},
                {"key": "inf", "value": {"double_value": "Infinity"}},
                {"key": "int", "value": {"intValue": "-9223372036854775808"}},
                {"key": "intexp", "value": {"intValue": 2e3}},
                {"key": "bytes", "value": {"bytesValue": "aGk"}},
                {"key": "list", "value": {"arrayValue": {"values": [{"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": true}}]}}]}}},
                {"key": "none", "value": null}
            ]}]}]}]}"#,
        r#"{"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]}, "scopeLogs": [{"logRecords": [{"timeUnixNano": "1779990000000000000", "eventName": "x", "attributes": [{"key": "user.id", "value": {"stringValue": "frank-99"}}]}]}]}]}"#,
        r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": -1}]}]}]}"#,
        r#"{"resourceLogs": []} trailing"#,
    ] {
        seeds.push(text.as_bytes().to_vec());
    }
    seeds
}

/// gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

/// A small deterministic generator (splitmix64), for bytes the fuzzer must not
/// choose one by one (spool payloads: a payload holding a well-formed frame would
/// make a "frame" nobody wrote).
pub fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}
