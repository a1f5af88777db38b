//! OTLP/JSON decoding that accepts what the protobuf JSON mapping allows, and counts
//! while it decodes.
//!
//! opentelemetry-proto's serde derive refuses valid input (`"doubleValue": "NaN"`,
//! `"Infinity"`, `"-Infinity"`, enum names such as `"SEVERITY_NUMBER_INFO"`, the
//! original snake_case field names) and cannot bound a request's size in structs.
//! This decoder fills the same prost structs through serde visitors, so it is
//! streaming (no intermediate `serde_json::Value`), and charges every record, value
//! and nesting level to a [`Budget`] as it goes, stopping at the first excess.
//!
//! What it accepts, per the protobuf JSON mapping and the OTLP/JSON deviations:
//! lowerCamelCase or original field names; `null` for any field (the default);
//! 64-bit integers as numbers or strings, integral floats like `1e3`; doubles as
//! numbers or strings including `"NaN"`, `"Infinity"`, `"-Infinity"`; enums as
//! numbers or names; `traceId`/`spanId` as hex (OTLP), `bytesValue` as base64
//! (standard or URL-safe, padded or not); unknown fields ignored.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::decode::{Budget, DecodeError, DecodeLimits};

/// Decodes `body` as an OTLP/JSON `ExportLogsServiceRequest` within `limits`.
pub(super) fn decode(
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<ExportLogsServiceRequest, DecodeError> {
    let ctx = Ctx {
        budget: RefCell::new(Budget::new(limits)),
        failure: RefCell::new(None),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let result = MessageSeed::<Request>::new(&ctx, 0)
        .deserialize(&mut deserializer)
        .and_then(|request| {
            deserializer.end()?;
            Ok(request)
        });
    match result {
        Ok(request) => Ok(request.map(|r| r.0).unwrap_or_default()),
        Err(e) => Err(ctx
            .failure
            .take()
            .unwrap_or_else(|| DecodeError::Json(e.to_string()))),
    }
}

struct Ctx<'a> {
    budget: RefCell<Budget<'a>>,
    /// The limit that stopped decoding, reported instead of serde's wrapped message.
    failure: RefCell<Option<DecodeError>>,
}

impl Ctx<'_> {
    fn charge<E: de::Error>(
        &self,
        check: impl FnOnce(&mut Budget) -> Result<(), DecodeError>,
    ) -> Result<(), E> {
        let result = check(&mut self.budget.borrow_mut());
        result.map_err(|e| {
            let message = e.to_string();
            *self.failure.borrow_mut() = Some(e);
            E::custom(message)
        })
    }
}

/// A JSON object decoded field by field into a prost struct.
trait Message: Sized + Default {
    /// (lowerCamelCase, original) names; the index is passed to [`Message::field`].
    const FIELDS: &'static [(&'static str, &'static str)];

    /// Called once per object before its fields (counting, depth checks).
    fn start<E: de::Error>(_ctx: &Ctx, _depth: usize) -> Result<(), E> {
        Ok(())
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error>;
}

struct MessageSeed<'c, 'l, M> {
    ctx: &'c Ctx<'l>,
    depth: usize,
    message: PhantomData<M>,
}

impl<'c, 'l, M> MessageSeed<'c, 'l, M> {
    fn new(ctx: &'c Ctx<'l>, depth: usize) -> Self {
        Self {
            ctx,
            depth,
            message: PhantomData,
        }
    }
}

impl<'de, M: Message> DeserializeSeed<'de> for MessageSeed<'_, '_, M> {
    /// `None` for a JSON `null`.
    type Value = Option<M>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, M: Message> Visitor<'de> for MessageSeed<'_, '_, M> {
    type Value = Option<M>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        M::start(self.ctx, self.depth)?;
        let mut message = M::default();
        while let Some(index) = map.next_key_seed(FieldName(M::FIELDS))? {
            match index {
                Some(index) => message.field(index, &mut map, self.ctx, self.depth)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(message))
    }
}

/// A repeated message field; `null` is empty.
struct SeqSeed<'c, 'l, M>(MessageSeed<'c, 'l, M>);

impl<'c, 'l, M> SeqSeed<'c, 'l, M> {
    fn new(ctx: &'c Ctx<'l>, depth: usize) -> Self {
        Self(MessageSeed::new(ctx, depth))
    }
}

impl<'de, M: Message> DeserializeSeed<'de> for SeqSeed<'_, '_, M> {
    type Value = Vec<M>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, M: Message> Visitor<'de> for SeqSeed<'_, '_, M> {
    type Value = Vec<M>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // No size hint: JSON gives none, and trusting one would be an allocation the
        // budget never saw.
        let mut out = Vec::new();
        while let Some(item) =
            seq.next_element_seed(MessageSeed::<M>::new(self.0.ctx, self.0.depth))?
        {
            out.push(item.unwrap_or_default());
        }
        Ok(out)
    }
}

