//! The collector's own counters, exposed on the admin `/metrics` endpoint.
//!
//! Every record that arrives ends up in exactly one of: stored
//! (`events_stored_total`), failed (`events_failed_total`, the sender was told to
//! retry), rejected (`records_rejected_total{reason}`) or not a growth event
//! (`records_not_growth_total`); `records_received_total` counts them all.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::map::{MappedRequest, RejectReason};
use crate::receiver::Refusal;

/// Prefix of every metric name.
pub const PREFIX: &str = "growth_collector";

/// The `Content-Type` of [`Telemetry::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: RejectReason,
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

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
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
    events_stored: Counter,
    events_failed: Counter,
    insert_failures: Counter,
    batches: Counter,
    rows_waiting: Gauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric (rejection reasons start at zero, so each series exists).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let records_received = Counter::default();
        let records_rejected = Family::<ReasonLabel, Counter>::default();
        let records_not_growth = Counter::default();
        let properties_dropped = Counter::default();
        let values_truncated = Counter::default();
        let identifying_redacted = Counter::default();
        let requests_refused = Family::<RefusalLabel, Counter>::default();
        let events_stored = Counter::default();
        let events_failed = Counter::default();
        let insert_failures = Counter::default();
        let batches = Counter::default();
        let rows_waiting = Gauge::default();
        registry.register(
            "records_received",
            "OTLP log records received, growth events or not",
            records_received.clone(),
        );
        registry.register(
            "records_rejected",
            "Log records that named an event but broke the event contract, by reason; not stored",
            records_rejected.clone(),
        );
        registry.register(
            "records_not_growth",
            "Log records without an event name: not growth events, not stored",
            records_not_growth.clone(),
        );
        registry.register(
            "properties_dropped",
            "Event properties dropped for exceeding the per-event limit or the key length limit",
            properties_dropped.clone(),
        );
        registry.register(
            "values_truncated",
            "Event property values cut to the length limit",
            values_truncated.clone(),
        );
        registry.register(
            "identifying_redacted",
            "Values of attributes that identify a person (user.email, client.address, ...) hashed or dropped, nested ones included",
            identifying_redacted.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused as a whole, by reason (unauthenticated, forbidden, undecodable, too_large, unsupported_media, read_timeout)",
            requests_refused.clone(),
        );
        registry.register(
            "events_stored",
            "Growth events written to ClickHouse",
            events_stored.clone(),
        );
        registry.register(
            "events_failed",
            "Growth events whose insert failed after retries; their senders were told to retry",
            events_failed.clone(),
        );
        registry.register(
            "insert_failures",
            "Failed ClickHouse insert attempts (each retry counts)",
            insert_failures.clone(),
        );
        registry.register("batches", "Batches flushed to ClickHouse", batches.clone());
        registry.register(
            "rows_waiting",
            "Growth events received and not yet acknowledged by ClickHouse",
            rows_waiting.clone(),
        );
        for reason in RejectReason::ALL {
            let _ = records_rejected.get_or_create(&ReasonLabel { reason });
        }
        for reason in Refusal::ALL {
            let _ = requests_refused.get_or_create(&RefusalLabel { reason });
        }
        Self {
            registry,
            records_received,
            records_rejected,
            records_not_growth,
            properties_dropped,
            values_truncated,
            identifying_redacted,
            requests_refused,
            events_stored,
            events_failed,
            insert_failures,
            batches,
            rows_waiting,
        }
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

    /// A request was refused as a whole.
    pub fn refused(&self, reason: Refusal) {
        self.requests_refused
            .get_or_create(&RefusalLabel { reason })
            .inc();
    }

    /// Rows handed to the batcher and not yet acknowledged.
    pub fn rows_queued(&self, rows: usize) {
        self.rows_waiting.inc_by(gauge_value(rows));
    }

    /// Rows acknowledged by the batcher, stored or not.
    pub fn rows_done(&self, rows: usize) {
        self.rows_waiting.dec_by(gauge_value(rows));
    }

    /// A batch was flushed; `stored` says whether ClickHouse took it.
    pub fn batch_flushed(&self, rows: usize, stored: bool) {
        self.batches.inc();
        if stored {
            self.events_stored.inc_by(rows as u64);
        } else {
            self.events_failed.inc_by(rows as u64);
        }
    }

    /// An insert attempt failed (it may be retried).
    pub fn insert_failed(&self) {
        self.insert_failures.inc();
    }

    /// The OpenMetrics text exposition (served with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; say so rather than panic if it ever does.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

fn gauge_value(rows: usize) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
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
        telemetry.rows_queued(2);
        telemetry.batch_flushed(2, true);
        telemetry.insert_failed();
        telemetry.rows_done(2);
        let text = telemetry.render();
        for line in [
            "growth_collector_records_received_total 5",
            "growth_collector_records_not_growth_total 1",
            "growth_collector_records_rejected_total{reason=\"invalid_user_hash\"} 2",
            "growth_collector_records_rejected_total{reason=\"invalid_event_name\"} 0",
            "growth_collector_events_stored_total 2",
            "growth_collector_insert_failures_total 1",
            "growth_collector_batches_total 1",
            "growth_collector_rows_waiting 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
