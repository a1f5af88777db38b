//! The errors `run` and `migrate` end with.

use std::net::SocketAddr;

use growth_schema::service::StartupError;

use crate::config::ConfigError;
use crate::spool::SpoolError;

/// Why the collector stopped (or did not start).
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The flags or the key file are not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The auth tokens file is not usable.
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokensFileError),
    /// The TLS files (`--tls-cert`, `--tls-key`, `--tls-client-ca`) are not usable.
    #[error(transparent)]
    Tls(#[from] growth_schema::service::tls::TlsError),
    /// The admin token file or the erasure queue is not usable.
    #[error(transparent)]
    Erasure(#[from] crate::erasure::ErasureError),
    /// `erase` failed.
    #[error(transparent)]
    Erase(#[from] crate::erasure::cli::EraseError),
    /// `rotate-keys` failed (run it again to resume).
    #[error("rotate-keys: {0} (run it again to resume)")]
    Rotation(#[from] crate::rotation::RotationError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spool directory cannot be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// ClickHouse was unreachable at start-up or migrating failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A server stopped with an error.
    #[error("the {what} server failed: {message}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// What it reported.
        message: String,
    },
}
