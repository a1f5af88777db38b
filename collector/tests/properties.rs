//! Property tests where an invariant exists: decoding what prost (or the OTLP/JSON
//! serializer) encoded gives the request back, through both protobuf readers; spool
//! recovery from a torn segment yields exactly the frames written whole; a raw
//! `user.id` is stored only as its hash. The fuzz targets (scripts/fuzz) try
//! arbitrary and damaged inputs on the same entry points.

use chrono::{DateTime, Utc};
use growth_collector::map::{MapRules, map_request};
use growth_collector::receiver::decode::{self, DecodeLimits};
use growth_collector::spool::segment::{self, FRAME_HEADER_LEN, HEADER_LEN};
use growth_collector::view::{self, KeyValue as ViewKeyValue, LogRecord as ViewRecord, Visitor};
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        ".{0,20}".prop_map(Value::StringValue),
        any::<i64>().prop_map(Value::IntValue),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |x| !x.is_nan())
            .prop_map(Value::DoubleValue),
        any::<bool>().prop_map(Value::BoolValue),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            proptest::collection::vec(key_value(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values }))
            }),
        ]
    })
}

fn key_value(value: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    ("[a-z.]{0,10}", proptest::option::of(value)).prop_map(|(key, value)| KeyValue {
        key,
        value,
        ..Default::default()
    })
}

fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let record = (
        any::<u64>(),
        any::<u64>(),
        "[a-z_]{0,12}",
        proptest::collection::vec(key_value(any_value()), 0..5),
    )
        .prop_map(|(time, observed, event_name, attributes)| LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            event_name,
            attributes,
            ..Default::default()
        });
    let scope = proptest::collection::vec(record, 0..4).prop_map(|log_records| ScopeLogs {
        log_records,
        ..Default::default()
    });
    let resource = (
        proptest::option::of(proptest::collection::vec(key_value(any_value()), 0..3)),
        proptest::collection::vec(scope, 0..3),
    )
        .prop_map(|(attributes, scope_logs)| ResourceLogs {
            resource: attributes.map(|attributes| Resource {
                attributes,
                ..Default::default()
            }),
            scope_logs,
            ..Default::default()
        });
    proptest::collection::vec(resource, 0..3)
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// What a visitor is shown, to compare the in-place reader with the decoded request.
#[derive(Default)]
struct Recorder(Vec<String>);

impl<'a> Visitor<'a> for Recorder {
    fn resource(&mut self, attributes: &[ViewKeyValue<'a>]) {
        self.0.push(format!("resource {attributes:?}"));
    }
    fn record(&mut self, record: &ViewRecord<'a, '_>) {
        self.0.push(format!("record {record:?}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decoding_what_prost_encoded_is_identity(request in request()) {
        let limits = DecodeLimits::default();
        let bytes = request.encode_to_vec();
        prop_assert_eq!(decode::protobuf(&bytes, &limits), Ok(request.clone()));

        let mut in_place = Recorder::default();
        decode::protobuf_visit(&bytes, &limits, &mut in_place).expect("within the limits");
        let mut owned = Recorder::default();
        view::visit_request(&request, &mut owned);
        prop_assert_eq!(in_place.0, owned.0);

        let records: usize = request.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
        prop_assert_eq!(decode::count_records(&bytes, &limits), records as u64);
    }

    #[test]
    fn decoding_what_the_json_serializer_wrote_is_identity(request in request()) {
        let json = serde_json::to_vec(&request).expect("serializes");
        prop_assert_eq!(decode::json(&json, &DecodeLimits::default()), Ok(request));
    }

    #[test]
    fn spool_recovery_yields_exactly_the_frames_written_whole(
        frames in proptest::collection::vec((any::<u32>(), any::<u128>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
        cut in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let dir = std::env::temp_dir().join(format!("growth-spool-prop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut bytes = segment::header(7).to_vec();
        let mut ends = Vec::new();
        for (rows, digest, payload) in &frames {
            segment::encode_frame(*rows, *digest, payload, &mut bytes);
            ends.push(bytes.len() as u64);
        }
        // A torn write: the file ends anywhere, and whatever was being written
        // after the cut may have reached the disk as garbage.
        let cut = cut.index(bytes.len() + 1) as u64;
        bytes.truncate(cut as usize);
        bytes.extend_from_slice(&garbage);
        std::fs::write(segment::path(&dir, 7), &bytes).expect("write");

        let scan = segment::scan(&dir, 7, HEADER_LEN).expect("scan");
        let whole = ends.iter().filter(|end| **end <= cut).count();
        // Garbage after the cut could only parse as a frame by matching its CRC-32.
        prop_assert_eq!(scan.frames.len(), whole);
        let mut reader = segment::Reader::new(&dir);
        for (frame, (rows, digest, payload)) in scan.frames.iter().zip(&frames) {
            prop_assert_eq!((frame.rows, frame.digest), (*rows, *digest));
            prop_assert_eq!(&reader.payload(frame).expect("reads back"), payload);
            prop_assert!(frame.start.offset + FRAME_HEADER_LEN + u64::from(frame.payload_len) <= cut);
        }
        prop_assert_eq!(scan.damage.is_some(), cut < HEADER_LEN || (bytes.len() as u64) > scan.end);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_raw_user_id_is_stored_only_as_its_hash(
        id in "[a-zA-Z0-9@._-]{1,60}",
        key in proptest::collection::vec(any::<u8>(), 1..40),
    ) {
        let hasher = UserHasher::new(Some(key));
        let received_at = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).expect("valid");
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        event_name: "signup".into(),
                        attributes: vec![KeyValue {
                            key: "user.id".into(),
                            value: Some(AnyValue { value: Some(Value::StringValue(id.clone())) }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mapped = map_request(&request, &MapRules::new(hasher.clone()), received_at);
        prop_assert_eq!(mapped.rows.len(), 1);
        let row = &mapped.rows[0];
        let hash = hasher.hash(&id);
        prop_assert_eq!(row.user_hash.as_str(), hash.as_str());
        prop_assert!(row.properties.iter().all(|(k, v)| !k.contains(&id) && !v.contains(&id)));
    }
}