/// A field name looked up in a message's table; `None` for an unknown field.
struct FieldName(&'static [(&'static str, &'static str)]);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .position(|(camel, original)| name == *camel || name == *original))
    }
}

// ── the messages ────────────────────────────────────────────────────────────────

#[derive(Default)]
struct Request(ExportLogsServiceRequest);

impl Message for Request {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("resourceLogs", "resource_logs")];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        _: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        self.0.resource_logs = map.next_value_seed(SeqSeed::new(ctx, depth))?;
        Ok(())
    }
}

impl Message for ResourceLogs {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("resource", "resource"),
        ("scopeLogs", "scope_logs"),
        ("schemaUrl", "schema_url"),
    ];

    fn start<E: de::Error>(ctx: &Ctx, _: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.value())
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        match index {
            0 => self.resource = map.next_value_seed(MessageSeed::new(ctx, depth))?,
            1 => self.scope_logs = map.next_value_seed(SeqSeed::new(ctx, depth))?,
            _ => self.schema_url = string(map)?,
        }
        Ok(())
    }
}

impl Message for Resource {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        match index {
            0 => self.attributes = map.next_value_seed(SeqSeed::new(ctx, depth))?,
            _ => self.dropped_attributes_count = integer(map)?,
        }
        Ok(())
    }
}

impl Message for ScopeLogs {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("scope", "scope"),
        ("logRecords", "log_records"),
        ("schemaUrl", "schema_url"),
    ];

    fn start<E: de::Error>(ctx: &Ctx, _: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.value())
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        match index {
            0 => self.scope = map.next_value_seed(MessageSeed::new(ctx, depth))?,
            1 => self.log_records = map.next_value_seed(SeqSeed::new(ctx, depth))?,
            _ => self.schema_url = string(map)?,
        }
        Ok(())
    }
}

impl Message for InstrumentationScope {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("name", "name"),
        ("version", "version"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        match index {
            0 => self.name = string(map)?,
            1 => self.version = string(map)?,
            2 => self.attributes = map.next_value_seed(SeqSeed::new(ctx, depth))?,
            _ => self.dropped_attributes_count = integer(map)?,
        }
        Ok(())
    }
}

impl Message for LogRecord {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("timeUnixNano", "time_unix_nano"),
        ("observedTimeUnixNano", "observed_time_unix_nano"),
        ("severityNumber", "severity_number"),
        ("severityText", "severity_text"),
        ("body", "body"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
        ("flags", "flags"),
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("eventName", "event_name"),
    ];

    fn start<E: de::Error>(ctx: &Ctx, _: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.record())
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        match index {
            0 => self.time_unix_nano = integer(map)?,
            1 => self.observed_time_unix_nano = integer(map)?,
            2 => self.severity_number = map.next_value_seed(Severity)?,
            3 => self.severity_text = string(map)?,
            4 => self.body = map.next_value_seed(MessageSeed::new(ctx, depth))?,
            5 => self.attributes = map.next_value_seed(SeqSeed::new(ctx, depth))?,
            6 => self.dropped_attributes_count = integer(map)?,
            7 => self.flags = integer(map)?,
            8 => self.trace_id = hex_bytes(map)?,
            9 => self.span_id = hex_bytes(map)?,
            _ => self.event_name = string(map)?,
        }
        Ok(())
    }
}

impl Message for KeyValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("key", "key"), ("value", "value")];

    fn start<E: de::Error>(ctx: &Ctx, _: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.value())
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        match index {
            0 => self.key = string(map)?,
            _ => self.value = map.next_value_seed(MessageSeed::new(ctx, depth))?,
        }
        Ok(())
    }
}

impl Message for AnyValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("intValue", "int_value"),
        ("doubleValue", "double_value"),
        ("arrayValue", "array_value"),
        ("kvlistValue", "kvlist_value"),
        ("bytesValue", "bytes_value"),
    ];

    fn start<E: de::Error>(ctx: &Ctx, _: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.value())
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        index: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        // A null member selects nothing; with several members the last one wins.
        let value = match index {
            0 => map.next_value::<Option<String>>()?.map(Value::StringValue),
            1 => map.next_value::<Option<bool>>()?.map(Value::BoolValue),
            2 => map
                .next_value_seed(Nullable(Integer::<i64>(PhantomData)))?
                .map(Value::IntValue),
            3 => map
                .next_value_seed(Nullable(Double))?
                .map(Value::DoubleValue),
            4 => map
                .next_value_seed(MessageSeed::<ArrayValue>::new(ctx, depth + 1))?
                .map(Value::ArrayValue),
            5 => map
                .next_value_seed(MessageSeed::<KeyValueList>::new(ctx, depth + 1))?
                .map(Value::KvlistValue),
            _ => match map.next_value::<Option<String>>()? {
                Some(text) => Some(Value::BytesValue(
                    base64_bytes(&text).map_err(de::Error::custom)?,
                )),
                None => None,
            },
        };
        if value.is_some() {
            self.value = value;
        }
        Ok(())
    }
}

