//! The ClickHouse side of an erasure: count, subtract, delete, wait. Every value is
//! a bound parameter; table and column names come from
//! [`growth_schema::tables::USER_TABLES`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike as _};
use clickhouse::Client;
use clickhouse::sql::Identifier;
use growth_schema::tables::{EVENT_COUNTS, EVENTS, USER_TABLES, UserColumn};
use serde::{Deserialize, Serialize};

use super::Removed;

/// The name under which dead-lettered rows appear in "rows removed".
pub const DEAD_LETTER_TABLE: &str = "dead-letter";
/// Longest wait for the mutations of one batch.
const MUTATIONS_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Events of the erased users in one (app, event, UTC quarter-hour) of `event_counts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct CountRow {
    /// App.
    pub app: String,
    /// Event name.
    pub event: String,
    /// Quarter-hour, Unix seconds.
    pub bucket: u32,
    /// Events to subtract.
    pub events: u64,
}

/// The hashes of a batch and their `user_key`s.
#[derive(Debug, Clone)]
pub struct Keys {
    hashes: Vec<String>,
    keys: Vec<u64>,
    hash_of: BTreeMap<u64, String>,
}

pub struct Store {
    client: Client,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct KeyRow {
    hash: String,
    key: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct HashCount {
    hash: String,
    rows: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct KeyCount {
    key: u64,
    rows: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Mutations {
    running: u64,
    failure: String,
}

impl Store {
    pub fn new(client: Client) -> Self {
        // Long mutations and merges answer late; a query waits for them.
        Self { client }
    }

    /// `user_key` of each hash, as the `events` column DEFAULT computes it.
    pub async fn user_keys(&self, hashes: &[String]) -> clickhouse::error::Result<Keys> {
        let rows: Vec<KeyRow> = self
            .client
            .query("SELECT hash, cityHash64(hash) AS key FROM (SELECT arrayJoin({hashes:Array(String)}) AS hash)")
            .param("hashes", hashes)
            .fetch_all()
            .await?;
        let hash_of: BTreeMap<u64, String> = rows.into_iter().map(|r| (r.key, r.hash)).collect();
        Ok(Keys {
            hashes: hashes.to_vec(),
            keys: hash_of.keys().copied().collect(),
            hash_of,
        })
    }

    /// Rows of each hash in every user table (the rows the delete will remove: the
    /// writer holds meanwhile), and its events in `event_counts`.
    pub async fn count_rows(
        &self,
        keys: &Keys,
    ) -> clickhouse::error::Result<BTreeMap<String, Removed>> {
        let mut per_hash: BTreeMap<String, Removed> = BTreeMap::new();
        for &(table, column) in USER_TABLES {
            let counted: Vec<(String, u64)> = match column {
                UserColumn::Hash => self
                    .client
                    .query("SELECT user_hash AS hash, count() AS rows FROM ? WHERE user_hash IN {values:Array(String)} GROUP BY hash")
                    .bind(Identifier(table))
                    .param("values", &keys.hashes)
                    .fetch_all::<HashCount>()
                    .await?
                    .into_iter()
                    .map(|r| (r.hash, r.rows))
                    .collect(),
                UserColumn::Key => self
                    .client
                    .query("SELECT user_key AS key, count() AS rows FROM ? WHERE user_key IN {values:Array(UInt64)} GROUP BY key")
                    .bind(Identifier(table))
                    .param("values", &keys.keys)
                    .fetch_all::<KeyCount>()
                    .await?
                    .into_iter()
                    .filter_map(|r| Some((keys.hash_of.get(&r.key)?.clone(), r.rows)))
                    .collect(),
                // A link row counts for each erased side it names.
                UserColumn::KeyPair(first, second) => self
                    .client
                    .query("SELECT key, count() AS rows FROM ? ARRAY JOIN [?, ?] AS key WHERE key IN {values:Array(UInt64)} GROUP BY key")
                    .bind(Identifier(table))
                    .bind(Identifier(first))
                    .bind(Identifier(second))
                    .param("values", &keys.keys)
                    .fetch_all::<KeyCount>()
                    .await?
                    .into_iter()
                    .filter_map(|r| Some((keys.hash_of.get(&r.key)?.clone(), r.rows)))
                    .collect(),
            };
            for (hash, rows) in counted {
                per_hash
                    .entry(hash.clone())
                    .or_default()
                    .insert(table.to_owned(), rows);
                if table == EVENTS {
                    // Each deleted event is subtracted once from event_counts.
                    per_hash
                        .entry(hash)
                        .or_default()
                        .insert(EVENT_COUNTS.to_owned(), rows);
                }
            }
        }
        Ok(per_hash)
    }

    /// The events of `hashes` per (app, event, quarter-hour), as `event_counts_mv`
    /// counted them.
    pub async fn event_counts_of(
        &self,
        hashes: &[String],
    ) -> clickhouse::error::Result<Vec<CountRow>> {
        self.client
            .query(
                "SELECT toString(app) AS app, toString(event) AS event,
                        toUInt32(toStartOfFifteenMinutes(event_time)) AS bucket, count() AS events
                 FROM ?
                 WHERE user_hash IN {hashes:Array(String)}
                 GROUP BY app, event, bucket
                 ORDER BY app, event, bucket",
            )
            .bind(Identifier(EVENTS))
            .param("hashes", hashes)
            .fetch_all()
            .await
    }

    /// Adds `-events` to each row of `counts` (UInt64 arithmetic wraps, and every
    /// reader sums within a quarter-hour or more, so the sums come out exact),
    /// deduplicated by `token`: a resumed batch subtracts once.
    pub async fn subtract_counts(
        &self,
        counts: &[CountRow],
        token: &str,
    ) -> clickhouse::error::Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<CountRow>(EVENT_COUNTS)
            .await?
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", token);
        for row in counts {
            let negative = CountRow {
                events: 0u64.wrapping_sub(row.events),
                ..row.clone()
            };
            insert.write(&negative).await?;
        }
        insert.end().await
    }

    /// One `ALTER TABLE … DELETE` per user table, created without waiting for it to
    /// finish ([`Store::wait_for_mutations`] does).
    pub async fn delete(&self, keys: &Keys) -> clickhouse::error::Result<()> {
        for &(table, column) in USER_TABLES {
            let query = match column {
                UserColumn::Hash => self
                    .client
                    .query("ALTER TABLE ? DELETE WHERE user_hash IN {values:Array(String)}")
                    .bind(Identifier(table))
                    .param("values", &keys.hashes),
                UserColumn::Key => self
                    .client
                    .query("ALTER TABLE ? DELETE WHERE user_key IN {values:Array(UInt64)}")
                    .bind(Identifier(table))
                    .param("values", &keys.keys),
                UserColumn::KeyPair(first, second) => self
                    .client
                    .query("ALTER TABLE ? DELETE WHERE ? IN {values:Array(UInt64)} OR ? IN {values:Array(UInt64)}")
                    .bind(Identifier(table))
                    .bind(Identifier(first))
                    .bind(Identifier(second))
                    .param("values", &keys.keys),
            };
            query.with_setting("mutations_sync", "0").execute().await?;
        }
        Ok(())
    }

    /// Waits until no mutation of the user tables is left to run.
    pub async fn wait_for_mutations(&self) -> clickhouse::error::Result<()> {
        let tables: Vec<&str> = USER_TABLES.iter().map(|(t, _)| *t).collect();
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let left: Mutations = self
                .client
                .query(
                    "SELECT count() AS running, any(latest_fail_reason) AS failure
                     FROM system.mutations
                     WHERE database = currentDatabase() AND table IN {tables:Array(String)} AND NOT is_done",
                )
                .param("tables", &tables)
                .fetch_one()
                .await?;
            if left.running == 0 {
                return Ok(());
            }
            if started.elapsed() > MUTATIONS_TIMEOUT {
                return Err(clickhouse::error::Error::Custom(format!(
                    "{} mutations still running after {:?}: {}",
                    left.running, MUTATIONS_TIMEOUT, left.failure
                )));
            }
            if !left.failure.is_empty() {
                tracing::warn!(failure = %left.failure, "an erasure mutation failed; ClickHouse retries it");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Merges the months of `event_counts` the subtraction touched, so that rows
    /// whose sum is now 0 disappear (an event only the erased users had) and no row
    /// holds a wrapped negative.
    pub async fn merge_counts(&self, counts: &[CountRow]) -> clickhouse::error::Result<()> {
        let months: BTreeSet<u32> = counts
            .iter()
            .filter_map(|c| DateTime::from_timestamp(i64::from(c.bucket), 0))
            .map(|t| t.year() as u32 * 100 + t.month())
            .collect();
        for month in months {
            // A number computed here, not user input: the partition expression is
            // toYYYYMM(bucket).
            self.client
                .query(&format!("OPTIMIZE TABLE ? PARTITION {month} FINAL"))
                .bind(Identifier(EVENT_COUNTS))
                .execute()
                .await?;
        }
        Ok(())
    }
}
