//! The dead-letter file: rows ClickHouse refuses for good (a poison record, a type
//! or constraint error), kept with the reason instead of blocking every later batch.
//!
//! `dead-letter.jsonl` in the spool directory, one JSON object a line:
//! `{"time": "...", "token": "...", "reason": "...", "row": {...}}`. The row is the
//! stored form of the event (the user already hashed; `event_time` and
//! `received_at` in Unix milliseconds), so the file holds no raw user id either and
//! can be fixed up and re-sent by hand. Logs only ever name the app and event.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::Utc;
use growth_schema::tables::EventRow;

/// The file name inside the spool directory.
pub const FILE: &str = "dead-letter.jsonl";

/// Appends refused rows to the dead-letter file.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: Option<File>,
}

impl DeadLetters {
    /// Dead letters in `spool_dir`; the file is created on the first one.
    pub fn new(spool_dir: &Path) -> Self {
        Self {
            path: spool_dir.join(FILE),
            file: None,
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one refused row (or, when it could not be decoded, only the reason);
    /// [`DeadLetters::sync`] makes what was written durable.
    pub fn write(&mut self, token: &str, reason: &str, row: Option<&EventRow>) -> io::Result<()> {
        let line = serde_json::json!({
            "time": Utc::now().to_rfc3339(),
            "token": token,
            "reason": reason,
            "row": row,
        });
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        let mut text = line.to_string();
        text.push('\n');
        file.write_all(text.as_bytes())
    }

    /// Closes the file; the next [`DeadLetters::write`] opens it again by name (after
    /// an erasure replaced it).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Syncs the file (after a batch's dead letters are written).
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }
}
