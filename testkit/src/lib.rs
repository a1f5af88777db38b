//! # growth-testkit
//!
//! The code the tests and benchmarks share, written once: a seeded random source
//! ([`Rng`]), OTLP helpers ([`otlp::kv`], [`otlp::text`]), the gRPC client codec that
//! sends request bytes as they are ([`otlp::RawCodec`]), and the finance app's growth
//! events ([`finance::FinanceEvents`]).
//!
//! What it is not for: production code. It is a dev-dependency only (`publish =
//! false`); the SDK keeps its own raw codec because an app must not compile this.
//!
//! ```
//! use growth_testkit::{Rng, finance::{FinanceEvents, UserIds}};
//! let mut events = FinanceEvents::new(7, 100, UserIds::Mix(0.5), "key");
//! let request = events.request(16);
//! assert_eq!(request.resource_logs[0].scope_logs[0].log_records.len(), 16);
//! assert!(Rng(1).below(10) < 10);
//! ```

pub mod finance;
pub mod otlp;
mod rng;

pub use rng::Rng;
