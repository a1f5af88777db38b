//! Event → the protobuf bytes of one OTLP `LogRecord`, on the caller's thread.
//!
//! This is the hot path of `track`, so it writes protobuf directly into one
//! buffer (no intermediate message structs): the contract's bounds
//! (`growth_schema::limits`) are applied, and the result is already framed as a
//! `ScopeLogs.log_records` entry, so a batch is a concatenation (see `request`).
//! One allocation per event.
//!
//! The user is hashed on the delivery thread, not here: HMAC-SHA256 was a third
//! of `track`'s time on the caller's thread (about 200 of 650 ns). `encode`
//! leaves 64 placeholder bytes where the hex goes and keeps the raw id behind
//! the record's wire bytes; [`EncodedRecord::seal`] hashes it into the
//! placeholder and wipes it when the delivery thread cuts the record into a
//! request — at most the batch delay later. So the raw id stays inside the app's
//! process, in the SDK's queue only until then; it is never sent, logged
//! (`Debug` shows sizes only) or written anywhere, and a record dropped unsealed
//! is wiped too.

use std::time::{SystemTime, UNIX_EPOCH};

use growth_schema::attributes::{EVENT_NAME, SOURCE, USER_HASH, is_reserved};
use growth_schema::limits::{
    MAX_EVENT_NAME_BYTES, MAX_PROPERTIES, MAX_PROPERTY_KEY_BYTES, MAX_PROPERTY_VALUE_BYTES,
    MAX_SOURCE_BYTES, is_valid_name, truncate_to,
};
use growth_schema::user_hash::{UserHash, UserHasher};
use zeroize::Zeroize;

use crate::event::AttributeValue;
use crate::wire::{self, FRAME_RESERVE};

/// `LogRecord` field numbers (opentelemetry/proto/logs/v1/logs.proto).
mod field {
    pub const TIME_UNIX_NANO: u32 = 1;
    pub const ATTRIBUTES: u32 = 6;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 7;
    pub const OBSERVED_TIME_UNIX_NANO: u32 = 11;
    pub const EVENT_NAME: u32 = 12;
    /// `ScopeLogs.log_records`: the frame every encoded record carries.
    pub const SCOPE_LOG_RECORDS: u32 = 2;
}

/// Nesting depth kept in array and map values; deeper values are left out.
const MAX_VALUE_DEPTH: usize = 4;
/// Elements kept across all arrays and maps of one event: with the other bounds
/// this keeps a record far below the 2 MiB its frame can describe.
const MAX_VALUE_ELEMENTS: usize = 256;

/// Who did it, borrowed from the caller.
#[derive(Clone, Copy)]
pub(crate) enum UserRef<'a> {
    Anonymous,
    Id(&'a str),
    Hash(&'a UserHash),
}

/// The parts of one event, borrowed from the caller.
pub(crate) struct EventParts<'a, K> {
    pub(crate) name: &'a str,
    pub(crate) user: UserRef<'a>,
    pub(crate) source: Option<&'a str>,
    pub(crate) attributes: &'a [(K, AttributeValue)],
    pub(crate) timestamp: Option<SystemTime>,
}

/// One log record, framed as a `ScopeLogs.log_records` entry: once sealed,
/// `bytes[start..end]` goes on the wire as it is.
pub(crate) struct EncodedRecord {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    /// Where the 64 hex placeholder bytes of `user.hash` start, while the raw
    /// id (in `bytes[end..]`) is not hashed yet.
    unhashed: Option<usize>,
}

impl std::fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: before sealing they hold the raw user id.
        f.debug_struct("EncodedRecord")
            .field("len", &self.len())
            .field("sealed", &self.unhashed.is_none())
            .finish()
    }
}

impl EncodedRecord {
    /// Hashes the user into the record (if it has one not hashed yet) and wipes
    /// the raw id; then returns the framed bytes. Idempotent.
    pub(crate) fn seal(&mut self, hasher: &UserHasher) -> &[u8] {
        if let Some(slot) = self.unhashed.take() {
            let digest = hasher.digest_bytes(&self.bytes[self.end..]);
            // The slot holds exactly the 64 hex digits of the 32-byte digest.
            hex::encode_to_slice(digest, &mut self.bytes[slot..slot + 64])
                .unwrap_or_else(|_| unreachable!("32 bytes fill 64 hex digits"));
            self.bytes[self.end..].zeroize();
            self.bytes.truncate(self.end);
        }
        &self.bytes[self.start..self.end]
    }

