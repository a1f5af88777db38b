//! The `growth-aggregator` binary: parse flags, set up logging, run.

use growth_aggregator::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Logs go to stderr, coloured only on a terminal (log files stay plain text).
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse_args();
    let config = cli.run.into_config();
    match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => growth_aggregator::migrate_with_retry(&config).await,
        Command::Run => growth_aggregator::serve(config, shutdown_signal()).await,
        Command::HashPassword { user } => hash_password(&user),
    }
}

/// `growth-aggregator hash-password USER < password`: the password never appears in
/// a command line or the shell history.
fn hash_password(user: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !user.is_empty() && !user.contains(':') && user != "bearer",
        "the user name must be non-empty, without ':', and not 'bearer'"
    );
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    let hash = growth_aggregator::access::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("{user}:{hash}");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