impl Message for ArrayValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("values", "values")];

    fn start<E: de::Error>(ctx: &Ctx, depth: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.depth(depth))
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        _: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        self.values = map.next_value_seed(SeqSeed::new(ctx, depth))?;
        Ok(())
    }
}

impl Message for KeyValueList {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("values", "values")];

    fn start<E: de::Error>(ctx: &Ctx, depth: usize) -> Result<(), E> {
        ctx.charge(|budget| budget.depth(depth))
    }

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        _: usize,
        map: &mut A,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), A::Error> {
        self.values = map.next_value_seed(SeqSeed::new(ctx, depth))?;
        Ok(())
    }
}

// ── scalars ─────────────────────────────────────────────────────────────────────

fn string<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
    Ok(map.next_value::<Option<String>>()?.unwrap_or_default())
}

fn integer<'de, A: MapAccess<'de>, T: FromInteger>(map: &mut A) -> Result<T, A::Error> {
    Ok(map
        .next_value_seed(Nullable(Integer::<T>(PhantomData)))?
        .unwrap_or_default())
}

fn hex_bytes<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Vec<u8>, A::Error> {
    let text = string(map)?;
    hex::decode(&text).map_err(|e| de::Error::custom(format!("traceId/spanId must be hex: {e}")))
}

fn base64_bytes(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| "bytesValue is not base64".to_owned())
}

/// `null` → `None`, else the inner seed.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

/// Integer types a JSON number or string converts into, range-checked.
trait FromInteger: Sized + Default {
    const NAME: &'static str;
    fn from_i128(value: i128) -> Option<Self>;
}

macro_rules! from_integer {
    ($($t:ty),*) => {$(
        impl FromInteger for $t {
            const NAME: &'static str = stringify!($t);
            fn from_i128(value: i128) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
        }
    )*};
}
from_integer!(i32, u32, i64, u64);

/// A protobuf integer: a JSON number (integral, exponent allowed) or a string of one.
struct Integer<T>(PhantomData<T>);

impl<'de, T: FromInteger> DeserializeSeed<'de> for Integer<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<T: FromInteger> Integer<T> {
    fn convert<E: de::Error>(value: i128) -> Result<T, E> {
        T::from_i128(value)
            .ok_or_else(|| E::custom(format!("{value} is out of range for {}", T::NAME)))
    }

    fn from_float<E: de::Error>(value: f64) -> Result<T, E> {
        // i128 holds every integral double a 64-bit field could take.
        if value.fract() == 0.0 && value.abs() < 1.8e19 {
            Self::convert(value as i128)
        } else {
            Err(E::custom(format!("{value} is not an integer")))
        }
    }
}

impl<T: FromInteger> Visitor<'_> for Integer<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer ({}) as a number or a string", T::NAME)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Self::convert(i128::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        Self::convert(i128::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        Self::from_float(value)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        let text = text.trim();
        match text.parse::<i128>() {
            Ok(value) => Self::convert(value),
            Err(_) => match text.parse::<f64>() {
                Ok(value) if value.is_finite() => Self::from_float(value),
                _ => Err(E::custom(format!("{text:?} is not an integer"))),
            },
        }
    }
}

/// A double: a JSON number, or a string holding one or `NaN` / `Infinity` / `-Infinity`.
struct Double;

impl<'de> DeserializeSeed<'de> for Double {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for Double {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or \"NaN\", \"Infinity\", \"-Infinity\"")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<f64, E> {
        match text {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            // Rust would also take "inf" or "nan"; the mapping spells them as above.
            other if other.chars().any(char::is_alphabetic) && !other.contains(['e', 'E']) => {
                Err(E::custom(format!("{other:?} is not a double")))
            }
            other => other
                .trim()
                .parse::<f64>()
                .map_err(|_| E::custom(format!("{other:?} is not a double"))),
        }
    }
}

/// `severityNumber`: a number or a `SeverityNumber` name.
struct Severity;

