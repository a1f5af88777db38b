//! Segment files: how records are framed on disk, found again after a crash, and
//! read back.
//!
//! A segment is `NNNNNNNNNNNNNNNNNNNN.seg` (its id, zero-padded so names sort like
//! ids): a 16-byte header (`GSPOOL01` and the id) followed by frames
//!
//! ```text
//! payload length u32 LE | rows u32 LE | CRC-32 u32 LE of (rows, digest, payload) | digest u128 LE | payload
//! ```
//!
//! The payload is the request's rows in RowBinary ([`crate::rowbinary`]); the digest
//! identifies the request (so a sender's retry of it is recognised, even after a restart). A frame
//! that is cut short, longer than the file, or whose checksum does not match ends
//! the segment: [`scan`] reports where, and recovery truncates the file there, so the
//! good frames before it are kept and a torn write (kill -9, power loss with
//! `--spool-fsync never`) costs only what was never acknowledged.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Bytes before the first frame of a segment.
pub const HEADER_LEN: u64 = 16;
/// Bytes before a frame's payload.
pub const FRAME_HEADER_LEN: u64 = 28;
const MAGIC: &[u8; 8] = b"GSPOOL01";
/// A frame longer than this is taken as garbage (no request maps to that much).
pub const MAX_PAYLOAD: u32 = 1 << 30;

/// Where a frame starts: segment id and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The segment's id (its file name).
    pub segment: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.segment, self.offset)
    }
}

/// A frame found by [`scan`] or written by the spool writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Where the frame starts.
    pub start: Position,
    /// Payload bytes.
    pub payload_len: u32,
    /// Rows in the payload.
    pub rows: u32,
    /// The request's digest ([`crate::rowbinary::EncodedRows::digest`]).
    pub digest: u128,
}

impl Frame {
    /// Where the next frame of the same segment starts.
    pub fn end(&self) -> Position {
        Position {
            segment: self.start.segment,
            offset: self.start.offset + FRAME_HEADER_LEN + u64::from(self.payload_len),
        }
    }
}

/// The file name of segment `id`.
pub fn file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The path of segment `id` in `dir`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// Ids of the segments in `dir`, ascending.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The header of segment `id`.
pub fn header(id: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&id.to_le_bytes());
    header
}

/// Appends one frame to `out`.
pub fn encode_frame(rows: u32, digest: u128, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
    out.extend_from_slice(&checksum(rows, digest, payload).to_le_bytes());
    out.extend_from_slice(&digest.to_le_bytes());
    out.extend_from_slice(payload);
}

fn checksum(rows: u32, digest: u128, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rows.to_le_bytes());
    hasher.update(&digest.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn digest_of(head: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&head[12..28]);
    u128::from_le_bytes(bytes)
}

/// What [`scan`] found in one segment.
#[derive(Debug, Default)]
pub struct Scan {
    /// The good frames from the starting offset on, in order.
    pub frames: Vec<Frame>,
    /// Where the good frames end.
    pub end: u64,
    /// Why the segment ends before the file does (a torn or corrupt tail), if it does.
    pub damage: Option<String>,
    /// The file's length.
    pub file_len: u64,
}

/// Reads segment `id` from byte `from` on and checks every frame.
pub fn scan(dir: &Path, id: u64, from: u64) -> io::Result<Scan> {
    let mut file = File::open(path(dir, id))?;
    let file_len = file.metadata()?.len();
    let mut scan = Scan {
        file_len,
        ..Scan::default()
    };
    let mut header_bytes = [0u8; HEADER_LEN as usize];
    if file.read_exact(&mut header_bytes).is_err() || header_bytes != header(id) {
        scan.damage = Some("segment header missing or wrong".into());
        return Ok(scan);
    }
    let mut at = from.max(HEADER_LEN);
    file.seek(SeekFrom::Start(at))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut payload = Vec::new();
    while at < file_len {
        let mut head = [0u8; FRAME_HEADER_LEN as usize];
        if reader.read_exact(&mut head).is_err() {
            scan.damage = Some(format!("frame header cut short at byte {at}"));
            break;
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (len, rows, crc, digest) = (word(0), word(4), word(8), digest_of(&head));
        let end = at + FRAME_HEADER_LEN + u64::from(len);
        if len > MAX_PAYLOAD || end > file_len {
            scan.damage = Some(format!("frame at byte {at} runs past the end of the file"));
            break;
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload)?;
        if checksum(rows, digest, &payload) != crc {
            scan.damage = Some(format!("checksum mismatch in the frame at byte {at}"));
            break;
        }
        scan.frames.push(Frame {
            start: Position {
                segment: id,
                offset: at,
            },
            payload_len: len,
            rows,
            digest,
        });
        at = end;
    }
    scan.end = at;
    Ok(scan)
}

/// Reads payloads back, keeping the segment it last read open.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    open: Option<(u64, File)>,
}

