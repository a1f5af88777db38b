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

One sender thread exports batches in order, so a record is resolved only after
every record before it.
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
    last_seq: int
    not_before: float = 0.0
    attempts: int = 0


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
        on_loss: Optional[Callable[[dict], None]] = None,
    ):
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
        self._ready = deque()  # batches cut, oldest first (a failed one goes back in front)
        self._seq = 0  # last sequence number given
        self._resolved = 0  # every record with seq <= this is resolved
        self._closed = False
        self._stopping = False
        self._abandoned = False
        self._failures = 0
        self._flush_requested = 0
        self._oldest_at = None
        self._in_flight = 0

        self.tracked = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.invalid = 0
        self.retries = 0
        self.last_error = None
        self._loss_reported = (0, 0, 0)
        self._loss_logged_at = 0.0

        self._thread = threading.Thread(target=self._run, name="growth-sdk-delivery", daemon=True)
        self._thread.start()

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
            while self._resolved < target:
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
            while self._resolved < target and time.monotonic() < deadline:
                self._lock.wait(max(deadline - time.monotonic(), 0.0))
            if self._resolved < target:
                left = sum(len(b.records) for b in self._ready) + len(self._queue)
                left += self._in_flight
                self._abandoned = True
                self._ready.clear()
                self._queue.clear()
                self.failed += left
                cause = f"; last export error: {self.last_error}" if self.last_error else ""
                self.last_error = f"shutdown deadline reached before the events were acknowledged{cause}"
            self._lock.notify_all()
        self._thread.join(timeout=1.0)
        self._check_losses(final=True)
        try:
            self._transport.close()
        except Exception:
            pass
        return self.report().complete

    # --- sender thread ---------------------------------------------------------------

    def _cut(self) -> Optional[_Batch]:
        records, size, last = [], 0, self._resolved
        while self._queue and len(records) < self._max_batch_records:
            seq, record_size, record = self._queue[0]
            if records and size + record_size > self._max_batch_bytes:
                break
            self._queue.popleft()
            records.append(record)
            size += record_size
            last = seq
        self._oldest_at = time.monotonic() if self._queue else None
        return _Batch(records, size, last) if records else None

    def _due(self, now: float) -> bool:
        if not self._queue:
            return False
        return (
            len(self._queue) >= self._max_batch_records
            or self._stopping
            or self._flush_requested > self._resolved
            or (self._oldest_at is not None and now - self._oldest_at >= self._batch_delay)
        )

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._abandoned or (self._stopping and not self._queue and not self._ready):
                        self._lock.notify_all()
                        return
                    now = time.monotonic()
                    batch = None
                    if self._ready and self._ready[0].not_before <= now:
                        batch = self._ready.popleft()
                    elif not self._ready and self._due(now):
                        batch = self._cut()
                    if batch is not None:
                        self._in_flight = len(batch.records)
                        break
                    waits = [1.0]
                    if self._ready:
                        waits.append(self._ready[0].not_before - now)
                    elif self._oldest_at is not None:
                        waits.append(self._oldest_at + self._batch_delay - now)
                    self._lock.wait(max(min(waits), 0.001))
            self._check_losses()
            outcome = self._export(batch)
            with self._lock:
                self._in_flight = 0
                if self._abandoned:
                    self._lock.notify_all()
                    return
                if outcome.kind == "retry":
                    self.retries += 1
                    self.last_error = outcome.error
                    self._failures += 1
                    wait = outcome.retry_after
                    if wait is None:
                        wait = min(0.1 * 2 ** min(self._failures - 1, 16), self._max_backoff)
                        wait *= random.uniform(0.8, 1.2)
                    batch.not_before = time.monotonic() + wait
                    self._ready.appendleft(batch)
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
                    self._resolved = batch.last_seq
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
