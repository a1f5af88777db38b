//! The SDK's hand-written protobuf encoder (`record`, `request`, `wire`), checked
//! against prost: events built from the input are encoded as `track_event` and the
//! delivery thread encode them, prost decodes the bytes, and the result must equal
//! the request a model of the contract's bounds expects (decode(encode(x)) == x, up
//! to the documented truncation and dropping). A length the encoder computes wrong,
//! a bad varint or a mis-framed record fails the decode or the comparison.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use growth_schema::attributes::is_reserved;
use growth_schema::limits::{
    MAX_EVENT_NAME_BYTES, MAX_PROPERTIES, MAX_PROPERTY_KEY_BYTES, MAX_PROPERTY_VALUE_BYTES,
    MAX_SOURCE_BYTES, is_valid_name, truncate_to,
};
use growth_schema::user_hash::UserHasher;
use growth_sdk::{AttributeValue, Event};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use prost::Message;

/// The SDK's bounds on nested values (`record.rs`).
const MAX_VALUE_DEPTH: usize = 4;
const MAX_VALUE_ELEMENTS: usize = 256;

const NAMES: [&str; 6] = [
    "signup",
    "event.name",
    "user.id",
    "source",
    "amount",
    "user.hash",
];

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => (*u.choose(&NAMES)?).to_owned(),
        1 => {
            let s: String = u.arbitrary()?;
            s.repeat(u.int_in_range(1..=300)?)
        }
        _ => u.arbitrary()?,
    })
}