    /// The framed bytes of a sealed record.
    #[cfg(test)]
    pub(crate) fn sealed_bytes(&self) -> &[u8] {
        assert!(self.unhashed.is_none(), "seal first");
        &self.bytes[self.start..self.end]
    }

    /// Length of the framed bytes (the same before and after sealing).
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Bytes this record holds in memory, for the queue's byte budget.
    pub(crate) fn footprint(&self) -> usize {
        self.bytes.capacity() + std::mem::size_of::<Self>()
    }
}

impl Drop for EncodedRecord {
    fn drop(&mut self) {
        // A record dropped before it was sealed (queue full, shutdown) still
        // holds the raw id: wipe it rather than hand it back to the allocator.
        if self.unhashed.is_some() {
            self.bytes[self.end..].zeroize();
        }
    }
}

/// What `encode` produced.
pub(crate) struct Encoded {
    pub(crate) record: EncodedRecord,
    pub(crate) attributes_dropped: u64,
}

/// The event name breaks the contract (empty, too long, control characters).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidEventName;

/// Encodes one event, the user not hashed yet ([`EncodedRecord::seal`] does
/// that). `now` is the observed time (and the event time unless the event
/// carries its own).
pub(crate) fn encode<K: AsRef<str>>(
    event: &EventParts<'_, K>,
    now: SystemTime,
) -> Result<Encoded, InvalidEventName> {
    if !is_valid_name(event.name, MAX_EVENT_NAME_BYTES) {
        return Err(InvalidEventName);
    }
    let mut buf = Vec::with_capacity(estimate(event));
    buf.resize(FRAME_RESERVE, 0);
    let mut unhashed = None;
    let mut attributes_dropped = 0u64;

    wire::put_fixed64(
        &mut buf,
        field::TIME_UNIX_NANO,
        unix_nanos(event.timestamp.unwrap_or(now)),
    );
    wire::put_fixed64(&mut buf, field::OBSERVED_TIME_UNIX_NANO, unix_nanos(now));
    wire::put_bytes(&mut buf, field::EVENT_NAME, event.name.as_bytes());
    // The attribute carries the name for receivers older than OTLP 1.5 too.
    put_string_attribute(&mut buf, EVENT_NAME, event.name.as_bytes());

    match event.user {
        // An empty id is no user: hashing it would invent one shared phantom user.
        UserRef::Id("") | UserRef::Anonymous => {}
        UserRef::Id(id) => {
            put_string_attribute(&mut buf, USER_HASH, &[0u8; 64]);
            unhashed = Some((buf.len() - 64, id));
        }
        UserRef::Hash(hash) => put_string_attribute(&mut buf, USER_HASH, hash.as_str().as_bytes()),
    }

    // A `source` attribute counts only when no source was set explicitly.
    let mut source = event.source;
    let mut kept = 0usize;
    let mut budget = MAX_VALUE_ELEMENTS;
    for (index, (key, value)) in event.attributes.iter().enumerate() {
        let key = key.as_ref();
        if key == SOURCE {
            match value {
                AttributeValue::String(text) if source.is_none() => source = Some(text),
                _ => attributes_dropped += 1,
            }
            continue;
        }
        if is_reserved(key) || key.is_empty() || key.len() > MAX_PROPERTY_KEY_BYTES {
            attributes_dropped += 1;
            continue;
        }
        // The last value given for a key wins: skip this one if the key comes again.
        let repeated = event.attributes[index + 1..]
            .iter()
            .any(|(later, _)| later.as_ref() == key);
        if repeated {
            continue;
        }
        if kept == MAX_PROPERTIES {
            attributes_dropped += 1;
            continue;
        }
        kept += 1;
        attributes_dropped += put_attribute(&mut buf, key, value, &mut budget);
    }
    if let Some(source) = source {
        let source = truncate_to(source, MAX_SOURCE_BYTES);
        if is_valid_name(source, MAX_SOURCE_BYTES) {
            put_string_attribute(&mut buf, SOURCE, source.as_bytes());
        } else {
            attributes_dropped += 1;
        }
    }
    if attributes_dropped > 0 {
        wire::put_varint_field(
            &mut buf,
            field::DROPPED_ATTRIBUTES_COUNT,
            attributes_dropped.min(u64::from(u32::MAX)),
        );
    }
    let start = wire::frame_in_place(&mut buf, field::SCOPE_LOG_RECORDS);
    let end = buf.len();
    let unhashed = unhashed.map(|(slot, id)| {
        buf.extend_from_slice(id.as_bytes());
        slot
    });
    Ok(Encoded {
        record: EncodedRecord {
            bytes: buf,
            start,
            end,
            unhashed,
        },
        attributes_dropped,
    })
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An upper estimate of the record's size, so the buffer is allocated once.
fn estimate<K: AsRef<str>>(event: &EventParts<'_, K>) -> usize {
    let user = match event.user {
        UserRef::Id(id) => id.len(),
        _ => 0,
    };
    let fixed =
        FRAME_RESERVE + 2 * 9 + 2 * (event.name.len() + 16) + (USER_HASH.len() + 64 + 16) + user;
    let source = event.source.map_or(0, |s| s.len() + 24);
    let attributes: usize = event
        .attributes
        .iter()
        .map(|(key, value)| key.as_ref().len() + 16 + value_estimate(value))
        .sum();
    fixed + source + attributes
}

fn value_estimate(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::String(text) => text.len().min(MAX_PROPERTY_VALUE_BYTES),
        AttributeValue::Bytes(bytes) => bytes.len().min(MAX_PROPERTY_VALUE_BYTES),
        AttributeValue::Int(_) | AttributeValue::Float(_) | AttributeValue::Bool(_) => 10,
        // Nested values are rare: let the buffer grow for them.
        AttributeValue::Array(_) | AttributeValue::Map(_) => 64,
    }
}

