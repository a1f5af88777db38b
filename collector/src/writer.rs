//! The writer: drains the spool into ClickHouse in few, large inserts.
//!
//! Frames arrive from the spool once they are durable (and, after a restart, from
//! the recovery scan). The writer gathers them into a batch and inserts it when it
//! holds `--batch-max-rows` rows or `--batch-max-bytes` bytes, or when its oldest
//! row has waited `--batch-max-delay` — never one insert per request: under load
//! that is about one insert a second, however many senders there are. A burst of at
//! least `--batch-quiet-rows` rows followed by `--batch-quiet` of silence goes in
//! at once instead of waiting out the delay (steady senders never fall silent that
//! long, so it changes nothing under load; it shortens the wait after a burst).
//!
//! One batch, start to end:
//! 1. its range `[start, end)` of the spool is written to the cursor as `inflight`;
//! 2. it is inserted with the token `SPOOL-ID:START-END` — a replay after a crash
//!    covers the same range (the cursor says so) and so carries the same token; its
//!    rows are read back from the segments a chunk at a time while they are sent
//!    ([`crate::rows`]), so a batch is never in memory whole;
//! 3. on success the cursor moves to `end` and segments before it are deleted.
//!
//! Failures: a transient one (ClickHouse away, slow, busy) is retried with
//! backoff for as long as it takes — the intake keeps spooling meanwhile, until
//! the spool is full. A permanent one (the rows are refused) bisects the batch,
//! each part with a token of its own (`…/FROM-TO` rows), down to the single rows
//! that fail; those go to the dead-letter file and the rest is stored.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clickhouse::{EventStore, SinkError, describe};
use crate::config::BatchConfig;
use crate::deadletter::DeadLetters;
use crate::rowbinary;
use crate::rows::Rows;
use crate::spool::{Cursor, Frame, FsyncPolicy, Position, SpoolTail, Spooled, cursor, segment};
use crate::telemetry::{ErrorClass, Telemetry};

/// Wait before the first retry of a transient failure; doubled up to the maximum.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Rows refused one by one, with nothing of the batch taken, after which the rest of
/// the batch is dead-lettered without trying each row.
const REFUSED_ALL_AFTER: u32 = 16;

/// Whether inserts succeed, for `/readyz`.
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// Since when inserts fail, and the last error; `None` after a success.
    failing: Mutex<Option<(std::time::Instant, String)>>,
}

impl WriterHealth {
    /// How long inserts have been failing, and why; `None` when the last one worked.
    pub fn failing_for(&self) -> Option<(Duration, String)> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing
            .as_ref()
            .map(|(since, error)| (since.elapsed(), error.clone()))
    }

    fn succeeded(&self) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn failed(&self, error: String) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let since = failing
            .as_ref()
            .map_or_else(std::time::Instant::now, |(since, _)| *since);
        *failing = Some((since, error));
    }
}

/// Controls the writer task from the outside (shutdown).
#[derive(Debug)]
pub struct WriterHandle {
    draining: watch::Sender<bool>,
    task: JoinHandle<()>,
    control: WriterControl,
}

/// Asks the writer to reach a point of the spool and hold there (erasure,
/// `crate::erasure`). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct WriterControl(mpsc::UnboundedSender<Barrier>);

struct Barrier {
    before: Position,
    reply: oneshot::Sender<WriterPause>,
}

/// The writer holds while this lives: it has stored every row spooled before the
/// barrier's position, moved its cursor there, deleted the segments before it and
/// closed the dead-letter file; it inserts nothing until this is dropped.
#[derive(Debug)]
pub struct WriterPause(#[allow(dead_code)] oneshot::Sender<()>);

impl WriterControl {
    /// Waits until every row spooled before `before` is in ClickHouse (or
    /// dead-lettered) and no spool segment before it is left, then holds the writer.
    /// `None` when the writer has stopped.
    pub async fn pause_after(&self, before: Position) -> Option<WriterPause> {
        let (reply, answer) = oneshot::channel();
        self.0.send(Barrier { before, reply }).ok()?;
        answer.await.ok()
    }
}

impl WriterHandle {
    /// A handle that can hold the writer at a point of the spool.
    pub fn control(&self) -> WriterControl {
        self.control.clone()
    }

    /// From now on, insert what is spooled without waiting for batches to fill.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Waits until the writer has stored everything spooled (it ends once the spool
    /// is closed and empty), or until `timeout`; then stops it, leaving what is left
    /// in the spool for the next start.
    pub async fn join(self, timeout: Duration) {
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writer task failed"),
            Err(_) => {
                task.abort();
                tracing::warn!(
                    ?timeout,
                    "shutdown timeout: rows not yet in ClickHouse stay in the spool for the next start"
                );
            }
        }
    }
}

