//! Bounded decoding of an `ExportLogsServiceRequest`, from protobuf or OTLP/JSON.
//!
//! A request's bytes do not bound its memory: an empty log record is 2 bytes of
//! protobuf but a ~200-byte `LogRecord` once decoded, so a 4 MiB request of empty
//! records used to take ~890 MiB. Every reading charges what it meets to
//! [`DecodeLimits`] as it goes and stops at the first excess: log records, values
//! (every attribute key-value, every element of an array or map value at any depth,
//! every resource and scope group) and the nesting depth of array/map values.
//!
//! There is one protobuf reader, [`borrowed`]: the intake reads requests in place
//! with it ([`protobuf_visit`]), a request turned away is counted with it
//! ([`count_records`]), and [`protobuf`] measures with it before handing the bytes
//! to prost. Its recursion follows the nesting of array/map values only, and that
//! is checked against `max_depth` (at most 64, see `--max-value-depth`) before each
//! level is entered, so no request can exhaust the stack. OTLP/JSON is decoded by
//! [`super::otlp_json`], which counts while it decodes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

/// How much one request may expand to once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Log records per request.
    pub max_records: usize,
    /// Attribute key-values, array/map elements (at every depth) and resource/scope
    /// groups per request: every repeated element that is not a log record.
    pub max_values: usize,
    /// Nesting depth of array and map values (an attribute holding a map is depth 1).
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_records: 65_536,
            max_values: 1_048_576,
            max_depth: 8,
        }
    }
}

/// Why a body is not a usable request; every variant means "do not retry as is".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf `ExportLogsServiceRequest`.
    #[error("body is not a protobuf ExportLogsServiceRequest: {0}")]
    Protobuf(String),
    /// Not an OTLP/JSON `ExportLogsServiceRequest`.
    #[error("body is not an OTLP/JSON ExportLogsServiceRequest: {0}")]
    Json(String),
    /// More records than `--max-records-per-request`.
    #[error(
        "request holds more than {0} log records (--max-records-per-request); send smaller batches"
    )]
    TooManyRecords(usize),
    /// More values than `--max-values-per-request`.
    #[error(
        "request holds more than {0} attributes, array/map elements and resource/scope groups (--max-values-per-request); send smaller batches"
    )]
    TooManyValues(usize),
    /// Array/map values nested deeper than `--max-value-depth`.
    #[error("an attribute value nests arrays/maps deeper than {0} levels (--max-value-depth)")]
    TooDeep(usize),
}

/// Decodes a protobuf request within `limits`.
pub fn protobuf(
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<ExportLogsServiceRequest, DecodeError> {
    protobuf_visit(body, limits, &mut RecordCounter::default())?;
    ExportLogsServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// Reads a protobuf request within `limits` without decoding it into owned
/// structs: `visitor` gets each resource's attributes and each log record as
/// slices of `body` ([`crate::view`]). This is the intake's path: it allocates
/// nothing per string, only a `Vec` per nested array or map value (and those count
/// against the limits). It accepts and refuses exactly what [`protobuf`] does, the
/// limits included (though with another message when a request breaks both the
/// wire format and a limit); `tests` compare the two on valid, truncated and
/// corrupted requests. A refused request may have been partly visited.
pub fn protobuf_visit<'a>(
    body: &'a [u8],
    limits: &DecodeLimits,
    visitor: &mut impl crate::view::Visitor<'a>,
) -> Result<(), DecodeError> {
    borrowed::Reader::new(limits).request(body, visitor)
}

/// Counts the log records of a protobuf request for the counters of a request
/// turned away for load: read within `limits` (the intake's own), so a hostile
/// request costs no more here than on the way in; 0 when it is not a request
/// within those limits (it would have been refused as invalid anyway).
pub fn count_records(body: &[u8], limits: &DecodeLimits) -> u64 {
    let mut counter = RecordCounter::default();
    match protobuf_visit(body, limits, &mut counter) {
        Ok(()) => counter.records,
        Err(_) => 0,
    }
}

/// A visitor that only counts records.
#[derive(Debug, Default)]
struct RecordCounter {
    records: u64,
}

impl<'a> crate::view::Visitor<'a> for RecordCounter {
    fn resource(&mut self, _attributes: &[crate::view::KeyValue<'a>]) {}
    fn record(&mut self, _record: &crate::view::LogRecord<'a, '_>) {
        self.records += 1;
    }
}

/// Decodes an OTLP/JSON request within `limits`.
pub fn json(body: &[u8], limits: &DecodeLimits) -> Result<ExportLogsServiceRequest, DecodeError> {
    super::otlp_json::decode(body, limits)
}

/// Counts what a request will hold, tracking limits as it goes.
#[derive(Debug)]
pub(crate) struct Budget<'a> {
    limits: &'a DecodeLimits,
    records: usize,
    values: usize,
}

impl<'a> Budget<'a> {
    pub(crate) fn new(limits: &'a DecodeLimits) -> Self {
        Self {
            limits,
            records: 0,
            values: 0,
        }
    }

    pub(crate) fn record(&mut self) -> Result<(), DecodeError> {
        self.records += 1;
        if self.records > self.limits.max_records {
            return Err(DecodeError::TooManyRecords(self.limits.max_records));
        }
        Ok(())
    }

    pub(crate) fn value(&mut self) -> Result<(), DecodeError> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(DecodeError::TooManyValues(self.limits.max_values));
        }
        Ok(())
    }

    pub(crate) fn depth(&self, depth: usize) -> Result<(), DecodeError> {
        if depth > self.limits.max_depth {
            return Err(DecodeError::TooDeep(self.limits.max_depth));
        }
        Ok(())
    }
}

