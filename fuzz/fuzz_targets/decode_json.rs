//! OTLP/JSON request decoding (`decode::json`): arbitrary bytes never panic; what it
//! accepts is within the limits, and the same request sent as protobuf decodes to
//! the same thing (prost encodes it, the collector's protobuf reader reads it back).
#![no_main]

use growth_collector::receiver::decode::{self, DecodeLimits};
use libfuzzer_sys::fuzz_target;
use prost::Message;

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
    init: growth_fuzz::write_seeds_if_asked(growth_fuzz::json_seeds),
    |data: &[u8]| {
        for limits in &LIMITS {
            let Ok(request) = decode::json(data, limits) else {
                continue;
            };
            let bytes = request.encode_to_vec();
            let again = decode::protobuf(&bytes, limits);
            // Debug, not ==: a NaN attribute is not equal to itself.
            assert_eq!(
                format!("{again:?}"),
                format!("{:?}", Ok::<_, decode::DecodeError>(request)),
                "JSON and protobuf decode the same request alike"
            );
        }
    }
);
