//! The `--clickhouse-*` flags, defined once for both binaries, and the client they build.

use clickhouse::{Client, Compression};

use crate::migrate::is_valid_database_name;

/// Where the growth tables live. Every flag has an environment variable beside it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
    #[arg(
        long = "clickhouse-url",
        env = "GROWTH_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,
    /// Database holding the growth tables; created when missing.
    #[arg(long = "clickhouse-database", env = "GROWTH_CLICKHOUSE_DATABASE", default_value = "growth", value_parser = parse_database)]
    pub database: String,
    /// ClickHouse user.
    #[arg(
        long = "clickhouse-user",
        env = "GROWTH_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    /// ClickHouse password (prefer the environment variable to the flag).
    #[arg(
        long = "clickhouse-password",
        env = "GROWTH_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
}

fn parse_database(name: &str) -> Result<String, String> {
    if is_valid_database_name(name) {
        Ok(name.to_owned())
    } else {
        Err("use letters, digits and underscores, not starting with a digit".into())
    }
}

impl ClickHouseArgs {
    /// A client for the server, not yet bound to the database (for migrations).
    pub fn server_client(&self) -> Client {
        let client = Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_compression(Compression::Lz4);
        if self.password.is_empty() {
            client
        } else {
            client.with_password(&self.password)
        }
    }

    /// A client bound to the growth database.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }
}

/// Parses a command line whose flags are all global, so that they may come before or
/// after a subcommand (`growth-collector migrate --clickhouse-url U` and
/// `growth-collector --clickhouse-url U migrate` mean the same). `args` starts with
/// the program name; on bad flags, `--help` or `--version` the error carries what to
/// print and the exit code.
pub fn try_parse_global<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: clap::CommandFactory + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut definition = C::command().mut_args(|arg| arg.global(true));
    let matches = definition.try_get_matches_from_mut(args)?;
    C::from_arg_matches(&matches).map_err(|e| e.format(&mut definition))
}
