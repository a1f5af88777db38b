//! Entry points for the fuzz targets (`fuzz/`, run by `scripts/fuzz`) that are not
//! public API otherwise. Hidden from the docs; nothing in the aggregator uses it.

use crate::day_store::{self, SavedDays};

/// Reads the bytes of a day cache file written for `database`: what
/// [`day_store::DayStore::load`] does once it has read the file.
pub fn decode_day_cache(bytes: &[u8], database: &str) -> Result<SavedDays, String> {
    day_store::decode(bytes, database)
}

/// The bytes [`day_store::DayStore::save`] writes for `days`.
pub fn encode_day_cache(days: &SavedDays, database: &str) -> Vec<u8> {
    day_store::encode(days, database)
}
