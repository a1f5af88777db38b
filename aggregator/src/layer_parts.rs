//! The deletion check: which month partitions of the layer tables changed by anything
//! other than an insert since the last refresh, read from `system.parts`.
//!
//! Why: the day cache ([`crate::day_sets`]) re-reads a day when its insert marker
//! (`layer_changes`) moves, but deletions write no marker: `ALTER TABLE … DELETE` or
//! `UPDATE`, lightweight `DELETE`, a dropped part or partition, `REPLACE PARTITION`,
//! `TRUNCATE`, a TTL. They all leave a trace in the active parts of the table, and
//! comparing the parts of two refreshes names the partitions whose rows may differ;
//! only the cached days of those partitions are read again. Measured on chDB 26.9:
//!
//! * an insert adds a part of fresh block numbers at level 0; a merge replaces parts
//!   by one covering their block range at a higher level, with the highest mutation
//!   version among them. Neither changes what the rows say (the markers cover
//!   inserts), so both pass;
//! * a mutation (`ALTER … DELETE/UPDATE`, lightweight `DELETE`, which is
//!   `UPDATE _row_exists = 0`) gives every part of the table a new data version, but
//!   a part it left untouched is a hard-linked clone with the same `hash_of_all_files`
//!   — so a mutation names only the partitions whose parts it really rewrote;
//! * `DROP PART`, `DROP PARTITION`, `TRUNCATE`, `REPLACE PARTITION`: a block range of
//!   the last refresh is no longer covered by any active part;
//! * a TTL deletes rows in merges, which keep the block range: a merge over a part
//!   that carries TTL information counts as a change (the layer has no TTL today);
//! * lightweight updates (patch parts, `patch-…-<partition>`, only on tables with
//!   `enable_block_number_column`): a new patch part changes its partition;
//! * a dropped and re-created table has a new UUID: all of its days change.
//!
//! Not seen: parts attached with `ATTACH PART/PARTITION` into a layer table without
//! removing any (they look like an insert, and write no marker). Restoring a backup
//! that way needs the state file removed (`--state-dir`), or a restart after it.
//!
//! `first_seen_latest` is not watched: no cached day is read from it. It is the
//! lookup that decides which rows an insert writes into `first_seen_changes`, so a
//! deletion there shows in the later inserts, and their markers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use clickhouse::Client;
use growth_schema::tables::{FIRST_SEEN_CHANGES, IDENTITY_LINKS, USER_QUARTER_HOURS};
use serde::{Deserialize, Serialize};

use crate::rows::Layer;

/// One active part of a layer table, as `system.parts` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct Part {
    pub table: String,
    pub partition_id: String,
    pub min_block: i64,
    pub max_block: i64,
    pub level: u32,
    pub data_version: u64,
    /// `hash_of_all_files`: equal for a part a mutation left untouched.
    pub hash: String,
    /// The part carries TTL information: its merges may delete rows.
    pub ttl: bool,
}

impl Part {
    /// The mutation version the part's rows went through (0: none).
    fn mutation(&self) -> u64 {
        // An unmutated part's data version is its first block number; a mutation's
        // number is allocated after every block it applies to, so it never equals it.
        if self.data_version == self.min_block as u64 {
            0
        } else {
            self.data_version
        }
    }

    fn covers(&self, other: &Part) -> bool {
        self.min_block <= other.min_block && other.max_block <= self.max_block
    }

    fn same_range(&self, other: &Part) -> bool {
        self.min_block == other.min_block
            && self.max_block == other.max_block
            && self.level == other.level
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct TableUuid {
    name: String,
    uuid: String,
}

/// The active parts of the watched tables at one refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerParts {
    /// Table → UUID.
    uuids: BTreeMap<String, String>,
    /// Table → partition id → parts, sorted.
    parts: BTreeMap<String, BTreeMap<String, Vec<Part>>>,
}

/// What changed in one layer since the previous [`LayerParts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Rows of these UTC ranges (month partitions) may differ.
    Ranges(Vec<Range<DateTime<Utc>>>),
    /// Any row may differ (a re-created table, an unknown partitioning).
    Everything,
}

