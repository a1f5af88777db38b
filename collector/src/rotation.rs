//! `growth-collector rotate-keys finish`: the end of a user-hash key rotation
//! (docs/contract.md, "Rotating the key").
//!
//! The overlap left, in `identity_links`, one `rotation` link per user seen with both
//! keys: previous hash → current hash. This job takes those pairs as its map and
//! rewrites every stored previous hash (and its `user_key`) into the current one in
//! every table of [`USER_TABLES`], then clears `events.user_hash_previous` and deletes
//! the rotation links: afterwards no stored row names a previous hash of a paired user,
//! and the previous key can be destroyed.
//!
//! `user_key` is in the sorting key of `events` and of the layer tables, so ClickHouse
//! cannot `ALTER … UPDATE` it. Each table is rewritten partition by partition:
//!
//! 1. **stage**: the partition's rows that name a paired previous hash are copied,
//!    mapped, into a staging table of the same structure (`key_rotation_staging_T`,
//!    no views attached, so `event_counts` and the layers are not fed twice); the
//!    journal `key_rotation_progress` records `staged` with the row count;
//! 2. **move**: `ALTER TABLE staging MOVE PARTITION … TO TABLE T` hands the mapped
//!    parts over atomically (again no view fires); journal `moved`;
//! 3. **delete**: the partition's rows that still name a previous hash are deleted
//!    (a synchronous mutation); journal `done`.
//!
//! Why this order: between 2 and 3 a person's rows exist under both keys, which the
//! people rules still join through the rotation link (people metrics unchanged; only
//! a raw event count read from `events` would see them twice for that moment); the
//! opposite order would lose them from the metrics meanwhile, and a crash between
//! delete and insert would lose them for good. A crash anywhere is resumed by running
//! the job again: a step is redone until the journal has it, and every step is
//! idempotent given the journal (stage starts by dropping the staging partition; a
//! `staged` partition whose staging copy is empty was already moved; delete matches
//! only unmapped rows). Inserts run with `insert_deduplicate = 0`: a re-staged block
//! equal to an earlier one must not be dropped as a duplicate.

use std::time::Instant;

use clickhouse::Client;
use growth_schema::attributes::{ANONYMOUS_HASH, MERGED_HASH};
use growth_schema::tables::{
    EVENTS, FIRST_SEEN_CHANGES, IDENTITY_LINKS, KEY_ROTATION_PROGRESS, USER_TABLES, UserColumn,
};
use serde::Deserialize;

/// The pairs of the rotation being finished, taken once from `identity_links`.
const MAP: &str = "key_rotation_map";

/// Why the job stopped; run it again to resume.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A ClickHouse statement failed.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A partition id that is not one ClickHouse makes.
    #[error("unexpected partition id {0:?}")]
    PartitionId(String),
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Count {
    n: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Name {
    name: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Step {
    partition_id: String,
    step: String,
    rows: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct AppPairs {
    app: String,
    pairs: u64,
}

/// What a finished run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Pairs in the map.
    pub pairs: u64,
    /// Per table: rows rewritten.
    pub rewritten: Vec<(String, u64)>,
}

/// `rotate-keys status`: the pairs recorded so far, per app.
pub async fn status(client: &Client) -> Result<Vec<(String, u64)>, RotationError> {
    let rows: Vec<AppPairs> = client
        .query(&format!(
            "SELECT app, uniqExact(linked_key) AS pairs FROM {IDENTITY_LINKS} \
             WHERE kind = 'rotation' GROUP BY app ORDER BY app"
        ))
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|r| (r.app, r.pairs)).collect())
}