impl Reader {
    /// A reader of the segments in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            open: None,
        }
    }

    /// The payload of `frame`, checked against its checksum.
    pub fn payload(&mut self, frame: &Frame) -> io::Result<Vec<u8>> {
        let id = frame.start.segment;
        if self.open.as_ref().is_none_or(|(open, _)| *open != id) {
            self.open = Some((id, File::open(path(&self.dir, id))?));
        }
        let Some((_, file)) = &self.open else {
            unreachable!("opened above")
        };
        let mut bytes = vec![0u8; (FRAME_HEADER_LEN + u64::from(frame.payload_len)) as usize];
        file.read_exact_at(&mut bytes, frame.start.offset)?;
        let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let digest = digest_of(&bytes);
        let payload = bytes.split_off(FRAME_HEADER_LEN as usize);
        if checksum(frame.rows, digest, &payload) != crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("checksum mismatch in the frame at {}", frame.start),
            ));
        }
        Ok(payload)
    }

    /// Forgets the open file (before its segment is deleted).
    pub fn close(&mut self) {
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(dir: &Path, id: u64, payloads: &[&[u8]]) -> PathBuf {
        let mut bytes = header(id).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_frame(i as u32 + 1, i as u128, p, &mut bytes);
        }
        let path = path(dir, id);
        std::fs::write(&path, bytes).expect("write segment");
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("growth-segment-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn frames_are_found_and_read_back() {
        let dir = temp_dir("read");
        segment_with(&dir, 7, &[b"one", b"three"]);
        let scan = scan(&dir, 7, 0).expect("scan");
        assert!(scan.damage.is_none());
        assert_eq!(scan.frames.len(), 2);
        assert_eq!(scan.end, scan.file_len);
        let mut reader = Reader::new(&dir);
        assert_eq!(reader.payload(&scan.frames[1]).expect("read"), b"three");
        assert_eq!(list(&dir).expect("list"), vec![7]);
        let from_second = super::scan(&dir, 7, scan.frames[1].start.offset).expect("scan");
        assert_eq!(from_second.frames, scan.frames[1..].to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_found_at_every_cut() {
        let dir = temp_dir("torn");
        let path = segment_with(&dir, 1, &[b"first", b"second record"]);
        let full = std::fs::read(&path).expect("read");
        let first_end = HEADER_LEN + FRAME_HEADER_LEN + 5;
        for cut in (first_end + 1)..(full.len() as u64) {
            std::fs::write(&path, &full[..cut as usize]).expect("write");
            let scan = scan(&dir, 1, 0).expect("scan");
            assert_eq!(scan.frames.len(), 1, "cut at {cut}");
            assert_eq!(scan.end, first_end);
            assert!(scan.damage.is_some());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flipped_bit_ends_the_segment_there() {
        let dir = temp_dir("flip");
        let path = segment_with(&dir, 1, &[b"first", b"second", b"third"]);
        let mut bytes = std::fs::read(&path).expect("read");
        let second_payload = (HEADER_LEN + 2 * FRAME_HEADER_LEN + 5 + 2) as usize;
        bytes[second_payload] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let scan = scan(&dir, 1, 0).expect("scan");
        assert_eq!(scan.frames.len(), 1);
        assert!(
            scan.damage
                .as_deref()
                .is_some_and(|d| d.contains("checksum"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
