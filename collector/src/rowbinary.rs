//! Growth events in ClickHouse's RowBinary format: how a request's rows are kept in
//! the spool, and the body of every insert.
//!
//! Why RowBinary and not a format of our own: the bytes written to the spool at
//! intake are the bytes sent to ClickHouse later, unchanged — no decoding and
//! re-encoding on the way out, and a record costs only its encoding once. The column
//! order is [`COLUMNS`]; the types are those of `schema/migrations/0001_events.sql`
//! (`String` for the `LowCardinality(String)` columns, `Int64` milliseconds for
//! `DateTime64(3)`, `Map` as a count followed by key/value pairs).
//!
//! Decoding ([`split_rows`], [`decode_row`]) is needed only when a batch must be cut
//! into single rows (a poison row) and to write a dead-lettered row as JSON.

use chrono::{DateTime, Utc};
use growth_schema::tables::EventRow;

use crate::catalog::Catalog;
use crate::map::{Event, RejectReason, RowSink};

/// The column list of every insert, in the order rows are encoded.
pub const COLUMNS: &str =
    "app, event, event_time, user_hash, source, properties, numbers, received_at";

/// Why bytes are not RowBinary rows of [`COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spooled rows do not decode: {0}")]
pub struct DecodeError(&'static str);

/// Appends `row` to `out`.
pub fn encode_row(row: &EventRow, out: &mut Vec<u8>) {
    encode_fields(
        out,
        Fields {
            app: &row.app,
            event: &row.event,
            event_time: row.event_time,
            user_hash: &row.user_hash,
            source: &row.source,
            received_at: row.received_at,
        },
        row.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        row.numbers.iter().map(|(k, v)| (k.as_str(), *v)),
    );
}

/// A row's scalar columns.
struct Fields<'a> {
    app: &'a str,
    event: &'a str,
    event_time: DateTime<Utc>,
    user_hash: &'a str,
    source: &'a str,
    received_at: DateTime<Utc>,
}

/// The one place a row's layout is written (both [`encode_row`] and
/// [`RequestEncoder::push`] come here, so the two cannot drift apart).
fn encode_fields<'a>(
    out: &mut Vec<u8>,
    fields: Fields<'_>,
    properties: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    numbers: impl ExactSizeIterator<Item = (&'a str, f64)>,
) {
    put_str(out, fields.app);
    put_str(out, fields.event);
    out.extend_from_slice(&fields.event_time.timestamp_millis().to_le_bytes());
    put_str(out, fields.user_hash);
    put_str(out, fields.source);
    put_len(out, properties.len());
    for (key, value) in properties {
        put_str(out, key);
        put_str(out, value);
    }
    put_len(out, numbers.len());
    for (key, value) in numbers {
        put_str(out, key);
        out.extend_from_slice(&value.to_le_bytes());
    }
    // Last, and 8 bytes: the digest leaves it out ([`RequestEncoder`]).
    out.extend_from_slice(&fields.received_at.timestamp_millis().to_le_bytes());
}

/// Encodes every row of a request into one buffer.
pub fn encode_rows(rows: &[EventRow]) -> Vec<u8> {
    encode_request(rows).bytes
}

/// A request's rows, encoded, with a digest of what the sender sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRows {
    /// RowBinary rows of [`COLUMNS`].
    pub bytes: Vec<u8>,
    /// XXH3-128 of the rows without their `received_at`: the same records sent
    /// again (a sender's retry) give the same digest, whenever they arrive.
    pub digest: u128,
}

/// Encodes every row of a request into one buffer, and digests it.
pub fn encode_request(rows: &[EventRow]) -> EncodedRows {
    // A typical growth event is 150-300 bytes; guessing low costs a regrowth (a copy
    // of the whole buffer), guessing high only address space.
    let mut encoder = RequestEncoder::with_capacity(rows.len() * 288);
    for row in rows {
        let start = encoder.bytes.len();
        encode_row(row, &mut encoder.bytes);
        encoder.digest_from(start);
    }
    encoder.finish()
}

/// A request's rows encoded one at a time, as they are mapped
/// ([`RowBinarySink`]); the same bytes and digest as [`encode_request`].
pub struct RequestEncoder {
    bytes: Vec<u8>,
    hasher: twox_hash::XxHash3_128,
}

