//! The mapping (`map::Mapper`, `map::map_request`): any decodable request maps without
//! panicking, the intake's path (mapping while reading the bytes in place) and the
//! owned path agree, every record is accounted for, no raw `user.id` (nor
//! `anonymous.id`, `merged.id`) value and no raw
//! identifying attribute reaches a row, and every row is within the contract's bounds.
#![no_main]

use chrono::{DateTime, Utc};
use growth_collector::auth::AppAccess;
use growth_collector::map::{MapRules, Mapper, map_request};
use growth_collector::privacy::{IdentifyingAction, Privacy};
use growth_collector::receiver::decode::{self, DecodeLimits};
use growth_schema::user_hash::UserHasher;
use growth_schema::{attributes, limits};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// Strings a row must never hold: the text `user.id`, `anonymous.id` and `merged.id`
/// values of the request that occur nowhere else in its bytes (else the same text
/// may legitimately arrive as an event name or a property) and could not be derived
/// text (see below).
fn raw_ids(request: &ExportLogsServiceRequest, data: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    for resource in &request.resource_logs {
        for scope in &resource.scope_logs {
            for record in &scope.log_records {
                let raw = |key: &str| {
                    key == attributes::USER_ID
                        || attributes::HASHED_TWINS.iter().any(|(id, _)| *id == key)
                };
                for kv in record.attributes.iter().filter(|kv| raw(&kv.key)) {
                    if let Some(Value::StringValue(id)) =
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    {
                        ids.push(id.clone());
                    }
                }
            }
        }
    }
    // Text a row may hold without it coming from the id: number and boolean
    // spellings, hex (hashes, bytes values), JSON punctuation, the default app.
    const DERIVED: [&str; 6] = [
        "unknown_service",
        "Infinity",
        "NaN",
        "true",
        "false",
        "null",
    ];
    ids.retain(|id| {
        id.len() >= 6
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'@')
            && id
                .bytes()
                .any(|b| b.is_ascii_alphabetic() && !b.is_ascii_hexdigit())
            && !DERIVED.iter().any(|d| d.contains(id.as_str()))
            && data
                .windows(id.len())
                .filter(|w| *w == id.as_bytes())
                .count()
                == 1
    });
    ids
}

fuzz_target!(
    init: growth_fuzz::write_seeds_if_asked(growth_fuzz::protobuf_seeds),
    |data: &[u8]| {
    let limits = DecodeLimits::default();
    let Ok(request) = decode::protobuf(data, &limits) else {
        return;
    };
    let received_at = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).expect("valid time");
    let hasher = UserHasher::new(Some(b"fuzz-key".to_vec()));
    let ids = raw_ids(&request, data);
    for action in [IdentifyingAction::Hash, IdentifyingAction::Drop] {
        let mut rules = MapRules::new(hasher.clone());
        rules.privacy = Privacy::new(["x-customer".to_owned()], action);
        let owned = map_request(&request, &rules, received_at);

        let access = AppAccess::All;
        let mut mapper = Mapper::new(&rules, &access, received_at);
        decode::protobuf_visit(data, &limits, &mut mapper).expect("decode accepted it");
        let in_place = mapper.finish();
        assert_eq!(format!("{owned:?}"), format!("{in_place:?}"), "the two paths agree");

        let records: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        assert_eq!(owned.received, records as u64);
        assert_eq!(owned.stored + owned.not_growth + owned.rejected_total(), owned.received);
        assert_eq!(owned.rows.len() as u64, owned.stored);
        for row in &owned.rows {
            assert!(limits::is_valid_name(&row.event, limits::MAX_EVENT_NAME_BYTES), "{row:?}");
            assert!(row.app.len() <= limits::MAX_APP_BYTES && !row.app.is_empty());
            assert!(row.source.len() <= limits::MAX_SOURCE_BYTES);
            assert!(
                row.user_hash.is_empty()
                    || (row.user_hash.len() == 64
                        && row.user_hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
                "user hash {:?}",
                row.user_hash
            );
            assert!(row.properties.len() <= limits::MAX_PROPERTIES);
            assert!(row.numbers.len() <= row.properties.len());
            for (key, value) in &row.properties {
                assert!(!key.is_empty() && key.len() <= limits::MAX_PROPERTY_KEY_BYTES);
                assert!(value.len() <= limits::MAX_PROPERTY_VALUE_BYTES, "{key}: {} bytes", value.len());
                assert!(
                    !growth_schema::attributes::is_reserved(key),
                    "reserved attribute {key} kept as a property"
                );
                if rules.privacy.is_identifying(key) {
                    assert_eq!(action, IdentifyingAction::Hash, "{key} not dropped");
                    assert!(
                        value.is_empty() // empty stays empty: nobody to identify
                            || (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())),
                        "identifying {key} kept raw: {value:?}"
                    );
                }
            }
            for id in &ids {
                let leaks = [&row.app, &row.event, &row.user_hash, &row.source]
                    .into_iter()
                    .chain(row.properties.iter().flat_map(|(k, v)| [k, v]))
                    .chain(row.numbers.iter().map(|(k, _)| k))
                    .any(|field| field.contains(id.as_str()));
                assert!(!leaks, "raw user.id {id:?} in a row");
            }
        }
    }
});