fn put_string_attribute(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    let any_value = wire::len_field(1, value.len());
    let key_value = wire::len_field(1, key.len()) + wire::len_field(2, any_value);
    wire::put_len_prefix(buf, field::ATTRIBUTES, key_value);
    wire::put_bytes(buf, 1, key.as_bytes());
    wire::put_len_prefix(buf, 2, any_value);
    wire::put_bytes(buf, 1, value);
}

/// Writes one `KeyValue`; returns how many nested values were left out.
fn put_attribute(buf: &mut Vec<u8>, key: &str, value: &AttributeValue, budget: &mut usize) -> u64 {
    let mut dropped = 0;
    let value_len = any_value_len(value, 0, &mut budget.clone());
    let key_value = wire::len_field(1, key.len()) + wire::len_field(2, value_len);
    wire::put_len_prefix(buf, field::ATTRIBUTES, key_value);
    wire::put_bytes(buf, 1, key.as_bytes());
    wire::put_len_prefix(buf, 2, value_len);
    put_any_value(buf, value, 0, budget, &mut dropped);
    dropped
}

/// `AnyValue` field numbers: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7.
fn put_any_value(
    buf: &mut Vec<u8>,
    value: &AttributeValue,
    depth: usize,
    budget: &mut usize,
    dropped: &mut u64,
) {
    match value {
        AttributeValue::String(text) => wire::put_bytes(
            buf,
            1,
            truncate_to(text, MAX_PROPERTY_VALUE_BYTES).as_bytes(),
        ),
        AttributeValue::Bool(b) => wire::put_varint_field(buf, 2, u64::from(*b)),
        AttributeValue::Int(n) => wire::put_varint_field(buf, 3, *n as u64),
        AttributeValue::Float(x) => wire::put_fixed64(buf, 4, x.to_bits()),
        AttributeValue::Bytes(bytes) => {
            wire::put_bytes(buf, 7, &bytes[..bytes.len().min(MAX_PROPERTY_VALUE_BYTES)])
        }
        AttributeValue::Array(values) => {
            let len = array_len(values, depth, &mut budget.clone());
            wire::put_len_prefix(buf, 5, len);
            for item in values {
                if !take_element(depth, budget) {
                    *dropped += 1;
                    continue;
                }
                let item_len = any_value_len(item, depth + 1, &mut budget.clone());
                wire::put_len_prefix(buf, 1, item_len);
                put_any_value(buf, item, depth + 1, budget, dropped);
            }
        }
        AttributeValue::Map(entries) => {
            let len = map_len(entries, depth, &mut budget.clone());
            wire::put_len_prefix(buf, 6, len);
            for (key, item) in entries {
                if !take_element(depth, budget) {
                    *dropped += 1;
                    continue;
                }
                let key = truncate_to(key, MAX_PROPERTY_KEY_BYTES);
                let item_len = any_value_len(item, depth + 1, &mut budget.clone());
                wire::put_len_prefix(
                    buf,
                    1,
                    wire::len_field(1, key.len()) + wire::len_field(2, item_len),
                );
                wire::put_bytes(buf, 1, key.as_bytes());
                wire::put_len_prefix(buf, 2, item_len);
                put_any_value(buf, item, depth + 1, budget, dropped);
            }
        }
    }
}

