//! Versioned, idempotent schema migrations.
//!
//! Each file in `schema/migrations/` is one migration, numbered; its statements are
//! separated by a `;` at the end of a line and are all `IF NOT EXISTS`, so running a
//! migration twice (two binaries starting at once, a crash half-way) is harmless.
//! Applied versions are recorded in `schema_migrations`. The database itself is
//! created when missing, so two deployments on one server, each with its own
//! `--clickhouse-database`, never see each other's data.

use clickhouse::Client;
use clickhouse::sql::Identifier;

use crate::tables::SCHEMA_MIGRATIONS;

/// One numbered migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, the file's number.
    pub version: u32,
    /// File name, for messages.
    pub name: &'static str,
    /// The SQL text: one or more statements.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../migrations/", $file)),
        }
    };
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_events.sql"),
    migration!(2, "0002_user_activity.sql"),
    migration!(3, "0003_user_first_seen.sql"),
    migration!(4, "0004_event_counts.sql"),
    migration!(5, "0005_deduplication_windows.sql"),
    migration!(10, "0010_user_quarter_hours.sql"),
    migration!(11, "0011_first_seen.sql"),
    migration!(12, "0012_retire_user_activity.sql"),
    migration!(13, "0013_layer_changes.sql"),
    migration!(20, "0020_ingest_cost.sql"),
    migration!(21, "0021_fewer_merges.sql"),
    migration!(30, "0030_identity_links.sql"),
];

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32 COMMENT 'Migration number (the file schema/migrations/NNNN_*.sql)',
    name       String COMMENT 'Migration file name',
    applied_at DateTime('UTC') DEFAULT now() COMMENT 'When the migration was applied'
)
ENGINE = ReplacingMergeTree
ORDER BY version
COMMENT 'Schema migrations applied to this database by growth-collector or growth-aggregator'";

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database name is not a plain identifier.
    #[error(
        "invalid database name {0:?}: use letters, digits and underscores, not starting with a digit"
    )]
    InvalidDatabase(String),
    /// ClickHouse refused or could not be reached.
    #[error("migration {name} failed: {source}")]
    Statement {
        /// Migration file (or "setup").
        name: &'static str,
        /// The ClickHouse client's error.
        #[source]
        source: clickhouse::error::Error,
    },
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<u32>,
    /// The version the database is at now.
    pub current: u32,
}

/// Returns true for a database name usable as a ClickHouse identifier.
pub fn is_valid_database_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Splits a migration file into statements: a statement ends with `;` at the end
/// of a line; comment-only chunks are dropped.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            push_statement(&mut out, &current);
            current.clear();
        }
    }
    push_statement(&mut out, &current);
    out
}

fn push_statement(out: &mut Vec<String>, chunk: &str) {
    let has_code = chunk
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
    if has_code {
        let stmt = chunk.trim().trim_end_matches(';').trim_end();
        out.push(stmt.to_owned());
    }
}

/// Creates `database` if needed and applies every migration not yet recorded there.
/// `client` may point at any database; the returned report says what was applied.
pub async fn migrate(client: &Client, database: &str) -> Result<MigrationReport, MigrateError> {
    migrate_to(client, database, u32::MAX).await
}

/// Like [`migrate`], but stops after version `last` (to test how a migration moves
/// data written by an older schema).
pub async fn migrate_to(
    client: &Client,
    database: &str,
    last: u32,
) -> Result<MigrationReport, MigrateError> {
    if !is_valid_database_name(database) {
        return Err(MigrateError::InvalidDatabase(database.to_owned()));
    }
    let setup = |source| MigrateError::Statement {
        name: "setup",
        source,
    };
    client
        .query("CREATE DATABASE IF NOT EXISTS ? COMMENT 'Growth telemetry: events and the views DAU and retention are computed from'")
        .bind(Identifier(database))
        .execute()
        .await
        .map_err(setup)?;
    let db = client.clone().with_database(database);
    db.query(CREATE_SCHEMA_MIGRATIONS)
        .execute()
        .await
        .map_err(setup)?;
    let applied_before: Vec<u32> = db
        .query("SELECT DISTINCT version FROM ? ORDER BY version")
        .bind(Identifier(SCHEMA_MIGRATIONS))
        .fetch_all()
        .await
        .map_err(setup)?;

    let mut report = MigrationReport {
        current: applied_before.iter().copied().max().unwrap_or(0),
        ..Default::default()
    };
    for migration in MIGRATIONS.iter().filter(|m| m.version <= last) {
        if applied_before.contains(&migration.version) {
            continue;
        }
        let failed = |source| MigrateError::Statement {
            name: migration.name,
            source,
        };
        for stmt in statements(migration.sql) {
            // Statements are trusted text from this crate, not user input; `query_raw`
            // keeps `?` inside SQL comments and literals from being read as binds.
            db.query_raw(&stmt).execute().await.map_err(failed)?;
        }
        db.query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            database,
            "applied migration"
        );
        report.applied.push(migration.version);
        report.current = report.current.max(migration.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_drops_comments() {
        let sql = "-- header\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- two\nCREATE VIEW b AS\nSELECT 1;\n-- trailing\n";
        assert_eq!(
            statements(sql),
            vec![
                "-- header\nCREATE TABLE a (x UInt8) ENGINE = Memory",
                "-- two\nCREATE VIEW b AS\nSELECT 1"
            ]
        );
    }

    #[test]
    fn every_migration_has_statements_and_comments() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            // Numbers are blocks per work stream (0005-0009, 0010-0019, …): increasing, not contiguous.
            if i > 0 {
                assert!(
                    m.version > MIGRATIONS[i - 1].version,
                    "{} out of order",
                    m.name
                );
            }
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{} is not numbered {}",
                m.name,
                m.version
            );
            let stmts = statements(m.sql);
            assert!(!stmts.is_empty(), "{} is empty", m.name);
            for s in stmts.iter().filter(|s| s.contains("CREATE TABLE")) {
                assert!(
                    s.contains("COMMENT"),
                    "{} has a table without COMMENT",
                    m.name
                );
                assert!(s.contains("IF NOT EXISTS"), "{} is not idempotent", m.name);
            }
        }
    }

    #[test]
    fn database_names_are_identifiers() {
        assert!(is_valid_database_name("growth"));
        assert!(is_valid_database_name("growth_test_42"));
        assert!(!is_valid_database_name("1growth"));
        assert!(!is_valid_database_name("growth; DROP"));
        assert!(!is_valid_database_name(""));
    }
}
