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

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::SdkError;
use crate::queue::Queue;
use crate::record::EncodedRecord;
use crate::report::{Counters, Loss};
use crate::request::RequestTemplate;
use crate::transport::{Outcome, Transport, TransportSettings};

/// Extra time a caller waits for the delivery thread beyond its own deadline, so
/// that the thread's reply (not the caller's timer) normally ends the wait.
const REPLY_GRACE: Duration = Duration::from_millis(500);
/// How often losses are looked for (for the callback); the log line is rarer.
const LOSS_CHECK: Duration = Duration::from_secs(1);
/// Least time between two warning lines about lost events.
const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Called with each new loss, on the delivery thread.
pub(crate) type LossCallback = Arc<dyn Fn(&Loss) + Send + Sync>;

/// How the delivery thread batches, sends and retries.
#[derive(Debug, Clone)]
pub(crate) struct DeliverySettings {
    pub(crate) batch_max_events: usize,
    pub(crate) batch_max_bytes: usize,
    pub(crate) batch_delay: Duration,
    pub(crate) max_concurrent_exports: usize,
    pub(crate) export_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

enum Command {
    Flush {
        deadline: Instant,
        done: std_mpsc::Sender<bool>,
    },
    Shutdown {
        deadline: Instant,
        done: Option<std_mpsc::Sender<bool>>,
    },
}

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

/// One export request and what it carries.
struct Batch {
    id: u64,
    body: Bytes,
    events: usize,
    /// Budget bytes of its records, given back when it is resolved.
    held_bytes: usize,
    /// After a retryable failure: not to be sent again before this moment.
    not_before: Option<Instant>,
}

/// A flush waiting for every batch cut before it.
struct FlushWait {
    /// Batches with an id below this must be resolved.
    upto: u64,
    deadline: Instant,
    done: std_mpsc::Sender<bool>,
}

/// The shutdown under way.
struct Stopping {
    deadline: Instant,
    done: Option<std_mpsc::Sender<bool>>,
}

/// Exponential backoff with jitter; the collector's own delay when it gives one.
struct Backoff {
    failures: u32,
    until: Option<Instant>,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn healthy(&self) -> bool {
        self.failures == 0
    }

    fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
    }

    /// Books a failure; returns how long the failed request must wait.
    fn failed(&mut self, retry_after: Option<Duration>, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = retry_after.unwrap_or_else(|| {
            let exponential = self
                .initial
                .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
                .min(self.max);
            // ±20 % jitter, so many apps restarted together do not retry in step.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let factor = 0.8 + f64::from(nanos % 1000) / 2500.0;
            exponential.mul_f64(factor)
        });
        let until = now + wait;
        // Several exports failing together: keep the latest wait, not the first.
        self.until = Some(self.until.map_or(until, |current| current.max(until)));
        wait
    }
}

/// Watches the counters for new losses: a warning line (rate-limited, counts
/// only, never a user) and the app's callback.
struct LossWatch {
    reported: (u64, u64, u64),
    logged: (u64, u64, u64),
    last_log: Option<Instant>,
    callback: Option<LossCallback>,
}

impl LossWatch {
    fn check(&mut self, counters: &Counters, now: Instant, last_call: bool) {
        let lost = counters.lost();
        if lost != self.reported {
            let (dropped, failed, invalid) = lost;
            if let Some(callback) = &self.callback {
                let loss = Loss {
                    dropped: dropped - self.reported.0,
                    failed: failed - self.reported.1,
                    invalid: invalid - self.reported.2,
                    report: counters.snapshot(),
                };
                // The app's callback must not take the delivery thread down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&loss)));
            }
            self.reported = lost;
        }
        let log_due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= LOSS_LOG_INTERVAL);
        if self.logged != lost && (log_due || last_call) {
            let report = counters.snapshot();
            tracing::warn!(
                target: "growth_sdk",
                dropped = lost.0 - self.logged.0,
                failed = lost.1 - self.logged.1,
                invalid = lost.2 - self.logged.2,
                total_tracked = report.tracked,
                total_delivered = report.delivered,
                total_dropped = report.dropped,
                total_failed = report.failed,
                pending = report.pending,
                last_error = report.last_error.as_deref().unwrap_or(""),
                "growth-sdk lost events"
            );
            self.logged = lost;
            self.last_log = Some(now);
        }
    }
}

