"""Tracker: the object an app keeps. `track` never raises and never blocks on
the network; `flush` and `shutdown` are where delivery is waited for and told."""

import logging
import time
from typing import Any, Mapping, Optional

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource

from . import config as config_module
from .hashing import UserHasher
from .processor import DeliveryReport, GrowthBatchProcessor
from .transport import make_transport

_log = logging.getLogger("growth_sdk")

# The event contract (growth-schema's attributes.rs and limits.rs).
EVENT_NAME = "event.name"
USER_HASH = "user.hash"
USER_ID = "user.id"
SOURCE = "source"
USER_HASH_PREVIOUS = "user.hash.previous"
RESERVED = {EVENT_NAME, USER_HASH, USER_ID, SOURCE, USER_HASH_PREVIOUS}
IDENTIFY_EVENT = "identify"
ANONYMOUS_HASH = "anonymous.hash"
MERGE_EVENT = "merge"
MERGED_HASH = "merged.hash"
MAX_EVENT_NAME_BYTES = 128
MAX_SOURCE_BYTES = 64
MAX_PROPERTIES = 64
MAX_PROPERTY_KEY_BYTES = 128
MAX_PROPERTY_VALUE_BYTES = 1024

_SCALARS = (str, bool, int, float, bytes)


class UndeliveredError(Exception):
    """Not every tracked event was delivered; `.report` says what happened."""

    def __init__(self, report: DeliveryReport):
        super().__init__(f"{report.tracked - report.delivered} of {report.tracked} tracked events not delivered ({report}); last error: {report.last_error}")
        self.report = report


def _valid_name(name: Any, limit: int) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name.encode("utf-8")) <= limit
        and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name)
    )