impl Changed {
    /// Whether a day whose UTC time is `day` (start..end) may have changed.
    pub fn touches(&self, day: &Range<DateTime<Utc>>) -> bool {
        match self {
            Changed::Everything => true,
            Changed::Ranges(ranges) => ranges
                .iter()
                .any(|r| r.start < day.end && day.start < r.end),
        }
    }
}

/// The watched tables, by layer.
const WATCHED: [(Layer, &str); 2] = [
    (Layer::Activity, USER_QUARTER_HOURS),
    (Layer::FirstSeen, FIRST_SEEN_CHANGES),
];

impl LayerParts {
    /// Reads the active parts of the layer tables (a few dozen rows).
    pub async fn read(client: &Client) -> clickhouse::error::Result<Self> {
        let mut tables: Vec<&str> = WATCHED.iter().map(|(_, t)| *t).collect();
        tables.push(IDENTITY_LINKS);
        let parts = client
            .query(
                "SELECT table, partition_id, min_block_number AS min_block, max_block_number AS max_block,
                        level, data_version, hash_of_all_files AS hash,
                        delete_ttl_info_max > toDateTime(0) OR notEmpty(rows_where_ttl_info.max)
                            OR notEmpty(group_by_ttl_info.max) AS ttl
                 FROM system.parts
                 WHERE database = currentDatabase() AND table IN {tables:Array(String)} AND active",
            )
            .param("tables", &tables)
            .fetch_all::<Part>();
        let uuids = client
            .query(
                "SELECT name, toString(uuid) AS uuid FROM system.tables
                 WHERE database = currentDatabase() AND name IN {tables:Array(String)}",
            )
            .param("tables", &tables)
            .fetch_all::<TableUuid>();
        let (parts, uuids) = tokio::try_join!(parts, uuids)?;
        Ok(Self::from_rows(
            uuids.into_iter().map(|u| (u.name, u.uuid)).collect(),
            parts,
        ))
    }

    fn from_rows(uuids: BTreeMap<String, String>, rows: Vec<Part>) -> Self {
        let mut parts: BTreeMap<String, BTreeMap<String, Vec<Part>>> = BTreeMap::new();
        for p in rows {
            parts
                .entry(p.table.clone())
                .or_default()
                .entry(p.partition_id.clone())
                .or_default()
                .push(p);
        }
        for partitions in parts.values_mut() {
            for list in partitions.values_mut() {
                list.sort_by_key(|p| (p.min_block, p.max_block, p.level));
            }
        }
        Self { uuids, parts }
    }

    /// Whether `identity_links` changed since `before` by anything but an insert (the
    /// links are then read again in full).
    pub fn links_changed(&self, before: &LayerParts) -> bool {
        let empty = BTreeMap::new();
        before.uuids.get(IDENTITY_LINKS) != self.uuids.get(IDENTITY_LINKS)
            || changed_partitions(
                before.parts.get(IDENTITY_LINKS).unwrap_or(&empty),
                self.parts.get(IDENTITY_LINKS).unwrap_or(&empty),
            )
            .is_some()
    }

    /// Per layer, what may differ from `before` other than inserted rows; layers
    /// without a change are absent.
    pub fn changes_since(&self, before: &LayerParts) -> BTreeMap<Layer, Changed> {
        let empty = BTreeMap::new();
        let mut changes = BTreeMap::new();
        for (layer, table) in WATCHED {
            let (old, new) = (
                before.parts.get(table).unwrap_or(&empty),
                self.parts.get(table).unwrap_or(&empty),
            );
            let changed = if before.uuids.get(table) != self.uuids.get(table) {
                Some(Changed::Everything)
            } else {
                changed_partitions(old, new)
            };
            if let Some(c) = changed {
                changes.insert(layer, c);
            }
        }
        changes
    }
}

