//! When a failed export may be sent again.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff with jitter; the collector's own delay when it gives one.
pub(crate) struct Backoff {
    pub(crate) failures: u32,
    pub(crate) until: Option<Instant>,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    pub(crate) fn healthy(&self) -> bool {
        self.failures == 0
    }

    pub(crate) fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
    }

    /// Books a failure; returns how long the failed request must wait.
    pub(crate) fn failed(&mut self, retry_after: Option<Duration>, now: Instant) -> Duration {
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
