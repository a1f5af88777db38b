//! OTLP → growth event: the event contract of DESIGN.md, as a pure function.
//!
//! [`map_request`] turns one `ExportLogsServiceRequest` into [`EventRow`]s and says
//! what happened to every record it did not turn into a row. It does no I/O, keeps
//! no state and never logs, so it can be tested row by row against the contract, and
//! a raw user id can go nowhere but into the hasher.
//!
//! Decisions where the contract is silent:
//! * a missing or empty `service.name` becomes `unknown_service`, as OpenTelemetry
//!   SDKs do, rather than losing the event;
//! * an empty `user.hash` or `user.id` means "no user" (anonymous), so that one
//!   logged-out state does not become one giant user; a non-empty invalid one rejects
//!   the record; an integer `user.id` is hashed as its decimal text;
//! * only integer and double attributes go into `numbers`: strings that look like
//!   numbers (zip codes, versions, ids) stay text;
//! * when an attribute key repeats, the first occurrence wins;
//! * resource attributes other than `service.name`, scope attributes and the record
//!   body are not part of the event.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use growth_schema::attributes;
use growth_schema::limits::{self, truncate_to};
use growth_schema::tables::EventRow;
use growth_schema::user_hash::{UserHash, UserHasher};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// The app of events whose resource has no `service.name` (OpenTelemetry's default).
pub const UNKNOWN_APP: &str = "unknown_service";

/// Why a record that named an event was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The event name is too long, has control characters or is not a string.
    InvalidEventName,
    /// `user.hash` is not 64 lowercase hex characters.
    InvalidUserHash,
    /// `user.id` is too long or neither a string nor an integer.
    InvalidUserId,
    /// `service.name` is too long, has control characters or is not a string.
    InvalidApp,
    /// `source` is too long, has control characters or is not a string.
    InvalidSource,
    /// The timestamp is beyond what can be stored (after the year 2262).
    InvalidTime,
}

impl RejectReason {
    /// Every reason, for pre-creating metric series.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::InvalidEventName,
        RejectReason::InvalidUserHash,
        RejectReason::InvalidUserId,
        RejectReason::InvalidApp,
        RejectReason::InvalidSource,
        RejectReason::InvalidTime,
    ];

    /// The reason as a metric label value and in partial-success messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidEventName => "invalid_event_name",
            RejectReason::InvalidUserHash => "invalid_user_hash",
            RejectReason::InvalidUserId => "invalid_user_id",
            RejectReason::InvalidApp => "invalid_app",
            RejectReason::InvalidSource => "invalid_source",
            RejectReason::InvalidTime => "invalid_time",
        }
    }
}

/// What became of the records of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappedRequest {
    /// One row per accepted growth event, in request order.
    pub rows: Vec<EventRow>,
    /// Log records in the request.
    pub received: u64,
    /// Records without an event name: not growth events, not stored, not an error.
    pub not_growth: u64,
    /// Records that named an event but broke the contract, by reason, in reason order.
    pub rejected: Vec<(RejectReason, u64)>,
    /// Properties dropped because an event had more than the limit (or a key too long).
    pub properties_dropped: u64,
    /// Property values cut to the length limit.
    pub values_truncated: u64,
}

impl MappedRequest {
    /// Records rejected, all reasons together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// A one-line summary of the rejections for the OTLP partial-success message,
    /// e.g. `2 log record(s) rejected: invalid_user_hash=2`; `None` when none were.
    pub fn rejection_message(&self) -> Option<String> {
        let total = self.rejected_total();
        if total == 0 {
            return None;
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, n)| format!("{}={n}", reason.as_str()))
            .collect();
        Some(format!(
            "{total} log record(s) rejected: {} (see the growth event contract)",
            reasons.join(", ")
        ))
    }

    fn reject(&mut self, reason: RejectReason) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => {
                self.rejected.push((reason, 1));
                self.rejected.sort_unstable_by_key(|(r, _)| *r);
            }
        }
    }
}

