//! One test (or a few) per row of the event contract in docs/contract.md.

use super::*;
use growth_testkit::otlp::{kv, s};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

// Shortly after the records' own times (1_700_000_000…), within the default window.
const RECEIVED_NANOS: i64 = 1_700_000_100_123_000_000;

fn received() -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(RECEIVED_NANOS)
}

fn record(event_name: &str, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        event_name: event_name.to_owned(),
        attributes: attrs,
        time_unix_nano: 1_700_000_000_000_000_000,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
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

fn app() -> Vec<KeyValue> {
    vec![kv("service.name", s("finbrain"))]
}

fn map_with(hasher: &UserHasher, records: Vec<LogRecord>) -> MappedRequest {
    map_request(
        &request(app(), records),
        &MapRules::new(hasher.clone()),
        received(),
    )
}

fn map(records: Vec<LogRecord>) -> MappedRequest {
    map_with(&UserHasher::new(None), records)
}

fn one_row(rec: LogRecord) -> EventRow {
    let mapped = map(vec![rec]);
    assert_eq!(mapped.rejected, vec![], "unexpected rejection");
    assert_eq!(mapped.rows.len(), 1, "expected one event");
    mapped
        .rows
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!())
}

fn rejected(rec: LogRecord) -> Vec<(RejectReason, u64)> {
    let mapped = map(vec![rec]);
    assert!(mapped.rows.is_empty());
    mapped.rejected
}

// ── event name ──────────────────────────────────────────────────────────────────

#[test]
fn event_name_field_is_used() {
    assert_eq!(
        one_row(record("expense_logged", vec![])).event,
        "expense_logged"
    );
}

#[test]
fn event_name_attribute_is_the_fallback() {
    let row = one_row(record("", vec![kv("event.name", s("app_installed"))]));
    assert_eq!(row.event, "app_installed");
    assert!(
        row.properties.iter().all(|(k, _)| k != "event.name"),
        "reserved, not a property"
    );
}

#[test]
fn event_name_field_wins_over_attribute() {
    let row = one_row(record(
        "report_requested",
        vec![kv("event.name", s("other"))],
    ));
    assert_eq!(row.event, "report_requested");
}

#[test]
fn no_event_name_is_not_growth() {
    for rec in [
        record("", vec![kv("user.id", s("u1"))]),
        record("", vec![kv("event.name", s(""))]),
        LogRecord::default(),
    ] {
        let mapped = map(vec![rec]);
        assert_eq!(
            (
                mapped.rows.len(),
                mapped.not_growth,
                mapped.rejected_total()
            ),
            (0, 1, 0)
        );
    }
}

#[test]
fn bad_event_names_are_rejected() {
    let too_long = "x".repeat(limits::MAX_EVENT_NAME_BYTES + 1);
    for rec in [
        record(&too_long, vec![]),
        record("bad\nname", vec![]),
        record("", vec![kv("event.name", Value::IntValue(7))]),
    ] {
        assert_eq!(rejected(rec), vec![(RejectReason::InvalidEventName, 1)]);
    }
    let longest = "x".repeat(limits::MAX_EVENT_NAME_BYTES);
    assert_eq!(one_row(record(&longest, vec![])).event, longest);
}

// ── user ────────────────────────────────────────────────────────────────────────

#[test]
fn user_hash_is_taken_as_is() {
    let hash = UserHasher::new(Some(b"app-side".to_vec())).hash("u1");
    let row = one_row(record("e", vec![kv("user.hash", s(hash.as_str()))]));
    assert_eq!(row.user_hash, hash.as_str());
}

#[test]
fn invalid_user_hash_is_rejected() {
    let upper = UserHasher::new(None).hash("u1").as_str().to_uppercase();
    for value in [s(&upper), s("abc"), s(&"g".repeat(64)), Value::IntValue(5)] {
        let rec = record("e", vec![kv("user.hash", value)]);
        assert_eq!(rejected(rec), vec![(RejectReason::InvalidUserHash, 1)]);
    }
}