impl<'de> DeserializeSeed<'de> for Severity {
    type Value = i32;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<i32, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for Severity {
    type Value = i32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a severity number or name")
    }

    fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
        Ok(0)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<i32, E> {
        Integer::<i32>(PhantomData).visit_i64(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<i32, E> {
        Integer::<i32>(PhantomData).visit_u64(value)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<i32, E> {
        Integer::<i32>(PhantomData).visit_f64(value)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<i32, E> {
        match SeverityNumber::from_str_name(text) {
            Some(severity) => Ok(severity as i32),
            None => Integer::<i32>(PhantomData).visit_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_ok(text: &str) -> ExportLogsServiceRequest {
        decode(text.as_bytes(), &DecodeLimits::default()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn attribute(request: &ExportLogsServiceRequest, index: usize) -> Option<Value> {
        request.resource_logs[0].scope_logs[0].log_records[0].attributes[index]
            .value
            .as_ref()
            .and_then(|v| v.value.clone())
    }

    /// Found by the property test `decoding_what_the_json_serializer_wrote_is_identity`
    /// (collector/tests/properties.rs): without serde_json's `float_roundtrip`, the
    /// shortest spelling of a double could read back 1 ULP off.
    #[test]
    fn doubles_read_back_exactly() {
        for x in [
            6.176987630171187e-309,
            2.2250738585072014e-308,
            0.1 + 0.2,
            1.7976931348623157e308,
        ] {
            let text = format!(
                r#"{{"resourceLogs": [{{"scopeLogs": [{{"logRecords": [{{"attributes": [{{"key": "x", "value": {{"doubleValue": {}}}}}]}}]}}]}}]}}"#,
                serde_json::to_string(&x).unwrap()
            );
            assert_eq!(
                attribute(&decode_ok(&text), 0),
                Some(Value::DoubleValue(x)),
                "{text}"
            );
        }
    }

    #[test]
    fn accepts_every_spelling_the_json_mapping_allows() {
        let request = decode_ok(
            r#"{"resource_logs": [{"resource": null, "scopeLogs": [{"log_records": [{
                "time_unix_nano": 1.7e18, "observedTimeUnixNano": "1700000000000000001",
                "severityNumber": "SEVERITY_NUMBER_WARN", "flags": "1", "traceId": "",
                "unknownField": {"nested": [1, 2]},
                "attributes": [
                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                    {"key": "inf", "value": {"double_value": "Infinity"}},
                    {"key": "ninf", "value": {"doubleValue": "-Infinity"}},
                    {"key": "exp", "value": {"doubleValue": "1e3"}},
                    {"key": "int", "value": {"intValue": "-9223372036854775808"}},
                    {"key": "intexp", "value": {"intValue": 2e3}},
                    {"key": "bytes", "value": {"bytesValue": "aGk"}},
                    {"key": "none", "value": null},
                    {"key": "nullmember", "value": {"stringValue": null}}
                ]}]}]}]}"#,
        );
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(record.observed_time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(record.flags, 1);
        assert!(matches!(attribute(&request, 0), Some(Value::DoubleValue(d)) if d.is_nan()));
        assert_eq!(
            attribute(&request, 1),
            Some(Value::DoubleValue(f64::INFINITY))
        );
        assert_eq!(
            attribute(&request, 2),
            Some(Value::DoubleValue(f64::NEG_INFINITY))
        );
        assert_eq!(attribute(&request, 3), Some(Value::DoubleValue(1000.0)));
        assert_eq!(attribute(&request, 4), Some(Value::IntValue(i64::MIN)));
        assert_eq!(attribute(&request, 5), Some(Value::IntValue(2000)));
        assert_eq!(
            attribute(&request, 6),
            Some(Value::BytesValue(b"hi".to_vec()))
        );
        assert_eq!(attribute(&request, 7), None);
        assert_eq!(attribute(&request, 8), None);
    }

    #[test]
    fn refuses_what_the_mapping_does_not_allow() {
        for bad in [
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": -1}]}]}]}"#,
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": 1.5}]}]}]}"#,
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "LOUD"}]}]}]}"#,
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}"#,
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": "x", "value": {"doubleValue": "nan"}}]}]}]}]}"#,
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": "x", "value": {"intValue": "12x"}}]}]}]}]}"#,
            r#"{"resourceLogs": {}}"#,
            r#"{"resourceLogs": []} trailing"#,
            r#"[]"#,
        ] {
            assert!(
                matches!(
                    decode(bad.as_bytes(), &DecodeLimits::default()),
                    Err(DecodeError::Json(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(decode_ok("{}"), ExportLogsServiceRequest::default());
        assert_eq!(decode_ok("null"), ExportLogsServiceRequest::default());
    }
}
