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
//! waits on the network and never panics, inside a Tokio runtime or not, whatever
//! state the collector is in. Events go into a lock-free queue bounded by a byte
//! budget (64 MiB by default) that one background thread drains with several
//! exports in flight. A batch the collector does not acknowledge is kept and
//! retried with backoff (honouring `Retry-After` / `RetryInfo`), so a collector
//! restart loses nothing; only when the budget is used up are new events dropped
//! — counted, logged as a warning, and passed to an optional callback.
//! [`Tracker::shutdown`] sends what is left and returns an honest
//! [`DeliveryReport`] (tracked, delivered, failed, dropped, …), with an error if
//! anything was not delivered.
//!
//! Configuration the OpenTelemetry way: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_EXPORTER_OTLP_HEADERS` (the collector's ingest token),
//! `OTEL_EXPORTER_OTLP_COMPRESSION` (gzip), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, plus `GROWTH_USER_HASH_KEY` and
//! `GROWTH_SDK_DISABLED=true` (a no-op tracker); the builder's settings win.
//! HTTPS endpoints work on both protocols (rustls, web PKI roots, plus a private
//! CA from `OTEL_EXPORTER_OTLP_CERTIFICATE` or
//! [`TrackerBuilder::ca_certificate_pem`]); a client certificate for a collector
//! that requires one (mTLS) from `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
//! `OTEL_EXPORTER_OTLP_CLIENT_KEY` or [`TrackerBuilder::client_identity_pem`]).
//!
//! What it is not for: it computes no metrics, keeps nothing on disk (events
//! held in memory are lost if the process dies), and is not a general
//! OpenTelemetry logging bridge (the optional `tracing-layer` feature turns
//! `tracing` events that carry an `event.name` into growth events). It pulls in
//! no ClickHouse client, no gRPC server and no axum.
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

mod backoff;
mod builder;
mod config;
mod delivery;
mod error;
mod event;
#[cfg(feature = "finance")]
pub mod finance;
#[doc(hidden)]
pub mod fuzzing;
mod loss;
mod queue;
mod record;
mod report;
mod request;
#[cfg(feature = "tracing-layer")]
mod tracing_layer;
mod tracker;
mod transport;
mod wire;
mod worker;

pub use builder::TrackerBuilder;
pub use config::{
    Compression, ConfigError, DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT, DISABLED_ENV,
    HTTP_LOGS_PATH, Protocol, UnknownProtocol,
};
pub use error::SdkError;
pub use event::{AttributeValue, Event};
#[cfg(feature = "finance")]
pub use finance::Source;
pub use growth_schema::user_hash::{UserHash, UserHasher};
pub use report::{DeliveryReport, Loss};
#[cfg(feature = "tracing-layer")]
pub use tracing_layer::GrowthLayer;
pub use tracker::Tracker;