#[test]
fn user_hash_wins_over_user_id() {
    let hash = UserHasher::new(None).hash("someone-else");
    let row = one_row(record(
        "e",
        vec![
            kv("user.id", s("raw-id-1")),
            kv("user.hash", s(hash.as_str())),
        ],
    ));
    assert_eq!(row.user_hash, hash.as_str());
}

#[test]
fn raw_user_id_is_hashed_and_kept_nowhere() {
    let row = one_row(record(
        "e",
        vec![kv("user.id", s("raw-id-42")), kv("plan", s("pro"))],
    ));
    assert_eq!(
        row.user_hash,
        UserHasher::new(None).hash("raw-id-42").as_str()
    );
    assert!(
        !format!("{row:?}").contains("raw-id-42"),
        "raw id leaked: {row:?}"
    );
}

#[test]
fn unkeyed_hash_is_plain_sha256() {
    // sha256("abc"), FIPS 180-2 test vector: apps that hash themselves match.
    let row = one_row(record("e", vec![kv("user.id", s("abc"))]));
    assert_eq!(
        row.user_hash,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn keyed_hash_is_hmac_and_differs_from_unkeyed() {
    // RFC 4231, test case 2.
    let keyed = UserHasher::new(Some(b"Jefe".to_vec()));
    let mapped = map_with(
        &keyed,
        vec![record(
            "e",
            vec![kv("user.id", s("what do ya want for nothing?"))],
        )],
    );
    assert_eq!(
        mapped.rows[0].user_hash,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn integer_user_id_is_hashed_as_text() {
    let row = one_row(record("e", vec![kv("user.id", Value::IntValue(42))]));
    assert_eq!(row.user_hash, UserHasher::new(None).hash("42").as_str());
}

#[test]
fn invalid_user_id_is_rejected() {
    let too_long = "u".repeat(limits::MAX_USER_ID_BYTES + 1);
    for value in [
        s(&too_long),
        Value::BoolValue(true),
        Value::DoubleValue(1.5),
    ] {
        let rec = record("e", vec![kv("user.id", value)]);
        assert_eq!(rejected(rec), vec![(RejectReason::InvalidUserId, 1)]);
    }
}

#[test]
fn no_user_is_anonymous() {
    assert_eq!(one_row(record("e", vec![])).user_hash, "");
    assert_eq!(
        one_row(record("e", vec![kv("user.id", s(""))])).user_hash,
        ""
    );
    assert_eq!(
        one_row(record("e", vec![kv("user.hash", s(""))])).user_hash,
        ""
    );
}

// ── app ─────────────────────────────────────────────────────────────────────────

#[test]
fn app_is_service_name() {
    assert_eq!(one_row(record("e", vec![])).app, "finbrain");
}

#[test]
fn missing_service_name_is_unknown_service() {
    let mapped = map_request(
        &request(vec![], vec![record("e", vec![])]),
        &MapRules::new(UserHasher::new(None)),
        received(),
    );
    assert_eq!(mapped.rows[0].app, UNKNOWN_APP);
    let mut no_resource = request(vec![], vec![record("e", vec![])]);
    no_resource.resource_logs[0].resource = None;
    let mapped = map_request(
        &no_resource,
        &MapRules::new(UserHasher::new(None)),
        received(),
    );
    assert_eq!(mapped.rows[0].app, UNKNOWN_APP);
}

#[test]
fn invalid_service_name_is_rejected() {
    for value in [
        s(&"a".repeat(limits::MAX_APP_BYTES + 1)),
        Value::IntValue(1),
    ] {
        let req = request(vec![kv("service.name", value)], vec![record("e", vec![])]);
        let mapped = map_request(&req, &MapRules::new(UserHasher::new(None)), received());
        assert_eq!(mapped.rejected, vec![(RejectReason::InvalidApp, 1)]);
    }
}

// ── time ────────────────────────────────────────────────────────────────────────

#[test]
fn time_prefers_time_unix_nano() {
    let rec = LogRecord {
        time_unix_nano: 1_700_000_000_250_000_000,
        observed_time_unix_nano: 1_700_000_009_000_000_000,
        ..record("e", vec![])
    };
    assert_eq!(
        one_row(rec).event_time.timestamp_millis(),
        1_700_000_000_250
    );
}

#[test]
fn time_falls_back_to_observed_then_receive_time() {
    let observed = LogRecord {
        time_unix_nano: 0,
        observed_time_unix_nano: 1_700_000_009_000_000_000,
        ..record("e", vec![])
    };
    assert_eq!(one_row(observed).event_time.timestamp(), 1_700_000_009);
    let neither = LogRecord {
        time_unix_nano: 0,
        ..record("e", vec![])
    };
    let row = one_row(neither);
    assert_eq!(row.event_time, received());
    assert_eq!(row.received_at, received());
}

#[test]
fn unrepresentable_time_is_rejected() {
    let rec = LogRecord {
        time_unix_nano: u64::MAX,
        ..record("e", vec![])
    };
    assert_eq!(rejected(rec), vec![(RejectReason::InvalidTime, 1)]);
}

#[test]
fn times_outside_the_window_are_rejected_one_by_one() {
    let at = |offset_secs: i64| LogRecord {
        time_unix_nano: u64::try_from(RECEIVED_NANOS + offset_secs * 1_000_000_000)
            .expect("positive"),
        ..record("e", vec![])
    };
    let day = 86_400;
    let mapped = map(vec![
        at(-31 * day + 1),
        at(-31 * day - 1),
        at(3_599),
        at(3_601),
        // Year 2200: once stored with `day` wrapped to 2020; now refused.
        LogRecord {
            time_unix_nano: 7_258_118_400_000_000_000,
            ..record("e", vec![])
        },
        // 1970: would move the user's cohort back 56 years.
        LogRecord {
            time_unix_nano: 1,
            ..record("e", vec![])
        },
    ]);
    assert_eq!(mapped.rows.len(), 2);
    assert_eq!(
        mapped.rejected,
        vec![
            (RejectReason::TimeTooOld, 2),
            (RejectReason::TimeInFuture, 2)
        ]
    );
    // Records without a time of their own take the receive time: always inside.
    let backfill = MapRules {
        time_window: TimeWindow {
            max_age: Duration::from_secs(400 * 86_400),
            max_skew: Duration::ZERO,
        },
        ..MapRules::new(UserHasher::new(None))
    };
    let mapped = map_request(
        &request(app(), vec![at(-399 * day), at(1), record("e", vec![])]),
        &backfill,
        received(),
    );
    assert_eq!(mapped.rows.len(), 2);
    assert_eq!(mapped.rejected, vec![(RejectReason::TimeInFuture, 1)]);
}

#[test]
fn window_bounds_the_partitions_of_an_insert() {
    // PARTITION BY toYYYYMM(day): the accepted span, however long a batch gathers
    // rows (allow a day), must stay under max_partitions_per_insert_block = 100.
    let span = TimeWindow::MAX_AGE + TimeWindow::default().max_skew + Duration::from_secs(86_400);
    let months = span.as_secs().div_ceil(28 * 86_400) + 1;
    assert!(months < 100, "{months} monthly partitions");
}

// ── privacy and access ──────────────────────────────────────────────────────────

#[test]
fn identifying_attributes_never_reach_a_row_raw() {
    let rec = record(
        "e",
        vec![
            kv("user.id", s("raw-user")),
            kv("user.email", s("raw@example.org")),
            kv(
                "ctx",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("enduser.id", s("raw-enduser"))],
                }),
            ),
        ],
    );
    let mapped = map(vec![rec]);
    let text = format!("{:?}", mapped.rows);
    for raw in ["raw-user", "raw@example.org", "raw-enduser"] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    assert_eq!(mapped.identifying_redacted, 2);
}

#[test]
fn apps_a_token_may_not_write_are_rejected() {
    let allowed = AppAccess::Only(std::sync::Arc::new(["finbrain".to_owned()].into()));
    let mut req = request(app(), vec![record("e", vec![])]);
    req.resource_logs.extend(
        request(
            vec![kv("service.name", s("intruder"))],
            vec![record("e", vec![]), record("", vec![])],
        )
        .resource_logs,
    );
    let mapped = map_request_as(
        &req,
        &MapRules::new(UserHasher::new(None)),
        &allowed,
        received(),
    );
    assert_eq!(mapped.rows.len(), 1);
    assert_eq!(mapped.rejected, vec![(RejectReason::AppNotAllowed, 1)]);
    assert_eq!(mapped.not_growth, 1);
    assert!(!mapped.only_forbidden_apps());
    req.resource_logs.remove(0);
    let mapped = map_request_as(
        &req,
        &MapRules::new(UserHasher::new(None)),
        &allowed,
        received(),
    );
    assert!(mapped.only_forbidden_apps());
}

// ── source ──────────────────────────────────────────────────────────────────────

#[test]
fn source_is_its_own_column() {
    let row = one_row(record("e", vec![kv("source", s("messenger"))]));
    assert_eq!(row.source, "messenger");
    assert!(row.properties.is_empty());
    assert_eq!(one_row(record("e", vec![])).source, "");
}

#[test]
fn invalid_source_is_rejected() {
    let rec = record(
        "e",
        vec![kv("source", s(&"s".repeat(limits::MAX_SOURCE_BYTES + 1)))],
    );
    assert_eq!(rejected(rec), vec![(RejectReason::InvalidSource, 1)]);
}

// ── properties ──────────────────────────────────────────────────────────────────

#[test]
fn other_attributes_are_text_properties() {
    let row = one_row(record(
        "expense_logged",
        vec![
            kv("category", s("food")),
            kv("amount", Value::DoubleValue(12.5)),
            kv("items", Value::IntValue(3)),
            kv("recurring", Value::BoolValue(false)),
            kv("raw", Value::BytesValue(vec![0xde, 0xad])),
            kv(
                "tags",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                    ],
                }),
            ),
            kv(
                "meta",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", s("v")), kv("n", Value::DoubleValue(f64::NAN))],
                }),
            ),
            kv("user.id", s("raw-user")),
            kv("source", s("form")),
        ],
    ));
    let props: Vec<(&str, &str)> = row
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        props,
        vec![
            ("category", "food"),
            ("amount", "12.5"),
            ("items", "3"),
            ("recurring", "false"),
            ("raw", "dead"),
            ("tags", r#"["a",1]"#),
            ("meta", r#"{"k":"v","n":"NaN"}"#),
        ]
    );
    assert_eq!(
        row.numbers,
        vec![("amount".to_owned(), 12.5), ("items".to_owned(), 3.0)]
    );
}