/// Maps every log record of `request` to a growth event; `received_at` is the
/// receive time, also used for records that carry no timestamp.
pub fn map_request(
    request: &ExportLogsServiceRequest,
    hasher: &UserHasher,
    received_at: DateTime<Utc>,
) -> MappedRequest {
    let mut out = MappedRequest::default();
    for resource_logs in &request.resource_logs {
        let resource_attributes = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        let app = app_of(resource_attributes);
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                out.received += 1;
                match map_record(record, app, hasher, received_at) {
                    Mapped::Event(event) => {
                        out.properties_dropped += event.properties_dropped;
                        out.values_truncated += event.values_truncated;
                        out.rows.push(event.row);
                    }
                    Mapped::NotGrowth => out.not_growth += 1,
                    Mapped::Rejected(reason) => out.reject(reason),
                }
            }
        }
    }
    out
}

/// The outcome for one record.
#[derive(Debug, Clone, PartialEq)]
enum Mapped {
    Event(MappedEvent),
    NotGrowth,
    Rejected(RejectReason),
}

#[derive(Debug, Clone, PartialEq)]
struct MappedEvent {
    row: EventRow,
    properties_dropped: u64,
    values_truncated: u64,
}

fn map_record(
    record: &LogRecord,
    app: Result<&str, RejectReason>,
    hasher: &UserHasher,
    received_at: DateTime<Utc>,
) -> Mapped {
    let attrs = record.attributes.as_slice();
    // Without an event name a record is some other log line: not ours to judge.
    let event = match event_name(record) {
        None => return Mapped::NotGrowth,
        Some(Err(reason)) => return Mapped::Rejected(reason),
        Some(Ok(event)) => event,
    };
    match build_event(record, attrs, event, app, hasher, received_at) {
        Ok(event) => Mapped::Event(event),
        Err(reason) => Mapped::Rejected(reason),
    }
}

fn build_event(
    record: &LogRecord,
    attrs: &[KeyValue],
    event: &str,
    app: Result<&str, RejectReason>,
    hasher: &UserHasher,
    received_at: DateTime<Utc>,
) -> Result<MappedEvent, RejectReason> {
    let app = app?;
    let user_hash = user_of(attrs, hasher)?;
    let source = source_of(attrs)?;
    let event_time = time_of(record, received_at)?;
    let properties = properties_of(attrs);
    Ok(MappedEvent {
        row: EventRow {
            app: app.to_owned(),
            event: event.to_owned(),
            event_time,
            user_hash: user_hash.map(UserHash::into_string).unwrap_or_default(),
            source: source.to_owned(),
            properties: properties.text,
            numbers: properties.numbers,
            received_at,
        },
        properties_dropped: properties.dropped,
        values_truncated: properties.truncated,
    })
}

/// The first attribute named `key`.
fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// `LogRecord.event_name`, else the `event.name` attribute; `None` when neither names one.
fn event_name(record: &LogRecord) -> Option<Result<&str, RejectReason>> {
    let name = if record.event_name.is_empty() {
        match attribute(&record.attributes, attributes::EVENT_NAME)? {
            Value::StringValue(s) if s.is_empty() => return None,
            Value::StringValue(s) => s.as_str(),
            _ => return Some(Err(RejectReason::InvalidEventName)),
        }
    } else {
        record.event_name.as_str()
    };
    Some(
        if limits::is_valid_name(name, limits::MAX_EVENT_NAME_BYTES) {
            Ok(name)
        } else {
            Err(RejectReason::InvalidEventName)
        },
    )
}

/// The resource's `service.name`, [`UNKNOWN_APP`] when it has none.
fn app_of(resource_attributes: &[KeyValue]) -> Result<&str, RejectReason> {
    match attribute(resource_attributes, attributes::SERVICE_NAME) {
        None => Ok(UNKNOWN_APP),
        Some(Value::StringValue(s)) if s.is_empty() => Ok(UNKNOWN_APP),
        Some(Value::StringValue(s)) if limits::is_valid_name(s, limits::MAX_APP_BYTES) => Ok(s),
        Some(_) => Err(RejectReason::InvalidApp),
    }
}