/// Whether one more nested element fits the depth and element bounds.
fn take_element(depth: usize, budget: &mut usize) -> bool {
    if depth >= MAX_VALUE_DEPTH || *budget == 0 {
        return false;
    }
    *budget -= 1;
    true
}

/// The encoded length of an `AnyValue`'s content, walking the same bounds as
/// `put_any_value` (on a copy of the element budget).
fn any_value_len(value: &AttributeValue, depth: usize, budget: &mut usize) -> usize {
    match value {
        AttributeValue::String(text) => {
            wire::len_field(1, truncate_to(text, MAX_PROPERTY_VALUE_BYTES).len())
        }
        AttributeValue::Bool(b) => 1 + wire::varint_len(u64::from(*b)),
        AttributeValue::Int(n) => 1 + wire::varint_len(*n as u64),
        AttributeValue::Float(_) => 1 + 8,
        AttributeValue::Bytes(bytes) => {
            wire::len_field(7, bytes.len().min(MAX_PROPERTY_VALUE_BYTES))
        }
        AttributeValue::Array(values) => wire::len_field(5, array_len(values, depth, budget)),
        AttributeValue::Map(entries) => wire::len_field(6, map_len(entries, depth, budget)),
    }
}

/// The encoded length of an `ArrayValue`'s content.
fn array_len(values: &[AttributeValue], depth: usize, budget: &mut usize) -> usize {
    let mut inner = 0;
    for item in values {
        if !take_element(depth, budget) {
            continue;
        }
        inner += wire::len_field(1, any_value_len(item, depth + 1, budget));
    }
    inner
}

