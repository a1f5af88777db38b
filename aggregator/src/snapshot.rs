//! One refresh's result, computed from ClickHouse and then served from memory.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::definitions::{CohortReport, MetricDefinitions, Window, cohort_reports};
use crate::queries::MetricsSource;

/// Every metric of every app, as of `generated_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub generated_at: DateTime<Utc>,
    pub today: NaiveDate,
    pub timezone: Tz,
    pub retention_days: Vec<u32>,
    pub apps: BTreeMap<String, AppMetrics>,
}

/// The metrics of one app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppMetrics {
    pub active_users: BTreeMap<Window, u64>,
    /// Oldest first, today last.
    pub cohorts: Vec<CohortReport>,
    /// Event name → events ever.
    pub totals: BTreeMap<String, u64>,
}

/// Computes a snapshot at instant `now`: four queries on the views.
pub async fn compute(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    now: DateTime<Utc>,
) -> clickhouse::error::Result<MetricsSnapshot> {
    let plan = defs.plan(now);
    let (totals, active, sizes, retained) = tokio::try_join!(
        source.event_totals(),
        source.active_users(defs, &plan),
        source.cohort_sizes(defs, &plan),
        source.retained(defs, &plan),
    )?;

    let mut apps: BTreeMap<String, AppMetrics> = BTreeMap::new();
    for t in totals {
        apps.entry(t.app)
            .or_default()
            .totals
            .insert(t.event, t.events);
    }
    for a in active {
        let app = apps.entry(a.app).or_default();
        app.active_users = BTreeMap::from([
            (Window::Day, a.day),
            (Window::Week, a.week),
            (Window::Month, a.month),
        ]);
    }
    let mut sizes_by_app: BTreeMap<String, BTreeMap<NaiveDate, u64>> = BTreeMap::new();
    for s in sizes {
        sizes_by_app
            .entry(s.app)
            .or_default()
            .insert(s.cohort, s.users);
    }
    let mut retained_by_app: BTreeMap<String, BTreeMap<(NaiveDate, u32), u64>> = BTreeMap::new();
    for r in retained {
        retained_by_app
            .entry(r.app)
            .or_default()
            .insert((r.cohort, r.day_n), r.users);
    }
    let empty_sizes = BTreeMap::new();
    let empty_retained = BTreeMap::new();
    for (name, app) in apps.iter_mut() {
        for w in Window::ALL {
            app.active_users.entry(w).or_insert(0);
        }
        let sizes = sizes_by_app.get(name).unwrap_or(&empty_sizes);
        let retained = retained_by_app.get(name).unwrap_or(&empty_retained);
        app.cohorts = cohort_reports(defs, &plan, sizes, retained);
    }
    Ok(MetricsSnapshot {
        generated_at: now,
        today: plan.today,
        timezone: defs.timezone,
        retention_days: defs.retention_days.clone(),
        apps,
    })
}

/// The latest snapshot, shared between the refresher and the HTTP handlers.
#[derive(Clone, Default)]
pub struct SnapshotCache(Arc<RwLock<Option<Arc<MetricsSnapshot>>>>);

impl SnapshotCache {
    /// The latest snapshot, if a refresh has succeeded yet.
    pub fn latest(&self) -> Option<Arc<MetricsSnapshot>> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: MetricsSnapshot) {
        let snapshot = Some(Arc::new(snapshot));
        match self.0.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}
