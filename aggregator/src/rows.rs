//! The rows the growth views answer with, shared by the questions that read them
//! ([`crate::queries`]) and the caches that keep them between refreshes
//! ([`crate::day_sets`], [`crate::day_store`], [`crate::layer_parts`], [`crate::totals`]).
//! Plain data: this module asks nothing and keeps nothing.

use chrono::NaiveDate;
use growth_schema::tables::{FIRST_SEEN_CHANGES, USER_QUARTER_HOURS};
use serde::{Deserialize, Serialize};

/// Running total of one event in one app.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct EventTotal {
    pub app: String,
    pub event: String,
    pub events: u64,
}

/// Distinct active users of one app in the 1d, 7d and 30d windows.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct ActiveUsers {
    pub app: String,
    pub day: u64,
    pub week: u64,
    pub month: u64,
    pub previous_day: u64,
    pub previous_week: u64,
    pub previous_month: u64,
    /// The 30 days ending yesterday.
    pub month_to_yesterday: u64,
}

/// Size of one cohort.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct CohortSize {
    pub app: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub cohort: NaiveDate,
    pub users: u64,
}

/// Users of one cohort active on day `day_n` after it.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct Retained {
    pub app: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub cohort: NaiveDate,
    pub day_n: u32,
    pub users: u64,
}

/// The users of one app on one calendar day (active, or new: the day's cohort), sorted.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct DayUsers {
    pub app: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
    pub users: Vec<u64>,
}

/// A table of the layer whose days [`crate::day_sets::DaySets`] caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// `user_quarter_hours`: who was active when.
    Activity,
    /// `first_seen_changes`: who was first seen when.
    FirstSeen,
}

impl Layer {
    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            Layer::Activity => USER_QUARTER_HOURS,
            Layer::FirstSeen => FIRST_SEEN_CHANGES,
        }
    }
}

/// Rows ever written into one layer table for one app's calendar day.
#[derive(clickhouse::Row, Deserialize)]
pub struct LayerMarker {
    pub app: String,
    pub layer: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
    pub rows: u64,
}

/// Change markers: per layer and calendar day, rows ever written per app.
pub type Markers =
    std::collections::HashMap<(Layer, NaiveDate), std::collections::BTreeMap<String, u64>>;

/// One row of `identity_links` (an identify or a merge), as the refresh reads it.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct LinkRow {
    pub app: String,
    pub merge: bool,
    pub linked_key: u64,
    pub known_key: u64,
    pub time_ms: i64,
    pub inserted_ms: i64,
}

/// The first calendar day (in the configured zone) of one user key that has an event.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct KeyFirstDay {
    pub app: String,
    pub user_key: u64,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
}

/// Lifecycle of one app's period (docs/contract.md, "Metric definitions"), as the SQL path
/// counts it: `start` is the period's first day.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct LifecycleRow {
    pub app: String,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub start: NaiveDate,
    pub new: u64,
    pub returning: u64,
    pub resurrecting: u64,
    pub dormant: u64,
}