#[test]
fn only_typed_finite_numbers_are_numbers() {
    let row = one_row(record(
        "e",
        vec![
            kv("zip", s("01234")),
            kv("nan", Value::DoubleValue(f64::NAN)),
            kv("inf", Value::DoubleValue(f64::INFINITY)),
            kv("flag", Value::BoolValue(true)),
        ],
    ));
    assert!(row.numbers.is_empty(), "{:?}", row.numbers);
    assert_eq!(row.properties.len(), 4);
}

#[test]
fn first_of_repeated_keys_wins() {
    let row = one_row(record(
        "e",
        vec![kv("plan", s("free")), kv("plan", s("pro"))],
    ));
    assert_eq!(row.properties, vec![("plan".to_owned(), "free".to_owned())]);
}

#[test]
fn properties_are_bounded() {
    let many: Vec<KeyValue> = (0..limits::MAX_PROPERTIES + 5)
        .map(|i| kv(&format!("p{i:03}"), Value::IntValue(i as i64)))
        .collect();
    let mapped = map(vec![record("e", many)]);
    let row = &mapped.rows[0];
    assert_eq!(row.properties.len(), limits::MAX_PROPERTIES);
    assert_eq!(row.numbers.len(), limits::MAX_PROPERTIES);
    assert_eq!(row.properties[0].0, "p000", "the first ones are kept");
    assert_eq!(mapped.properties_dropped, 5);

    let long_key = "k".repeat(limits::MAX_PROPERTY_KEY_BYTES + 1);
    let long_value = "é".repeat(limits::MAX_PROPERTY_VALUE_BYTES);
    let mapped = map(vec![record(
        "e",
        vec![kv(&long_key, s("v")), kv("note", s(&long_value))],
    )]);
    let row = &mapped.rows[0];
    assert_eq!(row.properties.len(), 1);
    assert_eq!(row.properties[0].1.len(), limits::MAX_PROPERTY_VALUE_BYTES);
    assert_eq!((mapped.properties_dropped, mapped.values_truncated), (1, 1));
}

