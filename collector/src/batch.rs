//! The batcher: many small requests in, few large inserts out.
//!
//! ClickHouse wants about 10k–100k rows per insert, while OTLP senders send a few
//! hundred records per request. Receivers [`submit`](BatchSender::submit) the rows of
//! one request over a bounded channel together with a oneshot; one task gathers
//! submissions into a batch and inserts it when it holds `max_rows` rows, when
//! `max_delay` has passed since its first row arrived, or when no submission has
//! arrived for `max_idle`; it retries a failed insert a few times, and then answers
//! every submission of the batch. A receiver tells its
//! sender "ok" only after that answer, so an acknowledged event is in ClickHouse.
//!
//! Why `max_idle`: OTLP exporters wait for the answer before they send again, so
//! a batch can never hold more than the records in flight. Waiting for `max_delay`
//! when nothing more can come only slows every sender down (measured: 22× at four
//! senders, docs/benchmarks.md). When requests keep arriving, the batch keeps
//! filling up to `max_rows` / `max_delay` and ClickHouse gets large inserts.
//!
//! Backpressure: while an insert runs the task reads no submissions, the channel
//! fills, and `submit` waits — receivers answer more slowly instead of buffering
//! without bound.
//!
//! Shutdown: [`BatcherHandle::start_draining`] makes the task insert whatever has
//! arrived at once instead of waiting for a batch to fill, so the requests still in
//! flight while the servers drain are answered quickly; once every [`BatchSender`]
//! is dropped the task answers the last batch and ends ([`BatcherHandle::join`]).

use std::sync::Arc;
use std::time::Duration;

use growth_schema::tables::EventRow;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clickhouse::{EventStore, describe};
use crate::config::BatchConfig;
use crate::telemetry::Telemetry;

/// Submissions (requests) that may wait in the channel while an insert runs.
const QUEUE_CAPACITY: usize = 256;
/// Insert attempts per batch before its senders are told to retry.
const INSERT_ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled for each further one.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Why a submission was not stored. The sender should retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The insert failed on every attempt.
    #[error("storing events failed after {attempts} attempts: {last_error}")]
    InsertFailed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last_error: String,
    },
    /// The batcher has stopped (the collector is shutting down).
    #[error("the collector is shutting down")]
    ShuttingDown,
}

struct Submission {
    rows: Vec<EventRow>,
    ack: oneshot::Sender<Result<(), DeliveryError>>,
}

/// The receivers' end of the batcher. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct BatchSender {
    tx: mpsc::Sender<Submission>,
    telemetry: Arc<Telemetry>,
}

impl BatchSender {
    /// Hands `rows` to the batcher and waits until they are stored (or not).
    /// Waits for room in the queue first when the batcher is behind.
    pub async fn submit(&self, rows: Vec<EventRow>) -> Result<(), DeliveryError> {
        if rows.is_empty() {
            return Ok(());
        }
        let count = rows.len();
        let (ack, answer) = oneshot::channel();
        self.telemetry.rows_queued(count);
        let result = match self.tx.send(Submission { rows, ack }).await {
            Ok(()) => answer.await.unwrap_or(Err(DeliveryError::ShuttingDown)),
            Err(_) => Err(DeliveryError::ShuttingDown),
        };
        self.telemetry.rows_done(count);
        result
    }
}

/// Controls the batcher task from the outside (shutdown).
#[derive(Debug)]
pub struct BatcherHandle {
    draining: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl BatcherHandle {
    /// From now on, insert what has arrived without waiting for batches to fill.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Waits for the task to end: after every [`BatchSender`] is dropped and the
    /// last batch is answered.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "batcher task failed");
        }
    }
}

/// Starts the batcher task.
pub fn spawn<S: EventStore>(
    store: S,
    config: BatchConfig,
    telemetry: Arc<Telemetry>,
) -> (BatchSender, BatcherHandle) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let (draining, draining_rx) = watch::channel(false);
    let batcher = Batcher {
        store,
        config,
        telemetry: telemetry.clone(),
        rx,
        draining: draining_rx,
    };
    let task = tokio::spawn(batcher.run());
    (
        BatchSender { tx, telemetry },
        BatcherHandle { draining, task },
    )
}

struct Batcher<S> {
    store: S,
    config: BatchConfig,
    telemetry: Arc<Telemetry>,
    rx: mpsc::Receiver<Submission>,
    draining: watch::Receiver<bool>,
}

#[derive(Default)]
struct Batch {
    rows: Vec<EventRow>,
    acks: Vec<oneshot::Sender<Result<(), DeliveryError>>>,
}

impl Batch {
    fn add(&mut self, mut submission: Submission) {
        self.rows.append(&mut submission.rows);
        self.acks.push(submission.ack);
    }
}

impl<S: EventStore> Batcher<S> {
    async fn run(mut self) {
        // Wait for a batch's first submission; then fill it until full or due.
        while let Some(first) = self.rx.recv().await {
            let due = Instant::now() + self.config.max_delay;
            let mut batch = Batch::default();
            batch.add(first);
            while batch.rows.len() < self.config.max_rows {
                // Take what is already queued without waiting, then wait if allowed.
                if let Ok(submission) = self.rx.try_recv() {
                    batch.add(submission);
                    continue;
                }
                let idle_due = Instant::now() + self.config.max_idle;
                tokio::select! {
                    next = self.rx.recv() => match next {
                        Some(submission) => batch.add(submission),
                        None => break,
                    },
                    () = tokio::time::sleep_until(due.min(idle_due)) => break,
                    () = draining(&mut self.draining) => break,
                }
            }
            self.flush(batch).await;
        }
        tracing::debug!("batcher stopped: every receiver is gone and every batch answered");
    }

