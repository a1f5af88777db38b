//! # growth-sdk
//!
//! The thin SDK an app adds to send growth events — "user u1 logged an expense"
//! — to a growth collector, so that DAU/WAU/MAU, cohort retention and event totals
//! can be computed without ever storing who the user is.
//!
//! Each event is one OpenTelemetry log record sent over OTLP (gRPC or
//! HTTP/protobuf): the event name in `LogRecord.event_name` and the `event.name`
//! attribute, the user **hashed in the app** into `user.hash` (HMAC-SHA256 with
//! `GROWTH_USER_HASH_KEY`, exactly as the collector would hash it; the raw id never
//! leaves the process), the app in the resource attribute `service.name`, and the
//! properties as attributes. The contract lives in `growth-schema`.
//!
//! Telemetry must never break the app: [`Tracker::track`] never blocks, never
//! waits on the network and never panics, inside a Tokio runtime or not. Events
//! go into a bounded queue that one background thread drains; when the queue is
//! full, events are dropped — and counted. [`Tracker::shutdown`] sends what is
//! left and returns an honest [`DeliveryReport`] (tracked, delivered, failed,
//! dropped), with an error if anything was not delivered.
//!
//! What it is not for: it computes no metrics, retries nothing across restarts (no
//! disk spool), speaks no TLS (send to a collector on the same host or network),
//! and is not a general OpenTelemetry logging bridge. It pulls in no ClickHouse
//! client, no gRPC server and no axum.
//!
//! ```no_run
//! use std::time::{Duration, SystemTime};
//! use growth_sdk::{Event, Protocol, Source, Tracker};
//!
//! let tracker = Tracker::builder("finbrain")
//!     .endpoint("http://127.0.0.1:4317")
//!     .protocol(Protocol::Grpc)
//!     .user_hash_key_from_env()
//!     .build()?;
//!
//! tracker.expense_logged("u1", 12.5, "groceries", Source::Form);
//! tracker.track("settings_opened", Some("u1"), &[("tab", "budget".into())]);
//! let yesterday = SystemTime::now() - Duration::from_secs(86_400);
//! tracker.track_event(Event::new("report_requested").user("u2").attr("report_type", "monthly").at(yesterday));
//!
//! let report = tracker.shutdown()?; // Err(SdkError::Undelivered(report)) if anything was lost
//! println!("{report}");
//! # Ok::<(), growth_sdk::SdkError>(())
//! ```

mod builder;
mod delivery;
mod error;
mod event;
pub mod finance;
mod record;
mod report;
mod tracker;

pub use builder::{
    DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT, HTTP_LOGS_PATH, Protocol, TrackerBuilder,
    UnknownProtocol,
};
pub use error::SdkError;
pub use event::{AttributeValue, Event};
pub use finance::Source;
pub use growth_schema::user_hash::{UserHash, UserHasher};
pub use report::DeliveryReport;
pub use tracker::Tracker;
