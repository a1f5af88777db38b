//! ClickHouse table names and row types. The SQL that creates them lives in
//! `schema/migrations/`; this module is how Rust code names and fills them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Raw growth events, one row per accepted log record (migration 0001).
pub const EVENTS: &str = "events";
/// Per app, UTC quarter-hour, event and user activity (migration 0002; retired by
/// 0012, no longer filled: read [`USER_QUARTER_HOURS`]).
pub const USER_ACTIVITY: &str = "user_activity";
/// Per app and user first/last seen time (migration 0003; retired by 0012, no longer
/// filled: read [`FIRST_SEEN_CHANGES`]).
pub const USER_FIRST_SEEN: &str = "user_first_seen";
/// Per app, UTC quarter-hour and user: seen, with the set of event names (migration 0010).
pub const USER_QUARTER_HOURS: &str = "user_quarter_hours";
/// Per app: first-seen quarter-hours as a log of +1/-1 changes sorted by time, read
/// by cohort range (migration 0011).
pub const FIRST_SEEN_CHANGES: &str = "first_seen_changes";
/// Per app and user: the first-seen quarter-hour (min), the lookup of
/// `first_seen_changes_mv` (migration 0011).
pub const FIRST_SEEN_LATEST: &str = "first_seen_latest";
/// Per app, layer table and UTC quarter-hour: rows ever written, the change markers
/// the aggregator's day cache reads (migration 0013).
pub const LAYER_CHANGES: &str = "layer_changes";
/// Per app: every identify and merge link ever sent (migration 0030).
pub const IDENTITY_LINKS: &str = "identity_links";
/// View: per app, every user key of a person of two or more keys and the person's
/// key, the people rules in SQL (migration 0030).
pub const PERSON_KEYS: &str = "person_keys";
/// Per app, event and UTC quarter-hour event counts (migration 0004).
pub const EVENT_COUNTS: &str = "event_counts";
/// How a table names the user of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserColumn {
    /// `user_hash`: the 64-hex hash itself.
    Hash,
    /// `user_key`: `cityHash64(user_hash)`.
    Key,
    /// Two key columns, either naming the user (a link between two ids): a row goes
    /// when either side is erased.
    KeyPair(&'static str, &'static str),
}

impl UserColumn {
    /// The column's name.
    pub fn name(self) -> &'static str {
        match self {
            UserColumn::Hash => "user_hash",
            UserColumn::Key | UserColumn::KeyPair(..) => "user_key",
        }
    }
}

/// Every table that holds rows of a user, and the column that names them: an
/// erasure deletes from each (collector/src/erasure). A new table that holds users
/// (a link or identity table) is added here, and only here; the erasure test checks
/// that every table of the database with a `user_hash` or `user_key` column is
/// listed. `event_counts` (no user) is corrected by the erasure separately, and
/// `layer_changes` holds row counts per quarter-hour only.
pub const USER_TABLES: &[(&str, UserColumn)] = &[
    (EVENTS, UserColumn::Hash),
    (USER_QUARTER_HOURS, UserColumn::Key),
    (FIRST_SEEN_CHANGES, UserColumn::Key),
    (FIRST_SEEN_LATEST, UserColumn::Key),
    (USER_ACTIVITY, UserColumn::Key),
    (USER_FIRST_SEEN, UserColumn::Key),
    (
        IDENTITY_LINKS,
        UserColumn::KeyPair("linked_key", "known_key"),
    ),
];

/// Applied migration versions, written by [`crate::migrate`].
pub const SCHEMA_MIGRATIONS: &str = "schema_migrations";

/// One row of [`EVENTS`] as the collector inserts it. `day` and `user_key` are
/// computed by ClickHouse (column DEFAULTs) so every writer derives them alike.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct EventRow {
    /// Application: the resource attribute `service.name`.
    pub app: String,
    /// Event name.
    pub event: String,
    /// When the event happened.
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub event_time: DateTime<Utc>,
    /// Hashed user (64 lowercase hex), or empty for an anonymous event.
    pub user_hash: String,
    /// The `source` attribute, or empty.
    pub source: String,
    /// Every other attribute as text.
    pub properties: Vec<(String, String)>,
    /// The numeric attributes as numbers.
    pub numbers: Vec<(String, f64)>,
    /// When the collector received the record.
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub received_at: DateTime<Utc>,
}
