//! Logging set-up: one line per event on stderr, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: `RUST_LOG` decides what is logged
/// (`info` when unset or unreadable); output goes to stderr, coloured only on a
/// terminal so that log files and journald stay plain text.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
