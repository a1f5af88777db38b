//! The errors the aggregator's start, run and subcommands end with; `main.rs` turns
//! them into a log line and an exit code.

use std::net::SocketAddr;

use growth_schema::service::StartupError;

use crate::access::AuthFileError;
use crate::dashboard::settings::LabelsFileError;

/// Why the aggregator stopped (or did not start).
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The `--admin-auth-file` is not usable.
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    /// The `--event-labels-file` is not usable.
    #[error(transparent)]
    LabelsFile(#[from] LabelsFileError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (is another aggregator running?): {source}")]
    Bind {
        /// The `--listen-addr`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ClickHouse was unreachable at start-up or migrating failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The HTTP server failed while serving.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Why `hash-password` printed no credential line.
#[derive(Debug, thiserror::Error)]
pub enum HashPasswordError {
    /// The user name cannot stand in the auth file.
    #[error("the user name must be non-empty, without ':', and not 'bearer'")]
    BadUser,
    /// Standard input could not be read.
    #[error("cannot read the password from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// Standard input held no password.
    #[error("no password on standard input")]
    NoPassword,
    /// The hash function failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}