// ── the request as a whole ──────────────────────────────────────────────────────

#[test]
fn counts_every_record_once() {
    let mapped = map(vec![
        record("a", vec![kv("user.id", s("u1"))]),
        record("", vec![]),
        record("b", vec![kv("user.hash", s("nope"))]),
        record("c", vec![kv("user.hash", s("nope"))]),
        record(&"x".repeat(200), vec![]),
        record("d", vec![]),
    ]);
    assert_eq!(mapped.received, 6);
    assert_eq!(mapped.rows.len(), 2);
    assert_eq!(mapped.not_growth, 1);
    assert_eq!(
        mapped.rejected,
        vec![
            (RejectReason::InvalidEventName, 1),
            (RejectReason::InvalidUserHash, 2)
        ]
    );
    assert_eq!(
        mapped.rejection_message().as_deref(),
        Some(
            "3 log record(s) rejected: invalid_event_name=1, invalid_user_hash=2 (see the growth event contract)"
        )
    );
    assert_eq!(map(vec![record("a", vec![])]).rejection_message(), None);
}

#[test]
fn resources_keep_their_own_app() {
    let mut req = request(app(), vec![record("a", vec![])]);
    let mut other = request(
        vec![kv("service.name", s("other_app"))],
        vec![record("b", vec![])],
    );
    req.resource_logs.append(&mut other.resource_logs);
    let mapped = map_request(&req, &MapRules::new(UserHasher::new(None)), received());
    let apps: Vec<&str> = mapped.rows.iter().map(|r| r.app.as_str()).collect();
    assert_eq!(apps, vec!["finbrain", "other_app"]);
}

