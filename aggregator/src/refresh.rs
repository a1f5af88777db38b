//! The refresh loop and what it tells operators: how long the last refresh took, how
//! many failed, and whether the metrics are fresh enough to be served (`/readyz`).
//!
//! A failed refresh keeps the previous snapshot in place (its timestamp shows its
//! age); `/readyz` turns 503 once the last good refresh is older than
//! `--ready-max-intervals` refresh intervals, so an orchestrator stops routing to an
//! aggregator that can no longer reach ClickHouse while `/healthz` (the process is
//! alive) stays 200.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::config::Config;
use crate::snapshot::{SnapshotCache, compute};
use crate::source::MetricsSource;

/// Refresh outcomes, shared between the loop and the HTTP handlers.
#[derive(Clone, Default)]
pub struct RefreshHealth(Arc<HealthInner>);

#[derive(Default)]
struct HealthInner {
    errors: AtomicU64,
    /// Duration of the last refresh, good or failed, in microseconds.
    last_duration_micros: AtomicU64,
    last_good: Mutex<Option<Instant>>,
}

impl RefreshHealth {
    /// Refreshes that failed since start.
    pub fn errors_total(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// How long the last refresh took (0 before the first).
    pub fn last_duration(&self) -> Duration {
        Duration::from_micros(self.0.last_duration_micros.load(Ordering::Relaxed))
    }

    /// Time since the last good refresh; `None` before the first.
    pub fn since_last_good(&self) -> Option<Duration> {
        let guard = self.0.last_good.lock().unwrap_or_else(|p| p.into_inner());
        guard.map(|t| t.elapsed())
    }

    /// Ready when a good refresh happened within `max_age`.
    pub fn is_ready(&self, max_age: Duration) -> bool {
        self.since_last_good().is_some_and(|age| age <= max_age)
    }

    fn record(&self, took: Duration, ok: bool) {
        self.0
            .last_duration_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        if ok {
            let mut guard = self.0.last_good.lock().unwrap_or_else(|p| p.into_inner());
            *guard = Some(Instant::now());
        } else {
            self.0.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Computes one snapshot and publishes it; on failure keeps the previous one.
pub async fn refresh_once(
    source: &MetricsSource,
    config: &Config,
    cache: &SnapshotCache,
    health: &RefreshHealth,
) {
    let started = Instant::now();
    // ClickHouse stops each query at the timeout; this bounds the whole refresh too.
    let result = tokio::time::timeout(
        config.query_timeout,
        compute(source, &config.definitions, Utc::now()),
    )
    .await;
    let took = started.elapsed();
    match result {
        Ok(Ok(snapshot)) => {
            tracing::debug!(
                apps = snapshot.apps.len(),
                elapsed_ms = took.as_millis() as u64,
                "refreshed"
            );
            cache.publish(snapshot);
            health.record(took, true);
        }
        Ok(Err(e)) => {
            health.record(took, false);
            tracing::warn!(error = %e, "refresh failed; serving the previous metrics");
        }
        Err(_) => {
            health.record(took, false);
            tracing::warn!(timeout = ?config.query_timeout, "refresh timed out; serving the previous metrics");
        }
    }
}

/// Refreshes every `--refresh-interval`, forever (the caller aborts the task).
pub async fn refresh_loop(
    source: MetricsSource,
    config: Arc<Config>,
    cache: SnapshotCache,
    health: RefreshHealth,
) {
    let mut ticker = tokio::time::interval(config.refresh_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and `serve` has just refreshed.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        refresh_once(&source, &config, &cache, &health).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_last_good_refresh() {
        let health = RefreshHealth::default();
        assert!(
            !health.is_ready(Duration::from_secs(60)),
            "not ready before a refresh"
        );
        health.record(Duration::from_millis(5), false);
        assert_eq!(health.errors_total(), 1);
        assert!(!health.is_ready(Duration::from_secs(60)));
        health.record(Duration::from_millis(7), true);
        assert!(health.is_ready(Duration::from_secs(60)));
        assert!(!health.is_ready(Duration::ZERO));
        assert_eq!(health.last_duration(), Duration::from_millis(7));
        assert_eq!(health.errors_total(), 1);
    }
}
