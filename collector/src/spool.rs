//! The write-ahead spool: a request is acknowledged once its rows are here, on disk.
//!
//! ```text
//! Intake ──append──▶ [spool writer thread] ──frames──▶ writer (crate::writer) ──▶ ClickHouse
//!                     group commit: one write + one fsync       reads them back, inserts,
//!                     for every request that arrived meanwhile   moves the cursor, deletes segments
//! ```
//!
//! * **Group commit.** One OS thread owns the open segment. It takes the first
//!   waiting append and every other one already queued, writes them with one
//!   `write`, calls `fdatasync` once (`--spool-fsync always`, the default) and only
//!   then answers all of them. While it syncs, new requests queue up for the next
//!   group, so the cost of an fsync is shared by everyone who arrived meanwhile.
//! * **Segments** ([`segment`]) roll over at a size; frames carry a CRC-32. The
//!   [`cursor`] says what is already in ClickHouse; segments wholly before it are
//!   deleted.
//! * **Recovery** ([`open`]): the segments after the cursor are scanned; a torn or
//!   corrupt tail is cut (logged and counted) without losing the good frames before
//!   it, and the good frames are handed to the writer again — first of all the
//!   batch that was being inserted when the process died, with the same range, so
//!   its deduplication token matches.
//! * **A sender's retry is not a new request.** Each frame carries the digest of its
//!   request's rows (receive time left out). An append whose digest was spooled in the
//!   last [`RECENT_WINDOW`] is acknowledged without being written again: a sender whose
//!   answer was lost (the collector killed between fsync and answer) resends the same
//!   request, and it is stored once. The digests of the frames found at start-up seed
//!   the window, so this holds across a restart too.
//! * **Bounded.** Appends that would take the spool past `--spool-max-bytes` are
//!   refused at once ([`SpoolError::Full`]), which the receivers turn into
//!   RESOURCE_EXHAUSTED / 429 with a retry delay.
//!
//! Why not a crate: the WAL and disk-queue crates looked at either fsync each
//! append on its own (no group commit), block the async runtime, or own the read
//! side in a way that cannot re-read an exact range after a crash (needed for
//! deduplication tokens). This one is small: a directory of append-only files.

pub mod cursor;
pub mod segment;

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

pub use cursor::Cursor;
pub use segment::{Frame, Position};

use crate::rowbinary::EncodedRows;
use crate::telemetry::{SpoolSize, Telemetry};

/// Largest group written with one write + fsync; more waits for the next group.
const GROUP_MAX_BYTES: usize = 16 << 20;
/// How long a request's digest is remembered to recognise a sender's retry of it.
pub const RECENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Most digests remembered (16 bytes each, about 8 MB with the set's overhead).
const RECENT_MAX: usize = 200_000;
const ID_FILE: &str = "spool-id";

/// When the spool syncs to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// fdatasync before acknowledging (group commit): survives power loss.
    Always,
    /// Acknowledge once written to the OS: survives a crash of the collector, not
    /// of the machine. Faster on slow disks.
    Never,
}

/// Where and how big the spool is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool directory (created if missing).
    pub dir: PathBuf,
    /// Appends that would take the spool past this many bytes are refused.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// When to fsync.
    pub fsync: FsyncPolicy,
}

/// Why the spool could not take or give back records.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Taking the rows would exceed `--spool-max-bytes`.
    #[error("the spool is full ({used} of {max} bytes used); retry later")]
    Full {
        /// Bytes on disk and reserved.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// The spool writer has stopped (shutting down) or failed.
    #[error("the spool is closed")]
    Closed,
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl SpoolError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
        move |source| SpoolError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Frames made durable together, handed to the writer.
#[derive(Debug)]
pub struct Spooled {
    /// The frames, in order.
    pub frames: Vec<Frame>,
}

/// What the spool thread is asked to do.
enum Command {
    Append(Append),
    /// Write what is queued, then start a new segment and answer with its start:
    /// every append acknowledged before lies before it (erasure, [`Spool::roll`]).
    Roll(oneshot::Sender<Result<Position, SpoolError>>),
    /// Write what is queued, then stop: later appends are refused.
    Close,
}

struct Append {
    rows: u32,
    digest: u128,
    payload: Vec<u8>,
    ack: oneshot::Sender<Result<Appended, SpoolError>>,
}

/// What [`Spool::append`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written and synced.
    Written,
    /// The same request was spooled a moment ago (a sender's retry): not written again.
    Duplicate,
}

