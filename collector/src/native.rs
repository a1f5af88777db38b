//! Spooled RowBinary rows re-laid as ClickHouse Native blocks, the body of every insert.
//!
//! Why: ClickHouse parses RowBinary value by value, and the `properties` map with its
//! `LowCardinality` keys is the costliest part of it; a Native block arrives as
//! columns, `LowCardinality` ones already as a dictionary and indexes. Measured on
//! this machine (1,024,000 finance events, one insert into `events` and its views):
//! RowBinary 6.0–6.6 CPU-s of ClickHouse, Native 4.1–4.6, Native with the
//! `LowCardinality` columns sent as plain `String` 4.8–5.8 (the server converts them).
//! The spool keeps RowBinary (one encoding at intake, rows that split for bisection
//! and dead letters); this module re-lays a batch just before it is sent, at about
//! 0.1 µs a row.
//!
//! Why not the `clickhouse` crate's Native support (`insert_native`, 0.15): it erases
//! `LowCardinality` to `String` (the slow path above) and writes blocks only from its
//! own `Block` values, not from bytes we already hold. The layout written here is
//! ClickHouse's own, checked byte for byte against the server's `FORMAT Native` output
//! in the tests below: a block is `VarUInt columns, VarUInt rows`, then per column its
//! name, its type and its data; a `LowCardinality(String)` column is the key version
//! (UInt64 1), the index flags (UInt64: additional keys + update dictionary + index
//! width), the dictionary (default `''` first) and the indexes; a `Map(K, V)` is its
//! cumulative offsets (UInt64), then its keys column, then its values column. The
//! maps' keys are plain `String` (migration 0020: merging `events` costs ClickHouse
//! about half as much as with `LowCardinality` keys).

use hashbrown::HashMap;

use crate::rowbinary::{DecodeError, Reader, put_varuint};

/// Rows per Native block. ClickHouse squashes the blocks of one insert back into one
/// (`min_insert_block_size_rows`), so this bounds only our memory, not the parts.
pub const BLOCK_ROWS: usize = 16_384;

/// `LowCardinality` key serialization version: shared dictionaries with additional keys.
const LC_KEYS_VERSION: u64 = 1;
/// Index flags: the block carries its own keys, and they replace the dictionary.
const LC_HAS_ADDITIONAL_KEYS: u64 = 1 << 9;
const LC_NEED_UPDATE_DICTIONARY: u64 = 1 << 10;

/// The rows of `rowbinary` (whole RowBinary rows of [`crate::rowbinary::COLUMNS`]) as
/// Native blocks of at most [`BLOCK_ROWS`] rows, in order, one at a time: an insert
/// holds one block beside its rows, not a second copy of the batch.
pub fn blocks(rowbinary: &[u8]) -> Blocks<'_> {
    Blocks {
        reader: Reader::new(rowbinary),
        failed: false,
    }
}

/// Iterator of [`blocks`]; ends after the first error.
pub struct Blocks<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl Iterator for Blocks<'_> {
    type Item = Result<Vec<u8>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_done() {
            return None;
        }
        let mut block = BlockBuilder::default();
        while block.rows < BLOCK_ROWS && !self.reader.is_done() {
            if let Err(e) = block.push_row(&mut self.reader) {
                self.failed = true;
                return Some(Err(e));
            }
        }
        Some(Ok(block.finish()))
    }
}

/// The columns of one block as they fill.
#[derive(Default)]
struct BlockBuilder<'a> {
    rows: usize,
    app: LowCardinality<'a>,
    event: LowCardinality<'a>,
    event_time: Vec<u8>,
    user_hash: Vec<u8>,
    source: LowCardinality<'a>,
    properties_offsets: Vec<u8>,
    properties_keys: Vec<u8>,
    properties_values: Vec<u8>,
    numbers_offsets: Vec<u8>,
    numbers_keys: Vec<u8>,
    numbers_values: Vec<u8>,
    received_at: Vec<u8>,
    properties_count: u64,
    numbers_count: u64,
}