/// Runs (or resumes) the finish job; `progress` gets one line per step.
pub async fn finish(
    client: &Client,
    mut progress: impl FnMut(&str),
) -> Result<Finished, RotationError> {
    let started = Instant::now();
    let mut out = Finished::default();
    exec(
        client,
        &format!(
            "CREATE TABLE IF NOT EXISTS {MAP} (old_key UInt64, new_key UInt64, old_hash String, new_hash String) \
             ENGINE = MergeTree ORDER BY old_key \
             COMMENT 'rotate-keys finish: previous hash -> current hash, taken from identity_links; emptied at the end'"
        ),
    )
    .await?;
    let journal = steps(client, MAP).await?;
    if !journal.iter().any(|s| s.step == "done") {
        exec(client, &format!("TRUNCATE TABLE {MAP}")).await?;
        exec(
            client,
            &format!(
                "INSERT INTO {MAP} (old_key, new_key, old_hash, new_hash) \
                 SELECT linked_key, min(known_key), any(linked_hash), argMin(known_hash, known_key) \
                 FROM {IDENTITY_LINKS} WHERE kind = 'rotation' AND linked_key != known_key \
                 GROUP BY linked_key SETTINGS insert_deduplicate = 0"
            ),
        )
        .await?;
        let n = count(client, &format!("SELECT count() AS n FROM {MAP}")).await?;
        journal_step(client, MAP, "", "done", n).await?;
    }
    out.pairs = count(client, &format!("SELECT count() AS n FROM {MAP}")).await?;
    progress(&format!(
        "rotate-keys finish: {} previous hashes paired with current ones",
        out.pairs
    ));

    for &(table, column) in USER_TABLES {
        if !table_exists(client, table).await? {
            continue;
        }
        let rows = rewrite_table(client, table, column, &mut progress).await?;
        out.rewritten.push((table.to_owned(), rows));
    }

    // first_seen_changes: a person first seen under both keys now has two +1 rows
    // under the current key; keep the earliest (what the view would have written
    // had the earliest event come with the current key).
    exec(
        client,
        &format!(
            "INSERT INTO {FIRST_SEEN_CHANGES} (app, first_bucket, user_key, sign) \
             SELECT app, first_bucket, user_key, toInt8(if(first_bucket = earliest, 1 - s, -s)) AS sign \
             FROM ( \
                 SELECT app, user_key, first_bucket, sum(sign) AS s, \
                        min(first_bucket) OVER (PARTITION BY app, user_key) AS earliest \
                 FROM {FIRST_SEEN_CHANGES} WHERE user_key IN (SELECT new_key FROM {MAP}) \
                 GROUP BY app, user_key, first_bucket HAVING s > 0 \
             ) WHERE sign != 0 \
             SETTINGS insert_deduplicate = 0"
        ),
    )
    .await?;
    progress("rotate-keys finish: first-seen times of joined users corrected");

    // The previous hashes left outside the user columns: the pairs themselves.
    exec(
        client,
        &format!(
            "ALTER TABLE {EVENTS} UPDATE user_hash_previous = '' WHERE user_hash_previous != '' \
             SETTINGS mutations_sync = 2"
        ),
    )
    .await?;
    exec(
        client,
        &format!(
            "ALTER TABLE {IDENTITY_LINKS} DELETE WHERE kind = 'rotation' SETTINGS mutations_sync = 2"
        ),
    )
    .await?;
    progress("rotate-keys finish: events.user_hash_previous cleared, rotation links deleted");
    for &(table, _) in USER_TABLES {
        exec(client, &format!("DROP TABLE IF EXISTS {}", staging(table))).await?;
    }
    exec(client, &format!("TRUNCATE TABLE {MAP}")).await?;
    exec(client, &format!("TRUNCATE TABLE {KEY_ROTATION_PROGRESS}")).await?;
    progress(&format!(
        "rotate-keys finish: done in {:.1}s; the previous key can be destroyed",
        started.elapsed().as_secs_f64()
    ));
    Ok(out)
}

fn staging(table: &str) -> String {
    format!("key_rotation_staging_{table}")
}

