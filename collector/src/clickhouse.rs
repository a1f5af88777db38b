//! The sink: writes batches of growth events to ClickHouse. (Waiting for ClickHouse
//! at start-up and migrating is the shared start-up path,
//! [`growth_schema::service::startup`].)
//!
//! One batch is one `INSERT … FORMAT Native` of rows already encoded in the spool
//! ([`crate::rowbinary`], re-laid as columns by [`crate::native`]), LZ4 on the wire, carrying an `insert_deduplication_token`
//! so that a batch sent twice (a crash or a lost answer) is stored once, in `events`
//! and in the materialized views fed from it. Retrying is the writer's decision, not
//! this module's; [`SinkError::class`] tells it whether retrying can help.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use growth_schema::connection::ClickHouseArgs;
/// Errors are shown with [`describe`] everywhere in the collector.
pub use growth_schema::service::describe;
use growth_schema::tables::EVENTS;

use crate::rows::Rows;
use crate::telemetry::ErrorClass;
use crate::{native, rowbinary};

/// Longest a chunk of an insert may take to send.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest ClickHouse may take to answer a finished insert (materialized views included).
const END_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes handed to the client (and LZ4-compressed) at a time.
const SEND_CHUNK: usize = 1 << 20;

/// Why talking to ClickHouse failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The client or the server reported an error.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// The spooled rows of an insert do not decode (a disk fault after the scan).
    #[error(transparent)]
    Spooled(#[from] rowbinary::DecodeError),
    /// The spooled rows of an insert cannot be read back (a disk fault after the scan).
    #[error("cannot read spooled rows back: {0}")]
    SpoolRead(#[from] std::io::Error),
}

/// ClickHouse error codes that reject the data rather than the moment: parse and
/// type errors, constraint violations, `throwIf` in a view, too many partitions in
/// one insert. Every other code (and every network error) counts as transient:
/// retrying costs time, while calling a passing failure permanent would dead-letter
/// good rows.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    20,  // NUMBER_OF_COLUMNS_DOESNT_MATCH
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
];

/// Where batches go. The ClickHouse sink is the real one; tests supply their own.
pub trait EventStore: Send + Sync + 'static {
    /// Writes every row of `rows` (RowBinary, [`rowbinary::COLUMNS`]) in one insert,
    /// deduplicated by `token`: the same token with the same rows stores them once.
    fn insert(
        &self,
        token: &str,
        rows: &Rows,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The growth database on a ClickHouse server.
#[derive(Clone)]
pub struct ClickHouseSink {
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
        // LZ4 saves bandwidth to a ClickHouse elsewhere; on the loopback interface it
        // only costs CPU on both sides (2-3 % of the collector's under load).
        let compression = if is_loopback(&args.url) {
            clickhouse::Compression::None
        } else {
            clickhouse::Compression::Lz4
        };
        Self {
            database: args
                .client()
                .with_validation(true)
                .with_compression(compression),
            database_name: args.database.clone(),
            url: args.url.clone(),
        }
    }
}

/// Whether `url`'s host is this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl SinkError {
    /// Whether retrying the same insert can help.
    pub fn class(&self) -> ErrorClass {
        if matches!(self, Self::Spooled(_) | Self::SpoolRead(_)) {
            return ErrorClass::Permanent;
        }
        let text = describe(self);
        // "Too many partitions for single INSERT block" shares TOO_MANY_PARTS (252)
        // with the transient "too many parts"; a smaller batch fixes it.
        if text.contains("Too many partitions for single INSERT block") {
            return ErrorClass::Permanent;
        }
        match exception_code(&text) {
            Some(code) if PERMANENT_CODES.contains(&code) => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// The number in ClickHouse's "Code: 27. DB::Exception: …".
fn exception_code(text: &str) -> Option<u32> {
    let after = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl EventStore for ClickHouseSink {
    async fn insert(&self, token: &str, rows: &Rows) -> Result<(), SinkError> {
        // Re-laid as Native blocks here rather than kept so in the spool: the spool's
        // RowBinary rows split one by one for bisection and dead letters.
        let sql = format!(
            "INSERT INTO {EVENTS} ({}) FORMAT Native",
            rowbinary::COLUMNS
        );
        let mut insert = self
            .database
            .insert_formatted_with(sql)
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            // Aggregating and summing tables (the views' targets) are folded by their
            // readers and by merges anyway; folding each new part once more at insert
            // cost ClickHouse 1.4 CPU-s per million rows in user_quarter_hours alone.
            .with_setting("optimize_on_insert", "0")
            .with_timeouts(Some(SEND_TIMEOUT), Some(END_TIMEOUT));
        // Read from the spool while sending: one chunk and its blocks in memory.
        let mut chunks = rows.chunks();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            for block in native::blocks(&chunk) {
                // A row that does not decode aborts the insert: nothing of it is stored.
                let block = Bytes::from(block?);
                let mut at = 0;
                while at < block.len() {
                    let end = (at + SEND_CHUNK).min(block.len());
                    // After an error the insert is aborted and must not be written to again.
                    insert.send(block.slice(at..end)).await?;
                    at = end;
                }
            }
        }
        insert.end().await?;
        Ok(())
    }
}

#[cfg(test)]
mod loopback_tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts_are_recognised() {
        for url in [
            "http://127.0.0.1:8123",
            "http://localhost:8123/",
            "https://user:pw@127.0.0.5:8443",
            "http://[::1]:8123",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:8123",
            "https://clickhouse.example.com:8443",
            "http://[2001:db8::1]:8123",
            "http://localhost.example.com",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