/// The borrowed reading of [`protobuf_visit`]: the OTLP logs schema, field by
/// field, with prost's rules — a known field with the wrong wire type, a string
/// that is not UTF-8, a varint of more than 64 bits, a field number 0 and a
/// length past the end are errors; unknown fields are skipped; for a repeated
/// field elements append, for a singular one the last wins, and a singular
/// message or an `AnyValue` met twice is merged into the first. Groups (wire
/// types 3 and 4) are refused: OTLP does not use them. Written by
/// hand because prost (and every maintained Rust protobuf crate that works on
/// OTLP's generated types) decodes into owned `String`s and `Vec`s: at one sender,
/// decoding and dropping those was a quarter of the collector's CPU.
mod borrowed {
    use super::{Budget, DecodeError, DecodeLimits};
    use crate::view::{KeyValue, LogRecord, Value, Visitor};

    const VARINT: u64 = 0;
    const FIXED64: u64 = 1;
    const LEN: u64 = 2;
    const FIXED32: u64 = 5;

    pub(super) struct Reader<'l, 'a> {
        budget: Budget<'l>,
        /// The current resource's attributes, reused.
        resource: Vec<KeyValue<'a>>,
        /// The current record's attributes, reused.
        attributes: Vec<KeyValue<'a>>,
    }

    /// One field: its number and what it holds.
    enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Fixed32(u32),
        Len(&'a [u8]),
    }

