"""A batch log-record processor that never drops silently and never lies.

The OpenTelemetry SDK's BatchLogRecordProcessor drops records when its queue
(2048) is full without saying so, gives a batch up after the exporter's own
retries, and its shutdown reports success after failed exports. This one:

* holds records in a queue bounded by bytes (default 64 MiB), so bursts and
  outages fit; only beyond the budget are new records dropped - counted,
  logged as a warning with counts, and passed to an optional callback;
* keeps a batch the collector did not acknowledge at the front of the line and
  retries it after the collector's Retry-After / RetryInfo delay, or an
  exponential backoff with jitter, for as long as the budget holds;
* counts every record exactly once: tracked = delivered + failed + dropped +
  invalid + pending; `failed` is only what the collector refused for good or
  what the shutdown deadline cut off;
* `force_flush` and `shutdown` report honestly whether everything arrived.

Up to `max_concurrent_exports` sender threads (default 4) each take the oldest
batch that may go and export it, so encoding one batch overlaps waiting for the
collector's answer to another (grpcio and requests release the GIL while they
wait). While the collector is failing, one export at a time probes it, after the
backoff. A flush waits for the oldest unresolved record, so "everything before
the flush" means the same as with one thread.
"""

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from opentelemetry.sdk._logs import LogRecordProcessor

from .transport import Outcome

_log = logging.getLogger("growth_sdk")
LOSS_LOG_INTERVAL = 10.0


@dataclass
class DeliveryReport:
    tracked: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    invalid: int = 0
    pending: int = 0
    retries: int = 0
    last_error: Optional[str] = None

    @property
    def complete(self) -> bool:
        return self.delivered == self.tracked

    @property
    def lost(self) -> int:
        return self.failed + self.dropped + self.invalid

    def __str__(self) -> str:
        return (
            f"tracked {self.tracked}, delivered {self.delivered}, failed {self.failed}, "
            f"dropped {self.dropped}, invalid {self.invalid}, pending {self.pending}"
        )


@dataclass
class _Batch:
    records: list
    size: int
    first_seq: int
    last_seq: int


def estimate_size(log_record) -> int:
    """Bytes a record holds, roughly: the budget's unit."""
    size = 200
    attributes = getattr(log_record.log_record, "attributes", None) or {}
    for key, value in attributes.items():
        size += len(key) + (len(value) if isinstance(value, (str, bytes)) else 16) + 24
    return size