    async fn flush(&self, batch: Batch) {
        let rows = batch.rows.len();
        let result = self.insert_with_retry(&batch.rows).await;
        self.telemetry.batch_flushed(rows, result.is_ok());
        match &result {
            Ok(()) => tracing::debug!(rows, requests = batch.acks.len(), "batch stored"),
            Err(e) => {
                tracing::error!(rows, requests = batch.acks.len(), error = %e, "batch not stored; senders will be told to retry")
            }
        }
        for ack in batch.acks {
            // A sender that went away (client disconnected) no longer needs the answer.
            let _ = ack.send(result.clone());
        }
    }

    async fn insert_with_retry(&self, rows: &[EventRow]) -> Result<(), DeliveryError> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1;
        loop {
            let error = match self.store.insert(rows).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            self.telemetry.insert_failed();
            if attempt >= INSERT_ATTEMPTS {
                return Err(DeliveryError::InsertFailed {
                    attempts: attempt,
                    last_error: describe(&error),
                });
            }
            tracing::warn!(rows = rows.len(), attempt, retry_in = ?delay, error = %describe(&error), "insert failed; retrying");
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }
}

/// Completes once draining has started; never if the handle is gone without it.
async fn draining(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryStore, rows};

    fn config(max_rows: usize, max_delay_ms: u64) -> BatchConfig {
        BatchConfig {
            max_rows,
            max_delay: Duration::from_millis(max_delay_ms),
            max_idle: Duration::from_millis(max_delay_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_is_inserted_at_once() {
        let store = MemoryStore::default();
        let (sender, handle) = spawn(
            store.clone(),
            config(10, 60_000),
            Arc::new(Telemetry::new()),
        );
        let started = Instant::now();
        let (a, b) = tokio::join!(sender.submit(rows(6)), sender.submit(rows(4)));
        assert_eq!((a, b), (Ok(()), Ok(())));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "did not wait for the delay"
        );
        assert_eq!(store.insert_sizes(), vec![10]);
        drop(sender);
        handle.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn partial_batch_waits_for_the_delay() {
        let store = MemoryStore::default();
        let (sender, _task) = spawn(store.clone(), config(1000, 500), Arc::new(Telemetry::new()));
        let started = Instant::now();
        assert_eq!(sender.submit(rows(3)).await, Ok(()));
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(store.insert_sizes(), vec![3]);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_intake_closes_the_batch_before_the_delay() {
        let store = MemoryStore::default();
        let config = BatchConfig {
            max_rows: 1000,
            max_delay: Duration::from_secs(60),
            max_idle: Duration::from_millis(20),
        };
        let (sender, _task) = spawn(store.clone(), config, Arc::new(Telemetry::new()));
        let started = Instant::now();
        // Submissions 5ms apart keep the batch open; then the intake falls quiet.
        let late = {
            let sender = sender.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                sender.submit(rows(2)).await
            }
        };
        let (a, b) = tokio::join!(sender.submit(rows(3)), late);
        assert_eq!((a, b), (Ok(()), Ok(())));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(25) && waited < Duration::from_millis(100),
            "{waited:?}"
        );
        assert_eq!(store.insert_sizes(), vec![5]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_insert_is_retried() {
        let store = MemoryStore::failing(2);
        let telemetry = Arc::new(Telemetry::new());
        let (sender, _task) = spawn(store.clone(), config(1, 10), telemetry.clone());
        assert_eq!(sender.submit(rows(1)).await, Ok(()));
        assert_eq!(store.insert_sizes(), vec![1]);
        assert!(
            telemetry
                .render()
                .contains("growth_collector_insert_failures_total 2")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn persistent_failure_answers_every_sender_with_an_error() {
        let store = MemoryStore::failing(100);
        let telemetry = Arc::new(Telemetry::new());
        let (sender, _task) = spawn(store.clone(), config(100, 10), telemetry.clone());
        let (a, b) = tokio::join!(sender.submit(rows(1)), sender.submit(rows(2)));
        assert!(matches!(
            a,
            Err(DeliveryError::InsertFailed {
                attempts: INSERT_ATTEMPTS,
                ..
            })
        ));
        assert_eq!(a, b);
        assert!(store.insert_sizes().is_empty());
        let text = telemetry.render();
        assert!(
            text.contains("growth_collector_events_failed_total 3"),
            "{text}"
        );
        assert!(text.contains("growth_collector_rows_waiting 0"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn draining_flushes_without_waiting_and_stops() {
        let store = MemoryStore::default();
        let (sender, handle) = spawn(
            store.clone(),
            config(1000, 60_000),
            Arc::new(Telemetry::new()),
        );
        let started = Instant::now();
        let pending = tokio::spawn({
            let sender = sender.clone();
            async move { sender.submit(rows(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        handle.start_draining();
        assert_eq!(pending.await.expect("joins"), Ok(()));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for the batch delay"
        );
        assert_eq!(sender.submit(rows(1)).await, Ok(()));
        drop(sender);
        handle.join().await;
        assert_eq!(store.insert_sizes(), vec![2, 1]);
    }
}
