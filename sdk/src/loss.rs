//! Telling about lost events: a rate-limited warning line (counts only, never a
//! user) and the app's optional callback, both from the delivery thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::report::{Counters, Loss};

/// How often losses are looked for (for the callback); the log line is rarer.
pub(crate) const LOSS_CHECK: Duration = Duration::from_secs(1);
/// Least time between two warning lines about lost events.
const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Called with each new loss, on the delivery thread.
pub(crate) type LossCallback = Arc<dyn Fn(&Loss) + Send + Sync>;

/// Watches the counters for new losses: a warning line (rate-limited, counts
/// only, never a user) and the app's callback.
pub(crate) struct LossWatch {
    pub(crate) reported: (u64, u64, u64),
    pub(crate) logged: (u64, u64, u64),
    pub(crate) last_log: Option<Instant>,
    pub(crate) callback: Option<LossCallback>,
}

impl LossWatch {
    pub(crate) fn check(&mut self, counters: &Counters, now: Instant, last_call: bool) {
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