/// The delivery thread's state.
struct Worker {
    settings: DeliverySettings,
    queue: Arc<Queue>,
    template: RequestTemplate,
    transport: Transport,
    counters: Arc<Counters>,
    /// Built batches waiting for an export slot, oldest (lowest id) first.
    ready: VecDeque<Batch>,
    in_flight: JoinSet<(Batch, Outcome)>,
    /// Per running export: its batch id, events and budget bytes, to count the
    /// batch if its task ends without an outcome (cancelled at the deadline).
    in_flight_batches: HashMap<tokio::task::Id, (u64, usize, usize)>,
    /// Ids of batches in `ready` or in flight.
    unresolved: BTreeSet<u64>,
    next_id: u64,
    /// A record taken from the queue that did not fit the previous batch.
    carry: Option<EncodedRecord>,
    /// When the oldest queued record must be sent at the latest.
    linger_until: Option<Instant>,
    backoff: Backoff,
    flushes: Vec<FlushWait>,
    stopping: Option<Stopping>,
    losses: LossWatch,
    next_loss_check: Instant,
}

impl Worker {
    fn new(
        settings: DeliverySettings,
        queue: Arc<Queue>,
        template: RequestTemplate,
        transport: Transport,
        counters: Arc<Counters>,
        on_loss: Option<LossCallback>,
    ) -> Self {
        let backoff = Backoff {
            failures: 0,
            until: None,
            initial: settings.backoff_initial,
            max: settings.backoff_max,
        };
        Worker {
            settings,
            queue,
            template,
            transport,
            counters,
            ready: VecDeque::new(),
            in_flight: JoinSet::new(),
            in_flight_batches: HashMap::new(),
            unresolved: BTreeSet::new(),
            next_id: 0,
            carry: None,
            linger_until: None,
            backoff,
            flushes: Vec::new(),
            stopping: None,
            losses: LossWatch {
                reported: (0, 0, 0),
                logged: (0, 0, 0),
                last_log: None,
                callback: on_loss,
            },
            next_loss_check: Instant::now() + LOSS_CHECK,
        }
    }

