//! Running totals (events per app and name, ever), kept per month between refreshes.
//!
//! Why: "ever" means every row of `event_counts`, a table that grows with history
//! (one row per app, event and quarter-hour: 800k rows at 720 days), so summing it
//! all each refresh made the steady refresh grow with history. The table is
//! partitioned by month, and each insert or mutation gives the parts it writes a new
//! block number or data version, so a month whose highest block number and data
//! version did not move since the last refresh holds the same rows (merges keep
//! both). A refresh reads `system.parts` (a few rows a month), sums again only the
//! months that moved (in practice the current one), and adds the cached sums of the
//! rest. A dropped month disappears from `system.parts` and from the totals.

use std::collections::BTreeMap;

use clickhouse::Client;
use clickhouse::sql::Identifier;
use growth_schema::tables::EVENT_COUNTS;
use serde::Deserialize;

use crate::rows::EventTotal;

/// What identifies the contents of one month partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionVersion {
    max_block: i64,
    data_version: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct PartitionRow {
    partition: String,
    max_block: i64,
    data_version: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct PartitionTotal {
    partition: String,
    app: String,
    event: String,
    events: u64,
}

/// One month's sums: (app, event, events).
type MonthSums = Vec<(String, String, u64)>;

/// Cached sums per month partition of `event_counts`.
#[derive(Default)]
pub struct TotalsCache {
    months: BTreeMap<String, (PartitionVersion, MonthSums)>,
}

impl TotalsCache {
    /// Events per app and name, ever: cached months plus the months that moved.
    pub async fn totals(&mut self, client: &Client) -> clickhouse::error::Result<Vec<EventTotal>> {
        let parts: Vec<PartitionRow> = client
            .query(
                "SELECT partition_id AS partition, max(max_block_number) AS max_block, max(data_version) AS data_version
                 FROM system.parts
                 WHERE database = currentDatabase() AND table = {table:String} AND active
                 GROUP BY partition_id",
            )
            .param("table", EVENT_COUNTS)
            .fetch_all()
            .await?;
        let current: BTreeMap<String, PartitionVersion> = parts
            .into_iter()
            .map(|p| {
                let version = PartitionVersion {
                    max_block: p.max_block,
                    data_version: p.data_version,
                };
                (p.partition, version)
            })
            .collect();
        self.months.retain(|m, _| current.contains_key(m));
        let moved: Vec<String> = current
            .iter()
            .filter(|(m, v)| self.months.get(*m).is_none_or(|(cached, _)| cached != *v))
            .map(|(m, _)| m.clone())
            .collect();
        if !moved.is_empty() {
            let rows: Vec<PartitionTotal> = client
                .query(
                    "SELECT _partition_id AS partition, app, event, sum(events) AS events
                     FROM ?
                     WHERE _partition_id IN {months:Array(String)}
                     GROUP BY partition, app, event",
                )
                .bind(Identifier(EVENT_COUNTS))
                .param("months", &moved)
                .fetch_all()
                .await?;
            let mut by_month: BTreeMap<String, MonthSums> = BTreeMap::new();
            for r in rows {
                by_month
                    .entry(r.partition)
                    .or_default()
                    .push((r.app, r.event, r.events));
            }
            for m in moved {
                // Parts read after the version: a newer insert shows as a move next time.
                let sums = by_month.remove(&m).unwrap_or_default();
                self.months.insert(m.clone(), (current[&m], sums));
            }
        }
        let mut totals: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (_, sums) in self.months.values() {
            for (app, event, events) in sums {
                *totals.entry((app.clone(), event.clone())).or_default() += events;
            }
        }
        Ok(totals
            .into_iter()
            .map(|((app, event), events)| EventTotal { app, event, events })
            .collect())
    }
}