impl std::fmt::Debug for RequestEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestEncoder")
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl RequestEncoder {
    /// An encoder whose buffer starts with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            hasher: twox_hash::XxHash3_128::new(),
        }
    }

    /// Appends one mapped event.
    pub fn push(&mut self, event: &Event<'_>) {
        let start = self.bytes.len();
        encode_fields(
            &mut self.bytes,
            Fields {
                app: event.app,
                event: event.event,
                event_time: event.event_time,
                user_hash: event.user_hash.as_ref().map_or("", |h| h.as_str()),
                source: event.source,
                received_at: event.received_at,
            },
            event.properties.text.iter().map(|(k, v)| (*k, v.as_ref())),
            event.properties.numbers.iter().copied(),
        );
        self.digest_from(start);
    }

    /// Adds the row that starts at `start` to the digest, without its `received_at`
    /// (its last 8 bytes).
    fn digest_from(&mut self, start: usize) {
        self.hasher.write(&self.bytes[start..self.bytes.len() - 8]);
    }

    /// The rows and their digest.
    pub fn finish(self) -> EncodedRows {
        EncodedRows {
            bytes: self.bytes,
            digest: self.hasher.finish_128(),
        }
    }
}

/// Events written straight into RowBinary as they are mapped ([`crate::map::Mapper`]
/// with this sink): no owned row, no string copied twice.
/// Admission asks the [`Catalog`], remembering its answers for the (app, event)
/// pairs of this request so that the catalog's lock is taken once per pair.
#[derive(Debug)]
pub struct RowBinarySink<'a, 'c> {
    catalog: &'c Catalog,
    answers: Vec<(&'a str, &'a str, Result<(), RejectReason>)>,
    /// Pairs this request taught the catalog (with whether the app was new too).
    learned: Vec<(&'a str, &'a str, bool)>,
    encoder: RequestEncoder,
}

/// Pairs remembered per request; a request with more asks the catalog each time.
const ANSWERS_KEPT: usize = 64;

impl<'c> RowBinarySink<'_, 'c> {
    /// A sink admitting against `catalog`, its buffer sized for `capacity` bytes.
    pub fn new(catalog: &'c Catalog, capacity: usize) -> Self {
        Self {
            catalog,
            answers: Vec::new(),
            learned: Vec::new(),
            encoder: RequestEncoder::with_capacity(capacity),
        }
    }

    /// The rows encoded, with the request's digest.
    pub fn finish(self) -> EncodedRows {
        self.encoder.finish()
    }

    /// The request is refused whole: the catalog forgets the names it learned from it.
    pub fn forget_learned(self) {
        if !self.learned.is_empty() {
            self.catalog.forget(&self.learned);
        }
    }
}

impl<'a> RowSink<'a> for RowBinarySink<'a, '_> {
    fn admit(&mut self, app: &'a str, event: &'a str) -> Result<(), RejectReason> {
        if let Some((_, _, answer)) = self
            .answers
            .iter()
            .find(|(a, e, _)| *a == app && *e == event)
        {
            return *answer;
        }
        let answer = self.catalog.admit_learning(app, event).map(|learned| {
            if let Some(app_was_new) = learned {
                self.learned.push((app, event, app_was_new));
            }
        });
        if self.answers.len() < ANSWERS_KEPT {
            self.answers.push((app, event, answer));
        }
        answer
    }

    fn push(&mut self, event: &Event<'a>) {
        self.encoder.push(event);
    }
}

/// The byte ranges of the rows in `bytes` (which must hold whole rows).
pub fn split_rows(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, DecodeError> {
    let mut ranges = Vec::new();
    let mut reader = Reader { bytes, at: 0 };
    while reader.at < bytes.len() {
        let start = reader.at;
        reader.skip_row()?;
        ranges.push(start..reader.at);
    }
    Ok(ranges)
}

/// Decodes exactly one row.
pub fn decode_row(bytes: &[u8]) -> Result<EventRow, DecodeError> {
    let mut reader = Reader { bytes, at: 0 };
    let row = EventRow {
        app: reader.string()?,
        event: reader.string()?,
        event_time: reader.millis()?,
        user_hash: reader.string()?,
        source: reader.string()?,
        properties: {
            let n = reader.len()?;
            let mut pairs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                pairs.push((reader.string()?, reader.string()?));
            }
            pairs
        },
        numbers: {
            let n = reader.len()?;
            let mut pairs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                pairs.push((reader.string()?, f64::from_le_bytes(reader.array()?)));
            }
            pairs
        },
        received_at: reader.millis()?,
    };
    if reader.at != bytes.len() {
        return Err(DecodeError("trailing bytes after a row"));
    }
    Ok(row)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_varuint(out, n as u64);
}

