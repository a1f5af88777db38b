//! Delivery: the bounded queue, the one background thread that exports, and the
//! counters that say honestly what happened to every tracked event.
//!
//! Why not the OpenTelemetry SDK's `BatchLogProcessor`: it drops silently when its
//! queue is full, its `shutdown()` returns `Ok` even when every export failed, and
//! the gRPC exporter panics when built outside a Tokio runtime. So the SDK only
//! uses OpenTelemetry to *make* log records and to *encode and send* them (the OTLP
//! exporter), and owns what lies between:
//!
//! * `track` does a `try_send` on a bounded queue: it never blocks and never waits
//!   on the network; a full queue means the event is **dropped** and counted.
//! * One thread, `growth-sdk-delivery`, owns a current-thread Tokio runtime. The
//!   exporter is built and used only there, so the app may or may not run Tokio.
//! * The thread batches records and awaits each export itself: a batch that the
//!   exporter (after its own bounded retries) reports as sent is **delivered**, one
//!   that errors or times out is **failed**. No other component can lose a record
//!   unseen.
//! * Flush and shutdown are commands on a second, unbounded channel, so they are
//!   never refused by a full queue; both wait for a reply for a bounded time.
//!
//! Invariant: `tracked = delivered + failed + dropped + invalid + pending`, where
//! `pending` is what sits in the queue or in an export under way.

use std::fmt;
use std::future;
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::LogExporter as OtlpLogExporter;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::error::SdkError;
use crate::report::Counters;

/// Extra time a caller waits for the delivery thread beyond its own deadline, so
/// that the thread's reply (not the caller's timer) normally ends the wait.
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// How the delivery thread batches and sends.
#[derive(Debug, Clone)]
pub(crate) struct DeliverySettings {
    pub(crate) queue_capacity: usize,
    pub(crate) batch_size: usize,
    pub(crate) batch_delay: Duration,
    pub(crate) export_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// What to do with records still unsent when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtDeadline {
    /// Flush: keep them for later.
    Keep,
    /// Shutdown: count them as failed.
    GiveUp,
}

enum Command {
    Flush {
        deadline: Instant,
        done: std_mpsc::Sender<()>,
    },
    Shutdown {
        deadline: Instant,
        done: std_mpsc::Sender<()>,
    },
}

/// The app side of delivery: the queue's sending end, the command channel and the thread.
#[derive(Debug)]
pub(crate) struct Delivery {
    queue: mpsc::Sender<SdkLogRecord>,
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Flush { .. } => "Flush",
            Command::Shutdown { .. } => "Shutdown",
        })
    }
}

