//! Right to erasure: a person's rows removed from ClickHouse, the spool and the
//! dead-letter file, with an audit line per erased hash.
//!
//! ```text
//! POST /admin/erasures ─▶ queue (erasures-pending.json) ─▶ worker: one batch for all pending
//!   1. spool rolled to a new segment at E; writer stores everything before E, moves its
//!      cursor to E, deletes the older segments, holds (the intake keeps acknowledging)
//!   2. rows per table counted; the batch's events per (app, event, ¼-hour) saved
//!   3. event_counts: those counts subtracted (token erasure-BATCH, exactly once)
//!   4. one ALTER TABLE … DELETE per table of growth_schema::tables::USER_TABLES
//!   5. dead-letter.jsonl rewritten without the hashes' rows; the writer resumes
//!   6. mutations waited for; event_counts' touched months merged (OPTIMIZE FINAL)
//!   7. audit lines (erasures.jsonl), requests done
//! ```
//!
//! **Ordering.** Steps 2–4 run while the writer holds, so `events` does not change
//! between counting a person's events and creating the mutations: the counts
//! subtracted are exactly the events deleted. They are saved in the pending file
//! before they are subtracted, and the insert carries a deduplication token derived
//! from the batch id: a batch resumed after a crash subtracts the saved counts again,
//! which ClickHouse drops (deduplication window of `event_counts`, migration 0005), and
//! never recounts after the delete. A mutation applies to the parts that exist when it
//! is created; the writer resumes only after every mutation is created, so rows stored
//! later are untouched.
//!
//! **What counts as the person's data.** Everything acknowledged before the
//! erasure's batch started (the spool roll) is removed. Rows of the same user that
//! arrive after it are new data and are kept: erase again to remove them.

pub mod api;
pub mod cli;
mod files;
mod store;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::spool::Spool;
use crate::writer::WriterControl;

pub use files::{AUDIT_FILE, PENDING_FILE};
pub use store::DEAD_LETTER_TABLE;

/// Finished erasures whose status is kept for `GET /admin/erasures/ID`.
const FINISHED_KEPT: usize = 10_000;
/// Wait before a failed batch is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Rows removed per table (and `dead-letter`).
pub type Removed = BTreeMap<String, u64>;

/// One accepted erasure request: hashes only, never a raw id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Its id, answered to the caller.
    pub id: String,
    /// The hashes (64 lowercase hex), sorted, distinct.
    pub hashes: Vec<String>,
    /// When it was accepted (RFC 3339).
    pub requested_at: String,
}

/// The requests of one run of the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// Its id: the deduplication token of its `event_counts` correction derives from it.
    pub id: String,
    /// The requests it serves.
    pub requests: Vec<String>,
    /// Every hash of those requests, sorted, distinct.
    pub hashes: Vec<String>,
    /// Events to subtract from `event_counts`, counted before the delete (saved
    /// before they are subtracted, so a resumed batch never counts again).
    pub counts: Option<Vec<store::CountRow>>,
}

/// What is waiting or under way, saved in the spool directory across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Accepted, not yet finished.
    pub requests: Vec<Request>,
    /// The batch under way, if any.
    pub batch: Option<Batch>,
}

/// Where an erasure is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for the worker.
    Queued,
    /// In a batch under way.
    Running,
    /// Every row removed.
    Done,
}

/// What `POST` and `GET /admin/erasures/ID` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The erasure id.
    pub id: String,
    /// Where it is.
    pub state: State,
    /// Distinct hashes asked for.
    pub hashes: usize,
    /// When it was accepted.
    pub requested_at: String,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Rows removed per table, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
    /// Why the last attempt failed (it is retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Why the erasure queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// A file in the spool directory.
    #[error("erasure {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin token file.
    #[error("admin token file {path}: {message}")]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

struct Inner {
    dir: PathBuf,
    state: Mutex<Queue>,
    wake: Notify,
}

struct Queue {
    pending: Pending,
    statuses: BTreeMap<String, Status>,
    finished: VecDeque<String>,
}

/// The erasure queue. Cloning is cheap.
#[derive(Clone)]
pub struct Erasures(Arc<Inner>);

impl std::fmt::Debug for Erasures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Erasures")
            .field("dir", &self.0.dir)
            .finish_non_exhaustive()
    }
}

