//! The load: OTLP export requests of realistic finance-app growth events
//! ([`growth_testkit::finance`]), each record tagged with a unique sequence number so
//! that loss and duplicates can be counted.
//!
//! Encoding a request per send would cost the load generator ~0.8 µs a record on the
//! same two cores as the systems it measures, so a few distinct requests are encoded
//! once, with a fixed-width placeholder where each record's sequence number goes; a
//! send copies one template and writes the numbers in place.

use anyhow::ensure;
use bytes::Bytes;
use growth_testkit::finance::{FinanceEvents, UserIds};
use growth_testkit::otlp::text;
use prost::Message as _;

/// The attribute holding a record's sequence number: ten decimal digits.
pub const SEQ_ATTRIBUTE: &str = "bench.seq";
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
        let placeholder = std::str::from_utf8(SEQ_PLACEHOLDER).unwrap_or_default();
        let mut events = FinanceEvents::new(0x5eed, users, UserIds::Mix(0.5), USER_HASH_KEY)
            .with_record_attribute(text(SEQ_ATTRIBUTE, placeholder));
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

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

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
