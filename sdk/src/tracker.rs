//! [`Tracker`]: the handle the app keeps. Tracking is fire-and-forget; flushing
//! and shutting down are where delivery is waited for and reported.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use growth_schema::attributes::{ANONYMOUS_HASH, IDENTIFY_EVENT, MERGE_EVENT, MERGED_HASH};
use growth_schema::user_hash::{UserHash, UserHasher};

use crate::delivery::Delivery;
use crate::error::SdkError;
use crate::event::{AttributeValue, Event, User};
use crate::record::{self, EventParts, UserRef};
use crate::report::DeliveryReport;

/// Sends growth events for one app. `Send + Sync`: share it (e.g. in an `Arc`)
/// across threads and tasks. Dropping it without [`shutdown`](Self::shutdown)
/// still sends what is queued: outside an async runtime it waits for that (at
/// most the shutdown timeout); on a runtime's thread it never blocks, and the
/// delivery thread finishes alone.
#[derive(Debug)]
pub struct Tracker {
    hasher: UserHasher,
    /// `None` when the SDK is disabled: every call is a no-op.
    delivery: Option<Delivery>,
    service_name: String,
    /// Losses already reported by a `flush`, so each is reported once.
    lost_at_last_flush: AtomicU64,
}

impl Tracker {
    pub(crate) fn new(hasher: UserHasher, delivery: Delivery, service_name: String) -> Self {
        Tracker {
            hasher,
            delivery: Some(delivery),
            service_name,
            lost_at_last_flush: AtomicU64::new(0),
        }
    }