def _truncate(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def _value(value: Any, depth: int = 0):
    """An OTel attribute value: scalars, and homogeneous lists of them."""
    if isinstance(value, str):
        return _truncate(value, MAX_PROPERTY_VALUE_BYTES)
    if isinstance(value, bytes):
        return value[:MAX_PROPERTY_VALUE_BYTES]
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and depth == 0:
        items = [_value(v, 1) for v in value[:256]]
        return tuple(v for v in items if v is not None)
    if value is None:
        return None
    return _truncate(str(value), MAX_PROPERTY_VALUE_BYTES)


class Tracker:
    """Sends growth events for one app.

    Arguments override the OTEL_* / GROWTH_* environment variables."""

    def __init__(
        self,
        service_name: Optional[str] = None,
        *,
        endpoint: Optional[str] = None,
        protocol: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        compression: Optional[str] = None,
        certificate_file: Optional[str] = None,
        user_hash_key=None,
        user_hash_previous_key=None,
        disabled: Optional[bool] = None,
        env: Optional[Mapping[str, str]] = None,
        export_timeout: Optional[float] = None,
        shutdown_timeout: float = 15.0,
        max_queue_bytes: int = 64 << 20,
        max_batch_records: int = 4096,
        batch_delay: float = 0.5,
        max_backoff: float = 5.0,
        max_concurrent_exports: int = 4,
        on_loss=None,
    ):
        self.config = config_module.read(
            env,
            service_name=service_name,
            endpoint=endpoint,
            protocol=protocol,
            headers=headers,
            compression=compression,
            timeout=export_timeout,
            certificate_file=certificate_file,
            user_hash_key=user_hash_key,
            user_hash_previous_key=user_hash_previous_key,
            disabled=disabled,
        )
        self._hasher = UserHasher(self.config.user_hash_key)
        # A key rotation's overlap (docs/contract.md, "Rotating the key"): every user
        # is also sent hashed with the previous key, so the collector pairs the two.
        previous = self.config.user_hash_previous_key
        self._previous_hasher = UserHasher(previous) if previous else None
        self._shutdown_timeout = shutdown_timeout
        self._lost_at_last_flush = 0
        self._processor = None
        self._logger = None
        if self.config.disabled:
            return
        transport = make_transport(
            self.config.protocol,
            self.config.url,
            self.config.headers,
            self.config.compression,
            self.config.timeout,
            self.config.certificate_file,
            (self.config.client_certificate_file, self.config.client_key_file)
            if self.config.client_certificate_file
            else None,
        )
        self._processor = GrowthBatchProcessor(
            transport,
            max_queue_bytes=max_queue_bytes,
            max_batch_records=max_batch_records,
            batch_delay=batch_delay,
            max_backoff=max_backoff,
            max_concurrent_exports=max_concurrent_exports,
            on_loss=on_loss,
        )
        attributes = dict(self.config.resource_attributes)
        attributes["service.name"] = self.config.service_name
        self._provider = LoggerProvider(resource=Resource.create(attributes))
        self._provider.add_log_record_processor(self._processor)
        self._logger = self._provider.get_logger("growth-sdk", "0.1.0")

    @property
    def service_name(self) -> str:
        return self.config.service_name

    @property
    def keyed_hashing(self) -> bool:
        return self._hasher.is_keyed

    @property
    def disabled(self) -> bool:
        return self._processor is None

    def hash_user(self, user_id: str) -> str:
        return self._hasher.hash(user_id)

    def track(
        self,
        event: str,
        user_id: Optional[str] = None,
        attributes: Optional[Mapping[str, Any]] = None,
        *,
        source: Optional[str] = None,
        timestamp: Optional[float] = None,
        user_hash: Optional[str] = None,
    ) -> None:
        """Records that `user_id` (or nobody) did `event` now (or at `timestamp`,
        seconds since the epoch). Never raises, never waits on the network."""
        processor = self._processor
        if processor is None:
            return
        try:
            if not _valid_name(event, MAX_EVENT_NAME_BYTES):
                processor.count_tracked(invalid=True)
                return
            attrs = {EVENT_NAME: event}
            if user_id:
                attrs[USER_HASH] = self._hasher.hash(str(user_id))
                if self._previous_hasher is not None:
                    attrs[USER_HASH_PREVIOUS] = self._previous_hasher.hash(str(user_id))
            elif user_hash:
                attrs[USER_HASH] = str(user_hash)
            kept = 0
            for key, value in (attributes or {}).items():
                if key == SOURCE and source is None and isinstance(value, str):
                    source = value
                    continue
                if not isinstance(key, str) or key in RESERVED or not key or len(key.encode("utf-8")) > MAX_PROPERTY_KEY_BYTES:
                    continue
                value = _value(value)
                if value is None or kept >= MAX_PROPERTIES:
                    continue
                attrs[key] = value
                kept += 1
            if source is not None:
                source = _truncate(str(source), MAX_SOURCE_BYTES)
                if _valid_name(source, MAX_SOURCE_BYTES):
                    attrs[SOURCE] = source
            now = time.time_ns()
            at = int(timestamp * 1e9) if timestamp is not None else now
            processor.count_tracked()
            self._logger.emit(timestamp=at, observed_timestamp=now, attributes=attrs, event_name=event)
        except Exception:  # telemetry must never break the app
            try:
                processor.count_tracked(invalid=True)
            except Exception:
                pass
            _log.debug("growth-sdk: an event could not be tracked", exc_info=True)

    def identify(self, anonymous_id: str, user_id: str) -> None:
        """The visitor known as `anonymous_id` is the user `user_id` (at sign-up);
        both are hashed here."""
        try:
            attrs = {ANONYMOUS_HASH: self._hasher.hash(anonymous_id)} if anonymous_id else {}
        except Exception:
            attrs = {}
        self.track(IDENTIFY_EVENT, user_id, attrs)

    def merge(self, user_id: str, other_user_id: str) -> None:
        """The known user `other_user_id` is the same person as `user_id` (two
        accounts merged): a `merge` event of `user_id` with the other id's hash in
        `merged.hash`; both are hashed here."""
        if not other_user_id:
            return
        try:
            attrs = {MERGED_HASH: self._hasher.hash(other_user_id)}
        except Exception:
            return
        self.track(MERGE_EVENT, user_id, attrs)

    # The finance app's events (names and properties the dashboards count).
    def expense_logged(self, user_id: str, amount: float, category: str, source: str = "form") -> None:
        self.track("expense_logged", user_id, {"amount": amount, "category": category}, source=source)

    def expense_edited(self, user_id: str, expense_id: str) -> None:
        self.track("expense_edited", user_id, {"expense_id": expense_id})

    def report_requested(self, user_id: str, report_type: str) -> None:
        self.track("report_requested", user_id, {"report_type": report_type})

    def pwa_installed(self, user_id: str) -> None:
        self.track("pwa_installed", user_id, source="pwa")

    def install_pwa(self, user_id: str) -> None:
        """The original app's name for pwa_installed: sent as pwa_installed."""
        self.pwa_installed(user_id)

    def challenge_started(self, user_id: str, challenge_id: str) -> None:
        self.track("challenge_started", user_id, {"challenge_id": challenge_id})

    def report(self) -> DeliveryReport:
        if self._processor is None:
            return DeliveryReport()
        return self._processor.report()

    def flush(self, timeout: Optional[float] = None) -> DeliveryReport:
        """Waits until everything tracked so far is resolved. Raises UndeliveredError
        when the wait timed out or events were lost since the previous flush (each
        loss is reported once)."""
        if self._processor is None:
            return DeliveryReport()
        timeout = self._shutdown_timeout if timeout is None else timeout
        confirmed = self._processor.force_flush(int(timeout * 1000))
        report = self.report()
        before, self._lost_at_last_flush = self._lost_at_last_flush, report.lost
        if confirmed and report.lost == before:
            return report
        raise UndeliveredError(report)

    def shutdown(self, timeout: Optional[float] = None) -> DeliveryReport:
        """Sends what is left and stops. Raises UndeliveredError unless every
        tracked event was delivered; events unsent at the deadline count as failed."""
        if self._processor is None:
            return DeliveryReport()
        timeout = self._shutdown_timeout if timeout is None else timeout
        self._processor.shutdown(int(timeout * 1000))
        report = self.report()
        if report.complete:
            return report
        raise UndeliveredError(report)
