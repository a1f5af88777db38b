//! Protobuf request decoding (`decode::protobuf`, `protobuf_visit`, `count_records`):
//! arbitrary bytes never panic or overflow the stack; the in-place reader accepts
//! exactly what the owned decoder accepts, sees the same records (checked against
//! prost's decoding of the same bytes) and stays within the limits.
#![no_main]

use growth_collector::receiver::decode::{self, DecodeError, DecodeLimits};
use growth_collector::view::{self, KeyValue, LogRecord, Visitor};
use libfuzzer_sys::fuzz_target;

/// One thing a visitor is shown (compared through `Debug`: a NaN is not equal to itself).
#[derive(Debug)]
#[allow(dead_code)]
enum Seen<'a> {
    Resource(Vec<KeyValue<'a>>),
    Record(u64, u64, &'a str, Vec<KeyValue<'a>>),
}

/// Everything a visitor is shown, for comparing two readers.
#[derive(Debug, Default)]
struct Recorder<'a> {
    seen: Vec<Seen<'a>>,
    records: usize,
}

impl<'a> Visitor<'a> for Recorder<'a> {
    fn resource(&mut self, attributes: &[KeyValue<'a>]) {
        self.seen.push(Seen::Resource(attributes.to_vec()));
    }
    fn record(&mut self, r: &LogRecord<'a, '_>) {
        self.records += 1;
        self.seen.push(Seen::Record(
            r.time_unix_nano,
            r.observed_time_unix_nano,
            r.event_name,
            r.attributes.to_vec(),
        ));
    }
}

const LIMITS: [DecodeLimits; 2] = [
    DecodeLimits {
        max_records: 65_536,
        max_values: 1_048_576,
        max_depth: 8,
    },
    DecodeLimits {
        max_records: 3,
        max_values: 12,
        max_depth: 2,
    },
];

fuzz_target!(
    init: growth_fuzz::write_seeds_if_asked(growth_fuzz::protobuf_seeds),
    |data: &[u8]| {
    for limits in &LIMITS {
        let decoded = decode::protobuf(data, limits);
        let mut visited = Recorder::default();
        let visit = decode::protobuf_visit(data, limits, &mut visited);
        assert_eq!(
            visit.is_ok(),
            decoded.is_ok(),
            "one reader: visit {visit:?}, decode {:?}",
            decoded.as_ref().err()
        );
        let counted = decode::count_records(data, limits);
        match &decoded {
            Ok(request) => {
                let mut owned = Recorder::default();
                view::visit_request(request, &mut owned);
                assert_eq!(format!("{:?}", visited.seen), format!("{:?}", owned.seen));
                assert!(owned.records <= limits.max_records);
                assert_eq!(counted, owned.records as u64);
            }
            Err(e) => {
                assert_eq!(counted, 0);
                if let DecodeError::TooDeep(n) = e {
                    assert_eq!(*n, limits.max_depth);
                }
            }
        }
    }
});
