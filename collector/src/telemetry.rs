//! The collector's own counters, exposed on the admin `/metrics` endpoint.
//!
//! Every record that arrives ends up in exactly one of: spooled
//! (`events_spooled_total`: acknowledged, on disk), refused before the spool
//! (`events_refused_total`: the sender was told to retry), rejected
//! (`records_rejected_total{reason}`) or not a growth event
//! (`records_not_growth_total`); `records_received_total` counts them all. Every
//! spooled event (and every one found in the spool at start-up,
//! `spool_recovered_rows_total`) ends up stored (`events_stored_total`) or
//! dead-lettered (`rows_dead_lettered_total`), or still waits (`spool_rows`).

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::map::{MappedRequest, RejectReason};

/// Prefix of every metric name.
pub const PREFIX: &str = "growth_collector";

/// The `Content-Type` of [`Telemetry::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: RejectReason,
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabel {
    reason: Refusal,
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackpressureLabel {
    reason: &'static str,
}

/// Why a request was turned away before the spool (the `reason` label of
/// `backpressure_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// The spool is at `--spool-max-bytes`.
    SpoolFull,
    /// Bytes in flight are at `--max-inflight-bytes`.
    Memory,
    /// Requests in flight are at `--max-concurrent-requests`.
    Concurrency,
    /// The spool could not write (disk error) or is closed (shutting down).
    SpoolUnavailable,
    /// Open connections are at `--max-connections`: a new one was closed at once.
    Connections,
}

impl Backpressure {
    /// Every reason, for zero-valued series.
    pub const ALL: [Backpressure; 5] = [
        Backpressure::SpoolFull,
        Backpressure::Memory,
        Backpressure::Concurrency,
        Backpressure::SpoolUnavailable,
        Backpressure::Connections,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Backpressure::SpoolFull => "spool_full",
            Backpressure::Memory => "memory",
            Backpressure::Concurrency => "concurrency",
            Backpressure::SpoolUnavailable => "spool_unavailable",
            Backpressure::Connections => "connections",
        }
    }
}

/// Why a request was refused as a whole (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// No token, or an unknown one.
    Unauthenticated,
    /// A token that may write none of the request's apps.
    Forbidden,
    /// A body that does not decode, or over the decoding limits.
    Undecodable,
    /// A body over `--max-request-bytes`.
    TooLarge,
    /// A content type or encoding OTLP/HTTP does not define.
    UnsupportedMedia,
    /// A body that did not arrive within `--request-read-timeout`.
    ReadTimeout,
}

impl Refusal {
    /// Every refusal, for pre-creating metric series.
    pub const ALL: [Refusal; 6] = [
        Refusal::Unauthenticated,
        Refusal::Forbidden,
        Refusal::Undecodable,
        Refusal::TooLarge,
        Refusal::UnsupportedMedia,
        Refusal::ReadTimeout,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::Undecodable => "undecodable",
            Refusal::TooLarge => "too_large",
            Refusal::UnsupportedMedia => "unsupported_media",
            Refusal::ReadTimeout => "read_timeout",
        }
    }
}

/// Whether retrying a failed insert can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The server is away, slow, busy or short of memory: retry the same insert later.
    Transient,
    /// The rows themselves are refused (types, constraints, a poison row): retrying
    /// the same rows fails the same way.
    Permanent,
}

