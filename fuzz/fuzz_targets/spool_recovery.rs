//! Spool recovery (`spool::open`, `spool::segment`) from torn and corrupted segment
//! files. The input describes segments of frames written whole, then damage to each
//! file (a torn tail, bit flips, garbage or zeros after the end) and a cursor; the
//! spool is opened on them. Recovery must yield exactly the frames written whole
//! from the cursor up to the first damaged one in each segment — never a frame
//! that was not written whole, never one whose bytes changed, none lost before the
//! damage — each payload must read back as written, and opening again (after the
//! damaged tails were cut) must recover the same frames.
//!
//! Payloads come from a generator seeded by the input, not from input bytes: a
//! payload holding a well-formed frame would otherwise be a frame nobody wrote once
//! a flipped length bit pointed into it. Bit flips are at most 3 per file, which
//! CRC-32 always detects at these lengths (Hamming distance 4 up to ~11 KiB).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use growth_collector::spool::segment::{self, FRAME_HEADER_LEN, HEADER_LEN};
use growth_collector::spool::{self, Cursor, FsyncPolicy, Position, SpoolConfig, cursor};
use growth_collector::telemetry::Telemetry;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, PartialEq)]
struct Written {
    start: Position,
    rows: u32,
    digest: u128,
    payload: Vec<u8>,
}

impl Written {
    fn end(&self) -> u64 {
        self.start.offset + FRAME_HEADER_LEN + self.payload.len() as u64
    }
}

/// The spool directory of this process (fork mode runs several).
fn dir() -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_owned()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("growth-fuzz-spool-{}", std::process::id()))
}

fn open(dir: &Path) -> Vec<segment::Frame> {
    let config = SpoolConfig {
        dir: dir.to_owned(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
    };
    let (spool, tail, _thread) =
        spool::open(&config, Arc::new(Telemetry::new())).expect("the spool opens");
    spool.close();
    tail.recovered
}

fn run(u: &mut Unstructured<'_>, dir: &Path) -> Result<()> {
    let full = u.ratio(1, 8)?;
    let first: u64 = u.int_in_range(1..=3)?;
    let segments: u64 = u.int_in_range(1..=3)?;
    let mut expected = Vec::new();
    let mut all = Vec::new();
    let mut boundaries = vec![Position {
        segment: first,
        offset: HEADER_LEN,
    }];
    let mut files = Vec::new();
    for id in first..first + segments {
        let mut bytes = segment::header(id).to_vec();
        let mut frames = Vec::new();
        for _ in 0..u.int_in_range(0..=5)? {
            let rows = u.arbitrary()?;
            let digest = u.arbitrary()?;
            let len = u.int_in_range(0..=700)?;
            let payload = growth_fuzz::prng_bytes(u.arbitrary()?, len);
            let start = Position {
                segment: id,
                offset: bytes.len() as u64,
            };
            segment::encode_frame(rows, digest, &payload, &mut bytes);
            frames.push(Written {
                start,
                rows,
                digest,
                payload,
            });
            boundaries.push(Position {
                segment: id,
                offset: bytes.len() as u64,
            });
        }
        // Damage; what counts is which bytes are no longer as written (the same bit
        // flipped twice, or zeros over zeros, is no damage).
        let written = bytes.clone();
        match u.int_in_range(0..=4)? {
            0 => {}
            1 => {
                let at = u.int_in_range(0..=bytes.len())?;
                bytes.truncate(at);
            }
            2 => {
                for _ in 0..u.int_in_range(1..=3)? {
                    let at = u.choose_index(bytes.len())?;
                    bytes[at] ^= 1 << u.int_in_range(0..=7)?;
                }
            }
            3 => {
                let len = u.int_in_range(1..=100)?;
                bytes.extend(growth_fuzz::prng_bytes(u.arbitrary()?, len));
            }
            _ => {
                let at = u.int_in_range(HEADER_LEN as usize..=bytes.len())?;
                bytes.truncate(at);
                bytes.resize(at + u.int_in_range(1..=64)?, 0);
            }
        }
        if std::env::var_os("GROWTH_FUZZ_DEBUG").is_some() {
            eprintln!(
                "segment {id}: {} bytes, frames at {:?}",
                bytes.len(),
                frames.iter().map(|f| f.start.offset).collect::<Vec<_>>()
            );
        }
        files.push((id, bytes, written, frames));
    }
    let cursor = match u.int_in_range(0..=2)? {
        0 => None,
        _ => Some(*u.choose(&boundaries)?),
    };
    if std::env::var_os("GROWTH_FUZZ_DEBUG").is_some() {
        eprintln!("cursor {cursor:?}");
    }
    let from = cursor.unwrap_or(Position {
        segment: first,
        offset: HEADER_LEN,
    });

    for (id, bytes, written, frames) in files {
        std::fs::write(segment::path(dir, id), &bytes).expect("write a segment");
        all.extend(frames.iter().cloned());
        if id < from.segment {
            continue;
        }
        let from = if id == from.segment {
            from.offset
        } else {
            HEADER_LEN
        };
        let damaged = |start: u64, end: u64| {
            let (start, end) = (start as usize, end as usize);
            bytes.len() < end || bytes[start..end] != written[start..end]
        };
        if damaged(0, HEADER_LEN) {
            continue;
        }
        for frame in frames {
            if frame.start.offset < from {
                continue;
            }
            if damaged(frame.start.offset, frame.end()) {
                break;
            }
            expected.push(frame);
        }
    }
    if let Some(committed) = cursor {
        cursor::store(
            dir,
            &Cursor {
                committed,
                inflight: None,
            },
            false,
        )
        .expect("write the cursor");
    }

    // Every input: each segment scanned as recovery scans it (`segment::scan`).
    let mut scanned = Vec::new();
    for id in from.segment..first + segments {
        let start = if id == from.segment {
            from.offset
        } else {
            HEADER_LEN
        };
        scanned.extend(segment::scan(dir, id, start).expect("scan").frames);
    }
    check(dir, &scanned, &all, &expected);
    // One input in eight: the whole recovery, `spool::open` (it allocates the
    // digest window, ~10 MB, so it runs at a tenth of the scan's rate), twice.
    if full {
        let recovered = open(dir);
        check(dir, &recovered, &all, &expected);
        let again = open(dir);
        assert_eq!(again, recovered, "recovery is idempotent");
    }
    Ok(())
}

fn check(dir: &Path, recovered: &[segment::Frame], all: &[Written], expected: &[Written]) {
    let mut reader = segment::Reader::new(dir);
    let got: Vec<Written> = recovered
        .iter()
        .map(|f| Written {
            start: f.start,
            rows: f.rows,
            digest: f.digest,
            payload: reader.payload(f).expect("a recovered frame reads back"),
        })
        .collect();
    for frame in &got {
        assert!(
            all.contains(frame),
            "recovered a frame never written whole: {:?}",
            frame.start
        );
    }
    assert_eq!(
        got, expected,
        "recovered exactly the whole frames before the damage"
    );
}

fuzz_target!(
    init: growth_fuzz::write_seeds_if_asked(|| {
        (0u64..12).map(|i| growth_fuzz::prng_bytes(i, 64 + 40 * i as usize)).collect()
    }),
    |data: &[u8]| {
        let dir = dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the spool directory");
        let _ = run(&mut Unstructured::new(data), &dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
);