fn value(u: &mut Unstructured<'_>, depth: usize) -> Result<AttributeValue> {
    let nested = depth < 6;
    Ok(match u.int_in_range(0..=if nested { 6 } else { 4 })? {
        0 => AttributeValue::String(text(u)?),
        1 => AttributeValue::Int(u.arbitrary()?),
        2 => AttributeValue::Float(f64::from_bits(u.arbitrary()?)),
        3 => AttributeValue::Bool(u.arbitrary()?),
        4 => {
            let b: Vec<u8> = u.arbitrary()?;
            AttributeValue::Bytes(b.repeat(u.int_in_range(1..=100)?))
        }
        5 => {
            let n = u.int_in_range(0..=if depth == 0 { 300 } else { 5 })?;
            AttributeValue::Array((0..n).map(|_| value(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=5)?;
            AttributeValue::Map(
                (0..n)
                    .map(|_| Ok((text(u)?, value(u, depth + 1)?)))
                    .collect::<Result<_>>()?,
            )
        }
    })
}

fn time(u: &mut Unstructured<'_>) -> Result<SystemTime> {
    let nanos = Duration::from_nanos(u.arbitrary()?);
    Ok(if u.ratio(1, 8)? {
        UNIX_EPOCH - nanos
    } else {
        UNIX_EPOCH + nanos
    })
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn any(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

/// What the receiver should see of `value`: the contract's bounds applied.
fn model(value: &AttributeValue, depth: usize, budget: &mut usize, dropped: &mut u64) -> AnyValue {
    let take = |budget: &mut usize, dropped: &mut u64| {
        if depth >= MAX_VALUE_DEPTH || *budget == 0 {
            *dropped += 1;
            false
        } else {
            *budget -= 1;
            true
        }
    };
    match value {
        AttributeValue::String(s) => any(Value::StringValue(
            truncate_to(s, MAX_PROPERTY_VALUE_BYTES).to_owned(),
        )),
        AttributeValue::Int(n) => any(Value::IntValue(*n)),
        AttributeValue::Float(x) => any(Value::DoubleValue(*x)),
        AttributeValue::Bool(b) => any(Value::BoolValue(*b)),
        AttributeValue::Bytes(b) => any(Value::BytesValue(
            b[..b.len().min(MAX_PROPERTY_VALUE_BYTES)].to_vec(),
        )),
        AttributeValue::Array(items) => {
            let mut values = Vec::new();
            for item in items {
                if take(budget, dropped) {
                    values.push(model(item, depth + 1, budget, dropped));
                }
            }
            any(Value::ArrayValue(ArrayValue { values }))
        }
        AttributeValue::Map(entries) => {
            let mut values = Vec::new();
            for (key, item) in entries {
                if take(budget, dropped) {
                    let item = model(item, depth + 1, budget, dropped);
                    values.push(kv(truncate_to(key, MAX_PROPERTY_KEY_BYTES), item));
                }
            }
            any(Value::KvlistValue(KeyValueList { values }))
        }
    }
}

enum User {
    None,
    Id(String),
    Hash(String),
}

struct Input {
    name: String,
    user: User,
    source: Option<String>,
    attributes: Vec<(String, AttributeValue)>,
    timestamp: Option<SystemTime>,
}

fn input(u: &mut Unstructured<'_>, hasher: &UserHasher) -> Result<Input> {
    let name = if u.ratio(1, 4)? {
        text(u)?
    } else {
        (*u.choose(&NAMES)?).to_owned()
    };
    let user = match u.int_in_range(0..=2)? {
        0 => User::None,
        1 => User::Id(text(u)?),
        _ => User::Hash(hasher.hash(&text(u)?).as_str().to_owned()),
    };
    let source = if u.arbitrary()? { Some(text(u)?) } else { None };
    let most = if u.ratio(1, 8)? { 80 } else { 6 };
    let n = u.int_in_range(0..=most)?;
    let attributes = (0..n)
        .map(|_| Ok((text(u)?, value(u, 0)?)))
        .collect::<Result<_>>()?;
    let timestamp = if u.arbitrary()? { Some(time(u)?) } else { None };
    Ok(Input {
        name,
        user,
        source,
        attributes,
        timestamp,
    })
}

fn event(input: &Input) -> Event {
    let mut event = Event::new(input.name.clone());
    match &input.user {
        User::None => {}
        User::Id(id) => event = event.user(id.clone()),
        User::Hash(hash) => {
            event =
                event.user_hash(growth_schema::user_hash::UserHash::parse(hash).expect("a hash"))
        }
    }
    if let Some(source) = &input.source {
        event = event.source(source);
    }
    for (key, value) in &input.attributes {
        event = event.attr(key.clone(), value.clone());
    }
    if let Some(at) = input.timestamp {
        event = event.at(at);
    }
    event
}

/// The attributes and dropped count a receiver should see for `input`.
fn expected(input: &Input, hasher: &UserHasher) -> (Vec<KeyValue>, u32) {
    let mut out = vec![kv(
        "event.name",
        any(Value::StringValue(input.name.clone())),
    )];
    match &input.user {
        User::None => {}
        User::Id(id) if id.is_empty() => {}
        User::Id(id) => out.push(kv(
            "user.hash",
            any(Value::StringValue(hasher.hash(id).as_str().to_owned())),
        )),
        User::Hash(hash) => out.push(kv("user.hash", any(Value::StringValue(hash.clone())))),
    }
    let mut source = input.source.clone();
    let mut dropped = 0u64;
    let mut kept = 0;
    let mut budget = MAX_VALUE_ELEMENTS;
    for (i, (key, value)) in input.attributes.iter().enumerate() {
        if key == "source" {
            match value {
                AttributeValue::String(s) if source.is_none() => source = Some(s.clone()),
                _ => dropped += 1,
            }
            continue;
        }
        if is_reserved(key) || key.is_empty() || key.len() > MAX_PROPERTY_KEY_BYTES {
            dropped += 1;
            continue;
        }
        if input.attributes[i + 1..]
            .iter()
            .any(|(later, _)| later == key)
        {
            continue;
        }
        if kept == MAX_PROPERTIES {
            dropped += 1;
            continue;
        }
        kept += 1;
        let value = model(value, 0, &mut budget, &mut dropped);
        out.push(kv(key, value));
    }
    if let Some(source) = source {
        let source = truncate_to(&source, MAX_SOURCE_BYTES);
        if is_valid_name(source, MAX_SOURCE_BYTES) {
            out.push(kv("source", any(Value::StringValue(source.to_owned()))));
        } else {
            dropped += 1;
        }
    }
    (out, dropped.min(u64::from(u32::MAX)) as u32)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let hasher = UserHasher::new(if u.arbitrary()? {
        Some(u.arbitrary()?)
    } else {
        None
    });
    let mut resource = vec![("service.name".to_owned(), text(u)?)];
    for _ in 0..u.int_in_range(0..=2)? {
        resource.push((text(u)?, text(u)?));
    }
    let now = time(u)?;
    let inputs: Vec<Input> = (0..u.int_in_range(0..=4)?)
        .map(|_| input(u, &hasher))
        .collect::<Result<_>>()?;
    let events: Vec<Event> = inputs.iter().map(event).collect();

    let (bytes, dropped) =
        growth_sdk::fuzzing::encode_request(&resource, hasher.clone(), &events, now);
    let request =
        ExportLogsServiceRequest::decode(&bytes[..]).expect("prost decodes what the SDK encodes");
    assert_eq!(request.resource_logs.len(), 1);
    let resource_logs = &request.resource_logs[0];
    let attributes = &resource_logs
        .resource
        .as_ref()
        .expect("a resource")
        .attributes;
    let want: Vec<KeyValue> = resource
        .iter()
        .map(|(k, v)| kv(k, any(Value::StringValue(v.clone()))))
        .collect();
    assert_eq!(attributes, &want, "resource attributes");
    assert_eq!(resource_logs.scope_logs.len(), 1);
    let scope = &resource_logs.scope_logs[0];
    assert_eq!(
        scope.scope.as_ref().map(|s| s.name.as_str()),
        Some("growth-sdk")
    );

    let mut records = scope.log_records.iter();
    for (input, dropped) in inputs.iter().zip(&dropped) {
        let valid = is_valid_name(&input.name, MAX_EVENT_NAME_BYTES);
        assert_eq!(dropped.is_some(), valid, "only invalid names are refused");
        if !valid {
            continue;
        }
        let record = records.next().expect("one record per accepted event");
        let (attributes, dropped_count) = expected(input, &hasher);
        assert_eq!(record.event_name, input.name);
        assert_eq!(
            record.time_unix_nano,
            unix_nanos(input.timestamp.unwrap_or(now))
        );
        assert_eq!(record.observed_time_unix_nano, unix_nanos(now));
        assert_eq!(
            format!("{:?}", record.attributes),
            format!("{attributes:?}")
        );
        assert_eq!(record.dropped_attributes_count, dropped_count);
        assert_eq!(
            u64::from(dropped_count),
            dropped.expect("accepted").min(u64::from(u32::MAX))
        );
        assert!(record.body.is_none() && record.severity_number == 0 && record.trace_id.is_empty());
    }
    assert!(records.next().is_none(), "no record beyond the events");
    Ok(())
}

fuzz_target!(
    init: growth_fuzz::write_seeds_if_asked(|| {
        (0u64..16).map(|i| growth_fuzz::prng_bytes(100 + i, 32 + 64 * i as usize)).collect()
    }),
    |data: &[u8]| {
        let _ = run(&mut Unstructured::new(data));
    }
);
