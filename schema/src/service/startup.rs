//! Waiting for ClickHouse at start-up, then migrating: both binaries start this way
//! (and their `migrate` subcommand is exactly this, then exit).
//!
//! A service is often started together with its ClickHouse (compose, systemd, CI), so
//! "not reachable yet" is expected for a while: each attempt pings the server, then
//! applies the migrations; a failure is logged and retried after a pause that
//! doubles from 250 ms up to 5 s, never past the start-up timeout. When the time is
//! up, the error says how long it waited and what failed last.

use std::time::{Duration, Instant};

use clickhouse::Client;

use crate::connection::ClickHouseArgs;
use crate::migrate::{MigrateError, MigrationReport, migrate};

/// Longest a ping may take before the attempt counts as failed.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one attempt to reach ClickHouse and migrate failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The client or the server reported an error.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// ClickHouse did not answer the ping in time.
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
    /// Migrating the schema failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

/// Why start-up (or `migrate`) gave up.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// ClickHouse was not reachable, or the migrations failed, until the timeout.
    #[error(
        "ClickHouse at {url} was not usable within {waited:?}; last error: {}",
        describe(last)
    )]
    GaveUp {
        /// The `--clickhouse-url`.
        url: String,
        /// How long start-up waited.
        waited: Duration,
        /// The last failure.
        last: Box<AttemptError>,
    },
}

/// Pauses between attempts: doubling from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// The start-up schedule: 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s.
    pub fn startup() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// A schedule starting at `first`, doubling, capped at `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// The pause before the next attempt, cut to `remaining` (the time left).
    pub fn pause(&mut self, remaining: Duration) -> Duration {
        let pause = self.next.min(self.max).min(remaining);
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

/// Answers when the server runs a trivial query (the database need not exist yet).
pub async fn ping(server: &Client) -> Result<(), AttemptError> {
    let query = server.query("SELECT 1").fetch_one::<u8>();
    match tokio::time::timeout(PING_TIMEOUT, query).await {
        Ok(result) => result.map(drop).map_err(AttemptError::from),
        Err(_) => Err(AttemptError::Timeout(PING_TIMEOUT)),
    }
}

/// Waits for the ClickHouse of `args` to answer and applies the pending migrations
/// to its database, retrying (see the module documentation) until `timeout` has
/// passed. Each failed attempt is logged and handed to `on_retry` (a service shows
/// it on `/readyz`, say); success is logged with the schema version.
pub async fn wait_and_migrate(
    args: &ClickHouseArgs,
    timeout: Duration,
    on_retry: impl Fn(&AttemptError),
) -> Result<MigrationReport, StartupError> {
    let server = args.server_client();
    let started = Instant::now();
    let mut backoff = Backoff::startup();
    let mut attempt = 1u32;
    loop {
        let result = match ping(&server).await {
            Ok(()) => migrate(&server, &args.database)
                .await
                .map_err(AttemptError::from),
            Err(e) => Err(e),
        };
        let error = match result {
            Ok(report) => {
                tracing::info!(
                    database = %args.database,
                    version = report.current,
                    applied = ?report.applied,
                    "schema is up to date"
                );
                return Ok(report);
            }
            Err(e) => e,
        };
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(StartupError::GaveUp {
                url: args.url.clone(),
                waited,
                last: Box::new(error),
            });
        }
        on_retry(&error);
        let pause = backoff.pause(timeout - waited);
        tracing::warn!(
            url = %args.url,
            attempt,
            retry_in = ?pause,
            error = %describe(&error),
            "ClickHouse is not usable yet; retrying"
        );
        tokio::time::sleep(pause).await;
        attempt += 1;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_never_passes_the_deadline() {
        let mut backoff = Backoff::startup();
        let plenty = Duration::from_secs(60);
        let pauses: Vec<u64> = (0..8)
            .map(|_| backoff.pause(plenty).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);

        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(
            backoff.pause(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        // Cutting one pause short does not slow the schedule down.
        assert_eq!(backoff.pause(plenty), Duration::from_secs(2));
    }

    #[test]
    fn describe_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("middle")]
        struct Inner(#[source] std::io::Error);
        let error = Outer(Inner(std::io::Error::other("Connection refused")));
        assert_eq!(describe(&error), "outer: middle: Connection refused");
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    }

    /// Nothing listens on port 9 (discard): every attempt fails at once.
    #[tokio::test]
    async fn gives_up_after_the_timeout_with_the_last_error() {
        let args = Cli::parse_from(["t", "--clickhouse-url", "http://127.0.0.1:9"]).clickhouse;
        let retries = std::sync::atomic::AtomicU32::new(0);
        let started = Instant::now();
        let result = wait_and_migrate(&args, Duration::from_millis(600), |e| {
            assert!(matches!(e, AttemptError::ClickHouse(_)), "{e:?}");
            retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
        let waited = started.elapsed();
        let Err(StartupError::GaveUp { url, last, .. }) = result else {
            panic!("expected to give up: {result:?}");
        };
        assert_eq!(url, "http://127.0.0.1:9");
        assert!(matches!(*last, AttemptError::ClickHouse(_)), "{last:?}");
        // Retried (250 ms, then 350 ms cut to the deadline, when attempts are quick).
        assert!(retries.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }
}
