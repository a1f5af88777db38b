//! The load: OTLP export requests of realistic finance-app growth events, each record
//! tagged with a unique sequence number so that loss and duplicates can be counted.
//!
//! Encoding a request per send would cost the load generator ~0.8 µs a record on the
//! same two cores as the systems it measures, so a few distinct requests are encoded
//! once, with a fixed-width placeholder where each record's sequence number goes; a
//! send copies one template and writes the numbers in place.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use bytes::Bytes;
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

/// The attribute holding a record's sequence number: ten decimal digits.
pub const SEQ_ATTRIBUTE: &str = "bench.seq";
/// The app every record belongs to (`service.name`).
pub const APP: &str = "finbrain";
/// The key the app hashes `user.hash` with; the collector gets the same.
pub const USER_HASH_KEY: &str = "side-by-side-bench-user-hash-key";

const SEQ_WIDTH: usize = 10;
/// Stands where a sequence number goes until a send writes it; nothing else in a
/// request contains these bytes.
const SEQ_PLACEHOLDER: &[u8; SEQ_WIDTH] = b"SEQ#######";
/// Largest sequence number that fits the width.
pub const MAX_SEQ: u64 = 9_999_999_999;

/// Encoded requests with the offsets of their records' sequence numbers.
pub struct Templates {
    bodies: Vec<(Vec<u8>, Vec<usize>)>,
    per_request: u64,
}

impl Templates {
    /// `distinct` requests of `per_request` records over `users` users.
    pub fn new(distinct: usize, per_request: u64, users: u64) -> anyhow::Result<Self> {
        let mut events = EventSource::new(0x5eed, users);
        let mut bodies = Vec::with_capacity(distinct);
        for _ in 0..distinct.max(1) {
            let body = events.request(per_request).encode_to_vec();
            let offsets: Vec<usize> = body
                .windows(SEQ_WIDTH)
                .enumerate()
                .filter(|(_, w)| *w == SEQ_PLACEHOLDER)
                .map(|(i, _)| i)
                .collect();
            ensure!(
                offsets.len() as u64 == per_request,
                "found {} sequence placeholders in a request of {per_request} records",
                offsets.len()
            );
            bodies.push((body, offsets));
        }
        Ok(Self {
            bodies,
            per_request,
        })
    }

    /// Records in every request.
    pub fn per_request(&self) -> u64 {
        self.per_request
    }

    /// Encoded bytes of a request.
    pub fn request_bytes(&self) -> usize {
        self.bodies[0].0.len()
    }

    /// The protobuf body of request number `index`: its records carry the sequence
    /// numbers `index × per_request ..` in order.
    pub fn body(&self, index: u64) -> Bytes {
        let (template, offsets) = &self.bodies[(index % self.bodies.len() as u64) as usize];
        let mut body = template.clone();
        let first = index * self.per_request;
        for (i, &at) in offsets.iter().enumerate() {
            write_digits(&mut body[at..at + SEQ_WIDTH], first + i as u64);
        }
        Bytes::from(body)
    }
}

/// Writes `n` as zero-padded decimal into `out`.
fn write_digits(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

/// Growth events as a personal-finance app's backend sends them.
struct EventSource {
    rng: Rng,
    users: u64,
    app_hasher: UserHasher,
    now_nanos: u64,
}

impl EventSource {
    fn new(seed: u64, users: u64) -> Self {
        let now_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            rng: Rng(seed),
            users: users.max(1),
            app_hasher: UserHasher::new(Some(USER_HASH_KEY.as_bytes().to_vec())),
            now_nanos,
        }
    }

    /// expense_logged 55 %, expense_edited 15 %, report_requested 15 %,
    /// challenge_started 10 %, pwa_installed 5 % (before sign-up: anonymous). Half name
    /// the event in `LogRecord.event_name`, half in `event.name`; half carry a raw
    /// `user.id` (a messenger account id), half a `user.hash` the app computed.
    fn record(&mut self) -> LogRecord {
        let rng = &mut self.rng;
        let event = match rng.below(100) {
            0..55 => "expense_logged",
            55..70 => "expense_edited",
            70..85 => "report_requested",
            85..95 => "challenge_started",
            _ => "pwa_installed",
        };
        let in_field = rng.below(2) == 0;
        let mut attributes = Vec::with_capacity(8);
        if !in_field {
            attributes.push(text("event.name", event));
        }
        if event != "pwa_installed" {
            let id = format!(
                "tg-{}",
                184_000_000 + rng.below(self.users) * 7919 % 90_000_000
            );
            if rng.below(2) == 0 {
                attributes.push(text("user.hash", self.app_hasher.hash(&id).as_str()));
            } else {
                attributes.push(text("user.id", &id));
            }
        }
        attributes.push(text(
            "source",
            rng.pick(&["messenger", "messenger", "form", "pwa"]),
        ));
        match event {
            "expense_logged" | "expense_edited" => {
                let cents = 50 + rng.below(50_000);
                attributes.push(kv("amount", Value::DoubleValue(cents as f64 / 100.0)));
                attributes.push(text(
                    "category",
                    rng.pick(&[
                        "groceries",
                        "transport",
                        "eating_out",
                        "rent",
                        "utilities",
                        "health",
                        "entertainment",
                        "other",
                    ]),
                ));
                attributes.push(text("currency", rng.pick(&["EUR", "EUR", "USD", "GBP"])));
            }
            "report_requested" => {
                attributes.push(text(
                    "report_type",
                    rng.pick(&["monthly", "weekly", "by_category"]),
                ));
            }
            "challenge_started" => {
                attributes.push(text(
                    "challenge",
                    rng.pick(&["no_takeaway_week", "save_100", "coffee_at_home"]),
                ));
            }
            _ => {
                attributes.push(text("platform", rng.pick(&["android", "ios", "desktop"])));
            }
        }
        let placeholder = std::str::from_utf8(SEQ_PLACEHOLDER).unwrap_or_default();
        attributes.push(text(SEQ_ATTRIBUTE, placeholder));
        // The last ten minutes, as a live app sends them.
        let time = self.now_nanos - rng.below(600_000_000_000);
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + 1_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: if in_field {
                event.into()
            } else {
                String::new()
            },
            attributes,
            ..Default::default()
        }
    }

    fn request(&mut self, records: u64) -> ExportLogsServiceRequest {
        let log_records = (0..records).map(|_| self.record()).collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", APP),
                        text("service.version", "2.14.0"),
                        text("deployment.environment", "production"),
                        text("telemetry.sdk.language", "rust"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "growth".into(),
                        version: "0.1.0".into(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_gets_its_own_sequence_number() {
        let templates = Templates::new(2, 16, 100).unwrap();
        let request = ExportLogsServiceRequest::decode(templates.body(3)).unwrap();
        let seqs: Vec<String> = request.resource_logs[0].scope_logs[0]
            .log_records
            .iter()
            .map(|r| {
                let kv = r
                    .attributes
                    .iter()
                    .find(|a| a.key == SEQ_ATTRIBUTE)
                    .unwrap();
                match &kv.value.as_ref().unwrap().value {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let expected: Vec<String> = (48..64).map(|n| format!("{n:010}")).collect();
        assert_eq!(seqs, expected);
    }
}