/// Appends `n` as LEB128 (ClickHouse's `VarUInt`): how RowBinary and the Native
/// format ([`crate::native`]) encode lengths.
#[inline]
pub(crate) fn put_varuint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Reads RowBinary values in place (used by [`crate::native`] to re-lay rows as columns).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// A length-prefixed string's bytes, borrowed.
    pub(crate) fn str_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    /// The next 8 bytes, as they are (a little-endian Int64 or Float64).
    pub(crate) fn word(&mut self) -> Result<&'a [u8], DecodeError> {
        self.take(8)
    }

    pub(crate) fn len(&mut self) -> Result<usize, DecodeError> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or(DecodeError("truncated length"))?;
            self.at += 1;
            n |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError("length too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(DecodeError("truncated value"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn skip_str(&mut self) -> Result<(), DecodeError> {
        let n = self.len()?;
        self.take(n).map(drop)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("a string is not UTF-8"))
    }

    fn millis(&mut self) -> Result<DateTime<Utc>, DecodeError> {
        DateTime::from_timestamp_millis(i64::from_le_bytes(self.array()?))
            .ok_or(DecodeError("time out of range"))
    }

    fn skip_row(&mut self) -> Result<(), DecodeError> {
        self.skip_str()?; // app
        self.skip_str()?; // event
        self.take(8)?; // event_time
        self.skip_str()?; // user_hash
        self.skip_str()?; // source
        for _ in 0..self.len()? {
            self.skip_str()?;
            self.skip_str()?;
        }
        for _ in 0..self.len()? {
            self.skip_str()?;
            self.take(8)?;
        }
        self.take(8).map(drop) // received_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> EventRow {
        EventRow {
            app: "finbrain".into(),
            event: format!("event_{i}"),
            event_time: DateTime::from_timestamp_millis(1_764_000_000_123).expect("time"),
            user_hash: "ab".repeat(32),
            source: if i.is_multiple_of(2) {
                "pwa".into()
            } else {
                String::new()
            },
            properties: (0..i).map(|k| (format!("k{k}"), "v".repeat(200))).collect(),
            numbers: vec![("amount".into(), 12.5 * i as f64)],
            received_at: DateTime::from_timestamp_millis(1_764_000_001_000).expect("time"),
        }
    }

    #[test]
    fn rows_round_trip_and_split() {
        let rows: Vec<EventRow> = (0..5).map(row).collect();
        let bytes = encode_rows(&rows);
        let ranges = split_rows(&bytes).expect("splits");
        assert_eq!(ranges.len(), 5);
        for (range, expected) in ranges.into_iter().zip(&rows) {
            assert_eq!(&decode_row(&bytes[range]).expect("decodes"), expected);
        }
    }

    #[test]
    fn the_digest_ignores_the_receive_time_only() {
        let rows: Vec<EventRow> = (0..3).map(row).collect();
        let mut again = rows.clone();
        again[1].received_at = DateTime::from_timestamp_millis(1_800_000_000_000).expect("time");
        assert_eq!(encode_request(&rows).digest, encode_request(&again).digest);
        again[1].event_time = again[1].received_at;
        assert_ne!(encode_request(&rows).digest, encode_request(&again).digest);
        assert_ne!(
            encode_request(&rows).digest,
            encode_request(&rows[..2]).digest
        );
    }

    #[test]
    fn truncated_rows_are_an_error_not_a_panic() {
        let bytes = encode_rows(&[row(3)]);
        for cut in 0..bytes.len() {
            assert!(split_rows(&bytes[..cut]).is_err() || cut == 0);
            assert!(decode_row(&bytes[..cut]).is_err());
        }
    }
}
