//! The rows of one insert, handed to the sink in chunks of whole rows.
//!
//! A batch is up to `--batch-max-bytes` of RowBinary; held whole it was the largest
//! thing in the collector's memory (32 MiB, plus its Native copy). A batch straight
//! from the spool ([`Rows::Spooled`]) is read back frame by frame while it is being
//! sent, [`CHUNK_BYTES`] at a time, so an insert holds one chunk and its Native
//! block whatever the batch size. Reading again on a retry costs a page-cache read.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::spool::{Frame, segment};

/// RowBinary bytes read from the spool per chunk (a frame is never split, so a chunk
/// may be one frame larger).
pub const CHUNK_BYTES: usize = 4 << 20;

/// Whole RowBinary rows of [`crate::rowbinary::COLUMNS`], in order.
#[derive(Debug, Clone)]
pub enum Rows {
    /// Already in memory (a part of a bisected batch; tests).
    Memory(Bytes),
    /// Still in the spool: these frames of the segments in `dir`.
    Spooled {
        /// The spool directory.
        dir: PathBuf,
        /// The frames, in spool order.
        frames: Arc<[Frame]>,
    },
}

impl Rows {
    /// RowBinary bytes in all.
    pub fn byte_len(&self) -> usize {
        match self {
            Rows::Memory(bytes) => bytes.len(),
            Rows::Spooled { frames, .. } => frames.iter().map(|f| f.payload_len as usize).sum(),
        }
    }

    /// The rows in chunks, from the first.
    pub fn chunks(&self) -> Chunks {
        Chunks {
            rows: self.clone(),
            next: 0,
            reader: None,
        }
    }

    /// Every row in one buffer (for tests and small parts).
    pub async fn read_all(&self) -> io::Result<Bytes> {
        if let Rows::Memory(bytes) = self {
            return Ok(bytes.clone());
        }
        let mut all = Vec::with_capacity(self.byte_len());
        let mut chunks = self.chunks();
        while let Some(chunk) = chunks.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(all))
    }
}

/// The chunks of [`Rows`]; see [`Rows::chunks`].
#[derive(Debug)]
pub struct Chunks {
    rows: Rows,
    /// Index of the next frame (or 1 once the memory chunk was given).
    next: usize,
    /// `None` only while lent to a blocking read.
    reader: Option<segment::Reader>,
}

impl Chunks {
    /// The next chunk of whole rows; `None` after the last. A frame that cannot be
    /// read or fails its checksum is an error (the disk failed after recovery).
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        match &self.rows {
            Rows::Memory(bytes) => {
                let first = self.next == 0 && !bytes.is_empty();
                self.next = 1;
                first.then(|| Ok(bytes.clone()))
            }
            Rows::Spooled { dir, frames } => {
                if self.next >= frames.len() {
                    return None;
                }
                let mut reader = self
                    .reader
                    .take()
                    .unwrap_or_else(|| segment::Reader::new(dir));
                let frames = frames.clone();
                let from = self.next;
                let read = tokio::task::spawn_blocking(move || {
                    let mut chunk = Vec::with_capacity(CHUNK_BYTES);
                    let mut at = from;
                    while at < frames.len() && chunk.len() < CHUNK_BYTES {
                        match reader.payload(&frames[at]) {
                            Ok(payload) => chunk.extend_from_slice(&payload),
                            Err(e) => return (reader, at, Err(e)),
                        }
                        at += 1;
                    }
                    (reader, at, Ok(chunk))
                })
                .await;
                let (reader, at, chunk) = match read {
                    Ok(read) => read,
                    Err(e) => return Some(Err(io::Error::other(e))),
                };
                self.reader = Some(reader);
                self.next = at;
                Some(chunk.map(Bytes::from))
            }
        }
    }
}