/// Byte counts both sides of the spool change.
#[derive(Debug, Default)]
pub struct SpoolUsage {
    /// Bytes in segment files.
    disk: AtomicU64,
    /// Bytes accepted and not yet written.
    reserved: AtomicU64,
}

impl SpoolSize for SpoolUsage {
    fn used(&self) -> u64 {
        self.disk.load(Ordering::Relaxed) + self.reserved.load(Ordering::Relaxed)
    }
}

impl SpoolUsage {
    /// A segment of `bytes` was deleted.
    pub fn released(&self, bytes: u64) {
        let _ = self
            .disk
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(bytes))
            });
    }
}

/// The intake's end of the spool. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Spool {
    tx: mpsc::UnboundedSender<Command>,
    usage: Arc<SpoolUsage>,
    max_bytes: u64,
}

impl Spool {
    /// Appends one request's rows and waits until they are durable.
    pub async fn append(&self, rows: u32, encoded: EncodedRows) -> Result<Appended, SpoolError> {
        let EncodedRows {
            bytes: payload,
            digest,
        } = encoded;
        let bytes = segment::FRAME_HEADER_LEN + payload.len() as u64;
        let used = self.usage.reserved.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let used = used + self.usage.disk.load(Ordering::Relaxed);
        if used > self.max_bytes {
            self.usage.reserved.fetch_sub(bytes, Ordering::Relaxed);
            return Err(SpoolError::Full {
                used: used - bytes,
                max: self.max_bytes,
            });
        }
        let (ack, answer) = oneshot::channel();
        if self
            .tx
            .send(Command::Append(Append {
                rows,
                digest,
                payload,
                ack,
            }))
            .is_err()
        {
            self.usage.reserved.fetch_sub(bytes, Ordering::Relaxed);
            return Err(SpoolError::Closed);
        }
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Writes and syncs what is queued, then stops taking appends (graceful shutdown:
    /// connections that linger past it get [`SpoolError::Closed`]).
    pub fn close(&self) {
        let _ = self.tx.send(Command::Close);
    }

    /// Writes what is queued, closes the open segment and starts a new one. Returns
    /// where the new one starts: every append acknowledged before this call lies
    /// before that position, nothing acknowledged after it does.
    pub async fn roll(&self) -> Result<Position, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Roll(reply))
            .map_err(|_| SpoolError::Closed)?;
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Whether the spool holds more than `bytes`.
    pub fn above(&self, bytes: u64) -> bool {
        self.usage.used() > bytes
    }
}

/// What the writer (spool → ClickHouse) needs: the recovered backlog, the stream of
/// newly spooled frames, and the files.
#[derive(Debug)]
pub struct SpoolTail {
    /// The spool directory.
    pub dir: PathBuf,
    /// Random id of this spool directory, part of every deduplication token.
    pub id: String,
    /// The cursor as found at start-up.
    pub cursor: Cursor,
    /// Frames found at start-up after the cursor, in order.
    pub recovered: Vec<Frame>,
    /// Frames spooled since.
    pub spooled: mpsc::UnboundedReceiver<Spooled>,
    /// Shared byte counts.
    pub usage: Arc<SpoolUsage>,
    /// Whether to sync the cursor and directory.
    pub fsync: FsyncPolicy,
}

/// The spool writer thread; ends once every [`Spool`] handle is dropped.
#[derive(Debug)]
pub struct SpoolThread(std::thread::JoinHandle<()>);

impl SpoolThread {
    /// Waits for the thread to write and sync what it was given, then end.
    pub async fn join(self) {
        let joined = tokio::task::spawn_blocking(move || self.0.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the spool writer thread panicked");
        }
    }
}

/// Opens (or creates) the spool: recovers what is there, starts the writer thread.
pub fn open(
    config: &SpoolConfig,
    telemetry: Arc<Telemetry>,
) -> Result<(Spool, SpoolTail, SpoolThread), SpoolError> {
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(SpoolError::io(dir))?;
    let id = spool_id(dir)?;
    let existing = segment::list(dir).map_err(SpoolError::io(dir))?;
    let cursor = cursor::load(dir)
        .map_err(SpoolError::io(dir))?
        .unwrap_or_else(|| Cursor {
            committed: Position {
                segment: existing.first().copied().unwrap_or(1),
                offset: segment::HEADER_LEN,
            },
            inflight: None,
        });

    let usage = Arc::new(SpoolUsage::default());
    let mut recovered = Vec::new();
    let mut live_segments = 0u64;
    for &seg in &existing {
        let path = segment::path(dir, seg);
        if seg < cursor.committed.segment {
            std::fs::remove_file(&path).map_err(SpoolError::io(&path))?;
            continue;
        }
        let from = if seg == cursor.committed.segment {
            cursor.committed.offset
        } else {
            0
        };
        let scan = segment::scan(dir, seg, from).map_err(SpoolError::io(&path))?;
        if let Some(damage) = &scan.damage {
            let cut = scan.file_len.saturating_sub(scan.end);
            tracing::warn!(segment = %path.display(), %damage, bytes_cut = cut, frames_kept = scan.frames.len(), "spool segment damaged: cutting its tail");
            telemetry.spool_tail_cut(cut);
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(SpoolError::io(&path))?;
            file.set_len(scan.end.max(segment::HEADER_LEN))
                .and_then(|()| file.sync_all())
                .map_err(SpoolError::io(&path))?;
        }
        usage.disk.fetch_add(scan.end, Ordering::Relaxed);
        live_segments += 1;
        recovered.extend(scan.frames);
    }
    let rows: u64 = recovered.iter().map(|f| u64::from(f.rows)).sum();
    if !recovered.is_empty() {
        tracing::info!(
            frames = recovered.len(),
            rows,
            "spool holds rows not yet confirmed by ClickHouse: replaying them"
        );
    }
    telemetry.spool_recovered(rows, live_segments, usage.disk.load(Ordering::Relaxed));

    // New records always go to a fresh segment: an old one may end in a cut tail.
    let next = existing
        .last()
        .map_or(1, |last| last + 1)
        .max(cursor.committed.segment);
    let active = Active::create(dir, next, config.fsync)?;
    usage.disk.fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
    telemetry.spool_segments_changed(1);

    let mut recent = RecentDigests::default();
    for frame in &recovered {
        recent.remember(frame.digest);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (spooled_tx, spooled) = mpsc::unbounded_channel();
    let writer = GroupWriter {
        recent,
        dir: dir.clone(),
        active,
        segment_bytes: config.segment_bytes,
        fsync: config.fsync,
        usage: usage.clone(),
        telemetry,
        spooled: spooled_tx,
        buffer: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("growth-spool-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(SpoolError::io(dir))?;
    Ok((
        Spool {
            tx,
            usage: usage.clone(),
            max_bytes: config.max_bytes,
        },
        SpoolTail {
            dir: dir.clone(),
            id,
            cursor,
            recovered,
            spooled,
            usage,
            fsync: config.fsync,
        },
        SpoolThread(thread),
    ))
}

/// The spool directory's random id, created on first use.
fn spool_id(dir: &Path) -> Result<String, SpoolError> {
    let path = dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io(&path)(e)),
    }
    use std::hash::{BuildHasher as _, Hasher as _};
    // RandomState is seeded from the OS's randomness: two spools never share an id,
    // so a wiped and re-created spool never repeats an old deduplication token.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let id = format!("{:016x}", hasher.finish());
    std::fs::write(&path, format!("{id}\n")).map_err(SpoolError::io(&path))?;
    Ok(id)
}

struct Active {
    id: u64,
    file: File,
    len: u64,
}

impl Active {
    fn create(dir: &Path, id: u64, fsync: FsyncPolicy) -> Result<Self, SpoolError> {
        let path = segment::path(dir, id);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(SpoolError::io(&path))?;
        file.write_all(&segment::header(id))
            .map_err(SpoolError::io(&path))?;
        if fsync == FsyncPolicy::Always {
            file.sync_data()
                .and_then(|()| cursor::sync_dir(dir))
                .map_err(SpoolError::io(&path))?;
        }
        Ok(Self {
            id,
            file,
            len: segment::HEADER_LEN,
        })
    }
}

/// Digests of recently spooled requests, oldest first: a ring of `RECENT_MAX`
/// slots, allocated and written once when the spool opens. Grown on demand, as a
/// `VecDeque` did before, it added ~12 MB to the collector's RSS over the first
/// ten minutes at full load (until the window was full), which read as a leak
/// in the soak; now the memory is there from the start and stays flat.
struct RecentDigests {
    set: hashbrown::HashSet<u128>,
    /// The digests in `set`, oldest at `head`, as many as `set` holds.
    ring: Vec<(u128, std::time::Instant)>,
    head: usize,
}

impl Default for RecentDigests {
    fn default() -> Self {
        Self {
            set: hashbrown::HashSet::with_capacity(RECENT_MAX),
            ring: vec![(0, std::time::Instant::now()); RECENT_MAX],
            head: 0,
        }
    }
}

impl RecentDigests {
    fn contains(&self, digest: u128) -> bool {
        self.set.contains(&digest)
    }

    fn remember(&mut self, digest: u128) {
        if self.set.contains(&digest) {
            return;
        }
        let now = std::time::Instant::now();
        while !self.set.is_empty() {
            let (old, at) = self.ring[self.head];
            if self.len() < RECENT_MAX && now.duration_since(at) < RECENT_WINDOW {
                break;
            }
            self.set.remove(&old);
            self.head = (self.head + 1) % RECENT_MAX;
        }
        let slot = (self.head + self.len()) % RECENT_MAX;
        self.ring[slot] = (digest, now);
        self.set.insert(digest);
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

struct GroupWriter {
    recent: RecentDigests,
    dir: PathBuf,
    active: Active,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    usage: Arc<SpoolUsage>,
    telemetry: Arc<Telemetry>,
    spooled: mpsc::UnboundedSender<Spooled>,
    buffer: Vec<u8>,
}

impl GroupWriter {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut closing = false;
        let mut roll: Option<oneshot::Sender<Result<Position, SpoolError>>> = None;
        while !closing {
            if let Some(reply) = roll.take() {
                let rolled = self.roll().map(|()| Position {
                    segment: self.active.id,
                    offset: segment::HEADER_LEN,
                });
                let _ = reply.send(rolled);
            }
            let first = match rx.blocking_recv() {
                Some(Command::Append(append)) => append,
                Some(Command::Roll(reply)) => {
                    roll = Some(reply);
                    continue;
                }
                Some(Command::Close) | None => break,
            };
            let mut bytes = first.payload.len();
            let mut group = vec![first];
            while bytes < GROUP_MAX_BYTES {
                match rx.try_recv() {
                    Ok(Command::Append(next)) => {
                        bytes += next.payload.len();
                        group.push(next);
                    }
                    Ok(Command::Close) => {
                        closing = true;
                        break;
                    }
                    Ok(Command::Roll(reply)) => {
                        // After this group is written and answered.
                        roll = Some(reply);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let reserved: u64 = group
                .iter()
                .map(|a| segment::FRAME_HEADER_LEN + a.payload.len() as u64)
                .sum();
            // A retry of a request already spooled (before, or earlier in this group)
            // is answered like the first, without writing it again.
            let mut in_group = hashbrown::HashSet::new();
            let duplicate: Vec<bool> = group
                .iter()
                .map(|a| self.recent.contains(a.digest) || !in_group.insert(a.digest))
                .collect();
            let to_write: Vec<&Append> = group
                .iter()
                .zip(&duplicate)
                .filter(|(_, dup)| !**dup)
                .map(|(a, _)| a)
                .collect();
            let result = self.write_group(&to_write);
            self.usage.reserved.fetch_sub(reserved, Ordering::Relaxed);
            match result {
                Ok(frames) => {
                    for frame in &frames {
                        self.recent.remember(frame.digest);
                    }
                    self.telemetry.spooled(
                        frames.len() as u64,
                        frames.iter().map(|f| u64::from(f.rows)).sum(),
                        (group.len() - frames.len()) as u64,
                    );
                    // The writer is gone only when shutting down; the frames stay on disk.
                    if !frames.is_empty() {
                        let _ = self.spooled.send(Spooled { frames });
                    }
                    for (append, dup) in group.into_iter().zip(duplicate) {
                        let appended = if dup {
                            Appended::Duplicate
                        } else {
                            Appended::Written
                        };
                        let _ = append.ack.send(Ok(appended));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, requests = group.len(), "spool write failed; senders are told to retry");
                    for append in group {
                        let _ = append.ack.send(Err(SpoolError::Io {
                            path: self.dir.clone(),
                            source: io::Error::other(e.to_string()),
                        }));
                    }
                }
            }
        }
        // Dropping the receiver refuses every later append (SpoolError::Closed).
        drop(rx);
        if let Err(e) = self.active.file.sync_all() {
            tracing::error!(error = %e, "final spool sync failed");
        }
    }

    /// Writes and syncs a group; on failure, cuts what it wrote so no half-group stays.
    fn write_group(&mut self, group: &[&Append]) -> Result<Vec<Frame>, SpoolError> {
        let mut frames = Vec::with_capacity(group.len());
        self.buffer.clear();
        let mut touched = vec![(self.active.id, self.active.len)];
        let result = (|| {
            for append in group {
                let frame_len = segment::FRAME_HEADER_LEN + append.payload.len() as u64;
                let pending = self.buffer.len() as u64;
                if self.active.len + pending + frame_len > self.segment_bytes
                    && self.active.len + pending > segment::HEADER_LEN
                {
                    self.flush()?;
                    self.roll()?;
                    touched.push((self.active.id, self.active.len));
                }
                frames.push(Frame {
                    start: Position {
                        segment: self.active.id,
                        offset: self.active.len + self.buffer.len() as u64,
                    },
                    payload_len: append.payload.len() as u32,
                    rows: append.rows,
                    digest: append.digest,
                });
                segment::encode_frame(
                    append.rows,
                    append.digest,
                    &append.payload,
                    &mut self.buffer,
                );
            }
            self.flush()
        })();
        if result.is_err() {
            for (id, len) in touched {
                let path = segment::path(&self.dir, id);
                if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                    let _ = file.set_len(len);
                }
                if id == self.active.id {
                    self.active.len = len;
                }
            }
            self.buffer.clear();
        }
        result.map(|()| frames)
    }

    fn flush(&mut self) -> Result<(), SpoolError> {
        let path = segment::path(&self.dir, self.active.id);
        self.active
            .file
            .write_all(&self.buffer)
            .map_err(SpoolError::io(&path))?;
        if self.fsync == FsyncPolicy::Always {
            self.active
                .file
                .sync_data()
                .map_err(SpoolError::io(&path))?;
        }
        let written = self.buffer.len() as u64;
        self.active.len += written;
        self.usage.disk.fetch_add(written, Ordering::Relaxed);
        self.buffer.clear();
        Ok(())
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        self.active = Active::create(&self.dir, self.active.id + 1, self.fsync)?;
        self.usage
            .disk
            .fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
        self.telemetry.spool_segments_changed(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_digests_forget_the_oldest_beyond_the_bound() {
        let mut recent = RecentDigests::default();
        for digest in 0..RECENT_MAX as u128 + 10 {
            recent.remember(digest);
        }
        assert_eq!(recent.len(), RECENT_MAX);
        assert_eq!(recent.set.len(), RECENT_MAX);
        assert!(!recent.contains(9), "the ten oldest are forgotten");
        assert!(recent.contains(10));
        assert!(recent.contains(RECENT_MAX as u128 + 9));
        // A digest seen again is not stored twice.
        recent.remember(RECENT_MAX as u128 + 9);
        assert_eq!(recent.set.len(), RECENT_MAX);
        assert!(recent.contains(10));
    }
}