/// The rows of `table` that still name a previous hash.
fn predicate(table: &str, column: UserColumn) -> String {
    let olds = format!("(SELECT old_key FROM {MAP})");
    let old_hashes = format!("(SELECT old_hash FROM {MAP})");
    match column {
        UserColumn::Hash if table == EVENTS => format!(
            "(user_key IN {olds} OR properties['{ANONYMOUS_HASH}'] IN {old_hashes} \
             OR properties['{MERGED_HASH}'] IN {old_hashes})"
        ),
        UserColumn::Hash => format!("user_hash IN {old_hashes}"),
        UserColumn::Key => format!("user_key IN {olds}"),
        UserColumn::KeyPair(a, b) => {
            let not_rotation = if table == IDENTITY_LINKS {
                "kind != 'rotation' AND "
            } else {
                ""
            };
            format!("({not_rotation}({a} IN {olds} OR {b} IN {olds}))")
        }
    }
}

/// The mapped value of one column. No `AS` aliases: ClickHouse would let an alias
/// named like its column shadow that column in the WHERE clause (the insert takes
/// the values by position).
fn mapped(column: &str) -> String {
    let keys =
        format!("(SELECT groupArray(old_key) FROM {MAP}), (SELECT groupArray(new_key) FROM {MAP})");
    let hashes = format!(
        "(SELECT groupArray(old_hash) FROM {MAP}), (SELECT groupArray(new_hash) FROM {MAP})"
    );
    match column {
        "user_key" | "linked_key" | "known_key" => {
            format!("transform({column}, {keys}, {column})")
        }
        "user_hash" | "linked_hash" | "known_hash" => {
            format!("transform({column}, {hashes}, {column})")
        }
        "user_hash_previous" => "''".to_owned(),
        "properties" => format!(
            "mapApply((k, v) -> (k, if(k IN ('{ANONYMOUS_HASH}', '{MERGED_HASH}'), \
             transform(v, {hashes}, v), v)), properties)"
        ),
        other => other.to_owned(),
    }
}

async fn rewrite_table(
    client: &Client,
    table: &str,
    column: UserColumn,
    progress: &mut impl FnMut(&str),
) -> Result<u64, RotationError> {
    let staging = staging(table);
    exec(
        client,
        &format!("CREATE TABLE IF NOT EXISTS {staging} AS {table}"),
    )
    .await?;
    let columns: Vec<Name> = client
        .query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? \
             AND default_kind NOT IN ('MATERIALIZED', 'ALIAS', 'EPHEMERAL') ORDER BY position",
        )
        .bind(table)
        .fetch_all()
        .await?;
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let select: Vec<String> = names.iter().map(|c| mapped(c)).collect();
    let predicate = predicate(table, column);

    let journal = steps(client, table).await?;
    let mut partitions: Vec<String> = client
        .query(&format!(
            "SELECT DISTINCT _partition_id AS name FROM {table} WHERE {predicate} ORDER BY name"
        ))
        .fetch_all::<Name>()
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect();
    // Partitions a crashed run left between its steps (their rows may already be
    // mapped, so the predicate no longer finds them).
    for s in &journal {
        if !partitions.contains(&s.partition_id)
            && !journal
                .iter()
                .any(|d| d.partition_id == s.partition_id && d.step == "done")
        {
            partitions.push(s.partition_id.clone());
        }
    }
    partitions.sort();
    partitions.dedup();
    let total = partitions.len();
    let mut rewritten = 0;
    for (i, partition) in partitions.iter().enumerate() {
        check_partition_id(partition)?;
        let done = |step: &str| {
            journal
                .iter()
                .find(|s| s.partition_id == *partition && s.step == step)
        };
        if done("done").is_some() {
            continue;
        }
        let staged = match done("staged") {
            Some(s) => s.rows,
            None => {
                exec(
                    client,
                    &format!("ALTER TABLE {staging} DROP PARTITION ID '{partition}'"),
                )
                .await?;
                exec(
                    client,
                    &format!(
                        "INSERT INTO {staging} ({}) SELECT {} FROM {table} \
                         WHERE _partition_id = '{partition}' AND {predicate} \
                         SETTINGS insert_deduplicate = 0",
                        names.join(", "),
                        select.join(", ")
                    ),
                )
                .await?;
                let rows = count(
                    client,
                    &format!(
                        "SELECT count() AS n FROM {staging} WHERE _partition_id = '{partition}'"
                    ),
                )
                .await?;
                journal_step(client, table, partition, "staged", rows).await?;
                rows
            }
        };
        if done("moved").is_none() {
            let waiting = count(
                client,
                &format!("SELECT count() AS n FROM {staging} WHERE _partition_id = '{partition}'"),
            )
            .await?;
            if waiting > 0 {
                exec(
                    client,
                    &format!(
                        "ALTER TABLE {staging} MOVE PARTITION ID '{partition}' TO TABLE {table}"
                    ),
                )
                .await?;
            }
            journal_step(client, table, partition, "moved", staged).await?;
        }
        exec(
            client,
            &format!(
                "ALTER TABLE {table} DELETE IN PARTITION ID '{partition}' WHERE {predicate} \
                 SETTINGS mutations_sync = 2"
            ),
        )
        .await?;
        journal_step(client, table, partition, "done", staged).await?;
        rewritten += staged;
        progress(&format!(
            "rotate-keys finish: {table} partition {partition} ({}/{total}): {staged} rows rewritten",
            i + 1
        ));
    }
    Ok(rewritten)
}

