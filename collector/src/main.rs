//! The `growth-collector` binary: parse flags, set up logging, run or migrate, and
//! map the outcome to an exit code (0 done, 1 failed, 2 unusable configuration).

use std::process::ExitCode;

use growth_collector::{Cli, Command};
use growth_schema::service::{ServiceCli, init_logging, shutdown_signal};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse_args();
    // `erase` is a client of the running collector: it needs no key and no ClickHouse.
    if let Some(Command::Erase(args)) = &cli.command {
        return match growth_collector::erasure::cli::run(args.clone(), cli.run.admin_addr).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let (command, config) = match cli.into_config() {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Migrate => growth_collector::migrate(&config).await.map(drop),
        Command::Run => growth_collector::run(config, shutdown_signal()).await,
        Command::Erase(args) => growth_collector::erasure::cli::run(args, config.admin_addr)
            .await
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