#[test]
fn people_raw_ids_are_stored_only_as_their_hash() {
    let rec = record(
        "identify",
        vec![
            kv("user.id", s("known-user")),
            kv("anonymous.id", s("raw-visitor")),
        ],
    );
    let merge = record(
        "merge",
        vec![
            kv("user.id", s("known-user")),
            kv("merged.id", s("raw-other")),
            // A hash sent alongside wins; the raw id is dropped.
            kv("merged.hash", s(&"b".repeat(64))),
            kv("anonymous.id", s("raw-second")),
            kv("anonymous.hash", s(&"a".repeat(64))),
        ],
    );
    let mapped = map(vec![rec, merge]);
    let text = format!("{:?}", mapped.rows);
    for raw in [
        "raw-visitor",
        "raw-other",
        "raw-second",
        "anonymous.id",
        "merged.id",
    ] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    let props: std::collections::BTreeMap<_, _> =
        mapped.rows[0].properties.iter().cloned().collect();
    let hashed = &props["anonymous.hash"];
    assert_eq!(hashed, UserHasher::new(None).hash("raw-visitor").as_str());
    assert_ne!(hashed, &mapped.rows[0].user_hash);
    let second: std::collections::BTreeMap<_, _> =
        mapped.rows[1].properties.iter().cloned().collect();
    assert_eq!(second["merged.hash"], "b".repeat(64));
    assert_eq!(second["anonymous.hash"], "a".repeat(64));
    assert_eq!(mapped.identifying_redacted, 3);
}
