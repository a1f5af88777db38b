//! The aggregator's day-cache file reader (`day_store`, `--state-dir`): arbitrary
//! bytes give an error or a valid cache, never a panic; a cache it accepts writes
//! back to bytes that read as the same cache.
//!
//! The file ends in a CRC-32 of everything before it, which random mutations almost
//! never satisfy: when the first input byte is odd, the rest of the input gets its
//! correct checksum appended, so the fuzzer reaches the header and the keys.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use growth_aggregator::day_store::{SavedDay, SavedDays, SavedUnion};
use growth_aggregator::fuzzing::{decode_day_cache, encode_day_cache};
use growth_aggregator::rows::Layer;
use libfuzzer_sys::fuzz_target;

const DATABASE: &str = "growth";

fn seeds() -> Vec<Vec<u8>> {
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).expect("valid date");
    let layers = [Layer::Activity, Layer::FirstSeen, Layer::Activity];
    let mut caches = vec![SavedDays {
        timezone: "UTC".into(),
        active_events: vec![],
        parts: Default::default(),
        days: vec![],
        unions: vec![],
        links: 0,
    }];
    let days: Vec<SavedDay> = layers
        .iter()
        .enumerate()
        .map(|(i, layer)| SavedDay {
            layer: *layer,
            day: day(i as u32 + 1),
            unsettled: i == 2,
            marker: BTreeMap::from([("rows".to_owned(), 10 + i as u64)]),
            users: BTreeMap::from([
                (
                    "shop".to_owned(),
                    Arc::new(vec![1, 5, 9 + i as u64, u64::MAX]),
                ),
                ("crm".to_owned(), Arc::new(vec![])),
            ]),
        })
        .collect();
    caches.push(SavedDays {
        timezone: "Europe/Berlin".into(),
        active_events: vec!["signup".into(), "expense_logged".into()],
        parts: Default::default(),
        days,
        unions: vec![SavedUnion {
            app: "shop".into(),
            first: day(1),
            last: day(3),
            users: Arc::new(vec![1, 5, 9, 10, 11, u64::MAX]),
        }],
        links: 0x5eed,
    });
    caches
        .iter()
        .map(|c| {
            let bytes = encode_day_cache(c, DATABASE);
            // Odd first byte, checksum left for the target to append.
            let mut seed = vec![1u8];
            seed.extend_from_slice(&bytes[..bytes.len() - 4]);
            seed
        })
        .collect()
}

fuzz_target!(
    init: growth_fuzz::write_seeds_if_asked(seeds),
    |data: &[u8]| {
        let Some((mode, rest)) = data.split_first() else {
            return;
        };
        let mut bytes = rest.to_vec();
        if mode & 1 == 1 {
            bytes.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
        }
        if let Ok(days) = decode_day_cache(&bytes, DATABASE) {
            for set in days.days.iter().flat_map(|d| d.users.values()).chain(days.unions.iter().map(|u| &u.users)) {
                assert!(set.windows(2).all(|w| w[0] < w[1]), "keys sorted and distinct");
            }
            let again = decode_day_cache(&encode_day_cache(&days, DATABASE), DATABASE);
            assert_eq!(again, Ok(days), "written back, it reads the same");
        }
    }
);