/// The partitions of one table whose rows may differ, as UTC ranges.
fn changed_partitions(
    old: &BTreeMap<String, Vec<Part>>,
    new: &BTreeMap<String, Vec<Part>>,
) -> Option<Changed> {
    let no_parts = Vec::new();
    let mut months: BTreeSet<&str> = BTreeSet::new();
    for (id, old_parts) in old {
        if is_patch(id) {
            continue;
        }
        let new_parts = new.get(id).unwrap_or(&no_parts);
        if !only_merged(old_parts, new_parts) {
            months.insert(id);
        }
    }
    // Lightweight updates: a patch part not seen before changes its partition.
    for (id, new_parts) in new.iter().filter(|(id, _)| is_patch(id)) {
        let old_parts = old.get(id).unwrap_or(&no_parts);
        if new_parts.iter().any(|p| !old_parts.contains(p)) {
            months.insert(id.rsplit('-').next().unwrap_or(id));
        }
    }
    if months.is_empty() {
        return None;
    }
    let ranges: Option<Vec<_>> = months.into_iter().map(month_range).collect();
    Some(ranges.map_or(Changed::Everything, Changed::Ranges))
}

fn is_patch(partition_id: &str) -> bool {
    partition_id.starts_with("patch-")
}

/// True when `new` holds the rows of `old` unchanged, merged or not, plus inserts.
fn only_merged(old: &[Part], new: &[Part]) -> bool {
    old.iter().all(|o| {
        let Some(n) = new.iter().find(|n| n.covers(o)) else {
            return false; // dropped, truncated or replaced
        };
        if n.same_range(o) {
            // Unchanged, or a mutation's clone of it (same files).
            return n.data_version == o.data_version || n.hash == o.hash;
        }
        // A merge keeps the highest mutation version of its parts; a higher one means
        // a mutation ran on them first. A TTL may delete rows in any merge.
        let covered = old.iter().filter(|x| n.covers(x));
        let before = covered.clone().map(Part::mutation).max().unwrap_or(0);
        n.mutation() <= before && !covered.clone().any(|x| x.ttl)
    })
}

