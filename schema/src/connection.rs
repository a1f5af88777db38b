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