impl Erasures {
    /// The queue of the spool directory `dir`, with what a previous run left pending.
    pub fn open(dir: &Path) -> Result<Self, ErasureError> {
        std::fs::create_dir_all(dir).map_err(files::io(dir))?;
        let pending = files::load_pending(dir)?;
        let mut statuses = BTreeMap::new();
        for request in &pending.requests {
            statuses.insert(request.id.clone(), queued(request));
        }
        if !pending.requests.is_empty() {
            tracing::info!(
                erasures = pending.requests.len(),
                "erasures left pending by the last run: resuming them"
            );
        }
        Ok(Self(Arc::new(Inner {
            dir: dir.to_owned(),
            state: Mutex::new(Queue {
                pending,
                statuses,
                finished: VecDeque::new(),
            }),
            wake: Notify::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the erasure of `hashes` (already validated) and saves the queue.
    pub fn submit(&self, hashes: BTreeSet<String>) -> Result<Status, ErasureError> {
        let request = Request {
            id: new_id(),
            hashes: hashes.into_iter().collect(),
            requested_at: Utc::now().to_rfc3339(),
        };
        let status = queued(&request);
        {
            let mut queue = self.lock();
            queue.pending.requests.push(request);
            if let Err(e) = files::save_pending(&self.0.dir, &queue.pending) {
                queue.pending.requests.pop();
                return Err(e);
            }
            queue.statuses.insert(status.id.clone(), status.clone());
        }
        tracing::info!(erasure = %status.id, hashes = status.hashes, "erasure queued");
        self.0.wake.notify_one();
        Ok(status)
    }

    /// The status of erasure `id`, if known.
    pub fn status(&self, id: &str) -> Option<Status> {
        self.lock().statuses.get(id).cloned()
    }

    /// The batch to run next: the one under way, else every pending request.
    fn next_batch(&self) -> Result<Option<Batch>, ErasureError> {
        let mut queue = self.lock();
        if let Some(batch) = &queue.pending.batch {
            return Ok(Some(batch.clone()));
        }
        if queue.pending.requests.is_empty() {
            return Ok(None);
        }
        let hashes: BTreeSet<String> = queue
            .pending
            .requests
            .iter()
            .flat_map(|r| r.hashes.iter().cloned())
            .collect();
        let batch = Batch {
            id: new_id(),
            requests: queue
                .pending
                .requests
                .iter()
                .map(|r| r.id.clone())
                .collect(),
            hashes: hashes.into_iter().collect(),
            counts: None,
        };
        queue.pending.batch = Some(batch.clone());
        files::save_pending(&self.0.dir, &queue.pending)?;
        for id in &batch.requests {
            if let Some(status) = queue.statuses.get_mut(id) {
                status.state = State::Running;
            }
        }
        Ok(Some(batch))
    }

    /// Saves the batch's counts before they are subtracted.
    fn save_counts(&self, counts: &[store::CountRow]) -> Result<(), ErasureError> {
        let mut queue = self.lock();
        if let Some(batch) = &mut queue.pending.batch {
            batch.counts = Some(counts.to_vec());
        }
        files::save_pending(&self.0.dir, &queue.pending)
    }

    fn failed(&self, batch: &Batch, error: &str) {
        let mut queue = self.lock();
        for id in &batch.requests {
            if let Some(status) = queue.statuses.get_mut(id) {
                status.last_error = Some(error.to_owned());
            }
        }
    }

    /// Marks the batch's requests done, writes nothing more for it on restart.
    fn finished(
        &self,
        batch: &Batch,
        per_hash: &BTreeMap<String, Removed>,
    ) -> Result<(), ErasureError> {
        let now = Utc::now().to_rfc3339();
        let mut queue = self.lock();
        let requests: Vec<Request> = queue
            .pending
            .requests
            .iter()
            .filter(|r| batch.requests.contains(&r.id))
            .cloned()
            .collect();
        files::append_audit(&self.0.dir, &now, &requests, per_hash)?;
        queue
            .pending
            .requests
            .retain(|r| !batch.requests.contains(&r.id));
        queue.pending.batch = None;
        files::save_pending(&self.0.dir, &queue.pending)?;
        for request in &requests {
            let mut removed = Removed::new();
            for hash in &request.hashes {
                for (table, rows) in per_hash.get(hash).into_iter().flatten() {
                    *removed.entry(table.clone()).or_default() += rows;
                }
            }
            if let Some(status) = queue.statuses.get_mut(&request.id) {
                status.state = State::Done;
                status.completed_at = Some(now.clone());
                status.removed = Some(removed);
                status.last_error = None;
            }
            queue.finished.push_back(request.id.clone());
        }
        while queue.finished.len() > FINISHED_KEPT {
            if let Some(old) = queue.finished.pop_front() {
                queue.statuses.remove(&old);
            }
        }
        Ok(())
    }
}

fn queued(request: &Request) -> Status {
    Status {
        id: request.id.clone(),
        state: State::Queued,
        hashes: request.hashes.len(),
        requested_at: request.requested_at.clone(),
        completed_at: None,
        removed: None,
        last_error: None,
    }
}

/// A fresh id: the time in milliseconds and 32 random bits, in hex.
fn new_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = Utc::now();
    hasher.write_i64(now.timestamp_nanos_opt().unwrap_or_default());
    format!(
        "{:011x}-{:08x}",
        now.timestamp_millis(),
        hasher.finish() as u32
    )
}

/// What the worker needs from the rest of the collector.
pub struct Worker {
    /// The queue.
    pub erasures: Erasures,
    /// To roll the spool at the start of a batch.
    pub spool: Spool,
    /// To have the writer store what came before and hold.
    pub writer: WriterControl,
    /// The growth database.
    pub client: clickhouse::Client,
    /// The spool directory (dead-letter file).
    pub spool_dir: PathBuf,
}

impl Worker {
    /// Runs batches until `stop` turns true.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = match self.erasures.next_batch() {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot save the erasure queue");
                    None
                }
            };
            let Some(batch) = batch else {
                tokio::select! {
                    () = self.erasures.0.wake.notified() => {}
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
                continue;
            };
            let started = std::time::Instant::now();
            tracing::info!(batch = %batch.id, erasures = batch.requests.len(), hashes = batch.hashes.len(), "erasure batch started");
            let outcome = tokio::select! {
                outcome = self.run_batch(&batch) => outcome,
                _ = stop.changed() => return,
            };
            match outcome.and_then(|per_hash| {
                self.erasures
                    .finished(&batch, &per_hash)
                    .map_err(|e| e.to_string())
                    .map(|()| per_hash)
            }) {
                Ok(per_hash) => {
                    for (hash, removed) in &per_hash {
                        tracing::info!(batch = %batch.id, %hash, removed = ?removed, "user erased");
                    }
                    tracing::info!(batch = %batch.id, erasures = batch.requests.len(), hashes = batch.hashes.len(), seconds = started.elapsed().as_secs_f64(), "erasure batch done");
                }
                Err(e) => {
                    tracing::error!(batch = %batch.id, error = %e, "erasure batch failed; retrying");
                    self.erasures.failed(&batch, &e);
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_DELAY) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    async fn run_batch(&self, batch: &Batch) -> Result<BTreeMap<String, Removed>, String> {
        let store = store::Store::new(self.client.clone());
        let before = self.spool.roll().await.map_err(|e| e.to_string())?;
        let pause = self
            .writer
            .pause_after(before)
            .await
            .ok_or("the writer has stopped")?;
        let keys = store.user_keys(&batch.hashes).await.map_err(err)?;
        let mut per_hash = store.count_rows(&keys).await.map_err(err)?;
        let counts = match &batch.counts {
            Some(counts) => counts.clone(),
            None => {
                let counts = store.event_counts_of(&batch.hashes).await.map_err(err)?;
                self.erasures
                    .save_counts(&counts)
                    .map_err(|e| e.to_string())?;
                counts
            }
        };
        store
            .subtract_counts(&counts, &format!("erasure-{}", batch.id))
            .await
            .map_err(err)?;
        store.delete(&keys).await.map_err(err)?;
        let dir = self.spool_dir.clone();
        let hashes: BTreeSet<String> = batch.hashes.iter().cloned().collect();
        let dead = tokio::task::spawn_blocking(move || files::rewrite_dead_letters(&dir, &hashes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        drop(pause);
        for (hash, rows) in dead {
            per_hash
                .entry(hash)
                .or_default()
                .insert(DEAD_LETTER_TABLE.to_owned(), rows);
        }
        store.wait_for_mutations().await.map_err(err)?;
        store.merge_counts(&counts).await.map_err(err)?;
        for hash in &batch.hashes {
            per_hash.entry(hash.clone()).or_default();
        }
        Ok(per_hash)
    }
}

fn err(e: clickhouse::error::Error) -> String {
    growth_schema::service::describe(&e)
}
