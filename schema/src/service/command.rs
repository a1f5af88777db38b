//! The command line of a growth service: `BINARY [run | migrate | …] [FLAGS]`.
//!
//! Every flag is made global, so `growth-collector migrate --clickhouse-url U` and
//! `growth-collector --clickhouse-url U migrate` mean the same: an operator who
//! adds `migrate` to a working command line should not have to reorder it. Each
//! binary declares its own `Cli` (its help texts are its own) and gets the parsing
//! from [`ServiceCli`].

/// Parses a command line whose flags are all global, so that they may come before or
/// after a subcommand. `args` starts with the program name; on bad flags, `--help` or
/// `--version` the error carries what to print and the exit code.
pub fn try_parse_global<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: clap::CommandFactory + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut definition = global_definition::<C>();
    let matches = definition.try_get_matches_from_mut(args)?;
    C::from_arg_matches(&matches).map_err(|e| e.format(&mut definition))
}

fn global_definition<C: clap::CommandFactory>() -> clap::Command {
    C::command().mut_args(|arg| arg.global(true))
}

/// How a service binary's `Cli` is parsed: with global flags (see the module
/// documentation). Implemented for every `clap::Parser`.
pub trait ServiceCli: clap::Parser {
    /// The command line definition as parsed, flags global.
    fn definition() -> clap::Command {
        global_definition::<Self>()
    }

    /// Parses `args` (the first being the program name); on bad flags, `--help` or
    /// `--version` the error carries what to print and the exit code.
    fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        try_parse_global(args)
    }

    /// Parses the process's arguments; on bad flags prints clap's message and exits
    /// with 2 (0 for `--help` and `--version`).
    fn parse_args() -> Self {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

impl<C: clap::Parser> ServiceCli for C {}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::{Args, Parser, Subcommand};

    use super::*;
    use crate::connection::ClickHouseArgs;

    /// A service as the binaries declare one.
    #[derive(Debug, Parser)]
    #[command(name = "growth-test", version)]
    struct Cli {
        #[command(subcommand)]
        command: Option<Command>,
        #[command(flatten)]
        run: RunArgs,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
    enum Command {
        Run,
        Migrate,
    }

    #[derive(Debug, Args)]
    struct RunArgs {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
        #[arg(long, default_value_t = 1)]
        workers: u32,
    }

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("growth-test").chain(argv.iter().copied()))
    }

    #[test]
    fn no_subcommand_means_none_and_defaults_hold() {
        let cli = parse(&[]).expect("parses");
        assert_eq!(cli.command, None);
        assert_eq!(cli.run.workers, 1);
        assert_eq!(cli.run.clickhouse.database, "growth");
    }

    #[test]
    fn flags_may_come_before_or_after_the_subcommand() {
        for argv in [
            &[
                "--clickhouse-database",
                "other",
                "--workers",
                "3",
                "migrate",
            ][..],
            &[
                "migrate",
                "--clickhouse-database",
                "other",
                "--workers",
                "3",
            ],
            &[
                "--workers",
                "3",
                "migrate",
                "--clickhouse-database",
                "other",
            ],
        ] {
            let cli = parse(argv).expect("parses");
            assert_eq!(cli.command, Some(Command::Migrate), "{argv:?}");
            assert_eq!(cli.run.clickhouse.database, "other", "{argv:?}");
            assert_eq!(cli.run.workers, 3, "{argv:?}");
        }
        let cli = parse(&["run", "--workers", "7"]).expect("parses");
        assert_eq!((cli.command, cli.run.workers), (Some(Command::Run), 7));
    }

    #[test]
    fn errors_carry_what_to_print_and_the_exit_code() {
        let unknown = parse(&["--bogus"]).expect_err("unknown flag");
        assert_eq!(unknown.kind(), ErrorKind::UnknownArgument);
        assert_eq!(unknown.exit_code(), 2);
        let bad_value = parse(&["migrate", "--workers", "many"]).expect_err("bad value");
        assert_eq!(bad_value.kind(), ErrorKind::ValueValidation);
        assert!(bad_value.to_string().contains("--workers"), "{bad_value}");
        let bad_database = parse(&["--clickhouse-database", "x;DROP"]).expect_err("bad name");
        assert_eq!(bad_database.kind(), ErrorKind::ValueValidation);
        let help = parse(&["migrate", "--help"]).expect_err("help is not a parse");
        assert_eq!((help.kind(), help.exit_code()), (ErrorKind::DisplayHelp, 0));
        let version = parse(&["--version"]).expect_err("version is not a parse");
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
    }

    #[test]
    fn definition_is_consistent() {
        Cli::definition().debug_assert();
    }
}
