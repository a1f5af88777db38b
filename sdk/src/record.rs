//! Event → OpenTelemetry log record: where the user is hashed and the contract's
//! bounds (`growth_schema::limits`) are applied, so nothing over a bound and no raw
//! user id ever reaches the queue.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use growth_schema::attributes::{EVENT_NAME, SOURCE, USER_HASH, is_reserved};
use growth_schema::limits::{
    MAX_EVENT_NAME_BYTES, MAX_PROPERTIES, MAX_PROPERTY_KEY_BYTES, MAX_PROPERTY_VALUE_BYTES,
    MAX_SOURCE_BYTES, is_valid_name, truncate_to,
};
use growth_schema::user_hash::UserHasher;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};

use crate::event::{AttributeValue, Event, User};

/// Distinct dynamic event names given a `'static` copy for `LogRecord.event_name`.
/// Event names are a small closed set in practice; past this bound a name still
/// travels in the `event.name` attribute, which the contract reads as well.
const MAX_INTERNED_NAMES: usize = 1024;

/// A log record ready for the queue, and how many attributes were left out.
pub(crate) struct Encoded {
    pub(crate) record: SdkLogRecord,
    pub(crate) attributes_dropped: u64,
}

/// The event name breaks the contract (empty, too long, control characters).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidEventName;

/// Builds the OTLP log record for `event`, hashing its user with `hasher`.
pub(crate) fn encode(
    logger: &SdkLogger,
    hasher: &UserHasher,
    event: Event,
    now: SystemTime,
) -> Result<Encoded, InvalidEventName> {
    if !is_valid_name(&event.name, MAX_EVENT_NAME_BYTES) {
        return Err(InvalidEventName);
    }
    let mut record = logger.create_log_record();
    let mut attributes_dropped = 0;

    // `LogRecord.event_name` only takes `&'static str` in opentelemetry 0.33; the
    // attribute carries the name for every receiver, including pre-OTLP-1.5 ones.
    let static_name = match &event.name {
        Cow::Borrowed(name) => Some(*name),
        Cow::Owned(name) => intern(name),
    };
    if let Some(name) = static_name {
        record.set_event_name(name);
    }
    record.add_attribute(EVENT_NAME, AnyValue::from(event.name.into_owned()));
    record.set_timestamp(event.timestamp.unwrap_or(now));
    record.set_observed_timestamp(now);

    match event.user {
        // An empty id is no user: hashing it would invent one shared phantom user.
        Some(User::Id(id)) if id.is_empty() => {}
        Some(User::Id(id)) => record.add_attribute(USER_HASH, hasher.hash(&id).into_string()),
        Some(User::Hash(hash)) => record.add_attribute(USER_HASH, hash.into_string()),
        None => {}
    }

    let mut source = event.source;
    let mut properties: Vec<(String, AttributeValue)> = Vec::new();
    for (key, value) in event.attributes {
        if key == SOURCE {
            match value {
                AttributeValue::String(text) if source.is_none() => source = Some(text),
                _ => attributes_dropped += 1,
            }
            continue;
        }
        if is_reserved(&key) || key.is_empty() || key.len() > MAX_PROPERTY_KEY_BYTES {
            attributes_dropped += 1;
            continue;
        }
        if let Some(kept) = properties.iter_mut().find(|(k, _)| *k == key) {
            kept.1 = value; // the last value given for a key wins
        } else if properties.len() < MAX_PROPERTIES {
            properties.push((key, value));
        } else {
            attributes_dropped += 1;
        }
    }

    if let Some(source) = source {
        let source = truncate_to(&source, MAX_SOURCE_BYTES);
        if is_valid_name(source, MAX_SOURCE_BYTES) {
            record.add_attribute(SOURCE, source.to_owned());
        } else {
            attributes_dropped += 1;
        }
    }
    for (key, value) in properties {
        record.add_attribute(key, to_any_value(value));
    }
    Ok(Encoded {
        record,
        attributes_dropped,
    })
}

fn to_any_value(value: AttributeValue) -> AnyValue {
    match value {
        AttributeValue::String(mut text) => {
            let kept = truncate_to(&text, MAX_PROPERTY_VALUE_BYTES).len();
            text.truncate(kept);
            AnyValue::from(text)
        }
        AttributeValue::Int(n) => AnyValue::Int(n),
        AttributeValue::Float(x) => AnyValue::Double(x),
        AttributeValue::Bool(b) => AnyValue::Boolean(b),
    }
}

/// A `'static` copy of a dynamic event name, leaked once per distinct name up to
/// [`MAX_INTERNED_NAMES`] (at most 128 KiB for the process).
fn intern(name: &str) -> Option<&'static str> {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().ok()?;
    if let Some(interned) = names.get(name) {
        return Some(interned);
    }
    if names.len() >= MAX_INTERNED_NAMES {
        return None;
    }
    let interned: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(interned);
    Some(interned)
}

