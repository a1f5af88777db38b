//! The `growth-aggregator` binary: parse flags, set up logging, run, migrate or hash
//! a password, and map the outcome to an exit code (0 done, 1 failed; clap's 2 for
//! bad flags).

use std::process::ExitCode;

use growth_aggregator::access::HashPasswordError;
use growth_aggregator::config::{Cli, Command};
use growth_schema::service::{ServiceCli, describe, init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse_args();
    let config = cli.run.into_config();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => growth_aggregator::migrate(&config)
            .await
            .map(drop)
            .map_err(|e| describe(&e)),
        Command::Run => growth_aggregator::serve(config, shutdown_signal())
            .await
            .map_err(|e| describe(&e)),
        Command::HashPassword { user } => hash_password(&user).map_err(|e| describe(&e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// `growth-aggregator hash-password USER < password`: the password never appears in
/// a command line or the shell history.
fn hash_password(user: &str) -> Result<(), HashPasswordError> {
    let line = growth_aggregator::access::credential_line(user, std::io::stdin().lock())?;
    println!("{line}");
    Ok(())
}