/// Starts the writer task.
pub fn spawn<S: EventStore>(
    store: S,
    tail: SpoolTail,
    config: BatchConfig,
    telemetry: Arc<Telemetry>,
    health: Arc<WriterHealth>,
) -> WriterHandle {
    let (draining, draining_rx) = watch::channel(false);
    let (control, barriers) = mpsc::unbounded_channel();
    let mut writer = Writer {
        barriers,
        barrier: None,
        store,
        config,
        telemetry,
        health,
        queue: VecDeque::new(),
        queued_rows: 0,
        queued_bytes: 0,
        last_arrival: Instant::now(),
        replay_until: tail.cursor.inflight,
        committed: tail.cursor.committed,
        dead_letters: DeadLetters::new(&tail.dir),
        tail,
        draining: draining_rx,
        closed: false,
    };
    let recovered = std::mem::take(&mut writer.tail.recovered);
    writer.push(Spooled { frames: recovered });
    WriterHandle {
        draining,
        task: tokio::spawn(writer.run()),
        control: WriterControl(control),
    }
}

struct Writer<S> {
    /// Barriers asked for ([`WriterControl`]); one is served at a time.
    barriers: mpsc::UnboundedReceiver<Barrier>,
    barrier: Option<Barrier>,
    store: S,
    config: BatchConfig,
    telemetry: Arc<Telemetry>,
    health: Arc<WriterHealth>,
    tail: SpoolTail,
    /// Durable frames not yet in ClickHouse, with when they were spooled.
    queue: VecDeque<(Frame, Instant)>,
    queued_rows: usize,
    queued_bytes: usize,
    /// When the last frame arrived (for `--batch-quiet`).
    last_arrival: Instant,
    /// The first batch after a restart ends exactly here (the crashed insert's range).
    replay_until: Option<Position>,
    committed: Position,
    dead_letters: DeadLetters,
    draining: watch::Receiver<bool>,
    /// The spool is closed: nothing more will arrive.
    closed: bool,
}

/// A refused batch read back from the spool whole, to be split.
struct Batch {
    rows: u64,
    /// Every row, RowBinary, in spool order.
    data: Bytes,
}

impl<S: EventStore> Writer<S> {
    async fn run(mut self) {
        loop {
            self.take_spooled();
            self.publish_oldest();
            if self.barrier.is_none() {
                self.barrier = self.barriers.try_recv().ok();
            }
            if self.barrier_reached() {
                self.hold().await;
                continue;
            }
            if self.queue.is_empty() {
                if self.closed {
                    break;
                }
                tokio::select! {
                    next = self.tail.spooled.recv() => match next {
                        Some(spooled) => self.push(spooled),
                        None => self.closed = true,
                    },
                    Some(barrier) = self.barriers.recv(), if self.barrier.is_none() => {
                        self.barrier = Some(barrier);
                    }
                }
                continue;
            }
            if let Some(wait_until) = self.due() {
                tokio::select! {
                    next = self.tail.spooled.recv() => match next {
                        Some(spooled) => self.push(spooled),
                        None => self.closed = true,
                    },
                    () = tokio::time::sleep_until(wait_until) => {}
                    () = draining(&mut self.draining) => {}
                    Some(barrier) = self.barriers.recv(), if self.barrier.is_none() => {
                        self.barrier = Some(barrier);
                    }
                }
                continue;
            }
            let frames = self.take_batch();
            self.write(frames).await;
        }
        self.publish_oldest();
        tracing::debug!("writer stopped: the spool is closed and everything in it is stored");
    }

    /// Whether every frame before the pending barrier is stored.
    fn barrier_reached(&self) -> bool {
        let Some(barrier) = &self.barrier else {
            return false;
        };
        self.replay_until.is_none()
            && self
                .queue
                .front()
                .is_none_or(|(frame, _)| frame.start >= barrier.before)
    }

    /// Serves the pending barrier: cursor to its position, segments before it
    /// deleted, dead-letter file closed; then holds until the pause is dropped.
    async fn hold(&mut self) {
        let Some(barrier) = self.barrier.take() else {
            return;
        };
        if self.committed < barrier.before {
            // Nothing is left before it: the spool was rolled there.
            self.committed = barrier.before;
            self.save_cursor(None).await;
        }
        let keep_from = self
            .queue
            .front()
            .map_or(self.committed.segment, |(frame, _)| frame.start.segment);
        self.delete_segments_before(keep_from).await;
        self.dead_letters.close();
        let (resume, resumed) = oneshot::channel();
        if barrier.reply.send(WriterPause(resume)).is_ok() {
            // Err once the pause is dropped: that is the signal to go on.
            let _ = resumed.await;
        }
    }