    impl Field<'_> {
        fn wire_type(&self) -> u64 {
            match self {
                Field::Varint(_) => VARINT,
                Field::Fixed64(_) => FIXED64,
                Field::Len(_) => LEN,
                Field::Fixed32(_) => FIXED32,
            }
        }
    }

    /// The fields of one message, in order.
    struct Fields<'a> {
        buf: &'a [u8],
    }

    impl<'a> Fields<'a> {
        fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, DecodeError> {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let key = varint(&mut self.buf)?;
            if key > u64::from(u32::MAX) {
                return Err(malformed("invalid key value"));
            }
            let (number, wire_type) = (key >> 3, key & 7);
            if number == 0 {
                return Err(malformed("field number 0"));
            }
            let field = match wire_type {
                VARINT => Field::Varint(varint(&mut self.buf)?),
                FIXED64 => {
                    let (bytes, rest) = self
                        .buf
                        .split_first_chunk::<8>()
                        .ok_or_else(|| malformed("truncated fixed-width field"))?;
                    self.buf = rest;
                    Field::Fixed64(u64::from_le_bytes(*bytes))
                }
                FIXED32 => {
                    let (bytes, rest) = self
                        .buf
                        .split_first_chunk::<4>()
                        .ok_or_else(|| malformed("truncated fixed-width field"))?;
                    self.buf = rest;
                    Field::Fixed32(u32::from_le_bytes(*bytes))
                }
                LEN => {
                    let len = usize::try_from(varint(&mut self.buf)?)
                        .map_err(|_| malformed("length overflows"))?;
                    if len > self.buf.len() {
                        return Err(malformed("truncated length-delimited field"));
                    }
                    let (inner, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    Field::Len(inner)
                }
                _ => {
                    return Err(malformed(
                        "unsupported wire type (groups are not used by OTLP)",
                    ));
                }
            };
            Ok(Some((number, field)))
        }
    }

    fn fields(buf: &[u8]) -> Fields<'_> {
        Fields { buf }
    }

    fn wrong_wire_type(field: &Field<'_>) -> DecodeError {
        DecodeError::Protobuf(format!(
            "invalid wire type {} for a known field",
            field.wire_type()
        ))
    }

    fn len<'a>(field: Field<'a>) -> Result<&'a [u8], DecodeError> {
        match field {
            Field::Len(bytes) => Ok(bytes),
            other => Err(wrong_wire_type(&other)),
        }
    }

    fn text<'a>(field: Field<'a>) -> Result<&'a str, DecodeError> {
        utf8(len(field)?)
    }

    fn varint_value(field: Field<'_>) -> Result<u64, DecodeError> {
        match field {
            Field::Varint(v) => Ok(v),
            other => Err(wrong_wire_type(&other)),
        }
    }

    fn fixed64(field: Field<'_>) -> Result<u64, DecodeError> {
        match field {
            Field::Fixed64(v) => Ok(v),
            other => Err(wrong_wire_type(&other)),
        }
    }

    fn fixed32(field: Field<'_>) -> Result<u32, DecodeError> {
        match field {
            Field::Fixed32(v) => Ok(v),
            other => Err(wrong_wire_type(&other)),
        }
    }

    impl<'l, 'a> Reader<'l, 'a> {
        pub(super) fn new(limits: &'l DecodeLimits) -> Self {
            Self {
                budget: Budget::new(limits),
                resource: Vec::new(),
                attributes: Vec::new(),
            }
        }

        pub(super) fn request(
            mut self,
            body: &'a [u8],
            visitor: &mut impl Visitor<'a>,
        ) -> Result<(), DecodeError> {
            let mut fields = fields(body);
            while let Some((number, field)) = fields.next()? {
                if number == 1 {
                    self.resource_logs(len(field)?, visitor)?;
                }
            }
            Ok(())
        }

        /// The resource first, wherever it is in the message; then the records.
        fn resource_logs(
            &mut self,
            buf: &'a [u8],
            visitor: &mut impl Visitor<'a>,
        ) -> Result<(), DecodeError> {
            self.budget.value()?;
            self.resource.clear();
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 => self.resource_message(len(field)?)?,
                    2 => {
                        len(field)?;
                    }
                    3 => {
                        text(field)?;
                    }
                    _ => {}
                }
            }
            visitor.resource(&self.resource);
            let mut scopes = fields(buf);
            while let Some((number, field)) = scopes.next()? {
                if number == 2 {
                    self.scope_logs(len(field)?, visitor)?;
                }
            }
            Ok(())
        }

        fn resource_message(&mut self, buf: &'a [u8]) -> Result<(), DecodeError> {
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 => {
                        let kv = self.key_value(len(field)?, 0)?;
                        self.resource.push(kv);
                    }
                    2 => {
                        varint_value(field)?;
                    }
                    3 => self.entity_ref(len(field)?)?,
                    _ => {}
                }
            }
            Ok(())
        }

        fn entity_ref(&mut self, buf: &'a [u8]) -> Result<(), DecodeError> {
            self.budget.value()?;
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 | 2 => {
                        text(field)?;
                    }
                    3 | 4 => {
                        self.budget.value()?;
                        text(field)?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }

        fn scope_logs(
            &mut self,
            buf: &'a [u8],
            visitor: &mut impl Visitor<'a>,
        ) -> Result<(), DecodeError> {
            self.budget.value()?;
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 => self.scope(len(field)?)?,
                    2 => self.log_record(len(field)?, visitor)?,
                    3 => {
                        text(field)?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }

        fn scope(&mut self, buf: &'a [u8]) -> Result<(), DecodeError> {
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 | 2 => {
                        text(field)?;
                    }
                    3 => {
                        self.key_value(len(field)?, 0)?;
                    }
                    4 => {
                        varint_value(field)?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }

        fn log_record(
            &mut self,
            buf: &'a [u8],
            visitor: &mut impl Visitor<'a>,
        ) -> Result<(), DecodeError> {
            self.budget.record()?;
            let mut attributes = std::mem::take(&mut self.attributes);
            attributes.clear();
            let mut record = LogRecord {
                time_unix_nano: 0,
                observed_time_unix_nano: 0,
                event_name: "",
                attributes: &[],
            };
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 => record.time_unix_nano = fixed64(field)?,
                    11 => record.observed_time_unix_nano = fixed64(field)?,
                    12 => record.event_name = text(field)?,
                    6 => attributes.push(self.key_value(len(field)?, 0)?),
                    2 | 7 => {
                        varint_value(field)?;
                    }
                    3 => {
                        text(field)?;
                    }
                    // The body is not part of an event, but must be a valid AnyValue.
                    5 => {
                        let mut body = None;
                        self.any_value(len(field)?, 0, &mut body)?;
                    }
                    8 => {
                        fixed32(field)?;
                    }
                    9 | 10 => {
                        len(field)?;
                    }
                    _ => {}
                }
            }
            visitor.record(&LogRecord {
                attributes: &attributes,
                ..record
            });
            self.attributes = attributes;
            Ok(())
        }

        fn key_value(&mut self, buf: &'a [u8], depth: usize) -> Result<KeyValue<'a>, DecodeError> {
            self.budget.value()?;
            if let Some(plain) = plain_key_value(buf) {
                return self.check_plain(plain, depth);
            }
            let mut kv = KeyValue {
                key: "",
                value: None,
            };
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 => kv.key = text(field)?,
                    2 => self.any_value(len(field)?, depth, &mut kv.value)?,
                    3 => {
                        varint_value(field)?;
                    }
                    _ => {}
                }
            }
            Ok(kv)
        }

        /// Checks and counts a [`PlainKeyValue`] as the loop of
        /// [`Reader::key_value`] would, in the same order: the key's UTF-8, the
        /// value's place in the budget and its depth, the value's UTF-8.
        fn check_plain(
            &mut self,
            plain: PlainKeyValue<'a>,
            depth: usize,
        ) -> Result<KeyValue<'a>, DecodeError> {
            let key = utf8(plain.key)?;
            self.budget.value()?;
            self.budget.depth(depth)?;
            let value = match plain.value {
                PlainValue::Text(bytes) => Value::StringValue(utf8(bytes)?),
                PlainValue::Double(v) => Value::DoubleValue(v),
                PlainValue::Int(v) => Value::IntValue(v),
                PlainValue::Bool(v) => Value::BoolValue(v),
            };
            Ok(KeyValue {
                key,
                value: Some(value),
            })
        }

        /// Merges an `AnyValue` message into `value`, as prost merges a message
        /// met twice: a scalar replaces, an array or map of the same kind appends.
        fn any_value(
            &mut self,
            buf: &'a [u8],
            depth: usize,
            value: &mut Option<Value<'a>>,
        ) -> Result<(), DecodeError> {
            self.budget.value()?;
            self.budget.depth(depth)?;
            let mut all = fields(buf);
            while let Some((number, field)) = all.next()? {
                match number {
                    1 => *value = Some(Value::StringValue(text(field)?)),
                    2 => *value = Some(Value::BoolValue(varint_value(field)? != 0)),
                    3 => *value = Some(Value::IntValue(varint_value(field)? as i64)),
                    4 => *value = Some(Value::DoubleValue(f64::from_bits(fixed64(field)?))),
                    5 => {
                        let buf = len(field)?;
                        let depth = depth + 1;
                        self.budget.depth(depth)?;
                        if !matches!(value, Some(Value::ArrayValue(_))) {
                            *value = Some(Value::ArrayValue(Vec::new()));
                        }
                        let mut elements = fields(buf);
                        while let Some((number, field)) = elements.next()? {
                            if number == 1 {
                                let mut element = None;
                                self.any_value(len(field)?, depth, &mut element)?;
                                if let Some(Value::ArrayValue(array)) = value {
                                    array.push(element);
                                }
                            }
                        }
                    }
                    6 => {
                        let buf = len(field)?;
                        let depth = depth + 1;
                        self.budget.depth(depth)?;
                        if !matches!(value, Some(Value::KvlistValue(_))) {
                            *value = Some(Value::KvlistValue(Vec::new()));
                        }
                        let mut entries = fields(buf);
                        while let Some((number, field)) = entries.next()? {
                            if number == 1 {
                                let kv = self.key_value(len(field)?, depth)?;
                                if let Some(Value::KvlistValue(list)) = value {
                                    list.push(kv);
                                }
                            }
                        }
                    }
                    7 => *value = Some(Value::BytesValue(len(field)?)),
                    8 => *value = Some(Value::StringValueStrindex(varint_value(field)? as i32)),
                    _ => {}
                }
            }
            Ok(())
        }
    }

    /// An attribute of the usual shape, as its bytes are: see [`plain_key_value`].
    struct PlainKeyValue<'a> {
        key: &'a [u8],
        value: PlainValue<'a>,
    }

    enum PlainValue<'a> {
        Text(&'a [u8]),
        Double(f64),
        Int(i64),
        Bool(bool),
    }

    /// The usual attribute — its key (field 1), then its value (field 2) holding
    /// one string, double, int or bool and nothing else, every length under 128 —
    /// recognised by its bytes, without the general field loop (reading in place
    /// took ~1.1 of the ~2.3 µs a record cost on its way to RowBinary, most of it
    /// in that loop; now ~0.6). `None` for any other shape, which the loop reads;
    /// either way the result is prost's.
    #[inline]
    fn plain_key_value(buf: &[u8]) -> Option<PlainKeyValue<'_>> {
        let [0x0A, key_len, rest @ ..] = buf else {
            return None;
        };
        let key_len = usize::from(*key_len);
        if key_len >= 0x80 || rest.len() < key_len {
            return None;
        }
        let (key, rest) = rest.split_at(key_len);
        let [0x12, value_len, value @ ..] = rest else {
            return None;
        };
        if *value_len >= 0x80 || usize::from(*value_len) != value.len() {
            return None;
        }
        let value = match value {
            [0x0A, len, text @ ..] if *len < 0x80 && usize::from(*len) == text.len() => {
                PlainValue::Text(text)
            }
            [0x21, bits @ ..] => PlainValue::Double(f64::from_bits(u64::from_le_bytes(
                <[u8; 8]>::try_from(bits).ok()?,
            ))),
            [0x18, rest @ ..] => PlainValue::Int(whole_varint(rest)? as i64),
            [0x10, rest @ ..] => PlainValue::Bool(whole_varint(rest)? != 0),
            _ => return None,
        };
        Some(PlainKeyValue { key, value })
    }

    /// A varint that is all of `bytes`; `None` when it is not (the loop decides).
    fn whole_varint(mut bytes: &[u8]) -> Option<u64> {
        let v = varint(&mut bytes).ok()?;
        bytes.is_empty().then_some(v)
    }

    fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
        std::str::from_utf8(bytes)
            .map_err(|_| malformed("invalid string value: data is not UTF-8 encoded"))
    }

    /// A varint as prost reads it: at most ten bytes, the tenth at most 1.
    fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
        if let Some(&byte) = buf.first()
            && byte < 0x80
        {
            *buf = &buf[1..];
            return Ok(u64::from(byte));
        }
        let mut value = 0_u64;
        for (i, &byte) in buf.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                return Err(malformed("invalid varint"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                *buf = &buf[i + 1..];
                return Ok(value);
            }
        }
        Err(malformed("truncated or overlong varint"))
    }

    fn malformed(what: &str) -> DecodeError {
        DecodeError::Protobuf(what.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;

    fn nested(depth: usize) -> AnyValue {
        let mut value = AnyValue {
            value: Some(Value::StringValue("leaf".into())),
        };
        for level in 0..depth {
            value = if level % 2 == 0 {
                AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![value],
                    })),
                }
            } else {
                AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![KeyValue {
                            key: "k".into(),
                            value: Some(value),
                            ..Default::default()
                        }],
                    })),
                }
            };
        }
        value
    }

    fn request(records: usize, attrs: usize, depth: usize) -> ExportLogsServiceRequest {
        let record = LogRecord {
            event_name: "e".into(),
            attributes: (0..attrs)
                .map(|i| KeyValue {
                    key: format!("a{i}"),
                    value: Some(nested(depth)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record; records],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    const LIMITS: DecodeLimits = DecodeLimits {
        max_records: 10,
        max_values: 200,
        max_depth: 3,
    };

    #[test]
    fn within_limits_decodes_like_prost() {
        let req = request(10, 3, 3);
        let body = req.encode_to_vec();
        assert_eq!(protobuf(&body, &LIMITS), Ok(req.clone()));
        let json_body = serde_json::to_vec(&req).expect("json");
        assert_eq!(json(&json_body, &LIMITS), Ok(req));
    }

    #[test]
    fn limits_are_enforced_in_both_encodings() {
        for (req, expected) in [
            (request(11, 0, 0), DecodeError::TooManyRecords(10)),
            // 10 records × 11 attributes × (key-value + value) = 220 values.
            (request(10, 11, 0), DecodeError::TooManyValues(200)),
            (request(1, 1, 4), DecodeError::TooDeep(3)),
        ] {
            let body = req.encode_to_vec();
            assert_eq!(protobuf(&body, &LIMITS), Err(expected.clone()));
            let json_body = serde_json::to_vec(&req).expect("json");
            assert_eq!(json(&json_body, &LIMITS), Err(expected));
        }
    }

    #[test]
    fn tiny_records_cannot_amplify() {
        // 2 bytes per empty record: the finding's amplification attack.
        let mut body = vec![0x0a];
        let scope: Vec<u8> = std::iter::repeat_n([0x12_u8, 0x00], 1000)
            .flatten()
            .collect();
        let mut resource = vec![0x12];
        push_len(&mut resource, scope.len());
        resource.extend(&scope);
        push_len(&mut body, resource.len());
        body.extend(&resource);
        assert_eq!(
            protobuf(&body, &DecodeLimits::default())
                .map(|r| r.resource_logs[0].scope_logs[0].log_records.len()),
            Ok(1000)
        );
        assert_eq!(
            protobuf(&body, &LIMITS),
            Err(DecodeError::TooManyRecords(10))
        );
    }

    #[test]
    fn empty_groups_count_too() {
        // 2 bytes per empty ResourceLogs: as amplifying as empty records.
        let body: Vec<u8> = std::iter::repeat_n([0x0a_u8, 0x00], 201)
            .flatten()
            .collect();
        assert_eq!(
            protobuf(&body, &LIMITS),
            Err(DecodeError::TooManyValues(200))
        );
        let json_body = format!("{{\"resourceLogs\": [{}{{}}]}}", "{},".repeat(200));
        assert_eq!(
            json(json_body.as_bytes(), &LIMITS),
            Err(DecodeError::TooManyValues(200))
        );
        // Entity references of a resource, and their key lists.
        let mut resource = Vec::new();
        for _ in 0..201 {
            resource.extend([0x1a, 0x02, 0x1a, 0x00]);
        }
        let mut body = vec![0x0a];
        let mut resource_logs = vec![0x0a];
        push_len(&mut resource_logs, resource.len());
        resource_logs.extend(&resource);
        push_len(&mut body, resource_logs.len());
        body.extend(&resource_logs);
        assert_eq!(
            protobuf(&body, &LIMITS),
            Err(DecodeError::TooManyValues(200))
        );
    }

    fn push_len(out: &mut Vec<u8>, mut len: usize) {
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A request whose one record's body nests arrays `depth` deep, built from
    /// the inside out without recursion (prost's encoder recurses).
    fn deeply_nested_body(depth: usize) -> Vec<u8> {
        let leaf = [0x0a_u8, 0x01, b'x'];
        let mut size = leaf.len();
        let mut prefixes = Vec::with_capacity(depth);
        for _ in 0..depth {
            // AnyValue { array_value (5): ArrayValue { values (1): <size> } }
            let mut array = vec![0x0a];
            push_len(&mut array, size);
            let mut level = vec![0x2a];
            push_len(&mut level, array.len() + size);
            size += level.len() + array.len();
            level.extend(array);
            prefixes.push(level);
        }
        let mut nest: Vec<u8> = prefixes.into_iter().rev().flatten().collect();
        nest.extend(leaf);
        let mut record = vec![0x2a];
        push_len(&mut record, nest.len());
        record.extend(nest);
        let mut scope = vec![0x12];
        push_len(&mut scope, record.len());
        scope.extend(record);
        let mut resource = vec![0x12];
        push_len(&mut resource, scope.len());
        resource.extend(scope);
        let mut body = vec![0x0a];
        push_len(&mut body, resource.len());
        body.extend(resource);
        body
    }

    #[test]
    fn deep_nesting_is_refused_at_the_depth_limit_on_every_path() {
        // The attack of the finding: 200,000 levels, ~1.6 MB. A recursion per
        // level would overflow any thread's stack; every reading stops at the limit.
        let body = deeply_nested_body(200_000);
        assert!(body.len() > 1_000_000);
        let limits = DecodeLimits::default();
        assert_eq!(
            protobuf(&body, &limits),
            Err(DecodeError::TooDeep(limits.max_depth))
        );
        assert_eq!(count_records(&body, &limits), 0);
        // Within the limit it is an ordinary request of one record.
        let shallow = deeply_nested_body(limits.max_depth);
        assert_eq!(count_records(&shallow, &limits), 1);
        assert_eq!(
            protobuf(&shallow, &limits),
            ExportLogsServiceRequest::decode(shallow.as_slice())
                .map_err(|e| DecodeError::Protobuf(e.to_string()))
        );
        // The deepest limit the flags allow (64) fits in half the stack of a Tokio
        // worker (2 MiB), unoptimised.
        let deepest = DecodeLimits {
            max_depth: 64,
            ..limits
        };
        let worst = deeply_nested_body(64);
        let counted = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || count_records(&worst, &deepest))
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(counted, 1);
    }

    #[test]
    fn every_truncation_is_an_error_or_agrees_with_prost() {
        let body = request(3, 2, 2).encode_to_vec();
        for end in 0..body.len() {
            let cut = &body[..end];
            let ours = protobuf(cut, &DecodeLimits::default());
            let prost = ExportLogsServiceRequest::decode(cut);
            match (&ours, &prost) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(_), _) => {}
                (Ok(_), Err(e)) => panic!("accepted what prost refuses at {end}: {e}"),
            }
        }
        for garbage in [
            &[0xff_u8; 16][..],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x0b],
        ] {
            assert!(matches!(
                protobuf(garbage, &DecodeLimits::default()),
                Err(DecodeError::Protobuf(_))
            ));
        }
    }
}

