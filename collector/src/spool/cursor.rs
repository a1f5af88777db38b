//! The cursor: how far the spool has been stored in ClickHouse, and which batch is
//! being inserted right now.
//!
//! Kept in the file `cursor` of the spool directory, replaced atomically (write a
//! temporary file, sync it, rename it over the old one, sync the directory):
//!
//! ```text
//! committed SEGMENT OFFSET
//! inflight SEGMENT OFFSET      (only while an insert runs)
//! ```
//!
//! `inflight` is what makes replays exact. An insert's deduplication token names
//! the spool range it covers; after a crash the first batch must cover exactly the
//! same range again, or the token would differ and ClickHouse would store the rows a
//! second time. So the range's end is written here *before* the insert starts.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::segment::Position;

const FILE: &str = "cursor";
const TEMP: &str = "cursor.tmp";

/// What the cursor file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Everything before this position is in ClickHouse.
    pub committed: Position,
    /// The end of the range being inserted, if an insert was under way.
    pub inflight: Option<Position>,
}

/// Reads `dir/cursor`; `None` when there is none yet.
pub fn load(dir: &Path) -> io::Result<Option<Cursor>> {
    let text = match std::fs::read_to_string(dir.join(FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a spool cursor: {text:?}",
                dir.join(FILE).display()
            ),
        )
    })
}

fn parse(text: &str) -> Option<Cursor> {
    let mut committed = None;
    let mut inflight = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (key, segment, offset) = (words.next()?, words.next()?, words.next()?);
        let position = Position {
            segment: segment.parse().ok()?,
            offset: offset.parse().ok()?,
        };
        match key {
            "committed" => committed = Some(position),
            "inflight" => inflight = Some(position),
            _ => return None,
        }
    }
    Some(Cursor {
        committed: committed?,
        inflight,
    })
}

/// Replaces `dir/cursor` with `cursor`; syncs when `sync` (the fsync policy).
pub fn store(dir: &Path, cursor: &Cursor, sync: bool) -> io::Result<()> {
    let mut text = format!(
        "committed {} {}\n",
        cursor.committed.segment, cursor.committed.offset
    );
    if let Some(end) = cursor.inflight {
        text.push_str(&format!("inflight {} {}\n", end.segment, end.offset));
    }
    let temp: PathBuf = dir.join(TEMP);
    let mut file = File::create(&temp)?;
    file.write_all(text.as_bytes())?;
    if sync {
        file.sync_data()?;
    }
    drop(file);
    std::fs::rename(&temp, dir.join(FILE))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a directory's entries (created, renamed, deleted files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(format!("growth-cursor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(load(&dir).expect("load"), None);
        let cursor = Cursor {
            committed: Position {
                segment: 3,
                offset: 16,
            },
            inflight: Some(Position {
                segment: 4,
                offset: 900,
            }),
        };
        store(&dir, &cursor, true).expect("store");
        assert_eq!(load(&dir).expect("load"), Some(cursor));
        std::fs::write(dir.join(FILE), "committed x y\n").expect("write");
        assert!(load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
