//! The OTLP/HTTP receiver's gzip bodies (`Content-Encoding: gzip`): arbitrary bytes
//! never panic; the output never exceeds the limit (a gzip bomb is refused, not
//! inflated); what it accepts is exactly what a plain gzip reader produces; and the
//! decompressed body goes on through the protobuf reader.
#![no_main]

use std::io::Read as _;

use growth_collector::fuzzing::gunzip;
use growth_collector::receiver::decode::{self, DecodeLimits};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 256 * 1024;

fuzz_target!(
    init: growth_fuzz::write_seeds_if_asked(|| {
        let mut seeds: Vec<Vec<u8>> = growth_fuzz::protobuf_seeds()
            .iter()
            .chain(&growth_fuzz::json_seeds()[..3])
            .map(|b| growth_fuzz::gzip(b))
            .collect();
        // Two gzip members in one body, and a small bomb (1 MiB of zeros).
        let mut two = growth_fuzz::gzip(b"first member ");
        two.extend(growth_fuzz::gzip(b"second member"));
        seeds.push(two);
        seeds.push(growth_fuzz::gzip(&vec![0u8; 1 << 20]));
        seeds
    }),
    |data: &[u8]| {
        let result = gunzip(data, LIMIT);
        let mut reference = Vec::new();
        let plain = flate2::read::MultiGzDecoder::new(data)
            .take(LIMIT as u64 + 1)
            .read_to_end(&mut reference);
        match (&plain, &result) {
            (Ok(_), Ok(body)) => {
                assert!(body.len() <= LIMIT);
                assert_eq!(body, &reference, "same bytes as a plain gzip reader");
            }
            (Ok(_), Err(_)) => assert!(reference.len() > LIMIT, "refused a good body: {result:?}"),
            (Err(_), Ok(_)) => panic!("accepted a body a plain gzip reader refuses: {plain:?}"),
            (Err(_), Err(_)) => {}
        }
        if let Ok(body) = result {
            let _ = decode::count_records(&body, &DecodeLimits::default());
        }
    }
);
