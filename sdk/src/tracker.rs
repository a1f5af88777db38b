//! [`Tracker`]: the handle the app keeps. Tracking is fire-and-forget; flushing
//! and shutting down are where delivery is waited for and reported.

use std::borrow::Cow;
use std::time::SystemTime;

use growth_schema::user_hash::{UserHash, UserHasher};
use opentelemetry_sdk::logs::SdkLogger;

use crate::builder::TrackerBuilder;
use crate::delivery::Delivery;
use crate::error::SdkError;
use crate::event::{AttributeValue, Event};
use crate::record;
use crate::report::DeliveryReport;

/// Sends growth events for one app. `Send + Sync`: share it (e.g. in an `Arc`)
/// across threads and tasks. Dropping it without [`shutdown`](Self::shutdown)
/// still sends what is queued, waiting at most the shutdown timeout.
#[derive(Debug)]
pub struct Tracker {
    logger: SdkLogger,
    hasher: UserHasher,
    delivery: Delivery,
    service_name: String,
}

impl Tracker {
    /// Starts configuring a tracker for the app `service_name` (the resource
    /// attribute `service.name`, the `app` of every metric).
    pub fn builder(service_name: impl Into<String>) -> TrackerBuilder {
        TrackerBuilder::new(service_name)
    }

    pub(crate) fn new(
        logger: SdkLogger,
        hasher: UserHasher,
        delivery: Delivery,
        service_name: String,
    ) -> Self {
        Tracker {
            logger,
            hasher,
            delivery,
            service_name,
        }
    }

    /// Records that `user_id` (or nobody, for an anonymous event) did `event` now.
    /// Never blocks, never panics, never waits on the network; an event that
    /// cannot be queued is counted in [`report`](Self::report).
    ///
    /// ```no_run
    /// # let tracker = growth_sdk::Tracker::builder("finbrain").build().unwrap();
    /// tracker.track("expense_logged", Some("u1"), &[("amount", 12.5.into()), ("source", "form".into())]);
    /// tracker.track("landing_viewed", None, &[]);
    /// ```
    pub fn track(
        &self,
        event: impl Into<Cow<'static, str>>,
        user_id: Option<&str>,
        attributes: &[(&str, AttributeValue)],
    ) {
        let mut event = Event::new(event);
        if let Some(user_id) = user_id {
            event = event.user(user_id);
        }
        for (key, value) in attributes {
            event = event.attr(*key, value.clone());
        }
        self.track_event(event);
    }

    /// Like [`track`](Self::track), for an [`Event`] built step by step
    /// (e.g. with an explicit timestamp).
    pub fn track_event(&self, event: Event) {
        let counters = self.delivery.counters();
        counters.tracked();
        match record::encode(&self.logger, &self.hasher, event, SystemTime::now()) {
            Ok(encoded) => {
                counters.attributes_dropped(encoded.attributes_dropped);
                self.delivery.enqueue(encoded.record);
            }
            Err(record::InvalidEventName) => counters.invalid(),
        }
    }

    /// Sends everything tracked so far and waits (at most the shutdown timeout).
    /// `Err` when an event was lost (failed, dropped, invalid) since the start,
    /// or when the wait timed out; the report is in the error either way.
    /// Blocks the calling thread: in async code call it from `spawn_blocking`.
    pub fn flush(&self) -> Result<DeliveryReport, SdkError> {
        let confirmed = self.delivery.flush();
        let report = self.report();
        if confirmed && report.lost() == 0 {
            Ok(report)
        } else {
            Err(SdkError::Undelivered(report))
        }
    }

    /// The counts so far, without waiting.
    pub fn report(&self) -> DeliveryReport {
        self.delivery.counters().snapshot()
    }

    /// Sends everything queued, stops the delivery thread and reports. `Err`
    /// unless every tracked event was delivered. Waits at most the shutdown
    /// timeout (events still unsent then count as failed).
    pub fn shutdown(mut self) -> Result<DeliveryReport, SdkError> {
        self.delivery.shutdown();
        let report = self.report();
        if report.is_complete() {
            Ok(report)
        } else {
            Err(SdkError::Undelivered(report))
        }
    }

    /// The hash this tracker sends for `user_id` (to join with the app's own data).
    pub fn hash_user(&self, user_id: &str) -> UserHash {
        self.hasher.hash(user_id)
    }

    /// True when users are hashed with an HMAC key; false means plain SHA-256,
    /// which anyone can reverse for guessable ids: set a key in production.
    pub fn keyed_hashing(&self) -> bool {
        self.hasher.is_keyed()
    }

    /// The app this tracker reports for (`service.name`).
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use growth_schema::user_hash::UserHasher;

    use super::*;
    use crate::Protocol;

