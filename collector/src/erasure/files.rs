//! The erasure's files in the spool directory: the queue (`erasures-pending.json`),
//! the audit log (`erasures.jsonl`) and the rewrite of `dead-letter.jsonl`. Every
//! replacement is atomic: a temporary file, synced, renamed over the old one, the
//! directory synced.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use super::{ErasureError, Pending, Removed, Request};
use crate::deadletter;
use crate::spool::cursor::sync_dir;

/// Accepted erasures not yet finished, and the batch under way (hashes, never raw ids).
pub const PENDING_FILE: &str = "erasures-pending.json";
/// One JSON line per erased hash and erasure: hash, time, erasure id, rows removed per table.
pub const AUDIT_FILE: &str = "erasures.jsonl";

pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> ErasureError + '_ {
    move |source| ErasureError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(super) fn load_pending(dir: &Path) -> Result<Pending, ErasureError> {
    let path = dir.join(PENDING_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ErasureError::Io {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Pending::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

pub(super) fn save_pending(dir: &Path, pending: &Pending) -> Result<(), ErasureError> {
    let path = dir.join(PENDING_FILE);
    if pending.requests.is_empty() && pending.batch.is_none() {
        return match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir).map_err(io(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        };
    }
    let bytes = serde_json::to_vec(pending).map_err(|e| io(&path)(io::Error::other(e)))?;
    replace(dir, &path, |file| file.write_all(&bytes)).map_err(io(&path))
}

/// Writes `path` anew through a synced temporary file.
fn replace(
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let file = File::create(&temp)?;
    {
        let mut out = io::BufWriter::new(&file);
        write(&mut out)?;
        out.flush()?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    sync_dir(dir)
}

/// Appends one line per (erasure, hash) and syncs.
pub(super) fn append_audit(
    dir: &Path,
    time: &str,
    requests: &[Request],
    per_hash: &BTreeMap<String, Removed>,
) -> Result<(), ErasureError> {
    let path = dir.join(AUDIT_FILE);
    let mut text = String::new();
    for request in requests {
        for hash in &request.hashes {
            let line = serde_json::json!({
                "time": time,
                "erasure": request.id,
                "hash": hash,
                "requested_at": request.requested_at,
                "removed": per_hash.get(hash).cloned().unwrap_or_default(),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(io(&path))
}

/// Rewrites `dead-letter.jsonl` without the rows of `hashes` (the writer holds and
/// has closed the file); returns the rows removed per hash.
pub(super) fn rewrite_dead_letters(
    dir: &Path,
    hashes: &BTreeSet<String>,
) -> io::Result<BTreeMap<String, u64>> {
    let path = dir.join(deadletter::FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut kept = Vec::new();
    let mut removed: BTreeMap<String, u64> = BTreeMap::new();
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        let hash = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["row"]["user_hash"].as_str().map(str::to_owned));
        match hash {
            Some(hash) if hashes.contains(&hash) => *removed.entry(hash).or_default() += 1,
            // A line that does not parse is kept as it is: it names no user we know.
            _ => kept.push(line),
        }
    }
    if removed.is_empty() {
        return Ok(removed);
    }
    replace(dir, &path, |out| {
        for line in &kept {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_of_the_hashes_go_and_the_rest_stays() {
        let dir = crate::testing::temp_dir("erasure-dead-letters");
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let lines = [
            format!(r#"{{"token":"t","reason":"r","row":{{"user_hash":"{a}","app":"x"}}}}"#),
            format!(r#"{{"token":"t","reason":"r","row":{{"user_hash":"{b}","app":"x"}}}}"#),
            r#"{"token":"t","reason":"undecodable","row":null}"#.to_owned(),
            format!(r#"{{"token":"t","reason":"r","row":{{"user_hash":"{a}","app":"y"}}}}"#),
        ];
        std::fs::write(dir.join(deadletter::FILE), lines.join("\n") + "\n").expect("write");
        let removed = rewrite_dead_letters(&dir, &BTreeSet::from([a.clone()])).expect("rewrite");
        assert_eq!(removed, BTreeMap::from([(a.clone(), 2)]));
        let left = std::fs::read_to_string(dir.join(deadletter::FILE)).expect("read");
        assert!(!left.contains(&a), "{left}");
        assert_eq!(left, format!("{}\n{}\n", lines[1], lines[2]));
        assert!(!dir.join("dead-letter.jsonl.tmp").exists());
    }

    #[test]
    fn the_queue_survives_and_an_empty_one_leaves_no_file() {
        let dir = crate::testing::temp_dir("erasure-pending");
        let pending = Pending {
            requests: vec![Request {
                id: "1".into(),
                hashes: vec!["c".repeat(64)],
                requested_at: "now".into(),
            }],
            batch: None,
        };
        save_pending(&dir, &pending).expect("save");
        assert_eq!(load_pending(&dir).expect("load").requests.len(), 1);
        save_pending(&dir, &Pending::default()).expect("save");
        assert!(!dir.join(PENDING_FILE).exists());
        assert!(load_pending(&dir).expect("load").requests.is_empty());
    }
}