impl<'a> BlockBuilder<'a> {
    fn push_row(&mut self, reader: &mut Reader<'a>) -> Result<(), DecodeError> {
        self.app.push(reader.str_bytes()?);
        self.event.push(reader.str_bytes()?);
        self.event_time.extend_from_slice(reader.word()?);
        put_string(&mut self.user_hash, reader.str_bytes()?);
        self.source.push(reader.str_bytes()?);
        for _ in 0..reader.len()? {
            put_string(&mut self.properties_keys, reader.str_bytes()?);
            put_string(&mut self.properties_values, reader.str_bytes()?);
            self.properties_count += 1;
        }
        self.properties_offsets
            .extend_from_slice(&self.properties_count.to_le_bytes());
        for _ in 0..reader.len()? {
            put_string(&mut self.numbers_keys, reader.str_bytes()?);
            self.numbers_values.extend_from_slice(reader.word()?);
            self.numbers_count += 1;
        }
        self.numbers_offsets
            .extend_from_slice(&self.numbers_count.to_le_bytes());
        self.received_at.extend_from_slice(reader.word()?);
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.event_time.len() * 2
                + self.user_hash.len()
                + self.properties_keys.len()
                + self.properties_values.len()
                + self.numbers_keys.len()
                + self.numbers_values.len()
                + self.rows * 8,
        );
        put_varuint(&mut out, 8);
        put_varuint(&mut out, self.rows as u64);
        const LC: &str = "LowCardinality(String)";
        const TIME: &str = "DateTime64(3, 'UTC')";

        column(&mut out, "app", LC);
        self.app.write_with_prefix(&mut out);
        column(&mut out, "event", LC);
        self.event.write_with_prefix(&mut out);
        column(&mut out, "event_time", TIME);
        out.extend_from_slice(&self.event_time);
        column(&mut out, "user_hash", "String");
        out.extend_from_slice(&self.user_hash);
        column(&mut out, "source", LC);
        self.source.write_with_prefix(&mut out);

        // Map keys are plain strings, as `events` stores them since migration 0020.
        column(&mut out, "properties", "Map(String, String)");
        out.extend_from_slice(&self.properties_offsets);
        out.extend_from_slice(&self.properties_keys);
        out.extend_from_slice(&self.properties_values);

        column(&mut out, "numbers", "Map(String, Float64)");
        out.extend_from_slice(&self.numbers_offsets);
        out.extend_from_slice(&self.numbers_keys);
        out.extend_from_slice(&self.numbers_values);

        column(&mut out, "received_at", TIME);
        out.extend_from_slice(&self.received_at);
        out
    }
}

/// A `LowCardinality(String)` column being built: a dictionary and an index per row.
struct LowCardinality<'a> {
    positions: HashMap<&'a [u8], u32>,
    keys: Vec<&'a [u8]>,
    indexes: Vec<u32>,
}

impl Default for LowCardinality<'_> {
    fn default() -> Self {
        // ClickHouse's dictionaries hold the type's default value at index 0.
        Self {
            positions: HashMap::from([(&b""[..], 0)]),
            keys: vec![b""],
            indexes: Vec::new(),
        }
    }
}

impl<'a> LowCardinality<'a> {
    fn push(&mut self, value: &'a [u8]) {
        let next = self.keys.len() as u32;
        let index = *self.positions.entry(value).or_insert_with(|| {
            self.keys.push(value);
            next
        });
        self.indexes.push(index);
    }

    fn write_with_prefix(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&LC_KEYS_VERSION.to_le_bytes());
        self.write(out);
    }

    fn write(&self, out: &mut Vec<u8>) {
        // ClickHouse writes nothing at all for no rows, not an empty dictionary, and
        // reads it back the same way.
        if self.indexes.is_empty() {
            return;
        }
        // The narrowest index type that holds every position: 0 UInt8 … 3 UInt64.
        let (width_code, width) = match self.keys.len() {
            0..=0x100 => (0u64, 1),
            0x101..=0x1_0000 => (1, 2),
            _ => (2, 4),
        };
        let flags = LC_HAS_ADDITIONAL_KEYS | LC_NEED_UPDATE_DICTIONARY | width_code;
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(self.keys.len() as u64).to_le_bytes());
        for key in &self.keys {
            put_string(out, key);
        }
        out.extend_from_slice(&(self.indexes.len() as u64).to_le_bytes());
        out.reserve(self.indexes.len() * width);
        for &index in &self.indexes {
            out.extend_from_slice(&index.to_le_bytes()[..width]);
        }
    }
}