#[cfg(test)]
mod tests {
    use opentelemetry::Key;
    use opentelemetry::logs::LoggerProvider as _;
    use opentelemetry_sdk::logs::SdkLoggerProvider;

    use super::*;

    fn logger() -> SdkLogger {
        SdkLoggerProvider::builder().build().logger("test")
    }

    fn attribute<'a>(record: &'a SdkLogRecord, key: &str) -> Option<&'a AnyValue> {
        record
            .attributes_iter()
            .find(|(k, _)| *k == Key::from(key.to_owned()))
            .map(|(_, v)| v)
    }

    fn text(value: Option<&AnyValue>) -> Option<String> {
        match value {
            Some(AnyValue::String(s)) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn hashes_the_user_like_user_hasher() {
        for key in [None, Some(b"secret".to_vec())] {
            let hasher = UserHasher::new(key);
            let encoded = encode(
                &logger(),
                &hasher,
                Event::new("x").user("u1"),
                SystemTime::now(),
            )
            .unwrap();
            assert_eq!(
                text(attribute(&encoded.record, USER_HASH)),
                Some(hasher.hash("u1").into_string())
            );
            let raw = encoded
                .record
                .attributes_iter()
                .any(|(_, v)| text(Some(v)).as_deref() == Some("u1"));
            assert!(!raw, "the raw id must not be in the record");
        }
    }

    #[test]
    fn an_empty_user_id_is_anonymous() {
        let event = Event::new("x").user("");
        let encoded = encode(&logger(), &UserHasher::default(), event, SystemTime::now()).unwrap();
        assert!(attribute(&encoded.record, USER_HASH).is_none());
    }

    #[test]
    fn sets_event_name_field_and_attribute() {
        let now = SystemTime::now();
        let hasher = UserHasher::default();
        let literal = encode(&logger(), &hasher, Event::new("expense_logged"), now).unwrap();
        assert_eq!(literal.record.event_name(), Some("expense_logged"));
        let dynamic = encode(&logger(), &hasher, Event::new(format!("report_{}", 7)), now).unwrap();
        assert_eq!(dynamic.record.event_name(), Some("report_7"));
        assert_eq!(
            text(attribute(&dynamic.record, EVENT_NAME)).as_deref(),
            Some("report_7")
        );
        assert_eq!(dynamic.record.timestamp(), Some(now));
        assert!(attribute(&dynamic.record, USER_HASH).is_none(), "anonymous");
    }

    #[test]
    fn refuses_invalid_event_names() {
        let hasher = UserHasher::default();
        for name in [
            String::new(),
            "a\nb".to_owned(),
            "x".repeat(MAX_EVENT_NAME_BYTES + 1),
        ] {
            let result = encode(&logger(), &hasher, Event::new(name), SystemTime::now());
            assert_eq!(result.err(), Some(InvalidEventName));
        }
    }

    #[test]
    fn applies_limits_and_keeps_reserved_names_out() {
        let mut event = Event::new("x")
            .attr("user.id", "raw-id")
            .attr("user.hash", "forged")
            .attr("event.name", "other")
            .attr("source", "pwa")
            .attr("note", "é".repeat(MAX_PROPERTY_VALUE_BYTES))
            .attr("k".repeat(MAX_PROPERTY_KEY_BYTES + 1), 1);
        for i in 0..MAX_PROPERTIES {
            event = event.attr(format!("p{i}"), i as i64);
        }
        let encoded = encode(&logger(), &UserHasher::default(), event, SystemTime::now()).unwrap();
        let record = &encoded.record;
        assert!(attribute(record, "user.id").is_none());
        assert!(attribute(record, USER_HASH).is_none());
        assert_eq!(text(attribute(record, EVENT_NAME)).as_deref(), Some("x"));
        assert_eq!(text(attribute(record, SOURCE)).as_deref(), Some("pwa"));
        let note = text(attribute(record, "note")).unwrap();
        assert_eq!(note.len(), MAX_PROPERTY_VALUE_BYTES);
        // user.id, user.hash, event.name, the long key, and one property past the limit.
        assert_eq!(encoded.attributes_dropped, 5);
    }

    #[test]
    fn maps_value_types() {
        let event = Event::new("x")
            .attr("i", 3)
            .attr("f", 1.5)
            .attr("b", true)
            .attr("i", 4);
        let encoded = encode(&logger(), &UserHasher::default(), event, SystemTime::now()).unwrap();
        assert_eq!(attribute(&encoded.record, "i"), Some(&AnyValue::Int(4)));
        assert_eq!(
            attribute(&encoded.record, "f"),
            Some(&AnyValue::Double(1.5))
        );
        assert_eq!(
            attribute(&encoded.record, "b"),
            Some(&AnyValue::Boolean(true))
        );
    }
}
