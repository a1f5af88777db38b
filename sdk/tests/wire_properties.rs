//! Property tests of the SDK's hand-written protobuf encoder against prost: for any
//! events within the contract's bounds, prost decodes exactly what was tracked
//! (decode(encode(x)) == x), and the user hash on the wire is HMAC-SHA256 of the id.
//! The fuzz target `sdk_wire` (scripts/fuzz) covers inputs beyond the bounds too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use growth_sdk::{AttributeValue, Event, UserHasher};
use hmac::{Hmac, KeyInit, Mac};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use proptest::prelude::*;
use prost::Message;
use sha2::{Digest, Sha256};

/// Values that no bound cuts: short text, depth ≤ 3, few elements.
fn value() -> impl Strategy<Value = AttributeValue> {
    let leaf = prop_oneof![
        "[^\u{0}]{0,40}".prop_map(AttributeValue::String),
        any::<i64>().prop_map(AttributeValue::Int),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |x| !x.is_nan())
            .prop_map(AttributeValue::Float),
        any::<bool>().prop_map(AttributeValue::Bool),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(AttributeValue::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::Array),
            proptest::collection::vec(("[a-z]{1,8}", inner), 0..4).prop_map(AttributeValue::Map),
        ]
    })
}

fn any_value(value: &AttributeValue) -> AnyValue {
    let value = match value {
        AttributeValue::String(s) => Value::StringValue(s.clone()),
        AttributeValue::Int(n) => Value::IntValue(*n),
        AttributeValue::Float(x) => Value::DoubleValue(*x),
        AttributeValue::Bool(b) => Value::BoolValue(*b),
        AttributeValue::Bytes(b) => Value::BytesValue(b.clone()),
        AttributeValue::Array(items) => Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        }),
        AttributeValue::Map(entries) => Value::KvlistValue(KeyValueList {
            values: entries.iter().map(|(k, v)| kv(k, any_value(v))).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn text(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    }
}

/// HMAC-SHA256 (plain SHA-256 without a key) in lowercase hex, written here from
/// the `hmac` and `sha2` crates rather than through `UserHasher`.
fn reference_hash(key: &[u8], id: &str) -> String {
    let digest: Vec<u8> = if key.is_empty() {
        Sha256::digest(id.as_bytes()).to_vec()
    } else {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// (name, user id, source, properties with distinct keys, seconds since the epoch)
type Tracked = (String, String, String, Vec<(String, AttributeValue)>, u64);

fn tracked() -> impl Strategy<Value = Tracked> {
    (
        "[a-z][a-z0-9_]{0,20}",
        "[^\u{0}]{1,30}",
        "[a-z]{1,10}",
        proptest::collection::btree_map("p[a-z0-9_.]{0,12}", value(), 0..8),
        1u64..4_000_000_000,
    )
        .prop_map(|(name, id, source, props, secs)| {
            (name, id, source, props.into_iter().collect(), secs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn prost_decodes_exactly_what_was_tracked(
        events in proptest::collection::vec(tracked(), 0..5),
        key in proptest::collection::vec(any::<u8>(), 0..40),
        app in "[a-z][a-z0-9-]{0,20}",
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let hasher = UserHasher::new(Some(key.clone()));
        let tracked: Vec<Event> = events
            .iter()
            .map(|(name, id, source, props, secs)| {
                let mut event = Event::new(name.clone())
                    .user(id.clone())
                    .source(source)
                    .at(UNIX_EPOCH + Duration::from_secs(*secs));
                for (k, v) in props {
                    event = event.attr(k.clone(), v.clone());
                }
                event
            })
            .collect();
        let resource = [("service.name".to_owned(), app.clone())];
        let (bytes, dropped) =
            growth_sdk::fuzzing::encode_request(&resource, hasher, &tracked, now);
        prop_assert!(dropped.iter().all(|d| *d == Some(0)));

        let request = ExportLogsServiceRequest::decode(&bytes[..]).expect("prost decodes it");
        let resource_logs = &request.resource_logs[0];
        prop_assert_eq!(
            &resource_logs.resource.as_ref().expect("resource").attributes,
            &vec![kv("service.name", text(&app))]
        );
        let records = &resource_logs.scope_logs[0].log_records;
        prop_assert_eq!(records.len(), events.len());
        for (record, (name, id, source, props, secs)) in records.iter().zip(&events) {
            let mut attributes = vec![
                kv("event.name", text(name)),
                kv("user.hash", text(&reference_hash(&key, id))),
            ];
            attributes.extend(props.iter().map(|(k, v)| kv(k, any_value(v))));
            attributes.push(kv("source", text(source)));
            prop_assert_eq!(&record.event_name, name);
            prop_assert_eq!(record.time_unix_nano, secs * 1_000_000_000);
            prop_assert_eq!(
                record.observed_time_unix_nano,
                now.duration_since(SystemTime::UNIX_EPOCH).expect("after").as_nanos() as u64
            );
            prop_assert_eq!(&record.attributes, &attributes);
            prop_assert_eq!(record.dropped_attributes_count, 0);
        }
    }

    #[test]
    fn the_user_hash_is_hmac_sha256_of_the_id(
        key in proptest::collection::vec(any::<u8>(), 0..100),
        id in "\\PC{0,64}",
    ) {
        let expected = reference_hash(&key, &id);
        let hash = UserHasher::new(Some(key.clone())).hash(&id);
        prop_assert_eq!(hash.as_str(), expected.as_str());
        if key.is_empty() {
            let hash = UserHasher::new(None).hash(&id);
            prop_assert_eq!(hash.as_str(), expected.as_str());
        }
    }
}