/// The encoded length of a `KeyValueList`'s content.
fn map_len(entries: &[(String, AttributeValue)], depth: usize, budget: &mut usize) -> usize {
    let mut inner = 0;
    for (key, item) in entries {
        if !take_element(depth, budget) {
            continue;
        }
        let key = truncate_to(key, MAX_PROPERTY_KEY_BYTES);
        let item_len = any_value_len(item, depth + 1, budget);
        inner += wire::len_field(
            1,
            wire::len_field(1, key.len()) + wire::len_field(2, item_len),
        );
    }
    inner
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
    use prost::Message;

    use super::*;

    /// Encodes and seals, as `track` and the delivery thread do between them.
    fn encode<K: AsRef<str>>(
        hasher: &UserHasher,
        event: &EventParts<'_, K>,
        now: SystemTime,
    ) -> Result<Encoded, InvalidEventName> {
        super::encode(event, now).map(|mut encoded| {
            encoded.record.seal(hasher);
            encoded
        })
    }

    #[test]
    fn the_raw_id_waits_behind_the_record_until_sealed_then_is_gone() {
        let hasher = UserHasher::new(Some(b"secret".to_vec()));
        let id = "raw-user-id-42";
        let mut encoded = super::encode(&parts("x", UserRef::Id(id), &[]), SystemTime::now())
            .expect("valid event");
        let len = encoded.record.len();
        assert!(
            !format!("{:?}", encoded.record).contains(id),
            "Debug shows no id"
        );
        let sealed = encoded.record.seal(&hasher).to_vec();
        assert_eq!(sealed.len(), len, "sealing keeps the framed length");
        assert!(!sealed.windows(id.len()).any(|w| w == id.as_bytes()));
        assert_eq!(
            encoded.record.bytes.len(),
            encoded.record.end,
            "trailer removed"
        );
        // Sealing twice changes nothing.
        assert_eq!(encoded.record.seal(&hasher), &sealed[..]);
        let scope = ScopeLogs::decode(&sealed[..]).expect("valid protobuf");
        assert_eq!(
            text(attribute(&scope.log_records[0], USER_HASH)),
            Some(hasher.hash(id).as_str())
        );
    }

    /// Decodes a framed record the way a receiver would: as a `ScopeLogs`.
    fn decode(encoded: &Encoded) -> LogRecord {
        let mut scope = ScopeLogs::decode(encoded.record.sealed_bytes()).expect("valid protobuf");
        assert_eq!(scope.log_records.len(), 1);
        scope.log_records.remove(0)
    }

    fn parts<'a>(
        name: &'a str,
        user: UserRef<'a>,
        attributes: &'a [(&'a str, AttributeValue)],
    ) -> EventParts<'a, &'a str> {
        EventParts {
            name,
            user,
            source: None,
            attributes,
            timestamp: None,
        }
    }

    fn attribute<'a>(record: &'a LogRecord, key: &str) -> Option<&'a Value> {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn text(value: Option<&Value>) -> Option<&str> {
        match value {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn hashes_the_user_like_user_hasher() {
        for key in [None, Some(b"secret".to_vec())] {
            let hasher = UserHasher::new(key);
            let encoded = encode(
                &hasher,
                &parts("x", UserRef::Id("u1"), &[]),
                SystemTime::now(),
            )
            .unwrap();
            assert!(
                !encoded.record.sealed_bytes().windows(2).any(|w| w == b"u1"),
                "the raw id must not be in the record"
            );
            let record = decode(&encoded);
            assert_eq!(
                text(attribute(&record, USER_HASH)),
                Some(hasher.hash("u1").as_str())
            );
        }
    }

    #[test]
    fn an_empty_user_id_is_anonymous() {
        let encoded = encode(
            &UserHasher::default(),
            &parts("x", UserRef::Id(""), &[]),
            SystemTime::now(),
        )
        .unwrap();
        assert!(attribute(&decode(&encoded), USER_HASH).is_none());
    }

    #[test]
    fn sets_event_name_field_attribute_and_times() {
        let now = SystemTime::now();
        let at = now - std::time::Duration::from_secs(60);
        let mut event = parts("report_7", UserRef::Anonymous, &[]);
        event.timestamp = Some(at);
        let record = decode(&encode(&UserHasher::default(), &event, now).unwrap());
        assert_eq!(record.event_name, "report_7");
        assert_eq!(text(attribute(&record, EVENT_NAME)), Some("report_7"));
        assert_eq!(record.time_unix_nano, unix_nanos(at));
        assert_eq!(record.observed_time_unix_nano, unix_nanos(now));
    }

    #[test]
    fn refuses_invalid_event_names() {
        for name in [
            String::new(),
            "a\nb".to_owned(),
            "x".repeat(MAX_EVENT_NAME_BYTES + 1),
        ] {
            let result = encode(
                &UserHasher::default(),
                &parts(&name, UserRef::Anonymous, &[]),
                SystemTime::now(),
            );
            assert_eq!(result.err(), Some(InvalidEventName));
        }
    }

    #[test]
    fn applies_limits_and_keeps_reserved_names_out() {
        let long_key = "k".repeat(MAX_PROPERTY_KEY_BYTES + 1);
        let mut attributes: Vec<(String, AttributeValue)> = vec![
            ("user.id".into(), "raw-id".into()),
            ("user.hash".into(), "forged".into()),
            ("event.name".into(), "other".into()),
            ("source".into(), "pwa".into()),
            ("note".into(), "é".repeat(MAX_PROPERTY_VALUE_BYTES).into()),
            (long_key, 1.into()),
        ];
        for i in 0..=MAX_PROPERTIES {
            attributes.push((format!("p{i}"), (i as i64).into()));
        }
        let event = EventParts {
            name: "x",
            user: UserRef::Anonymous,
            source: None,
            attributes: &attributes,
            timestamp: None,
        };
        let encoded = encode(&UserHasher::default(), &event, SystemTime::now()).unwrap();
        let record = decode(&encoded);
        assert!(attribute(&record, "user.id").is_none());
        assert!(attribute(&record, USER_HASH).is_none());
        assert_eq!(text(attribute(&record, EVENT_NAME)), Some("x"));
        assert_eq!(text(attribute(&record, SOURCE)), Some("pwa"));
        assert_eq!(
            text(attribute(&record, "note")).unwrap().len(),
            MAX_PROPERTY_VALUE_BYTES
        );
        // user.id, user.hash, event.name, the long key, and two properties past the limit
        // (note takes one of the MAX_PROPERTIES places).
        assert_eq!(encoded.attributes_dropped, 6);
        assert_eq!(record.dropped_attributes_count, 6);
    }

    #[test]
    fn maps_every_value_type() {
        let attributes = [
            ("i", AttributeValue::from(3)),
            ("f", 1.5.into()),
            ("b", true.into()),
            ("i", 4.into()),
            ("raw", AttributeValue::from(&b"\x00\xff"[..])),
            ("list", vec![AttributeValue::from(1), "two".into()].into()),
            (
                "map",
                vec![
                    ("k".to_owned(), AttributeValue::from("v")),
                    ("n".to_owned(), vec![AttributeValue::from(false)].into()),
                ]
                .into(),
            ),
        ];
        let record = decode(
            &encode(
                &UserHasher::default(),
                &parts("x", UserRef::Anonymous, &attributes),
                SystemTime::now(),
            )
            .unwrap(),
        );
        assert_eq!(attribute(&record, "i"), Some(&Value::IntValue(4)));
        assert_eq!(attribute(&record, "f"), Some(&Value::DoubleValue(1.5)));
        assert_eq!(attribute(&record, "b"), Some(&Value::BoolValue(true)));
        assert_eq!(
            attribute(&record, "raw"),
            Some(&Value::BytesValue(vec![0, 255]))
        );
        let any = |value| AnyValue { value: Some(value) };
        match attribute(&record, "list") {
            Some(Value::ArrayValue(array)) => assert_eq!(
                array.values,
                [
                    any(Value::IntValue(1)),
                    any(Value::StringValue("two".into()))
                ]
            ),
            other => panic!("{other:?}"),
        }
        match attribute(&record, "map") {
            Some(Value::KvlistValue(list)) => {
                assert_eq!(list.values[0].key, "k");
                assert_eq!(
                    list.values[0].value,
                    Some(any(Value::StringValue("v".into())))
                );
                assert_eq!(list.values.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_and_wide_values_are_bounded_and_still_valid() {
        let mut deep = AttributeValue::from(1);
        for _ in 0..10 {
            deep = AttributeValue::Array(vec![deep]);
        }
        let wide = AttributeValue::Array((0..1000).map(AttributeValue::from).collect());
        let attributes = [("deep", deep), ("wide", wide)];
        let encoded = encode(
            &UserHasher::default(),
            &parts("x", UserRef::Anonymous, &attributes),
            SystemTime::now(),
        )
        .unwrap();
        assert!(encoded.attributes_dropped > 0);
        let record = decode(&encoded);
        match attribute(&record, "wide") {
            // The budget is shared by the event: `deep` took 4 elements (4 levels).
            Some(Value::ArrayValue(array)) => {
                assert_eq!(array.values.len(), MAX_VALUE_ELEMENTS - MAX_VALUE_DEPTH)
            }
            other => panic!("{other:?}"),
        }
    }
}