    /// Runs until shutdown completes (or the app side is gone); returns the
    /// reply to send once the runtime is down.
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Option<std_mpsc::Sender<bool>> {
        let mut commands_open = true;
        let queue = Arc::clone(&self.queue);
        loop {
            let now = Instant::now();
            if self.queue.queued_events() > 0 || self.carry.is_some() {
                self.linger_until
                    .get_or_insert(now + self.settings.batch_delay);
            }
            self.dispatch(now);
            self.answer_flushes(now);
            if now >= self.next_loss_check {
                self.losses.check(&self.counters, now, false);
                self.next_loss_check = now + LOSS_CHECK;
            }
            if let Some(stopping) = &self.stopping {
                let finished = self.unresolved.is_empty()
                    && self.queue.queued_events() == 0
                    && self.carry.is_none();
                if finished || now >= stopping.deadline {
                    self.give_up_everything().await;
                    self.losses.check(&self.counters, Instant::now(), true);
                    return self.stopping.take().and_then(|stopping| stopping.done);
                }
            }

            let wake_at = self.next_wake(now);
            tokio::select! {
                biased;
                command = commands.recv(), if commands_open => match command {
                    Some(Command::Flush { deadline, done }) => {
                        self.cut_everything_queued();
                        self.flushes.push(FlushWait { upto: self.next_id, deadline, done });
                    }
                    Some(Command::Shutdown { deadline, done }) => self.begin_stop(deadline, done),
                    None => {
                        // The tracker is gone without a shutdown: send what is left.
                        commands_open = false;
                        if self.stopping.is_none() {
                            let deadline = Instant::now() + self.settings.shutdown_timeout;
                            self.begin_stop(deadline, None);
                        }
                    }
                },
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    match joined {
                        Ok((id, (batch, outcome))) => {
                            self.in_flight_batches.remove(&id);
                            self.settle(batch, outcome);
                        }
                        Err(error) => {
                            if let Some((batch_id, events, held)) = self.in_flight_batches.remove(&error.id()) {
                                self.counters.failed(events, "the export task ended without an answer".into());
                                self.resolve(batch_id, events, held);
                            }
                        }
                    }
                }
                () = queue.wake.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    fn begin_stop(&mut self, deadline: Instant, done: Option<std_mpsc::Sender<bool>>) {
        self.queue.close();
        self.cut_everything_queued();
        match &mut self.stopping {
            // A second shutdown (Drop after shutdown): keep the earlier deadline.
            Some(stopping) => {
                if stopping.done.is_none() {
                    stopping.done = done;
                }
            }
            None => self.stopping = Some(Stopping { deadline, done }),
        }
    }

    /// The earliest moment something has to happen without outside wake-up.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut at = self.next_loss_check;
        let mut consider = |moment: Option<Instant>| {
            if let Some(moment) = moment {
                at = at.min(moment);
            }
        };
        consider(self.backoff.until);
        for batch in &self.ready {
            consider(batch.not_before);
        }
        if !self.backoff.waiting(now) {
            consider(self.linger_until);
        }
        for flush in &self.flushes {
            consider(Some(flush.deadline));
        }
        consider(self.stopping.as_ref().map(|stopping| stopping.deadline));
        at.max(now)
    }

    /// Starts exports while slots are free and the backoff allows.
    fn dispatch(&mut self, now: Instant) {
        if self.backoff.waiting(now) {
            return;
        }
        loop {
            // While the collector is failing, one export at a time probes it.
            let slots = if self.backoff.healthy() {
                self.settings.max_concurrent_exports
            } else {
                1
            };
            if self.in_flight.len() >= slots {
                return;
            }
            // The oldest batch that may go now: a failed one waits out its own
            // delay (the collector's Retry-After) even when others succeed.
            let eligible = self
                .ready
                .iter()
                .position(|batch| batch.not_before.is_none_or(|at| at <= now));
            let batch = match eligible.and_then(|index| self.ready.remove(index)) {
                Some(batch) => batch,
                None if self.batch_due(now) => match self.cut_batch() {
                    Some(batch) => batch,
                    None => return,
                },
                None => return,
            };
            self.spawn_export(batch);
        }
    }

    fn batch_due(&self, now: Instant) -> bool {
        self.queue.queued_bytes() >= self.settings.batch_max_bytes
            || self.queue.queued_events() >= self.settings.batch_max_events
            || self.linger_until.is_some_and(|until| now >= until)
            || self.stopping.is_some()
    }

    /// Takes up to one batch worth of records from the queue.
    fn cut_batch(&mut self) -> Option<Batch> {
        let limit = self
            .settings
            .batch_max_bytes
            .saturating_sub(self.template.overhead());
        let mut records: Vec<EncodedRecord> = Vec::new();
        let mut len = 0usize;
        let mut held = 0usize;
        let mut next = self.carry.take();
        while records.len() < self.settings.batch_max_events {
            let Some(record) = next.take().or_else(|| self.queue.pop()) else {
                break;
            };
            let size = record.as_bytes().len();
            if !records.is_empty() && len + size > limit {
                self.carry = Some(record);
                break;
            }
            len += size;
            held += record.footprint();
            records.push(record);
        }
        if self.queue.queued_events() == 0 && self.carry.is_none() {
            self.linger_until = None;
        }
        if records.is_empty() {
            return None;
        }
        let body = Bytes::from(self.template.encode(&records, len));
        let id = self.next_id;
        self.next_id += 1;
        self.unresolved.insert(id);
        Some(Batch {
            id,
            body,
            events: records.len(),
            held_bytes: held,
            not_before: None,
        })
    }

    /// Cuts every record queued right now into ready batches (for a flush or
    /// the shutdown), whatever their age.
    fn cut_everything_queued(&mut self) {
        let mut remaining = self.queue.queued_events() + usize::from(self.carry.is_some());
        while remaining > 0 {
            let Some(batch) = self.cut_batch() else {
                break;
            };
            remaining = remaining.saturating_sub(batch.events);
            self.ready.push_back(batch);
        }
    }

    fn spawn_export(&mut self, batch: Batch) {
        let transport = self.transport.clone();
        let timeout = self.settings.export_timeout;
        let body = batch.body.clone();
        let meta = (batch.id, batch.events, batch.held_bytes);
        let handle = self.in_flight.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, transport.export(body)).await {
                Ok(outcome) => outcome,
                // The request may have reached the collector: a resend can store it twice.
                Err(_) => Outcome::Retry {
                    error: format!("no answer from the collector within {timeout:?}"),
                    retry_after: None,
                },
            };
            (batch, outcome)
        });
        self.in_flight_batches.insert(handle.id(), meta);
    }

    /// Books what the collector said about a batch.
    fn settle(&mut self, batch: Batch, outcome: Outcome) {
        match outcome {
            Outcome::Accepted { rejected, message } => {
                self.backoff.succeeded();
                let rejected = usize::try_from(rejected)
                    .unwrap_or(usize::MAX)
                    .min(batch.events);
                self.counters.delivered(batch.events - rejected);
                if rejected > 0 {
                    self.counters.failed(
                        rejected,
                        format!("the collector rejected {rejected} records: {message}"),
                    );
                }
                self.resolve(batch.id, batch.events, batch.held_bytes);
            }
            Outcome::Refused { error } => {
                self.counters.failed(batch.events, error);
                self.resolve(batch.id, batch.events, batch.held_bytes);
            }
            Outcome::Retry { error, retry_after } => {
                self.counters.retried(error);
                let now = Instant::now();
                let wait = self.backoff.failed(retry_after, now);
                let mut batch = batch;
                batch.not_before = Some(now + wait);
                // Back in line by age, so the oldest events go first.
                let at = self.ready.partition_point(|waiting| waiting.id < batch.id);
                self.ready.insert(at, batch);
            }
        }
    }

    fn resolve(&mut self, id: u64, events: usize, held_bytes: usize) {
        self.unresolved.remove(&id);
        self.queue.release(held_bytes, events);
    }

    fn answer_flushes(&mut self, now: Instant) {
        let oldest = self.unresolved.first().copied().unwrap_or(u64::MAX);
        self.flushes.retain(|flush| {
            if oldest >= flush.upto {
                let _ = flush.done.send(true);
                false
            } else if now >= flush.deadline {
                let _ = flush.done.send(false);
                false
            } else {
                true
            }
        });
    }

    /// At the shutdown deadline: whatever is still held counts as failed.
    async fn give_up_everything(&mut self) {
        self.in_flight.abort_all();
        while let Some(joined) = self.in_flight.join_next_with_id().await {
            match joined {
                // Finished just before the abort: its answer counts.
                Ok((id, (batch, outcome))) => {
                    self.in_flight_batches.remove(&id);
                    match outcome {
                        Outcome::Retry { error, .. } => {
                            self.counters.failed(
                                batch.events,
                                format!("shutdown deadline reached; {error}"),
                            );
                            self.resolve(batch.id, batch.events, batch.held_bytes);
                        }
                        outcome => self.settle(batch, outcome),
                    }
                }
                Err(error) => {
                    if let Some((batch_id, events, held)) =
                        self.in_flight_batches.remove(&error.id())
                    {
                        self.counters.failed(
                            events,
                            "shutdown deadline reached while an export was in flight (it may have arrived)".into(),
                        );
                        self.resolve(batch_id, events, held);
                    }
                }
            }
        }
        while let Some(batch) = self.ready.pop_front() {
            self.counters.failed(
                batch.events,
                "shutdown deadline reached before the events could be sent".into(),
            );
            self.resolve(batch.id, batch.events, batch.held_bytes);
        }
        let mut left = 0usize;
        let mut held = 0usize;
        for record in self
            .carry
            .take()
            .into_iter()
            .chain(std::iter::from_fn(|| self.queue.pop()))
        {
            left += 1;
            held += record.footprint();
        }
        if left > 0 {
            self.counters.failed(
                left,
                "shutdown deadline reached before the events could be sent".into(),
            );
            self.queue.release(held, left);
        }
        for flush in self.flushes.drain(..) {
            let _ = flush.done.send(false);
        }
    }
}