/// [`protobuf_visit`] against the owned path it replaces on the intake
/// ([`protobuf`], then [`crate::map::map_request_as`]): the same rows, counts and
/// rejections for every request, and an error for exactly the same inputs.
#[cfg(test)]
mod borrowed_tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use chrono::{DateTime, Utc};
    use growth_schema::user_hash::UserHasher;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;

    use super::*;
    use crate::auth::AppAccess;
    use crate::catalog::Catalog;
    use crate::map::{MapRules, MappedRequest, Mapper, map_request_as};
    use crate::privacy::{IdentifyingAction, Privacy};
    use crate::rowbinary::RowBinarySink;
    use crate::rowbinary::encode_request;

    const NOW_NANOS: u64 = 1_700_000_100_000_000_000;

    /// xorshift64*: reproducible without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    const KEYS: &[&str] = &[
        "event.name",
        "user.id",
        "user.hash",
        "source",
        "amount",
        "category",
        "enduser.id",
        "user.email",
        "ctx",
        "service.name",
        "",
        "k",
    ];
    const TEXTS: &[&str] = &[
        "expense_logged",
        "report_requested",
        "tg-42",
        "messenger",
        "",
        "groceries",
        "finbrain",
        "a\u{7}b",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    ];

    fn value(rng: &mut Rng, depth: u32) -> Option<Value> {
        Some(match rng.below(if depth > 2 { 6 } else { 9 }) {
            0 => return None,
            1 | 2 => Value::StringValue(rng.pick(TEXTS).to_owned()),
            3 => Value::IntValue(rng.next() as i64 >> rng.below(64)),
            4 => Value::DoubleValue(match rng.below(4) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                _ => rng.below(100_000) as f64 / 100.0,
            }),
            5 => Value::BoolValue(rng.below(2) == 0),
            6 => Value::BytesValue(vec![0xff, 0, 7]),
            7 => Value::ArrayValue(ArrayValue {
                values: (0..rng.below(3))
                    .map(|_| AnyValue {
                        value: value(rng, depth + 1),
                    })
                    .collect(),
            }),
            _ => Value::KvlistValue(KeyValueList {
                values: (0..rng.below(3))
                    .map(|_| key_value(rng, depth + 1))
                    .collect(),
            }),
        })
    }

    fn key_value(rng: &mut Rng, depth: u32) -> KeyValue {
        KeyValue {
            key: rng.pick(KEYS).to_owned(),
            value: (rng.below(8) != 0).then(|| AnyValue {
                value: value(rng, depth),
            }),
            ..Default::default()
        }
    }

    fn record(rng: &mut Rng) -> LogRecord {
        let time = match rng.below(6) {
            0 => 0,
            1 => NOW_NANOS + 7_200_000_000_000,
            2 => u64::MAX,
            _ => NOW_NANOS - rng.below(40 * 86_400) * 1_000_000_000,
        };
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: if rng.below(2) == 0 { 0 } else { NOW_NANOS },
            severity_number: rng.below(24) as i32,
            severity_text: "INFO".into(),
            event_name: if rng.below(3) == 0 {
                String::new()
            } else {
                rng.pick(TEXTS).to_owned()
            },
            body: (rng.below(3) == 0).then(|| AnyValue {
                value: value(rng, 0),
            }),
            attributes: (0..rng.below(8)).map(|_| key_value(rng, 0)).collect(),
            flags: 1,
            trace_id: vec![1; 16],
            ..Default::default()
        }
    }

    fn resource(rng: &mut Rng) -> Resource {
        let mut attributes: Vec<KeyValue> = (0..rng.below(4)).map(|_| key_value(rng, 0)).collect();
        if rng.below(3) != 0 {
            let app = rng.pick(&["finbrain", "other", ""]);
            attributes.insert(
                rng.below(attributes.len() as u64 + 1) as usize,
                KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(app.into())),
                    }),
                    ..Default::default()
                },
            );
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }

    fn request(rng: &mut Rng) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: (0..1 + rng.below(3))
                .map(|_| ResourceLogs {
                    resource: (rng.below(5) != 0).then(|| resource(rng)),
                    scope_logs: (0..1 + rng.below(2))
                        .map(|_| ScopeLogs {
                            scope: Some(InstrumentationScope {
                                name: "growth".into(),
                                attributes: vec![key_value(rng, 0)],
                                ..Default::default()
                            }),
                            log_records: (0..rng.below(6)).map(|_| record(rng)).collect(),
                            schema_url: "https://x".into(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    fn rules() -> MapRules {
        let mut rules = MapRules::new(UserHasher::new(Some(b"key".to_vec())));
        rules.privacy = Privacy::new(["k".to_owned()], IdentifyingAction::Hash);
        rules
    }

    fn received() -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(NOW_NANOS as i64)
    }

    fn owned(body: &[u8], limits: &DecodeLimits, access: &AppAccess) -> Option<MappedRequest> {
        let request = protobuf(body, limits).ok()?;
        Some(map_request_as(&request, &rules(), access, received()))
    }

    fn borrowed(body: &[u8], limits: &DecodeLimits, access: &AppAccess) -> Option<MappedRequest> {
        let rules = rules();
        let mut mapper = Mapper::new(&rules, access, received());
        protobuf_visit(body, limits, &mut mapper).ok()?;
        Some(mapper.finish())
    }

    fn agree(body: &[u8], limits: &DecodeLimits, access: &AppAccess, what: &str) -> bool {
        let expected = owned(body, limits, access);
        assert_eq!(
            borrowed(body, limits, access),
            expected,
            "{what}: {body:02x?}"
        );
        if let Some(expected) = expected.clone() {
            encoded_agree(body, limits, access, expected, what);
        }
        expected.is_some()
    }

    /// The intake's path (rows mapped straight into RowBinary, admitted against a
    /// catalog as they come) gives the bytes, digest and counts of the owned rows
    /// admitted afterwards and then encoded. The catalog is small, so that some
    /// records are refused for too many apps or event names.
    fn encoded_agree(
        body: &[u8],
        limits: &DecodeLimits,
        access: &AppAccess,
        mut expected: MappedRequest,
        what: &str,
    ) {
        let (max_apps, max_events) = (2, 3);
        Catalog::new(max_apps, max_events).admit(&mut expected);
        let expected_rows = encode_request(&expected.rows);
        expected.rows.clear();
        let rules = rules();
        let catalog = Catalog::new(max_apps, max_events);
        let sink = RowBinarySink::new(&catalog, 0);
        let mut mapper = Mapper::with_sink(&rules, access, received(), sink);
        protobuf_visit(body, limits, &mut mapper).expect("decodes, as prost did");
        let (mapped, sink) = mapper.finish_with_sink();
        assert_eq!(mapped, expected, "{what}, encoded: {body:02x?}");
        assert_eq!(sink.finish(), expected_rows, "{what}, encoded: {body:02x?}");
    }

    /// A length-delimited field `number` holding `bytes`.
    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(
            number as u32,
            prost::encoding::WireType::LengthDelimited,
            &mut out,
        );
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn random_requests_map_alike() {
        let mut rng = Rng(0x5eed);
        let only = AppAccess::Only(Arc::new(HashSet::from(["finbrain".to_owned()])));
        let small = DecodeLimits {
            max_records: 6,
            max_values: 60,
            max_depth: 2,
        };
        let (mut accepted, mut rows) = (0, 0);
        for i in 0..3_000 {
            let body = request(&mut rng).encode_to_vec();
            let access = if i % 5 == 0 { &only } else { &AppAccess::All };
            if agree(&body, &DecodeLimits::default(), access, "valid") {
                accepted += 1;
                rows += owned(&body, &DecodeLimits::default(), access).map_or(0, |m| m.rows.len());
            }
            agree(&body, &small, access, "small limits");
        }
        assert_eq!(accepted, 3_000);
        assert!(rows > 1_000, "too few rows to compare: {rows}");
    }

    #[test]
    fn damaged_requests_are_refused_alike() {
        let mut rng = Rng(0xdead_beef);
        let mut refused = 0;
        for _ in 0..400 {
            let body = request(&mut rng).encode_to_vec();
            for _ in 0..12 {
                let mut bad = body.clone();
                match rng.below(4) {
                    0 => bad.truncate(rng.below(bad.len() as u64 + 1) as usize),
                    1 if !bad.is_empty() => {
                        let at = rng.below(bad.len() as u64) as usize;
                        bad[at] = rng.next() as u8;
                    }
                    2 => {
                        let at = rng.below(bad.len() as u64 + 1) as usize;
                        bad.insert(at, rng.next() as u8);
                    }
                    _ => bad.extend((0..1 + rng.below(4)).map(|_| rng.next() as u8)),
                }
                if !agree(&bad, &DecodeLimits::default(), &AppAccess::All, "damaged") {
                    refused += 1;
                }
            }
        }
        assert!(refused > 1_000, "too few refusals to compare: {refused}");
    }

    #[test]
    fn repeated_singular_fields_merge_as_prost_merges() {
        let mut rng = Rng(7);
        for _ in 0..300 {
            // Concatenated encodings of a message are one merged message.
            let (a, b) = (record(&mut rng), record(&mut rng));
            let mut merged = a.encode_to_vec();
            merged.extend(b.encode_to_vec());
            let (r1, r2) = (
                request(&mut rng).resource_logs[0]
                    .resource
                    .clone()
                    .unwrap_or_default(),
                request(&mut rng).resource_logs[0]
                    .resource
                    .clone()
                    .unwrap_or_default(),
            );
            let mut resource = field(1, &r1.encode_to_vec());
            resource.extend(field(1, &r2.encode_to_vec()));
            // The resource after the records: read first all the same.
            let mut resource_logs = field(2, &field(2, &merged));
            resource_logs.extend(resource);
            let body = field(1, &resource_logs);
            assert!(agree(
                &body,
                &DecodeLimits::default(),
                &AppAccess::All,
                "merged"
            ));
            // An attribute whose value is given twice (arrays and maps append).
            let (v1, v2) = (key_value(&mut rng, 0), key_value(&mut rng, 0));
            let mut kv = v1.encode_to_vec();
            kv.extend(v2.encode_to_vec());
            let body = field(1, &field(2, &field(2, &field(6, &kv))));
            assert!(agree(
                &body,
                &DecodeLimits::default(),
                &AppAccess::All,
                "value twice"
            ));
        }
    }

    #[test]
    fn wrong_wire_types_and_bad_text_are_refused_alike() {
        let record = LogRecord {
            event_name: "expense_logged".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let cases: Vec<Vec<u8>> = vec![
            // severity_text, event_name and a key that are not UTF-8
            [record.clone(), field(3, &[0xff])].concat(),
            [record.clone(), field(12, &[0xc3])].concat(),
            [record.clone(), field(6, &field(1, &[0xfe]))].concat(),
            // time as a varint, flags as a string, attributes as a varint
            [record.clone(), vec![0x08, 0x01]].concat(),
            [record.clone(), field(8, b"x")].concat(),
            [record.clone(), vec![0x30, 0x01]].concat(),
            // an unknown field of every wire type but groups: skipped
            [
                record.clone(),
                vec![0xf8, 0x01, 0x05, 0xf9, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
            ]
            .concat(),
            [
                record.clone(),
                vec![0xfd, 0x01, 0, 0, 0, 0],
                field(31, &[0xff]),
            ]
            .concat(),
            // a group, an overlong varint, field number 0
            [record.clone(), vec![0xfb, 0x01, 0xfc, 0x01]].concat(),
            [
                record.clone(),
                vec![
                    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
            ]
            .concat(),
            [record.clone(), vec![0x00, 0x01]].concat(),
        ];
        for (i, record) in cases.iter().enumerate() {
            let body = field(1, &field(2, &field(2, record)));
            agree(
                &body,
                &DecodeLimits::default(),
                &AppAccess::All,
                &format!("case {i}"),
            );
        }
        let skipped = field(1, &field(2, &field(2, &cases[6])));
        assert!(owned(&skipped, &DecodeLimits::default(), &AppAccess::All).is_some());
        let refused = field(1, &field(2, &field(2, &cases[0])));
        assert!(owned(&refused, &DecodeLimits::default(), &AppAccess::All).is_none());
    }

    /// Attributes at the edges of the shape read without the field loop
    /// (`plain_key_value`): each is read as prost reads it, kept or refused alike.
    #[test]
    fn attributes_at_the_edges_of_the_plain_shape_map_alike() {
        let record = LogRecord {
            event_name: "expense_logged".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let text = |s: &[u8]| field(1, s);
        let long = vec![b'k'; 127];
        let longer = vec![b'k'; 128];
        let ten_byte_int = [
            vec![0x18],
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ]
        .concat();
        let values: Vec<Vec<u8>> = vec![
            text(b"groceries"),
            text(b""),
            text(&long),
            text(&longer),
            text(&[0xc3, 0x28]),
            [vec![0x21], 12.5_f64.to_le_bytes().to_vec()].concat(),
            [vec![0x21], f64::NAN.to_le_bytes().to_vec()].concat(),
            vec![0x21, 1, 2, 3],
            vec![0x18, 0x05],
            vec![0x18, 0x80, 0x01],
            ten_byte_int,
            vec![
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            vec![0x18],
            vec![0x10, 0x01],
            vec![0x10, 0x00],
            vec![0x10, 0x02],
            vec![0x10, 0x81, 0x00],
            // a value given twice, a string then a number: the last wins
            [text(b"a"), vec![0x18, 0x07]].concat(),
            // a known value and an unknown field after it
            [text(b"a"), vec![0xf8, 0x01, 0x05]].concat(),
            vec![],
        ];
        let keys: Vec<Vec<u8>> = vec![
            b"amount".to_vec(),
            b"user.id".to_vec(),
            b"user.hash".to_vec(),
            Vec::new(),
            long.clone(),
            longer.clone(),
            vec![0xff],
        ];
        let mut kept = 0;
        for key in &keys {
            for value in &values {
                let attribute = [field(1, key), field(2, value)].concat();
                let reordered = [field(2, value), field(1, key)].concat();
                let key_twice = [field(1, b"x"), field(1, key), field(2, value)].concat();
                let trailing = [attribute.clone(), vec![0x18, 0x01]].concat();
                for (shape, attribute) in [
                    ("plain", &attribute),
                    ("reordered", &reordered),
                    ("key twice", &key_twice),
                    ("flag after", &trailing),
                ] {
                    let body = field(
                        1,
                        &field(
                            2,
                            &field(2, &[record.clone(), field(6, attribute)].concat()),
                        ),
                    );
                    let what = format!("{shape}: key {key:02x?}, value {value:02x?}");
                    if agree(&body, &DecodeLimits::default(), &AppAccess::All, &what) {
                        kept += 1;
                    }
                    let tight = DecodeLimits {
                        max_records: 1,
                        max_values: 3,
                        max_depth: 0,
                    };
                    agree(&body, &tight, &AppAccess::All, &what);
                }
            }
        }
        assert!(kept > 300, "too few attributes kept to compare: {kept}");
    }
}
