//! Delivery: the thread that turns queued records into export requests, keeps
//! several of them in flight, and keeps every batch until the collector has
//! acknowledged it — or the byte budget, a refusal or the shutdown deadline says
//! otherwise, and then counts it.
//!
//! Why not the OpenTelemetry SDK's `BatchLogProcessor`: it drops silently when its
//! queue is full, exports one batch at a time, gives a failed batch up after the
//! exporter's own retries (about a second), and its `shutdown()` returns `Ok`
//! even when every export failed. Here:
//!
//! * `track` pushes into a lock-free queue bounded by bytes (`queue`), never
//!   blocks and never needs a runtime.
//! * One thread, `growth-sdk-delivery`, owns a current-thread Tokio runtime (so
//!   the gRPC client never meets the app's runtime, or its absence). It cuts
//!   batches by bytes, count or age and runs up to `max_concurrent_exports`
//!   exports at once.
//! * A batch that fails in a retryable way (connection refused, timeout, gRPC
//!   `UNAVAILABLE`, HTTP 503/429, …) goes back to the front of the line and is
//!   sent again after a backoff — the collector's `Retry-After` / `RetryInfo`
//!   when it gives one, exponential with jitter otherwise. While the collector is
//!   failing, one export at a time probes it. Its bytes stay in the budget, so a
//!   long outage ends in counted drops of *new* events, never in silent loss.
//! * Flush and shutdown are commands on an unbounded channel, answered when every
//!   batch cut for them is resolved or when their deadline passes.
//!
//! Invariant: `tracked = delivered + failed + dropped + invalid + pending`.

use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::SdkError;
use crate::queue::Queue;
use crate::record::EncodedRecord;
use crate::report::Counters;
use crate::request::RequestTemplate;
use crate::transport::{Transport, TransportSettings};
use crate::worker::{Command, DeliverySettings, Worker};

/// Extra time a caller waits for the delivery thread beyond its own deadline, so
/// that the thread's reply (not the caller's timer) normally ends the wait.
const REPLY_GRACE: Duration = Duration::from_millis(500);

pub(crate) use crate::loss::LossCallback;

/// The app side of delivery: the queue, the command channel and the thread.
pub(crate) struct Delivery {
    queue: Arc<Queue>,
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queued_bytes", &self.queue.queued_bytes())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Delivery {
    /// Starts the delivery thread; the transport is built on it, inside its
    /// runtime, and its error is returned here.
    pub(crate) fn start(
        settings: DeliverySettings,
        queue: Arc<Queue>,
        template: RequestTemplate,
        transport: TransportSettings,
        counters: Arc<Counters>,
        on_loss: Option<LossCallback>,
    ) -> Result<Delivery, SdkError> {
        let shutdown_timeout = settings.shutdown_timeout;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), SdkError>>();
        let worker_queue = Arc::clone(&queue);
        let worker_counters = Arc::clone(&counters);
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
                let transport = {
                    let _in_runtime = runtime.enter();
                    Transport::new(&transport)
                };
                let transport = match transport {
                    Ok(transport) => transport,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let worker = Worker::new(
                    settings,
                    worker_queue,
                    template,
                    transport,
                    worker_counters,
                    on_loss,
                );
                let done = runtime.block_on(worker.run(command_rx));
                // Never wait on stray tasks (a DNS lookup, a half-open connection).
                runtime.shutdown_background();
                if let Some(done) = done {
                    let _ = done.send(true);
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

    /// Queues a record without waiting; a used-up budget or a closed queue drops it.
    pub(crate) fn enqueue(&self, record: EncodedRecord) {
        if self.queue.push(record).is_err() {
            self.counters.dropped();
        }
    }

    /// Sends everything queued so far, waiting at most `timeout`. Returns false
    /// when not everything queued before the call was resolved in time.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
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
        reply.recv_timeout(timeout + REPLY_GRACE).unwrap_or(false)
    }

    /// Sends everything queued, then stops the thread, waiting at most `timeout`.
    /// Events unsent at the deadline count as failed. Idempotent.
    pub(crate) fn shutdown(&mut self, timeout: Duration) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        self.queue.close();
        let (done, reply) = std_mpsc::channel();
        let deadline = Instant::now() + timeout;
        let confirmed = self
            .commands
            .send(Command::Shutdown {
                deadline,
                done: Some(done),
            })
            .is_ok()
            && reply.recv_timeout(timeout + REPLY_GRACE).is_ok();
        if confirmed {
            // The reply is the thread's last act: joining returns at once.
            let _ = thread.join();
        }
        // Otherwise the thread is left to finish on its own; the report shows
        // its events as pending rather than pretending they were delivered.
        confirmed
    }

    /// Starts the shutdown and returns at once; the thread delivers what it
    /// can until the deadline on its own.
    fn shutdown_detached(&mut self) {
        if self.thread.take().is_some() {
            self.queue.close();
            let deadline = Instant::now() + self.shutdown_timeout;
            let _ = self.commands.send(Command::Shutdown {
                deadline,
                done: None,
            });
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
}

/// A tracker dropped without `shutdown` still sends what it holds. Outside an
/// async runtime it waits for that (at most the shutdown timeout), like the
/// OpenTelemetry providers; on a runtime's thread it never blocks: the delivery
/// thread goes on alone until the deadline.
impl Drop for Delivery {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.shutdown_detached();
        } else {
            self.shutdown(self.shutdown_timeout);
        }
    }
}