class GrowthBatchProcessor(LogRecordProcessor):
    """Plug into an OpenTelemetry LoggerProvider, or let growth_sdk.Tracker do it."""

    def __init__(
        self,
        transport,
        *,
        max_queue_bytes: int = 64 << 20,
        max_batch_records: int = 4096,
        max_batch_bytes: int = 1 << 20,
        batch_delay: float = 0.5,
        max_backoff: float = 5.0,
        max_concurrent_exports: int = 4,
        on_loss: Optional[Callable[[dict], None]] = None,
    ):
        if max_concurrent_exports < 1:
            raise ValueError("max_concurrent_exports must be at least 1")
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        self._encode = encode_logs
        self._transport = transport
        self._max_queue_bytes = max_queue_bytes
        self._max_batch_records = max_batch_records
        self._max_batch_bytes = max_batch_bytes
        self._batch_delay = batch_delay
        self._max_backoff = max_backoff
        self._on_loss = on_loss

        self._lock = threading.Condition()
        self._queue = deque()  # (seq, size, record)
        self._held_bytes = 0
        self._ready = []  # batches waiting to be (re)sent, oldest (lowest first_seq) first
        self._in_flight = []  # batches being exported
        self._max_concurrent = max_concurrent_exports
        self._seq = 0  # last sequence number given
        self._closed = False
        self._stopping = False
        self._abandoned = False
        self._failures = 0  # consecutive retryable failures
        self._backoff_until = 0.0
        self._flush_requested = 0
        self._oldest_at = None

        self.tracked = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.invalid = 0
        self.retries = 0
        self.last_error = None
        self._loss_reported = (0, 0, 0)
        self._loss_logged_at = 0.0

        self._threads = [
            threading.Thread(target=self._run, name=f"growth-sdk-delivery-{i}", daemon=True)
            for i in range(max_concurrent_exports)
        ]
        for thread in self._threads:
            thread.start()

    # --- app side -------------------------------------------------------------------

    def count_tracked(self, invalid: bool = False) -> None:
        with self._lock:
            self.tracked += 1
            if invalid:
                self.invalid += 1

    def on_emit(self, log_record) -> None:
        size = estimate_size(log_record)
        with self._lock:
            if self._closed or self._held_bytes + size > self._max_queue_bytes:
                self.dropped += 1
                return
            self._seq += 1
            self._queue.append((self._seq, size, log_record))
            self._held_bytes += size
            if self._oldest_at is None:
                self._oldest_at = time.monotonic()
            if len(self._queue) == 1 or len(self._queue) >= self._max_batch_records:
                self._lock.notify_all()

    # OTel SDK API (newer SDKs call on_emit; older ones emit)
    def emit(self, log_data) -> None:
        self.on_emit(log_data)

    def report(self) -> DeliveryReport:
        with self._lock:
            return self._report()

    def _report(self) -> DeliveryReport:
        resolved = self.delivered + self.failed + self.dropped + self.invalid
        return DeliveryReport(
            tracked=self.tracked,
            delivered=self.delivered,
            failed=self.failed,
            dropped=self.dropped,
            invalid=self.invalid,
            pending=max(self.tracked - resolved, 0),
            retries=self.retries,
            last_error=self.last_error,
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Waits until every record emitted before the call is resolved (delivered or
        given up); False on timeout."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        with self._lock:
            target = self._seq
            self._flush_requested = max(self._flush_requested, target)
            self._lock.notify_all()
            while self._resolved_upto() < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._abandoned:
                    return False
                self._lock.wait(left)
            return True

    def shutdown(self, timeout_millis: int = 30000) -> bool:
        """Sends what is left, stops, and says whether everything tracked arrived.
        Records still unsent at the deadline count as failed."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        with self._lock:
            if self._stopping:
                return self._report().complete
            self._closed = True
            self._stopping = True
            target = self._seq
            self._flush_requested = target
            self._lock.notify_all()
            while self._resolved_upto() < target and time.monotonic() < deadline:
                self._lock.wait(max(deadline - time.monotonic(), 0.0))
            if self._resolved_upto() < target:
                left = sum(len(b.records) for b in self._ready + self._in_flight) + len(self._queue)
                self._abandoned = True
                self._in_flight.clear()
                self._ready.clear()
                self._queue.clear()
                self.failed += left
                cause = f"; last export error: {self.last_error}" if self.last_error else ""
                self.last_error = f"shutdown deadline reached before the events were acknowledged{cause}"
            self._lock.notify_all()
        joined_by = time.monotonic() + 1.0
        for thread in self._threads:
            thread.join(timeout=max(joined_by - time.monotonic(), 0.0))
        self._check_losses(final=True)
        try:
            self._transport.close()
        except Exception:
            pass
        return self.report().complete

    # --- sender thread ---------------------------------------------------------------

    def _resolved_upto(self) -> int:
        """Every record with a sequence number up to this one is resolved."""
        lowest = [batch.first_seq for batch in self._ready]
        lowest.extend(batch.first_seq for batch in self._in_flight)
        if self._queue:
            lowest.append(self._queue[0][0])
        return min(lowest) - 1 if lowest else self._seq

    def _cut(self) -> Optional[_Batch]:
        records, size, first, last = [], 0, None, None
        while self._queue and len(records) < self._max_batch_records:
            seq, record_size, record = self._queue[0]
            if records and size + record_size > self._max_batch_bytes:
                break
            self._queue.popleft()
            records.append(record)
            size += record_size
            first = seq if first is None else first
            last = seq
        self._oldest_at = time.monotonic() if self._queue else None
        return _Batch(records, size, first, last) if records else None

    def _due(self, now: float) -> bool:
        if not self._queue:
            return False
        return (
            len(self._queue) >= self._max_batch_records
            or self._stopping
            or self._flush_requested >= self._queue[0][0]
            or (self._oldest_at is not None and now - self._oldest_at >= self._batch_delay)
        )

    def _next_batch(self, now: float) -> Optional[_Batch]:
        """The batch this thread should export now, if any (the lock is held)."""
        slots = self._max_concurrent if self._failures == 0 else 1
        if len(self._in_flight) >= slots or now < self._backoff_until:
            return None
        if self._ready:
            return self._ready.pop(0)
        if self._due(now):
            return self._cut()
        return None

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._abandoned or (
                        self._stopping and not self._queue and not self._ready and not self._in_flight
                    ):
                        self._lock.notify_all()
                        return
                    now = time.monotonic()
                    batch = self._next_batch(now)
                    if batch is not None:
                        self._in_flight.append(batch)
                        break
                    waits = [1.0]
                    if self._backoff_until > now:
                        waits.append(self._backoff_until - now)
                    elif self._oldest_at is not None:
                        waits.append(self._oldest_at + self._batch_delay - now)
                    self._lock.wait(max(min(waits), 0.001))
            self._check_losses()
            outcome = self._export(batch)
            with self._lock:
                if self._abandoned:  # shutdown counted it as failed already
                    self._lock.notify_all()
                    return
                self._in_flight.remove(batch)
                if outcome.kind == "retry":
                    self.retries += 1
                    self.last_error = outcome.error
                    self._failures += 1
                    wait = outcome.retry_after
                    if wait is None:
                        wait = min(0.1 * 2 ** min(self._failures - 1, 16), self._max_backoff)
                        wait *= random.uniform(0.8, 1.2)
                    self._backoff_until = max(self._backoff_until, time.monotonic() + wait)
                    # Back in line by age, so the oldest events go first.
                    at = next((i for i, b in enumerate(self._ready) if b.first_seq > batch.first_seq), len(self._ready))
                    self._ready.insert(at, batch)
                else:
                    self._failures = 0
                    n = len(batch.records)
                    if outcome.kind == "accepted":
                        rejected = min(outcome.rejected, n)
                        self.delivered += n - rejected
                        if rejected:
                            self.failed += rejected
                            self.last_error = f"the collector rejected {rejected} records: {outcome.error}"
                    else:
                        self.failed += n
                        self.last_error = outcome.error
                    self._held_bytes -= batch.size
                self._lock.notify_all()

    def _export(self, batch: _Batch) -> Outcome:
        try:
            return self._transport.export(self._encode(batch.records))
        except Exception as error:  # a bug or an odd library error: retry, never crash
            return Outcome("retry", f"export raised {type(error).__name__}: {error}")

    def _check_losses(self, final: bool = False) -> None:
        with self._lock:
            lost = (self.dropped, self.failed, self.invalid)
            before = self._loss_reported
            report = self._report()
            now = time.monotonic()
            if lost == before or (not final and now - self._loss_logged_at < LOSS_LOG_INTERVAL):
                return
            self._loss_reported = lost
            self._loss_logged_at = now
        loss = {
            "dropped": lost[0] - before[0],
            "failed": lost[1] - before[1],
            "invalid": lost[2] - before[2],
            "report": report,
        }
        _log.warning(
            "growth-sdk lost events: dropped %d, failed %d, invalid %d (%s; last error: %s)",
            loss["dropped"], loss["failed"], loss["invalid"], report, report.last_error,
        )
        if self._on_loss is not None:
            try:
                self._on_loss(loss)
            except Exception:
                pass
