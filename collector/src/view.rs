//! OTLP log records as the mapping sees them: borrowed, not owned.
//!
//! The mapping ([`crate::map`]) reads a record's event name, times and attributes
//! and nothing else. These types hold just that, as slices of whatever they were
//! read from: the request's protobuf bytes on the hot path
//! ([`crate::receiver::decode::protobuf_visit`], no allocation per string), or a
//! decoded `ExportLogsServiceRequest` ([`key_values`], for OTLP/JSON and tests).
//! The shapes mirror `opentelemetry_proto`'s so that the two readings agree; an
//! `AnyValue` without a value is `None` here, as the mapping treated it before.

use opentelemetry_proto::tonic::common::v1 as otlp;

/// An attribute value (`AnyValue.value`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `string_value`.
    StringValue(&'a str),
    /// `bool_value`.
    BoolValue(bool),
    /// `int_value`.
    IntValue(i64),
    /// `double_value`.
    DoubleValue(f64),
    /// `array_value`: the elements, `None` for an empty `AnyValue`.
    ArrayValue(Vec<Option<Value<'a>>>),
    /// `kvlist_value`.
    KvlistValue(Vec<KeyValue<'a>>),
    /// `bytes_value`.
    BytesValue(&'a [u8]),
    /// `string_value_strindex` (profiles only; carries no text here).
    StringValueStrindex(i32),
}

/// An attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue<'a> {
    /// The key.
    pub key: &'a str,
    /// The value; `None` when absent or empty.
    pub value: Option<Value<'a>>,
}

/// What the mapping reads of a `LogRecord`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRecord<'a, 's> {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`.
    pub observed_time_unix_nano: u64,
    /// `event_name`.
    pub event_name: &'a str,
    /// `attributes`, in order.
    pub attributes: &'s [KeyValue<'a>],
}

/// Receives a request's records in order: the attributes of each `ResourceLogs`'
/// resource, then that group's records.
pub trait Visitor<'a> {
    /// A new `ResourceLogs` begins; `attributes` are its resource's.
    fn resource(&mut self, attributes: &[KeyValue<'a>]);
    /// One log record of the current resource.
    fn record(&mut self, record: &LogRecord<'a, '_>);
}

/// Feeds a decoded request to `visitor`, as [`crate::receiver::decode::protobuf_visit`]
/// would feed its encoding.
pub fn visit_request<'a>(
    request: &'a opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
    visitor: &mut impl Visitor<'a>,
) {
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map(|r| key_values(&r.attributes))
            .unwrap_or_default();
        visitor.resource(&resource);
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                let attributes = key_values(&record.attributes);
                visitor.record(&LogRecord {
                    time_unix_nano: record.time_unix_nano,
                    observed_time_unix_nano: record.observed_time_unix_nano,
                    event_name: &record.event_name,
                    attributes: &attributes,
                });
            }
        }
    }
}

/// Borrows decoded attributes.
pub fn key_values(attributes: &[otlp::KeyValue]) -> Vec<KeyValue<'_>> {
    attributes.iter().map(key_value).collect()
}

fn key_value(kv: &otlp::KeyValue) -> KeyValue<'_> {
    KeyValue {
        key: &kv.key,
        value: kv.value.as_ref().and_then(any_value),
    }
}

fn any_value(value: &otlp::AnyValue) -> Option<Value<'_>> {
    use otlp::any_value::Value as V;
    Some(match value.value.as_ref()? {
        V::StringValue(s) => Value::StringValue(s),
        V::BoolValue(b) => Value::BoolValue(*b),
        V::IntValue(i) => Value::IntValue(*i),
        V::DoubleValue(d) => Value::DoubleValue(*d),
        V::ArrayValue(array) => Value::ArrayValue(array.values.iter().map(any_value).collect()),
        V::KvlistValue(list) => Value::KvlistValue(key_values(&list.values)),
        V::BytesValue(b) => Value::BytesValue(b),
        V::StringValueStrindex(i) => Value::StringValueStrindex(*i),
    })
}