    fn push(&mut self, spooled: Spooled) {
        // Stamped here, on the writer's clock (within microseconds of the fsync).
        let at = Instant::now();
        if !spooled.frames.is_empty() {
            self.last_arrival = at;
        }
        for frame in spooled.frames {
            self.queued_rows += frame.rows as usize;
            self.queued_bytes += frame.payload_len as usize;
            self.queue.push_back((frame, at));
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        let (frame, _) = self.queue.pop_front()?;
        self.queued_rows -= frame.rows as usize;
        self.queued_bytes -= frame.payload_len as usize;
        Some(frame)
    }

    fn take_spooled(&mut self) {
        while let Ok(spooled) = self.tail.spooled.try_recv() {
            self.push(spooled);
        }
    }

    /// `None` when a batch should be inserted now; else when to look again.
    fn due(&self) -> Option<Instant> {
        if self.replay_until.is_some()
            || self.closed
            || self.barrier.is_some()
            || *self.draining.borrow()
        {
            return None;
        }
        if self.queued_rows >= self.config.max_rows || self.queued_bytes >= self.config.max_bytes {
            return None;
        }
        let oldest = self.queue.front().map(|(_, at)| *at)?;
        let mut due = oldest + self.config.max_delay;
        // A burst that has ended goes in now rather than after the delay; under
        // steady load requests keep arriving and this never applies.
        let quiet_rows = self.config.quiet_rows;
        if quiet_rows > 0 && self.queued_rows >= quiet_rows {
            due = due.min(self.last_arrival + self.config.quiet);
        }
        (due > Instant::now()).then_some(due)
    }

    fn take_batch(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        if let Some(until) = self.replay_until.take() {
            while let Some((frame, _)) = self.queue.front() {
                if frame.start >= until {
                    break;
                }
                let frame = *frame;
                frames.extend(self.pop());
                debug_assert_eq!(frames.last(), Some(&frame));
            }
            if !frames.is_empty() {
                return frames;
            }
        }
        while let Some((frame, _)) = self.queue.front() {
            let (r, b) = (frame.rows as usize, frame.payload_len as usize);
            if !frames.is_empty()
                && (rows + r > self.config.max_rows || bytes + b > self.config.max_bytes)
            {
                break;
            }
            rows += r;
            bytes += b;
            frames.extend(self.pop());
        }
        frames
    }

    async fn write(&mut self, frames: Vec<Frame>) {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return;
        };
        let (start, end) = (first.start, last.end());
        self.save_cursor(Some(end)).await;
        let token = format!("{}:{}-{}", self.tail.id, start, end);
        let count: u64 = frames.iter().map(|f| u64::from(f.rows)).sum();
        let rows = Rows::Spooled {
            dir: self.tail.dir.clone(),
            frames: frames.into(),
        };
        if let Err(error) = self.insert(&token, &rows, count).await {
            // Refused for good: split it, in memory, around the rows ClickHouse refuses.
            match rows.read_all().await {
                Ok(data) => {
                    let batch = Batch { rows: count, data };
                    self.store_parts(&token, &batch, &error).await;
                }
                Err(e) => {
                    // Unreadable after a good scan: the disk failed under us. Nothing can
                    // be inserted from it; say so loudly and move on rather than stop.
                    tracing::error!(error = %e, %start, %end, "cannot read spooled rows back; skipping them");
                    self.telemetry.spool_unreadable();
                }
            }
        }
        // Dead letters are durable before the cursor moves past their batch.
        if let Err(e) = self.dead_letters.sync() {
            tracing::error!(error = %e, file = %self.dead_letters.path().display(), "cannot sync the dead-letter file");
        }
        self.commit(end).await;
    }

    /// Stores a batch ClickHouse refused whole, bisected around the rows it refuses.
    /// Returns once every row is stored or dead-lettered.
    async fn store_parts(&mut self, token: &str, batch: &Batch, error: &SinkError) {
        tracing::warn!(rows = batch.rows, error = %describe(error), "ClickHouse refused the batch; splitting it to find the rows it refuses");
        let rows = match rowbinary::split_rows(&batch.data) {
            Ok(rows) => rows,
            Err(e) => {
                self.dead_letter(
                    token,
                    &format!("{e}; {}", describe(error)),
                    None,
                    batch.rows,
                );
                return;
            }
        };
        // Depth-first over row ranges, left half first: the same batch always splits
        // the same way, so the tokens of its parts are the same on a replay.
        let mut ranges = vec![(0usize, rows.len())];
        let (mut stored_parts, mut refused_rows) = (0u32, 0u32);
        while let Some((from, to)) = ranges.pop() {
            let part = batch.data.slice(rows[from].start..rows[to - 1].end);
            let part_token = format!("{token}/{from}-{to}");
            if stored_parts == 0 && refused_rows >= REFUSED_ALL_AFTER {
                // Every row tried alone was refused and nothing was taken: the error
                // is about the table, not the rows (a schema change). One insert per
                // row would take hours; set the rest aside at once.
                self.dead_letter_rows(&part_token, &describe(error), &part, (to - from) as u64);
                continue;
            }
            let error = match self
                .insert(&part_token, &Rows::Memory(part.clone()), (to - from) as u64)
                .await
            {
                Ok(()) => {
                    stored_parts += 1;
                    continue;
                }
                Err(e) => e,
            };
            if to - from == 1 {
                refused_rows += 1;
                let row = rowbinary::decode_row(&part).ok();
                if let Some(row) = &row {
                    tracing::error!(app = %row.app, event = %row.event, reason = %describe(&error), "row refused by ClickHouse: dead-lettered");
                }
                self.dead_letter(&part_token, &describe(&error), row.as_ref(), 1);
            } else {
                let mid = from + (to - from) / 2;
                ranges.push((mid, to));
                ranges.push((from, mid));
            }
        }
    }