    pub(crate) fn disabled(hasher: UserHasher, service_name: String) -> Self {
        Tracker {
            hasher,
            delivery: None,
            service_name,
            lost_at_last_flush: AtomicU64::new(0),
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
        if self.delivery.is_none() {
            return;
        }
        let name = event.into();
        self.track_parts(&EventParts {
            name: &name,
            user: user_id.map_or(UserRef::Anonymous, UserRef::Id),
            source: None,
            attributes,
            timestamp: None,
        });
    }

    /// Like [`track`](Self::track), for an [`Event`] built step by step
    /// (e.g. with an explicit timestamp).
    pub fn track_event(&self, event: Event) {
        if self.delivery.is_none() {
            return;
        }
        self.track_parts(&EventParts {
            name: &event.name,
            user: match &event.user {
                None => UserRef::Anonymous,
                Some(User::Id(id)) => UserRef::Id(id),
                Some(User::Hash(hash)) => UserRef::Hash(hash),
            },
            source: event.source.as_deref(),
            attributes: &event.attributes,
            timestamp: event.timestamp,
        });
    }

    /// Records that the visitor known so far as `anonymous_id` is the user
    /// `user_id` (at sign-up): an `identify` event of `user_id` carrying the
    /// anonymous id's hash in `anonymous.hash`. Both ids are hashed here.
    pub fn identify(&self, anonymous_id: &str, user_id: &str) {
        if self.delivery.is_none() {
            return;
        }
        let anonymous: Vec<(&str, AttributeValue)> = if anonymous_id.is_empty() {
            Vec::new()
        } else {
            let hash = self.hasher.hash(anonymous_id).into_string();
            vec![(ANONYMOUS_HASH, AttributeValue::String(hash))]
        };
        self.track_parts(&EventParts {
            name: IDENTIFY_EVENT,
            user: UserRef::Id(user_id),
            source: None,
            attributes: &anonymous,
            timestamp: None,
        });
    }

    /// Records that the known user `other_user_id` is the same person as `user_id`
    /// (two accounts merged): a `merge` event of `user_id` carrying the other id's
    /// hash in `merged.hash`. From then on `other_user_id` and every anonymous id
    /// identified to it count as `user_id`'s person (docs/contract.md, "People").
    pub fn merge(&self, user_id: &str, other_user_id: &str) {
        if self.delivery.is_none() || other_user_id.is_empty() {
            return;
        }
        let hash = self.hasher.hash(other_user_id).into_string();
        let merged = vec![(MERGED_HASH, AttributeValue::String(hash))];
        self.track_parts(&EventParts {
            name: MERGE_EVENT,
            user: UserRef::Id(user_id),
            source: None,
            attributes: &merged,
            timestamp: None,
        });
    }

    fn track_parts<K: AsRef<str>>(&self, event: &EventParts<'_, K>) {
        let Some(delivery) = &self.delivery else {
            return;
        };
        let counters = delivery.counters();
        counters.tracked();
        // Belt and braces: a bug here must cost one event, never the app.
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            record::encode(event, SystemTime::now())
        }));
        match encoded {
            Ok(Ok(encoded)) => {
                counters.attributes_dropped(encoded.attributes_dropped);
                delivery.enqueue(encoded.record);
            }
            Ok(Err(record::InvalidEventName)) | Err(_) => counters.invalid(),
        }
    }

    /// Sends everything tracked so far and waits (at most the shutdown timeout).
    /// `Err` when events were lost (failed, dropped, invalid) since the previous
    /// `flush` — each loss is reported by one flush, not by every later one — or
    /// when the wait timed out; the report is in the error either way.
    /// Blocks the calling thread: in async code call it from `spawn_blocking`.
    pub fn flush(&self) -> Result<DeliveryReport, SdkError> {
        let timeout = self
            .delivery
            .as_ref()
            .map_or(Duration::ZERO, Delivery::shutdown_timeout);
        self.flush_with_timeout(timeout)
    }

    /// [`flush`](Self::flush), waiting at most `timeout`.
    pub fn flush_with_timeout(&self, timeout: Duration) -> Result<DeliveryReport, SdkError> {
        let Some(delivery) = &self.delivery else {
            return Ok(DeliveryReport::default());
        };
        let confirmed = delivery.flush(timeout);
        let report = self.report();
        let before = self
            .lost_at_last_flush
            .swap(report.lost(), Ordering::AcqRel);
        if confirmed && report.lost() == before {
            Ok(report)
        } else {
            Err(SdkError::Undelivered(report))
        }
    }

    /// The counts so far, without waiting.
    pub fn report(&self) -> DeliveryReport {
        self.delivery
            .as_ref()
            .map(|delivery| delivery.counters().snapshot())
            .unwrap_or_default()
    }

    /// Sends everything queued, stops the delivery thread and reports. `Err`
    /// unless every tracked event was delivered. Waits at most the shutdown
    /// timeout (events still unsent then count as failed).
    pub fn shutdown(self) -> Result<DeliveryReport, SdkError> {
        let timeout = self
            .delivery
            .as_ref()
            .map_or(Duration::ZERO, Delivery::shutdown_timeout);
        self.shutdown_with_timeout(timeout)
    }

    /// [`shutdown`](Self::shutdown), waiting at most `timeout`.
    pub fn shutdown_with_timeout(mut self, timeout: Duration) -> Result<DeliveryReport, SdkError> {
        if let Some(delivery) = &mut self.delivery {
            delivery.shutdown(timeout);
        }
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

    /// True when tracking is a no-op (`GROWTH_SDK_DISABLED=true` or the builder).
    pub fn is_disabled(&self) -> bool {
        self.delivery.is_none()
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
            .env_vars::<&str, &str>([])
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
    fn flush_with_nothing_listening_is_an_error_and_keeps_the_events() {
        let tracker = tracker_to_nowhere(Protocol::Grpc);
        track_some(&tracker);
        let report = tracker
            .flush_with_timeout(Duration::from_millis(300))
            .unwrap_err()
            .report()
            .cloned()
            .unwrap();
        // Not given up: still held for the next retry.
        assert_eq!((report.failed, report.pending), (0, 3), "{report}");
        assert!(report.retries >= 1, "{report}");
    }

    #[test]
    fn queue_overflow_is_dropped_and_counted() {
        let tracker = Tracker::builder("test-app")
            .env_vars::<&str, &str>([])
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