impl ErrorClass {
    /// The label value of the `class` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// The spool's size as `/metrics` reports it: bytes on disk plus bytes on their way
/// there ([`crate::spool`] implements it).
pub trait SpoolSize: std::fmt::Debug + Send + Sync {
    /// Bytes used.
    fn used(&self) -> u64;
}

/// The counters; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    records_received: Counter,
    records_rejected: Family<ReasonLabel, Counter>,
    records_not_growth: Counter,
    properties_dropped: Counter,
    values_truncated: Counter,
    identifying_redacted: Counter,
    requests_refused: Family<RefusalLabel, Counter>,
    requests_spooled: Counter,
    requests_deduplicated: Counter,
    events_spooled: Counter,
    events_refused: Counter,
    events_stored: Counter,
    batches: Counter,
    insert_errors: Family<ClassLabel, Counter>,
    insert_retries: Counter,
    insert_duration: Histogram,
    insert_rows: Histogram,
    rows_dead_lettered: Counter,
    backpressure: Family<BackpressureLabel, Counter>,
    inflight_bytes: Gauge,
    spool_bytes: Gauge,
    spool_segments: Gauge,
    spool_rows: Gauge,
    spool_oldest_age: Gauge<f64, AtomicU64>,
    spool_recovered_rows: Counter,
    spool_tail_cuts: Counter,
    spool_bytes_cut: Counter,
    spool_unreadable: Counter,
    usage: OnceLock<Arc<dyn SpoolSize>>,
    oldest: Mutex<Option<std::time::Instant>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric (label values start at zero, so each series exists).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let t = Self {
            registry: Registry::default(),
            records_received: Counter::default(),
            records_rejected: Family::default(),
            records_not_growth: Counter::default(),
            properties_dropped: Counter::default(),
            values_truncated: Counter::default(),
            identifying_redacted: Counter::default(),
            requests_refused: Family::default(),
            requests_spooled: Counter::default(),
            requests_deduplicated: Counter::default(),
            events_spooled: Counter::default(),
            events_refused: Counter::default(),
            events_stored: Counter::default(),
            batches: Counter::default(),
            insert_errors: Family::default(),
            insert_retries: Counter::default(),
            insert_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            insert_rows: Histogram::new(exponential_buckets(16.0, 4.0, 9)),
            rows_dead_lettered: Counter::default(),
            backpressure: Family::default(),
            inflight_bytes: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_segments: Gauge::default(),
            spool_rows: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            spool_recovered_rows: Counter::default(),
            spool_tail_cuts: Counter::default(),
            spool_bytes_cut: Counter::default(),
            spool_unreadable: Counter::default(),
            usage: OnceLock::new(),
            oldest: Mutex::new(None),
        };
        let r = &mut registry;
        r.register(
            "records_received",
            "OTLP log records received, growth events or not",
            t.records_received.clone(),
        );
        r.register(
            "records_rejected",
            "Log records that named an event but broke the event contract, by reason; not stored",
            t.records_rejected.clone(),
        );
        r.register(
            "records_not_growth",
            "Log records without an event name: not growth events, not stored",
            t.records_not_growth.clone(),
        );
        r.register(
            "properties_dropped",
            "Event properties dropped for exceeding the per-event limit or the key length limit",
            t.properties_dropped.clone(),
        );
        r.register(
            "values_truncated",
            "Event property values cut to the length limit",
            t.values_truncated.clone(),
        );
        r.register(
            "identifying_redacted",
            "Values of attributes that identify a person (user.email, client.address, ...) hashed or dropped, nested ones included",
            t.identifying_redacted.clone(),
        );
        r.register(
            "requests_refused",
            "Requests refused as a whole, by reason (unauthenticated, forbidden, undecodable, too_large, unsupported_media, read_timeout)",
            t.requests_refused.clone(),
        );
        r.register(
            "requests_spooled",
            "Requests whose events were written to the spool and acknowledged",
            t.requests_spooled.clone(),
        );
        r.register(
            "requests_deduplicated",
            "Requests recognised as a sender's retry of one already spooled: acknowledged, not stored again",
            t.requests_deduplicated.clone(),
        );
        r.register(
            "events_spooled",
            "Growth events written to the spool and acknowledged to their sender",
            t.events_spooled.clone(),
        );
        r.register("events_refused", "Growth events of requests turned away before the spool (backpressure); their senders were told to retry", t.events_refused.clone());
        r.register(
            "events_stored",
            "Growth events ClickHouse confirmed (replays of a batch it already had included)",
            t.events_stored.clone(),
        );
        r.register("batches", "Inserts ClickHouse confirmed", t.batches.clone());
        r.register("insert_errors", "Failed ClickHouse inserts by class: transient ones are retried, permanent ones split the batch", t.insert_errors.clone());
        r.register(
            "insert_retries",
            "Retries of inserts after a transient failure",
            t.insert_retries.clone(),
        );
        r.register(
            "insert_duration_seconds",
            "Time of successful ClickHouse inserts",
            t.insert_duration.clone(),
        );
        r.register(
            "insert_rows",
            "Rows per successful ClickHouse insert",
            t.insert_rows.clone(),
        );
        r.register(
            "rows_dead_lettered",
            "Rows ClickHouse refused for good, written to the dead-letter file",
            t.rows_dead_lettered.clone(),
        );
        r.register(
            "backpressure",
            "Requests turned away with a retry delay, by reason",
            t.backpressure.clone(),
        );
        r.register(
            "inflight_bytes",
            "Bytes of requests being mapped and spooled",
            t.inflight_bytes.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in the spool (segment files and writes under way)",
            t.spool_bytes.clone(),
        );
        r.register(
            "spool_segments",
            "Segment files in the spool",
            t.spool_segments.clone(),
        );
        r.register(
            "spool_rows",
            "Growth events in the spool not yet confirmed by ClickHouse",
            t.spool_rows.clone(),
        );
        r.register(
            "spool_oldest_age_seconds",
            "How long the oldest event not yet in ClickHouse has been in the spool",
            t.spool_oldest_age.clone(),
        );
        r.register(
            "spool_recovered_rows",
            "Growth events found in the spool at start-up and replayed",
            t.spool_recovered_rows.clone(),
        );
        r.register(
            "spool_tail_cuts",
            "Torn or corrupt segment tails cut at start-up",
            t.spool_tail_cuts.clone(),
        );
        r.register(
            "spool_bytes_cut",
            "Bytes of torn or corrupt segment tails cut at start-up",
            t.spool_bytes_cut.clone(),
        );
        r.register(
            "spool_unreadable",
            "Batches that could not be read back from the spool (disk failure) and were skipped",
            t.spool_unreadable.clone(),
        );
        for reason in RejectReason::ALL {
            let _ = t.records_rejected.get_or_create(&ReasonLabel { reason });
        }
        for reason in Refusal::ALL {
            let _ = t.requests_refused.get_or_create(&RefusalLabel { reason });
        }
        for class in [ErrorClass::Transient, ErrorClass::Permanent] {
            let _ = t.insert_errors.get_or_create(&ClassLabel {
                class: class.as_str(),
            });
        }
        for reason in Backpressure::ALL {
            let _ = t.backpressure.get_or_create(&BackpressureLabel {
                reason: reason.as_str(),
            });
        }
        Self { registry, ..t }
    }

    /// Counts what mapping one request produced.
    pub fn mapped(&self, mapped: &MappedRequest) {
        self.records_received.inc_by(mapped.received);
        self.records_not_growth.inc_by(mapped.not_growth);
        self.properties_dropped.inc_by(mapped.properties_dropped);
        self.values_truncated.inc_by(mapped.values_truncated);
        self.identifying_redacted
            .inc_by(mapped.identifying_redacted);
        for (reason, n) in &mapped.rejected {
            self.records_rejected
                .get_or_create(&ReasonLabel { reason: *reason })
                .inc_by(*n);
        }
    }

    /// One group commit: `requests` requests with `rows` events are durable;
    /// `duplicates` more were retries of requests already spooled.
    pub fn spooled(&self, requests: u64, rows: u64, duplicates: u64) {
        self.requests_spooled.inc_by(requests);
        self.requests_deduplicated.inc_by(duplicates);
        self.events_spooled.inc_by(rows);
    }

    /// A request was refused as a whole.
    pub fn refused(&self, reason: Refusal) {
        self.requests_refused
            .get_or_create(&RefusalLabel { reason })
            .inc();
    }

    /// A request with `rows` records was turned away with a retry delay.
    pub fn backpressured(&self, reason: Backpressure, rows: u64) {
        self.events_refused.inc_by(rows);
        self.backpressure
            .get_or_create(&BackpressureLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Bytes entering (positive) or leaving (negative) the intake.
    pub fn inflight(&self, bytes: i64) {
        self.inflight_bytes.inc_by(bytes);
    }

    /// An insert of `rows` rows (`bytes` bytes) succeeded after `took`.
    pub fn insert_done(&self, rows: u64, _bytes: usize, took: Duration) {
        self.batches.inc();
        self.events_stored.inc_by(rows);
        self.insert_duration.observe(took.as_secs_f64());
        self.insert_rows.observe(rows as f64);
    }

    /// An insert failed.
    pub fn insert_error(&self, class: ErrorClass) {
        self.insert_errors
            .get_or_create(&ClassLabel {
                class: class.as_str(),
            })
            .inc();
    }

    /// An insert is retried.
    pub fn insert_retried(&self) {
        self.insert_retries.inc();
    }

    /// Rows went to the dead-letter file.
    pub fn dead_lettered(&self, rows: u64) {
        self.rows_dead_lettered.inc_by(rows);
    }

    /// What start-up found in the spool.
    pub fn spool_recovered(&self, rows: u64, segments: u64, _bytes: u64) {
        self.spool_recovered_rows.inc_by(rows);
        self.spool_segments
            .inc_by(i64::try_from(segments).unwrap_or(i64::MAX));
    }

    /// A torn or corrupt tail of `bytes` bytes was cut.
    pub fn spool_tail_cut(&self, bytes: u64) {
        self.spool_tail_cuts.inc();
        self.spool_bytes_cut.inc_by(bytes);
    }

    /// Segments were created (positive) or deleted (negative).
    pub fn spool_segments_changed(&self, delta: i64) {
        self.spool_segments.inc_by(delta);
    }

    /// A batch could not be read back.
    pub fn spool_unreadable(&self) {
        self.spool_unreadable.inc();
    }

    /// Rows in the spool not yet stored, and when the oldest of them was spooled.
    pub fn spool_waiting(&self, rows: u64, oldest: Option<std::time::Instant>) {
        self.spool_rows.set(i64::try_from(rows).unwrap_or(i64::MAX));
        *self.oldest.lock().unwrap_or_else(|p| p.into_inner()) = oldest;
    }

    /// Lets `/metrics` report the spool's size.
    pub fn watch_spool(&self, usage: Arc<dyn SpoolSize>) {
        let _ = self.usage.set(usage);
    }

    /// The OpenMetrics text exposition (served with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        if let Some(usage) = self.usage.get() {
            self.spool_bytes
                .set(i64::try_from(usage.used()).unwrap_or(i64::MAX));
        }
        let oldest = *self.oldest.lock().unwrap_or_else(|p| p.into_inner());
        self.spool_oldest_age
            .set(oldest.map_or(0.0, |at| at.elapsed().as_secs_f64()));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; say so rather than panic if it ever does.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let telemetry = Telemetry::new();
        telemetry.mapped(&MappedRequest {
            received: 5,
            not_growth: 1,
            rejected: vec![(RejectReason::InvalidUserHash, 2)],
            ..Default::default()
        });
        telemetry.spooled(1, 2, 0);
        telemetry.insert_done(2, 100, Duration::from_millis(30));
        telemetry.insert_error(ErrorClass::Transient);
        telemetry.backpressured(Backpressure::SpoolFull, 3);
        let text = telemetry.render();
        for line in [
            "growth_collector_records_received_total 5",
            "growth_collector_records_not_growth_total 1",
            "growth_collector_records_rejected_total{reason=\"invalid_user_hash\"} 2",
            "growth_collector_records_rejected_total{reason=\"invalid_event_name\"} 0",
            "growth_collector_events_spooled_total 2",
            "growth_collector_events_stored_total 2",
            "growth_collector_events_refused_total 3",
            "growth_collector_insert_errors_total{class=\"transient\"} 1",
            "growth_collector_insert_errors_total{class=\"permanent\"} 0",
            "growth_collector_backpressure_total{reason=\"spool_full\"} 1",
            "growth_collector_backpressure_total{reason=\"memory\"} 0",
            "growth_collector_batches_total 1",
            "growth_collector_insert_rows_count 1",
            "growth_collector_spool_rows 0",
            "growth_collector_spool_oldest_age_seconds 0.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