impl Delivery {
    /// Starts the delivery thread. `build_exporter` runs on that thread, inside its
    /// Tokio runtime (the gRPC exporter needs one); its error is returned here.
    pub(crate) fn start<F>(
        settings: DeliverySettings,
        scope: InstrumentationScope,
        counters: Arc<Counters>,
        build_exporter: F,
    ) -> Result<Delivery, SdkError>
    where
        F: FnOnce() -> Result<OtlpLogExporter, SdkError> + Send + 'static,
    {
        let shutdown_timeout = settings.shutdown_timeout;
        let (queue, records) = mpsc::channel(settings.queue_capacity);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), SdkError>>();
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("growth-sdk-delivery".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(SdkError::Thread(error)));
                        return;
                    }
                };
                let exporter = {
                    let _in_runtime = runtime.enter();
                    build_exporter()
                };
                let exporter = match exporter {
                    Ok(exporter) => exporter,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let worker = Worker {
                    exporter,
                    scope,
                    counters: thread_counters,
                    settings,
                    pending: Vec::new(),
                };
                let done = runtime.block_on(worker.run(records, command_rx));
                // Never wait on stray tasks (a DNS lookup, a half-open connection).
                runtime.shutdown_background();
                if let Some(done) = done {
                    let _ = done.send(());
                }
            })
            .map_err(SdkError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Delivery {
                queue,
                commands,
                counters,
                thread: Some(thread),
                shutdown_timeout,
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(SdkError::Thread(std::io::Error::other(
                    "the delivery thread stopped while starting",
                )))
            }
        }
    }

    /// Queues a record without waiting; a full queue or a stopped thread drops it.
    pub(crate) fn enqueue(&self, record: SdkLogRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => self.counters.dropped(),
        }
    }

    /// Exports everything queued so far, waiting at most the shutdown timeout.
    /// Returns false when the delivery thread did not confirm in time.
    pub(crate) fn flush(&self) -> bool {
        let timeout = self.shutdown_timeout;
        if self.thread.is_none() {
            return true;
        }
        let (done, reply) = std_mpsc::channel();
        let deadline = Instant::now() + timeout;
        if self
            .commands
            .send(Command::Flush { deadline, done })
            .is_err()
        {
            return false;
        }
        reply.recv_timeout(timeout + REPLY_GRACE).is_ok()
    }

    /// Exports everything queued, then stops the thread, waiting at most the
    /// shutdown timeout. Records unsent at the deadline count as failed. Idempotent.
    pub(crate) fn shutdown(&mut self) -> bool {
        let timeout = self.shutdown_timeout;
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let (done, reply) = std_mpsc::channel();
        let deadline = Instant::now() + timeout;
        let confirmed = self
            .commands
            .send(Command::Shutdown { deadline, done })
            .is_ok()
            && reply.recv_timeout(timeout + REPLY_GRACE).is_ok();
        if confirmed {
            // The reply is sent as the thread's last act: joining returns at once.
            let _ = thread.join();
        }
        // Otherwise the thread is left to finish on its own; the report shows
        // its records as pending rather than pretending they were delivered.
        confirmed
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// A tracker dropped without `shutdown` still sends what it holds, within the
/// same bound, like the OpenTelemetry providers do.
impl Drop for Delivery {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The delivery thread's state.
struct Worker {
    exporter: OtlpLogExporter,
    scope: InstrumentationScope,
    counters: Arc<Counters>,
    settings: DeliverySettings,
    /// Records taken off the queue and not yet exported.
    pending: Vec<SdkLogRecord>,
}

impl Worker {
    /// Runs until shutdown (or until the app side is gone); returns the reply to
    /// send once the runtime is down.
    async fn run(
        mut self,
        mut records: mpsc::Receiver<SdkLogRecord>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Option<std_mpsc::Sender<()>> {
        let batch_size = self.settings.batch_size;
        // When the oldest record waiting in `pending` must be sent at the latest.
        let mut send_by: Option<tokio::time::Instant> = None;
        let mut queue_open = true;
        loop {
            let timer = async move {
                match send_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => future::pending().await,
                }
            };
            let room = batch_size.saturating_sub(self.pending.len());
            tokio::select! {
                biased;
                command = commands.recv() => {
                    let (deadline, done, at_deadline) = match command {
                        Some(Command::Flush { deadline, done }) => (deadline, Some(done), AtDeadline::Keep),
                        Some(Command::Shutdown { deadline, done }) => {
                            records.close();
                            (deadline, Some(done), AtDeadline::GiveUp)
                        }
                        // The tracker is gone without a shutdown: send what is left.
                        None => {
                            records.close();
                            (Instant::now() + self.settings.export_timeout, None, AtDeadline::GiveUp)
                        }
                    };
                    self.take_queued(&mut records);
                    self.export_pending(deadline, at_deadline).await;
                    send_by = None;
                    if at_deadline == AtDeadline::GiveUp {
                        let _ = self.exporter.shutdown_with_timeout(Duration::from_millis(100));
                        return done;
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    if !self.pending.is_empty() {
                        send_by = Some(tokio::time::Instant::now() + self.settings.batch_delay);
                    }
                }
                received = records.recv_many(&mut self.pending, room), if queue_open && room > 0 =>
                {
                    if received == 0 {
                        // Every sender is gone; the command channel (closed next) says why.
                        queue_open = false;
                        continue;
                    }
                    if self.pending.len() >= batch_size {
                        let deadline = Instant::now() + self.settings.export_timeout;
                        self.export_pending(deadline, AtDeadline::Keep).await;
                        send_by = None;
                    } else if send_by.is_none() {
                        send_by = Some(tokio::time::Instant::now() + self.settings.batch_delay);
                    }
                }
                () = timer => {
                    let deadline = Instant::now() + self.settings.export_timeout;
                    self.export_pending(deadline, AtDeadline::Keep).await;
                    send_by = None;
                }
            }
        }
    }

    /// Moves what is in the queue right now into `pending`; later arrivals wait.
    fn take_queued(&mut self, records: &mut mpsc::Receiver<SdkLogRecord>) {
        for _ in 0..records.len() {
            match records.try_recv() {
                Ok(record) => self.pending.push(record),
                Err(_) => break,
            }
        }
    }

    /// Exports `pending` in batches until it is empty or `deadline` passes.
    async fn export_pending(&mut self, deadline: Instant, at_deadline: AtDeadline) {
        while !self.pending.is_empty() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                if at_deadline == AtDeadline::GiveUp {
                    let n = self.pending.len();
                    self.pending.clear();
                    self.counters
                        .failed(n, "deadline reached before the events could be sent".into());
                }
                return;
            }
            let n = self.pending.len().min(self.settings.batch_size);
            let batch: Vec<SdkLogRecord> = self.pending.drain(..n).collect();
            let timeout = remaining.min(self.settings.export_timeout);
            self.export(&batch, timeout).await;
        }
    }

    async fn export(&self, batch: &[SdkLogRecord], timeout: Duration) {
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|record| (record, &self.scope)).collect();
        let sent = tokio::time::timeout(timeout, self.exporter.export(LogBatch::new(&refs))).await;
        match sent {
            Ok(Ok(())) => self.counters.delivered(batch.len()),
            Ok(Err(error)) => self.counters.failed(batch.len(), error.to_string()),
            Err(_) => self
                .counters
                .failed(batch.len(), format!("export timed out after {timeout:?}")),
        }
    }
}
