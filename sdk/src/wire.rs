//! Protobuf wire helpers over prost's encoding functions, for the few OTLP
//! messages the SDK writes by hand (`record`, `request`). Writing the bytes
//! directly keeps `track` to one allocation; prost's generated types decode them
//! in the tests, which is what proves them right.

use prost::encoding::{WireType, encoded_len_varint, key_len};

/// Bytes reserved in front of a record for its frame: one key byte (field
/// numbers below 16) and a varint length of up to 3 bytes (records < 2 MiB).
pub(crate) const FRAME_RESERVE: usize = 4;

/// Length of a varint.
pub(crate) fn varint_len(value: u64) -> usize {
    encoded_len_varint(value)
}

/// Length of a length-delimited field whose content is `len` bytes.
pub(crate) fn len_field(field: u32, len: usize) -> usize {
    key_len(field) + encoded_len_varint(len as u64) + len
}

/// A varint, inline: `track` writes a dozen of them, nearly all one byte long,
/// and prost's out-of-line loop through `BufMut` was 9 % of its time.
#[inline]
fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[inline]
fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: WireType) {
    put_varint(buf, (u64::from(field) << 3) | wire_type as u64);
}

pub(crate) fn put_len_prefix(buf: &mut Vec<u8>, field: u32, len: usize) {
    put_key(buf, field, WireType::LengthDelimited);
    put_varint(buf, len as u64);
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_len_prefix(buf, field, bytes.len());
    buf.extend_from_slice(bytes);
}

pub(crate) fn put_fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    put_key(buf, field, WireType::SixtyFourBit);
    buf.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    put_key(buf, field, WireType::Varint);
    put_varint(buf, value);
}

/// Writes the frame (key of `field` + length) of the message that fills
/// `buf[FRAME_RESERVE..]` into the reserved bytes, right-aligned so the frame and
/// the message are contiguous; returns where the framed bytes start.
pub(crate) fn frame_in_place(buf: &mut [u8], field: u32) -> usize {
    debug_assert!(field < 16, "one key byte");
    let len = buf.len() - FRAME_RESERVE;
    // Key and length on the stack (no allocation), through prost's encoder: once
    // per record, so its out-of-line loop costs nothing here.
    let mut frame = [0u8; 16];
    let written = {
        let mut slot: &mut [u8] = &mut frame;
        prost::encoding::encode_key(field, WireType::LengthDelimited, &mut slot);
        prost::encoding::encode_varint(len as u64, &mut slot);
        16 - slot.len()
    };
    // Records are bounded far below 2 MiB (see `record`), so the frame fits.
    let written = written.min(FRAME_RESERVE);
    let start = FRAME_RESERVE - written;
    buf[start..FRAME_RESERVE].copy_from_slice(&frame[..written]);
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_keys_match_prost() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint_field(&mut ours, 13, value);
            let mut theirs = Vec::new();
            prost::encoding::encode_key(13, WireType::Varint, &mut theirs);
            prost::encoding::encode_varint(value, &mut theirs);
            assert_eq!(ours, theirs, "value {value}");
            assert_eq!(ours.len(), key_len(13) + varint_len(value));
        }
    }

    #[test]
    fn frame_is_right_aligned_before_the_message() {
        for len in [0usize, 5, 127, 128, 300, 20_000] {
            let mut buf = vec![0u8; FRAME_RESERVE];
            buf.extend(std::iter::repeat_n(7u8, len));
            let start = frame_in_place(&mut buf, 2);
            let mut expected = Vec::new();
            put_bytes(&mut expected, 2, &vec![7u8; len]);
            assert_eq!(&buf[start..], &expected[..], "len {len}");
        }
    }
}
