//! The sink: writes batches of growth events to ClickHouse, and answers whether
//! ClickHouse is there at all (start-up wait and `/readyz`).
//!
//! One batch is one `INSERT` in RowBinary with the column names and types checked
//! against the table (the `clickhouse` crate's validation) and LZ4 on the wire.
//! Retrying is the batcher's decision, not this module's.

use std::future::Future;
use std::time::{Duration, Instant};

use clickhouse::Client;
use growth_schema::connection::ClickHouseArgs;
use growth_schema::migrate::{self, MigrateError, MigrationReport};
use growth_schema::tables::{EVENTS, EventRow};

/// Longest a chunk of an insert may take to send.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest ClickHouse may take to answer a finished insert (materialized views included).
const END_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a readiness ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why talking to ClickHouse failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The client or the server reported an error.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// ClickHouse did not answer in time.
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
    /// Migrating the schema failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// Start-up gave up waiting.
    #[error(
        "ClickHouse at {url} was not usable within {waited:?}; last error: {}",
        describe(last)
    )]
    StartupTimeout {
        /// The `--clickhouse-url`.
        url: String,
        /// How long start-up waited.
        waited: Duration,
        /// The last failure.
        last: Box<SinkError>,
    },
}

/// Where batches go. The ClickHouse sink is the real one; tests supply their own.
pub trait EventStore: Send + Sync + 'static {
    /// Writes every row, or none (one insert).
    fn insert(&self, rows: &[EventRow]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The growth database on a ClickHouse server.
#[derive(Clone)]
pub struct ClickHouseSink {
    server: Client,
    database: Client,
    database_name: String,
    url: String,
}

impl std::fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("url", &self.url)
            .field("database", &self.database_name)
            .finish()
    }
}

impl ClickHouseSink {
    /// A sink for the flags' server and database; connects lazily.
    pub fn new(args: &ClickHouseArgs) -> Self {
        Self {
            server: args.server_client(),
            database: args.client().with_validation(true),
            database_name: args.database.clone(),
            url: args.url.clone(),
        }
    }

    /// Answers when the server runs a trivial query (the database need not exist yet).
    pub async fn ping(&self) -> Result<(), SinkError> {
        let query = self.server.query("SELECT 1").fetch_one::<u8>();
        match tokio::time::timeout(PING_TIMEOUT, query).await {
            Ok(result) => result.map(drop).map_err(SinkError::from),
            Err(_) => Err(SinkError::Timeout(PING_TIMEOUT)),
        }
    }

    /// Creates the database if needed and applies the pending migrations.
    pub async fn migrate(&self) -> Result<MigrationReport, SinkError> {
        Ok(migrate::migrate(&self.server, &self.database_name).await?)
    }

    /// Waits for ClickHouse to answer and migrates, retrying with backoff until
    /// `timeout` has passed; logs each failed attempt and tells `on_retry` about it.
    pub async fn wait_and_migrate(
        &self,
        timeout: Duration,
        on_retry: impl Fn(&SinkError),
    ) -> Result<MigrationReport, SinkError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1u32;
        loop {
            let result = match self.ping().await {
                Ok(()) => self.migrate().await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(report) => return Ok(report),
                Err(e) => e,
            };
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(SinkError::StartupTimeout {
                    url: self.url.clone(),
                    waited,
                    last: Box::new(error),
                });
            }
            on_retry(&error);
            let pause = delay.min(timeout - waited);
            tracing::warn!(
                url = %self.url,
                attempt,
                retry_in = ?pause,
                error = %describe(&error),
                "ClickHouse is not usable yet; retrying"
            );
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }
}

impl EventStore for ClickHouseSink {
    async fn insert(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        let mut insert = self
            .database
            .insert::<EventRow>(EVENTS)
            .await?
            .with_timeouts(Some(SEND_TIMEOUT), Some(END_TIMEOUT));
        for row in rows {
            // After an error the insert is aborted and must not be written to again.
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}

/// An error with its causes, each once: the `clickhouse` crate's messages often
/// repeat their source, and the root cause ("Connection refused") is the useful part.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
