//! The metrics source: the questions ([`crate::queries`]) plus what the refreshes keep
//! between them — the days of users ([`crate::day_sets`], on disk through
//! [`crate::day_store`]) and the running totals of past months ([`crate::totals`]).
//! One per database; cloning it shares the caches.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clickhouse::Client;
use tokio::sync::Mutex;

use crate::day_sets::DaySets;
use crate::day_store::DayStore;
use crate::definitions::MetricDefinitions;
use crate::queries::Queries;
use crate::rows::EventTotal;
use crate::totals::TotalsCache;

/// Reads the growth views of one database and keeps the refreshes' caches.
#[derive(Clone)]
pub struct MetricsSource {
    queries: Queries,
    /// The days of users the refreshes keep between them.
    day_sets: Arc<Mutex<DaySets>>,
    /// The running totals of past months, likewise.
    totals: Arc<Mutex<TotalsCache>>,
}

impl MetricsSource {
    /// `client` must be bound to the growth database. ClickHouse stops any query
    /// of this source after `timeout` (`max_execution_time`), so a slow question
    /// never holds a refresh or an API request for long.
    pub fn new(client: Client, timeout: std::time::Duration) -> Self {
        Self {
            queries: Queries::new(client, timeout),
            day_sets: Default::default(),
            totals: Default::default(),
        }
    }

    /// Keeps the day cache across restarts in `dir` ([`crate::day_store`]); the file
    /// is per `database`.
    pub fn with_state_dir(mut self, dir: &std::path::Path, database: &str) -> Self {
        self.day_sets = Arc::new(Mutex::new(DaySets::with_store(DayStore::new(
            dir, database,
        ))));
        self
    }

    /// The questions, without the caches.
    pub fn queries(&self) -> &Queries {
        &self.queries
    }

    /// The client, for the on-demand questions of the JSON API.
    pub fn client(&self) -> &Client {
        self.queries.client()
    }

    /// Waits until the day cache is written (for a benchmark or a test that starts
    /// another aggregator on the same `--state-dir`).
    pub async fn flush_day_store(&self, defs: &MetricDefinitions, now: DateTime<Utc>) {
        let today = defs.plan(now).today;
        self.day_sets.lock().await.flush(defs, today).await;
    }

    /// Events per app and name, ever, summing again only the months that changed
    /// since the last call ([`crate::totals`]).
    pub async fn cached_event_totals(&self) -> clickhouse::error::Result<Vec<EventTotal>> {
        self.totals.lock().await.totals(self.queries.client()).await
    }

    /// The refreshes' day cache (one refresh at a time holds it).
    pub fn day_sets(&self) -> &Arc<Mutex<DaySets>> {
        &self.day_sets
    }
}