    /// An address where nothing listens: bound, then released.
    fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    fn tracker_to_nowhere(protocol: Protocol) -> Tracker {
        Tracker::builder("test-app")
            .endpoint(closed_port())
            .protocol(protocol)
            .export_timeout(Duration::from_millis(500))
            .shutdown_timeout(Duration::from_secs(2))
            .batch_delay(Duration::from_millis(20))
            .build()
            .unwrap()
    }

    fn track_some(tracker: &Tracker) {
        tracker.track("expense_logged", Some("u1"), &[("amount", 12.5.into())]);
        tracker.track("landing_viewed", None, &[]);
        tracker.track_event(Event::new(String::from("report_requested")).user("u2"));
    }

    #[test]
    fn hashes_like_the_schema_hasher_keyed_and_unkeyed() {
        for key in [None, Some(b"k3y".to_vec())] {
            let tracker = Tracker::builder("app")
                .endpoint(closed_port())
                .user_hash_key(key.clone())
                .build()
                .unwrap();
            assert_eq!(tracker.keyed_hashing(), key.is_some());
            assert_eq!(tracker.hash_user("u1"), UserHasher::new(key).hash("u1"));
            assert_eq!(tracker.service_name(), "app");
        }
    }

    #[test]
    fn track_outside_tokio_never_panics_or_waits() {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let tracker = tracker_to_nowhere(protocol);
            let started = Instant::now();
            for _ in 0..100 {
                track_some(&tracker);
            }
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "track must not wait"
            );
            assert_eq!(tracker.report().tracked, 300);
        }
    }

    #[test]
    fn track_inside_a_current_thread_runtime_never_panics() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tracker = tracker_to_nowhere(Protocol::Grpc);
            track_some(&tracker);
            tokio::task::yield_now().await;
            track_some(&tracker);
            assert_eq!(tracker.report().tracked, 6);
            // Dropping inside the runtime: bounded, no "cannot drop a runtime" panic.
            drop(tracker);
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn track_inside_a_multi_thread_runtime_never_panics() {
        let tracker = std::sync::Arc::new(tracker_to_nowhere(Protocol::Http));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let tracker = std::sync::Arc::clone(&tracker);
                tokio::spawn(async move { track_some(&tracker) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(tracker.report().tracked, 12);
    }

    #[test]
    fn shutdown_with_nothing_listening_fails_honestly_and_in_bounded_time() {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let tracker = tracker_to_nowhere(protocol);
            track_some(&tracker);
            let started = Instant::now();
            let error = tracker.shutdown().unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{protocol}: {:?}",
                started.elapsed()
            );
            let report = error.report().unwrap().clone();
            assert_eq!(report.tracked, 3, "{protocol}");
            assert_eq!(report.failed, 3, "{protocol}: {report}");
            assert_eq!((report.delivered, report.pending), (0, 0), "{protocol}");
            assert!(report.last_error.is_some());
            assert!(
                error
                    .to_string()
                    .contains("3 of 3 tracked events not delivered"),
                "{error}"
            );
        }
    }

    #[test]
    fn flush_with_nothing_listening_is_an_error() {
        let tracker = tracker_to_nowhere(Protocol::Grpc);
        track_some(&tracker);
        let report = tracker.flush().unwrap_err().report().cloned().unwrap();
        assert_eq!((report.failed, report.pending), (3, 0));
    }

    #[test]
    fn queue_overflow_is_dropped_and_counted() {
        let tracker = Tracker::builder("test-app")
            .endpoint(closed_port())
            .queue_capacity(10)
            .batch_size(5)
            .export_timeout(Duration::from_millis(300))
            .shutdown_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        for i in 0..1_000 {
            tracker.track("tick", Some(&format!("u{i}")), &[]);
        }
        let queued = tracker.report();
        // Only the queue (10) plus the batch or two the delivery thread took while
        // each failing export lasts ~300 ms got in; a loaded machine gets slack.
        assert!(queued.dropped >= 900, "{queued}");
        let report = tracker.shutdown().unwrap_err().report().cloned().unwrap();
        assert_eq!(report.tracked, 1_000);
        assert_eq!(report.dropped, queued.dropped);
        assert_eq!(
            report.delivered + report.failed + report.dropped + report.invalid + report.pending,
            1_000,
            "{report}"
        );
    }

    #[test]
    fn invalid_event_names_are_counted_not_sent() {
        let tracker = tracker_to_nowhere(Protocol::Grpc);
        tracker.track("", Some("u1"), &[]);
        tracker.track("bad\nname", None, &[]);
        let report = tracker.report();
        assert_eq!((report.tracked, report.invalid, report.pending), (2, 2, 0));
        let error = tracker.shutdown().unwrap_err();
        assert_eq!(error.report().map(|r| r.invalid), Some(2));
    }

    #[test]
    fn shutdown_with_nothing_tracked_is_ok() {
        let report = tracker_to_nowhere(Protocol::Grpc).shutdown().unwrap();
        assert_eq!(report, DeliveryReport::default());
    }
}