/// Partition ids come from ClickHouse (`202601`, `all`, hex hashes); anything else
/// is refused rather than pasted into a statement.
fn check_partition_id(id: &str) -> Result<(), RotationError> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RotationError::PartitionId(id.to_owned()))
    }
}

async fn exec(client: &Client, sql: &str) -> Result<(), RotationError> {
    client.query(sql).execute().await?;
    Ok(())
}

async fn count(client: &Client, sql: &str) -> Result<u64, RotationError> {
    Ok(client.query(sql).fetch_one::<Count>().await?.n)
}

async fn table_exists(client: &Client, table: &str) -> Result<bool, RotationError> {
    Ok(count(
        client,
        &format!(
            "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() AND name = '{table}'"
        ),
    )
    .await?
        > 0)
}

async fn steps(client: &Client, table: &str) -> Result<Vec<Step>, RotationError> {
    Ok(client
        .query(&format!(
            "SELECT partition_id, toString(step) AS step, max(rows) AS rows FROM {KEY_ROTATION_PROGRESS} \
             WHERE tbl = ? GROUP BY partition_id, step"
        ))
        .bind(table)
        .fetch_all()
        .await?)
}

async fn journal_step(
    client: &Client,
    table: &str,
    partition: &str,
    step: &str,
    rows: u64,
) -> Result<(), RotationError> {
    client
        .query(&format!(
            "INSERT INTO {KEY_ROTATION_PROGRESS} (tbl, partition_id, step, rows) \
             SETTINGS insert_deduplicate = 0 VALUES (?, ?, ?, ?)"
        ))
        .bind(table)
        .bind(partition)
        .bind(step)
        .bind(rows)
        .execute()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_columns_are_mapped() {
        assert!(mapped("user_key").starts_with("transform(user_key"));
        assert!(mapped("known_hash").starts_with("transform(known_hash"));
        assert_eq!(mapped("user_hash_previous"), "''");
        assert_eq!(mapped("event_time"), "event_time");
        assert!(mapped("properties").contains(ANONYMOUS_HASH));
    }

    #[test]
    fn rotation_links_are_the_map_not_rewritten() {
        let p = predicate(
            IDENTITY_LINKS,
            UserColumn::KeyPair("linked_key", "known_key"),
        );
        assert!(p.contains("kind != 'rotation'"));
        assert!(check_partition_id("202601").is_ok());
        assert!(check_partition_id("all").is_ok());
        assert!(check_partition_id("1' OR 1").is_err());
    }
}