/// `user.hash` if present, else `user.id` hashed, else anonymous (`None`).
fn user_of(attrs: &[KeyValue], hasher: &UserHasher) -> Result<Option<UserHash>, RejectReason> {
    match attribute(attrs, attributes::USER_HASH) {
        Some(Value::StringValue(s)) if s.is_empty() => {}
        Some(Value::StringValue(s)) => {
            return UserHash::parse(s)
                .map(Some)
                .map_err(|_| RejectReason::InvalidUserHash);
        }
        Some(_) => return Err(RejectReason::InvalidUserHash),
        None => {}
    }
    match attribute(attrs, attributes::USER_ID) {
        None => Ok(None),
        Some(Value::StringValue(id)) if id.is_empty() => Ok(None),
        Some(Value::StringValue(id)) if id.len() <= limits::MAX_USER_ID_BYTES => {
            Ok(Some(hasher.hash(id)))
        }
        Some(Value::IntValue(id)) => Ok(Some(hasher.hash(&id.to_string()))),
        Some(_) => Err(RejectReason::InvalidUserId),
    }
}

/// The `source` attribute, empty when absent.
fn source_of(attrs: &[KeyValue]) -> Result<&str, RejectReason> {
    match attribute(attrs, attributes::SOURCE) {
        None => Ok(""),
        Some(Value::StringValue(s)) if s.is_empty() => Ok(""),
        Some(Value::StringValue(s)) if limits::is_valid_name(s, limits::MAX_SOURCE_BYTES) => Ok(s),
        Some(_) => Err(RejectReason::InvalidSource),
    }
}

/// `time_unix_nano`, else `observed_time_unix_nano`, else the receive time.
fn time_of(record: &LogRecord, received_at: DateTime<Utc>) -> Result<DateTime<Utc>, RejectReason> {
    let nanos = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|n| *n != 0);
    match nanos {
        None => Ok(received_at),
        Some(n) => i64::try_from(n)
            .map(DateTime::from_timestamp_nanos)
            .map_err(|_| RejectReason::InvalidTime),
    }
}

#[derive(Debug, Default)]
struct Properties {
    text: Vec<(String, String)>,
    numbers: Vec<(String, f64)>,
    dropped: u64,
    truncated: u64,
}

/// Every non-reserved attribute as text (first occurrence of a key, at most
/// `MAX_PROPERTIES`), and the integer and finite double ones again as numbers.
fn properties_of(attrs: &[KeyValue]) -> Properties {
    let mut out = Properties::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for kv in attrs {
        let key = kv.key.as_str();
        if attributes::is_reserved(key) || key.is_empty() || !seen.insert(key) {
            continue;
        }
        if out.text.len() >= limits::MAX_PROPERTIES || key.len() > limits::MAX_PROPERTY_KEY_BYTES {
            out.dropped += 1;
            continue;
        }
        let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
        match value {
            Some(Value::IntValue(i)) => out.numbers.push((key.to_owned(), *i as f64)),
            Some(Value::DoubleValue(d)) if d.is_finite() => out.numbers.push((key.to_owned(), *d)),
            _ => {}
        }
        let text = value.map(value_text).unwrap_or_default();
        let kept = truncate_to(&text, limits::MAX_PROPERTY_VALUE_BYTES);
        if kept.len() < text.len() {
            out.truncated += 1;
        }
        out.text.push((key.to_owned(), kept.to_owned()));
    }
    out
}

/// An attribute value as text: scalars as themselves, arrays and maps as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => hex::encode(b),
        Value::ArrayValue(_) | Value::KvlistValue(_) => json_of(Some(value)).to_string(),
        Value::StringValueStrindex(_) => String::new(),
    }
}

fn json_of(value: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as Json;
    let Some(value) = value else {
        return Json::Null;
    };
    match value {
        Value::StringValue(s) => Json::String(s.clone()),
        Value::BoolValue(b) => Json::Bool(*b),
        Value::IntValue(i) => Json::from(*i),
        // JSON has no NaN or infinity: those become null.
        Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::BytesValue(b) => Json::String(hex::encode(b)),
        Value::ArrayValue(array) => Json::Array(
            array
                .values
                .iter()
                .map(|v: &AnyValue| json_of(v.value.as_ref()))
                .collect(),
        ),
        Value::KvlistValue(list) => Json::Object(
            list.values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    (kv.key.clone(), json_of(value))
                })
                .collect(),
        ),
        Value::StringValueStrindex(_) => Json::Null,
    }
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
