//! The errors the aggregator's start and run end with (`hash-password`'s are
//! [`crate::access::HashPasswordError`]); `main.rs` turns them into a log line and an
//! exit code.

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
    /// The TLS files (`--tls-cert`, `--tls-key`) are not usable.
    #[error(transparent)]
    Tls(#[from] growth_schema::service::tls::TlsError),
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