/// The UTC time of a `toYYYYMM` partition id; `None` for any other partitioning.
fn month_range(id: &str) -> Option<Range<DateTime<Utc>>> {
    if id.len() != 6 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month) = (id[..4].parse::<i32>().ok()?, id[4..].parse::<u32>().ok()?);
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let utc = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    Some(utc(first)..utc(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: &str, min: i64, max: i64, level: u32, version: u64, hash: &str) -> Part {
        Part {
            table: USER_QUARTER_HOURS.to_owned(),
            partition_id: partition.to_owned(),
            min_block: min,
            max_block: max,
            level,
            data_version: version,
            hash: hash.to_owned(),
            ttl: false,
        }
    }

    fn state(parts: Vec<Part>) -> LayerParts {
        let uuids = BTreeMap::from([(USER_QUARTER_HOURS.to_owned(), "u1".to_owned())]);
        LayerParts::from_rows(uuids, parts)
    }

    fn november() -> Changed {
        Changed::Ranges(vec![month_range("202611").expect("month")])
    }

    /// The sequences below are what chDB 26.9 showed in `system.parts` for each kind
    /// of change (the module docs).
    #[test]
    fn inserts_and_merges_change_nothing() {
        let before = state(vec![
            part("202611", 1, 1, 0, 1, "a"),
            part("202611", 3, 3, 0, 3, "b"),
            part("202612", 2, 2, 0, 2, "c"),
        ]);
        let after = state(vec![
            part("202611", 1, 5, 1, 1, "m"),
            part("202612", 2, 2, 0, 2, "c"),
            part("202612", 6, 6, 0, 6, "d"),
            part("202701", 7, 7, 0, 7, "e"),
        ]);
        assert!(after.changes_since(&before).is_empty());
        assert!(before.changes_since(&before).is_empty());
    }

    #[test]
    fn a_mutation_names_only_the_partitions_it_rewrote() {
        let before = state(vec![
            part("202611", 1, 5, 1, 1, "m"),
            part("202612", 2, 2, 0, 2, "c"),
        ]);
        // ALTER DELETE (mutation 7) matched rows in November only: December's part
        // is a clone with the same files.
        let after = state(vec![
            part("202611", 1, 5, 1, 7, "m2"),
            part("202612", 2, 2, 0, 7, "c"),
        ]);
        let changes = after.changes_since(&before);
        assert_eq!(changes.get(&Layer::Activity), Some(&november()));
        // The mutated part merged with a newer insert before the next look.
        let merged = state(vec![
            part("202611", 1, 9, 2, 7, "mm"),
            part("202612", 2, 2, 0, 7, "c"),
        ]);
        assert_eq!(
            merged.changes_since(&before).get(&Layer::Activity),
            Some(&november())
        );
        // Later merges of the mutated part change nothing more.
        let later = state(vec![
            part("202611", 1, 12, 3, 7, "mmm"),
            part("202612", 2, 2, 0, 7, "c"),
        ]);
        assert!(later.changes_since(&after).is_empty());
    }

    #[test]
    fn dropped_parts_partitions_and_re_created_tables_are_changes() {
        let before = state(vec![
            part("202611", 1, 1, 0, 1, "a"),
            part("202611", 3, 3, 0, 3, "b"),
            part("202612", 2, 2, 0, 2, "c"),
        ]);
        let dropped_part = state(vec![
            part("202611", 1, 1, 0, 1, "a"),
            part("202612", 2, 2, 0, 2, "c"),
        ]);
        assert_eq!(
            dropped_part.changes_since(&before).get(&Layer::Activity),
            Some(&november())
        );
        // REPLACE PARTITION: new parts, new blocks, the old ones gone.
        let replaced = state(vec![
            part("202611", 11, 11, 0, 11, "r"),
            part("202612", 2, 2, 0, 2, "c"),
        ]);
        assert_eq!(
            replaced.changes_since(&before).get(&Layer::Activity),
            Some(&november())
        );
        let truncated = state(vec![]);
        let Some(Changed::Ranges(ranges)) =
            truncated.changes_since(&before).remove(&Layer::Activity)
        else {
            panic!("a truncated table changes its months");
        };
        assert_eq!(ranges.len(), 2);
        let mut recreated = before.clone();
        recreated
            .uuids
            .insert(USER_QUARTER_HOURS.to_owned(), "u2".to_owned());
        assert_eq!(
            recreated.changes_since(&before).get(&Layer::Activity),
            Some(&Changed::Everything)
        );
    }

    #[test]
    fn ttl_merges_and_patch_parts_are_changes() {
        let mut with_ttl = part("202611", 1, 1, 1, 1, "a");
        with_ttl.ttl = true;
        let before = state(vec![with_ttl]);
        let merged = state(vec![part("202611", 1, 1, 2, 1, "t")]);
        assert_eq!(
            merged.changes_since(&before).get(&Layer::Activity),
            Some(&november())
        );
        let base = state(vec![part("202611", 1, 1, 0, 1, "a")]);
        let patched = state(vec![
            part("202611", 1, 1, 0, 1, "a"),
            part("patch-0874-202611", 15, 15, 0, 14, "p"),
        ]);
        assert_eq!(
            patched.changes_since(&base).get(&Layer::Activity),
            Some(&november())
        );
        let odd = state(vec![part("all", 1, 1, 0, 1, "a")]);
        assert_eq!(
            state(vec![]).changes_since(&odd).get(&Layer::Activity),
            Some(&Changed::Everything)
        );
    }

    #[test]
    fn months_map_to_utc_ranges() {
        let r = month_range("202612").expect("month");
        assert_eq!(r.start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(r.end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(month_range("all").is_none());
        assert!(month_range("202613").is_none());
        let day = |a: &str, b: &str| {
            a.parse::<DateTime<Utc>>().expect("time")..b.parse::<DateTime<Utc>>().expect("time")
        };
        let dec = Changed::Ranges(vec![r]);
        // A local day that straddles the month's first UTC midnight is touched.
        assert!(dec.touches(&day("2026-11-30T23:00:00Z", "2026-12-01T23:00:00Z")));
        assert!(!dec.touches(&day("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z")));
    }
}
