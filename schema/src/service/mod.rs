//! The one start-up path of `growth-collector` and `growth-aggregator`: how a growth
//! service binary reads its command line, logs, waits for ClickHouse and migrates,
//! and learns that it should stop.
//!
//! * [`command`] — every flag global, so `migrate` takes them before or after it;
//! * [`duration`] — humantime flags (`60s`, `500ms`, `31days`) with bounds;
//! * [`logging`] — `tracing` to stderr, `RUST_LOG` (default `info`), colour only on
//!   a terminal;
//! * [`signals`] — SIGINT/SIGTERM as a shutdown future, SIGHUP as a reload hook;
//! * `tls` (feature `tls`) — certificate files, mTLS and SIGHUP reload for the
//!   listeners;
//! * [`startup`] — ping, then migrate, retrying with a capped exponential backoff
//!   until the start-up timeout.
//!
//! Why here: both binaries stand on this crate already for the `--clickhouse-*`
//! flags and the migrations, and behind the `service` feature the SDK (which uses
//! the crate without features) never compiles tokio's signal handling or a log
//! subscriber. What it is not for: serving anything: each binary's lifecycle (what
//! it binds, in which order it starts and stops) stays in that binary.

pub mod command;
pub mod duration;
pub mod logging;
pub mod signals;
pub mod startup;
#[cfg(feature = "tls")]
pub mod tls;

pub use command::ServiceCli;
pub use logging::init_logging;
pub use signals::{on_hangup, shutdown_signal};
pub use startup::{StartupError, describe, wait_and_migrate};
