//! Bounded decoding of an `ExportLogsServiceRequest`, from protobuf or OTLP/JSON.
//!
//! A request's bytes do not bound its memory: an empty log record is 2 bytes of
//! protobuf but a ~200-byte `LogRecord` once decoded, so a 4 MiB request of empty
//! records used to take ~890 MiB. Before anything is allocated, the request is
//! measured against [`DecodeLimits`]: log records, values (every attribute
//! key-value, every element of an array or map value at any depth, every resource
//! and scope group) and the nesting depth of array/map values. Protobuf is walked once without allocating
//! ([`wire`]), then decoded by prost; OTLP/JSON is decoded by [`super::otlp_json`],
//! which counts while it decodes. Either way the worst case is a few decoded
//! structs per counted element, whatever the request's shape.

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
    wire::measure(body, limits)?;
    ExportLogsServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
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

/// A walk over protobuf wire format that knows just enough of the OTLP logs schema
/// to count records, values and depth. prost offers no limits of its own besides
/// a recursion limit of 100, and measuring after decoding would be too late: the
/// memory is taken by then. Written by hand because it is ~100 lines, allocates
/// nothing and is fuzzed by the tests below against prost's own decoder.
mod wire {
    use super::{Budget, DecodeError, DecodeLimits};

    /// The messages of the schema that hold what is counted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Request,
        ResourceLogs,
        Resource,
        ScopeLogs,
        Scope,
        EntityRef,
        /// A repeated string or bytes element: no struct of its own, but a `String`.
        Element,
        LogRecord,
        KeyValue,
        AnyValue,
        ArrayValue,
        KvList,
    }

    /// The kind of the sub-message in `field` of a `kind` message, if counted.
    fn child(kind: Kind, field: u64) -> Option<Kind> {
        use Kind::*;
        Some(match (kind, field) {
            (Request, 1) => ResourceLogs,
            (ResourceLogs, 1) => Resource,
            (ResourceLogs, 2) => ScopeLogs,
            (Resource, 1) | (Scope, 3) | (LogRecord, 6) | (KvList, 1) => KeyValue,
            (Resource, 3) => EntityRef,
            (EntityRef, 3 | 4) => Element,
            (ScopeLogs, 1) => Scope,
            (ScopeLogs, 2) => LogRecord,
            (LogRecord, 5) | (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KvList,
            _ => return None,
        })
    }

    pub(super) fn measure(body: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
        let mut budget = Budget::new(limits);
        walk(body, Kind::Request, 0, &mut budget)
    }

    fn walk(
        mut buf: &[u8],
        kind: Kind,
        depth: usize,
        budget: &mut Budget,
    ) -> Result<(), DecodeError> {
        match kind {
            Kind::LogRecord => budget.record()?,
            // Every other element of a repeated field is a struct (or a String) once
            // decoded, however few bytes it took: all are counted.
            Kind::KeyValue
            | Kind::AnyValue
            | Kind::ResourceLogs
            | Kind::ScopeLogs
            | Kind::EntityRef
            | Kind::Element => budget.value()?,
            _ => {}
        }
        if kind == Kind::Element {
            return Ok(());
        }
        let depth = match kind {
            Kind::ArrayValue | Kind::KvList => depth + 1,
            _ => depth,
        };
        budget.depth(depth)?;
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            let (field, wire_type) = (key >> 3, key & 7);
            if field == 0 {
                return Err(malformed("field number 0"));
            }
            match wire_type {
                0 => {
                    varint(&mut buf)?;
                }
                1 => buf = skip(buf, 8)?,
                5 => buf = skip(buf, 4)?,
                2 => {
                    let len = usize::try_from(varint(&mut buf)?)
                        .map_err(|_| malformed("length overflows"))?;
                    if len > buf.len() {
                        return Err(malformed("truncated length-delimited field"));
                    }
                    let (inner, rest) = buf.split_at(len);
                    if let Some(child) = child(kind, field) {
                        walk(inner, child, depth, budget)?;
                    }
                    buf = rest;
                }
                _ => {
                    return Err(malformed(
                        "unsupported wire type (groups are not used by OTLP)",
                    ));
                }
            }
        }
        Ok(())
    }

    fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
        let mut value = 0_u64;
        for (i, byte) in buf.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                *buf = &buf[i + 1..];
                return Ok(value);
            }
        }
        Err(malformed("truncated or overlong varint"))
    }

    fn skip(buf: &[u8], n: usize) -> Result<&[u8], DecodeError> {
        buf.get(n..)
            .ok_or_else(|| malformed("truncated fixed-width field"))
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
