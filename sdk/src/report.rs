//! [`DeliveryReport`]: what happened to every tracked event, and the counters
//! behind it, shared by the app's threads and the delivery thread.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to the events tracked so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Events handed to `track`, valid or not.
    pub tracked: u64,
    /// Events the collector acknowledged. (An OTLP partial success, where the
    /// collector acknowledges a request but rejects some records, is not visible
    /// through the OTLP exporter and counts here.)
    pub delivered: u64,
    /// Events given up on: refused by the collector for good (a bad request, a
    /// missing token, records rejected one by one in a partial success), or still
    /// unacknowledged when the shutdown deadline came (an export cut short then
    /// may still have reached the collector). Retryable failures are retried
    /// and counted in `retries`, not here.
    pub failed: u64,
    /// Events dropped because the queue's byte budget (or event bound) was used
    /// up, or because they were tracked after shutdown began.
    pub dropped: u64,
    /// Events refused because their name breaks the contract (empty, too long,
    /// control characters).
    pub invalid: u64,
    /// Events queued or being exported right now (0 after a complete shutdown).
    pub pending: u64,
    /// Attributes left out of otherwise sent events (reserved names such as
    /// `user.id`, over-long keys, more than `MAX_PROPERTIES`).
    pub attributes_dropped: u64,
    /// Export attempts that failed in a retryable way and were retried (an
    /// attempt carries a batch of events; this is not an event count).
    pub retries: u64,
    /// The most recent export error, for the log line.
    pub last_error: Option<String>,
}

impl DeliveryReport {
    /// True when every tracked event was delivered.
    pub fn is_complete(&self) -> bool {
        self.delivered == self.tracked
    }

    /// Events known to be lost: failed, dropped or invalid (pending not included).
    pub fn lost(&self) -> u64 {
        self.failed + self.dropped + self.invalid
    }
}

impl fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tracked {}, delivered {}, failed {}, dropped {}, invalid {}, pending {}",
            self.tracked, self.delivered, self.failed, self.dropped, self.invalid, self.pending
        )
    }
}

/// New losses, handed to the callback set with
/// [`TrackerBuilder::on_loss`](crate::TrackerBuilder::on_loss).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// Events dropped since the previous notice (byte budget used up, or tracked
    /// after shutdown).
    pub dropped: u64,
    /// Events given up on since the previous notice.
    pub failed: u64,
    /// Events refused for an invalid name since the previous notice.
    pub invalid: u64,
    /// Every count so far.
    pub report: DeliveryReport,
}

/// The counters shared by the app's threads and the delivery thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    tracked: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    invalid: AtomicU64,
    attributes_dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn tracked(&self) {
        self.tracked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attributes_dropped(&self, n: u64) {
        if n > 0 {
            self.attributes_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, n: usize, error: String) {
        self.failed.fetch_add(n as u64, Ordering::Relaxed);
        self.set_last_error(error);
    }

    pub(crate) fn retried(&self, error: String) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.set_last_error(error);
    }

    /// The most recent export error, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }

    fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    /// Events lost so far (failed, dropped, invalid), read without a snapshot.
    pub(crate) fn lost(&self) -> (u64, u64, u64) {
        (
            self.dropped.load(Ordering::Acquire),
            self.failed.load(Ordering::Acquire),
            self.invalid.load(Ordering::Acquire),
        )
    }

    /// A snapshot. Outcomes are read before `tracked` (which is always counted
    /// first), so `pending` never comes out negative.
    pub(crate) fn snapshot(&self) -> DeliveryReport {
        let delivered = self.delivered.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        let dropped = self.dropped.load(Ordering::Acquire);
        let invalid = self.invalid.load(Ordering::Acquire);
        let tracked = self.tracked.load(Ordering::Acquire);
        DeliveryReport {
            tracked,
            delivered,
            failed,
            dropped,
            invalid,
            pending: tracked.saturating_sub(delivered + failed + dropped + invalid),
            attributes_dropped: self.attributes_dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|last| last.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_derives_pending() {
        let counters = Counters::default();
        for _ in 0..5 {
            counters.tracked();
        }
        counters.delivered(2);
        counters.dropped();
        counters.invalid();
        let report = counters.snapshot();
        assert_eq!(
            (
                report.tracked,
                report.delivered,
                report.dropped,
                report.invalid,
                report.pending
            ),
            (5, 2, 1, 1, 1)
        );
        assert!(!report.is_complete());
        counters.failed(1, "boom".into());
        let report = counters.snapshot();
        assert_eq!((report.failed, report.pending, report.lost()), (1, 0, 3));
        assert_eq!(report.last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn display_lists_every_count() {
        let report = DeliveryReport {
            tracked: 3,
            delivered: 1,
            failed: 1,
            dropped: 1,
            ..Default::default()
        };
        assert_eq!(
            report.to_string(),
            "tracked 3, delivered 1, failed 1, dropped 1, invalid 0, pending 0"
        );
    }
}