    /// Dead-letters every row of `part` with `reason`.
    fn dead_letter_rows(&mut self, token: &str, reason: &str, part: &[u8], count: u64) {
        match rowbinary::split_rows(part) {
            Ok(ranges) => {
                for range in ranges {
                    let row = rowbinary::decode_row(&part[range]).ok();
                    self.dead_letter(token, reason, row.as_ref(), 1);
                }
            }
            Err(e) => self.dead_letter(token, &format!("{e}; {reason}"), None, count),
        }
    }

    /// One insert, retried while the failure is transient. `Err` only for a
    /// permanent failure.
    async fn insert(&self, token: &str, rows: &Rows, count: u64) -> Result<(), SinkError> {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let started = Instant::now();
            let error = match self.store.insert(token, rows).await {
                Ok(()) => {
                    self.telemetry
                        .insert_done(count, rows.byte_len(), started.elapsed());
                    self.health.succeeded();
                    return Ok(());
                }
                Err(e) => e,
            };
            let class = error.class();
            self.telemetry.insert_error(class);
            if class == ErrorClass::Transient {
                self.health.failed(describe(&error));
            }
            if class == ErrorClass::Permanent {
                return Err(error);
            }
            tracing::warn!(rows = count, retry_in = ?delay, error = %describe(&error), "insert failed; retrying");
            tokio::time::sleep(delay).await;
            self.telemetry.insert_retried();
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    fn dead_letter(
        &mut self,
        token: &str,
        reason: &str,
        row: Option<&growth_schema::tables::EventRow>,
        rows: u64,
    ) {
        if let Err(e) = self.dead_letters.write(token, reason, row) {
            tracing::error!(error = %e, file = %self.dead_letters.path().display(), "cannot write the dead-letter file");
        }
        self.telemetry.dead_lettered(rows);
    }

    /// Moves the cursor past a stored batch and deletes the segments before it.
    async fn commit(&mut self, end: Position) {
        self.committed = end;
        self.save_cursor(None).await;
        let keep_from = self
            .queue
            .front()
            .map_or(end.segment, |(frame, _)| frame.start.segment);
        self.delete_segments_before(keep_from).await;
    }

    async fn save_cursor(&mut self, inflight: Option<Position>) {
        let dir = self.tail.dir.clone();
        let cursor = Cursor {
            committed: self.committed,
            inflight,
        };
        let sync = self.tail.fsync == FsyncPolicy::Always;
        let saved = tokio::task::spawn_blocking(move || cursor::store(&dir, &cursor, sync)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save the spool cursor"),
            Err(e) => tracing::error!(error = %e, "cannot save the spool cursor"),
        }
    }

    async fn delete_segments_before(&mut self, keep_from: u64) {
        let dir: PathBuf = self.tail.dir.clone();
        let deleted = tokio::task::spawn_blocking(move || {
            let mut freed = Vec::new();
            for id in segment::list(&dir).unwrap_or_default() {
                if id >= keep_from {
                    break;
                }
                let path = segment::path(&dir, id);
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                match std::fs::remove_file(&path) {
                    Ok(()) => freed.push(len),
                    Err(e) => tracing::warn!(error = %e, segment = %path.display(), "cannot delete a stored spool segment"),
                }
            }
            freed
        })
        .await
        .unwrap_or_default();
        for len in &deleted {
            self.tail.usage.released(*len);
        }
        if !deleted.is_empty() {
            self.telemetry
                .spool_segments_changed(-(deleted.len() as i64));
        }
    }

    fn publish_oldest(&self) {
        self.telemetry.spool_waiting(
            self.queued_rows as u64,
            self.queue.front().map(|(_, at)| at.into_std()),
        );
    }
}

/// Completes once draining has started; never if the handle is gone without it.
async fn draining(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