fn column(out: &mut Vec<u8>, name: &str, data_type: &str) {
    put_string(out, name.as_bytes());
    put_string(out, data_type.as_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varuint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rowbinary::encode_rows;
    use chrono::DateTime;
    use growth_schema::tables::EventRow;

    fn row(
        event: &str,
        source: &str,
        properties: &[(&str, &str)],
        amount: Option<f64>,
    ) -> EventRow {
        EventRow {
            app: "finbrain".into(),
            event: event.into(),
            event_time: DateTime::from_timestamp_millis(1_764_633_600_123).expect("time"),
            user_hash: "ab".repeat(32),
            source: source.into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            numbers: amount.map(|a| ("amount".into(), a)).into_iter().collect(),
            received_at: DateTime::from_timestamp_millis(1_764_633_601_000).expect("time"),
        }
    }

    /// The block equals ClickHouse 26.9's own `FORMAT Native` output for the same three
    /// rows, byte for byte (`collector/testdata/native_block.sql` made the fixture).
    #[test]
    fn a_block_matches_clickhouse_byte_for_byte() {
        let rows = [
            row(
                "expense_logged",
                "form",
                &[
                    ("category", "groceries"),
                    ("currency", "EUR"),
                    ("bench.seq", "0000000000"),
                ],
                Some(245.86),
            ),
            row(
                "expense_edited",
                "",
                &[
                    ("category", "groceries"),
                    ("currency", "EUR"),
                    ("bench.seq", "0000000001"),
                ],
                None,
            ),
            row(
                "report_requested",
                "pwa",
                &[
                    ("category", "travel"),
                    ("currency", "EUR"),
                    ("bench.seq", "0000000002"),
                    ("note", "lunch with team"),
                ],
                None,
            ),
        ];
        let blocks: Vec<_> = blocks(&encode_rows(&rows))
            .collect::<Result<_, _>>()
            .expect("transcodes");
        assert_eq!(blocks.len(), 1);
        let expected = hex(include_str!("../testdata/native_block.hex"));
        assert_eq!(to_hex(&blocks[0]), to_hex(&expected));
    }

    /// ClickHouse's `SELECT CAST(map() AS Map(String, Float64)) AS numbers FORMAT
    /// Native`: one zero offset, and no keys or values at all.
    #[test]
    fn a_column_of_empty_maps_is_its_offsets() {
        let rows = [row("expense_edited", "", &[], None)];
        let block = blocks(&encode_rows(&rows))
            .next()
            .expect("a block")
            .expect("transcodes");
        let mut expected = Vec::new();
        column(&mut expected, "numbers", "Map(String, Float64)");
        expected.extend_from_slice(&hex("0000000000000000"));
        column(&mut expected, "received_at", "DateTime64(3, 'UTC')");
        assert!(find(&block, &expected), "{}", to_hex(&block));
    }

    #[test]
    fn wide_dictionaries_use_wider_indexes_and_blocks_split() {
        let rows: Vec<EventRow> = (0..BLOCK_ROWS + 300)
            .map(|i| row(&format!("event_{i}"), "pwa", &[], None))
            .collect();
        let blocks: Vec<_> = blocks(&encode_rows(&rows))
            .collect::<Result<_, _>>()
            .expect("transcodes");
        assert_eq!(blocks.len(), 2);
        // 16,384 distinct events + '' need UInt16 indexes: flags 0x601.
        let flags_u16 = (LC_HAS_ADDITIONAL_KEYS | LC_NEED_UPDATE_DICTIONARY | 1).to_le_bytes();
        assert!(find(&blocks[0], &flags_u16));
        // The second block's 300 + 1 keys need UInt16 too (more than 256).
        assert!(find(&blocks[1], &flags_u16));
    }

    #[test]
    fn truncated_rows_are_an_error() {
        let bytes = encode_rows(&[row("a", "b", &[("k", "v")], Some(1.0))]);
        for cut in 1..bytes.len() {
            let result: Result<Vec<_>, _> = blocks(&bytes[..cut]).collect();
            assert!(result.is_err(), "cut at {cut}");
        }
        assert_eq!(blocks(&[]).count(), 0);
    }

    /// The bytes of hex digits written with spaces and line breaks between them.
    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(char::is_ascii_hexdigit).collect();
        hex::decode(digits).expect("hex")
    }

    fn to_hex(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    fn find(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
