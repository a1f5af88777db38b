//! What the fault-injection tests share: the retrying load and the checks.

#![allow(dead_code)]

pub mod load;

use std::time::Duration;

use growth_e2e::{Collector, eventually};

/// Asserts the collector's own counters agree with each other once it has settled:
/// every event it took (spooled, or found in its spool at start-up) was stored or
/// dead-lettered, and its spool holds none.
pub async fn assert_counters_agree(collector: &Collector) {
    let m = collector.metrics().await;
    let taken = m.value("growth_collector_events_spooled_total")
        + m.value("growth_collector_spool_recovered_rows_total");
    let done = m.value("growth_collector_events_stored_total")
        + m.value("growth_collector_rows_dead_lettered_total");
    assert_eq!(taken, done, "events taken vs stored + dead-lettered");
    assert_eq!(m.value("growth_collector_spool_rows"), 0.0);
}

/// Waits until the collector's spool is empty and returns its metrics' `name`.
pub async fn metric_after_settling(collector: &Collector, name: &str) -> f64 {
    collector.settled().await;
    eventually(name, Duration::from_secs(5), || async {
        Some(collector.metrics().await.value(name))
    })
    .await
}
