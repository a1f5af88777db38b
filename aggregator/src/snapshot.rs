//! One refresh's result, computed from ClickHouse and then served from memory.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::day_sets::{Counts, IdentityCounts};
use crate::definitions::{
    CohortReport, Lifecycle, MetricDefinitions, Period, RecentRetention, RefreshPlan, Window,
    cohort_reports, last_complete, lifecycle_periods, recent_retention,
};
use crate::rows::{EventTotal, LifecycleRow};
use crate::source::MetricsSource;

/// Every metric of every app, as of `generated_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub generated_at: DateTime<Utc>,
    pub today: NaiveDate,
    pub timezone: Tz,
    pub retention_days: Vec<u32>,
    /// How many of the latest cohorts `/metrics` exports (`--cohorts`).
    pub exported_cohorts: u32,
    /// How many of the latest cohorts people see (report, API): every retention day fits.
    pub report_cohorts: u32,
    pub apps: BTreeMap<String, AppMetrics>,
}

/// The metrics of one app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppMetrics {
    pub active_users: BTreeMap<Window, u64>,
    /// The same windows one window earlier (1d: yesterday).
    pub previous_active_users: BTreeMap<Window, u64>,
    /// Distinct active users in the 30 days ending yesterday.
    pub previous_month_users: u64,
    /// Every computed cohort, oldest first, today last (more than are exported).
    pub cohorts: Vec<CohortReport>,
    /// Day N → recent retention.
    pub recent_retention: BTreeMap<u32, RecentRetention>,
    /// Event name → events ever.
    pub totals: BTreeMap<String, u64>,
    /// What the app's identify and merge links did.
    pub identity: IdentityCounts,
    /// Per period, the lifecycle of each period the cached days cover
    /// ([`lifecycle_periods`]), oldest first, the current one (in progress) last.
    pub lifecycle: BTreeMap<Period, Vec<(NaiveDate, Lifecycle)>>,
}

impl AppMetrics {
    /// Active users of a window (0 when nobody was active).
    pub fn active(&self, window: Window) -> u64 {
        self.active_users.get(&window).copied().unwrap_or(0)
    }

    /// DAU ÷ MAU; `None` when MAU is 0.
    pub fn stickiness(&self) -> Option<f64> {
        let mau = self.active(Window::Month);
        (mau > 0).then(|| self.active(Window::Day) as f64 / mau as f64)
    }

    /// Yesterday's DAU ÷ the MAU of the 30 days ending yesterday.
    pub fn previous_stickiness(&self) -> Option<f64> {
        let dau = self
            .previous_active_users
            .get(&Window::Day)
            .copied()
            .unwrap_or(0);
        (self.previous_month_users > 0).then(|| dau as f64 / self.previous_month_users as f64)
    }

    /// The lifecycle of the last complete period before `today`'s (yesterday; last
    /// ISO week), and its first day.
    pub fn last_lifecycle(
        &self,
        period: Period,
        today: NaiveDate,
    ) -> Option<(NaiveDate, Lifecycle)> {
        let start = last_complete(period, today);
        self.lifecycle
            .get(&period)?
            .iter()
            .find(|(d, _)| *d == start)
            .copied()
    }

    /// The latest `n` cohorts, oldest first.
    pub fn latest_cohorts(&self, n: u32) -> &[CohortReport] {
        let skip = self.cohorts.len().saturating_sub(n as usize);
        &self.cohorts[skip..]
    }
}

/// Computes a snapshot at instant `now` from the source's day cache
/// ([`crate::day_sets`]): reads what changed since the last refresh, counts in memory.
pub async fn compute(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    now: DateTime<Utc>,
) -> clickhouse::error::Result<MetricsSnapshot> {
    let plan = defs.plan(now);
    let mut sets = source.day_sets().clone().lock_owned().await;
    let (totals, ()) = tokio::try_join!(
        source.cached_event_totals(),
        sets.update(source.queries(), defs, &plan)
    )?;
    // Counting sorts and merges up to millions of keys: off the runtime, so /metrics
    // keeps answering meanwhile. The task owns the lock: a refresh cut short by its
    // timeout leaves it to finish, and the cache whole for the next refresh.
    let counts = {
        let (defs, plan) = (defs.clone(), plan.clone());
        tokio::task::spawn_blocking(move || {
            let counts = sets.count(&defs, &plan);
            // Starts a write of the past days when one changed (the write runs apart).
            sets.save(&defs, plan.today);
            counts
        })
        .await
        .map_err(|e| clickhouse::error::Error::Custom(format!("counting failed: {e}")))?
    };
    Ok(assemble(defs, plan, now, totals, counts))
}

/// Computes a snapshot at instant `now` with the metrics counted in ClickHouse, every
/// row of the reported ranges read: the cross-check of [`compute`] (same result) and
/// its cold-cache baseline in the benchmark.
pub async fn compute_in_sql(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    now: DateTime<Utc>,
) -> clickhouse::error::Result<MetricsSnapshot> {
    let plan = defs.plan(now);
    let lifecycle_of = |period| {
        let starts = lifecycle_periods(period, plan.today);
        let (first, last) = (starts.first().copied(), starts.last().copied());
        async move {
            match (first, last) {
                (Some(first), Some(last)) => {
                    let rows = source
                        .queries()
                        .lifecycle(defs, period, first, last, None)
                        .await?;
                    Ok((period, rows))
                }
                _ => Ok((period, Vec::new())),
            }
        }
    };
    let (totals, active, sizes, retained, links, days, weeks) = tokio::try_join!(
        source.queries().event_totals(),
        source.queries().active_users(defs, &plan),
        source.queries().cohort_sizes(defs, &plan),
        source.queries().retained(defs, &plan),
        source.queries().identity_links(None),
        lifecycle_of(Period::Day),
        lifecycle_of(Period::Week),
    )?;
    let mut by_app: BTreeMap<String, Vec<crate::identity::Link>> = BTreeMap::new();
    for r in links {
        by_app
            .entry(r.app)
            .or_default()
            .push(crate::identity::Link {
                merge: r.merge,
                linked: r.linked_key,
                known: r.known_key,
                time_ms: r.time_ms,
            });
    }
    let identity = by_app
        .into_iter()
        .map(|(app, links)| {
            let r = crate::identity::resolve(&links);
            let counts = IdentityCounts {
                claimed_by_another: r.claimed_by_another,
                known_as_anonymous: r.known_as_anonymous,
                joined: r.persons.iter().filter(|(k, p)| k != p).count() as u64,
            };
            (app, counts)
        })
        .collect();
    let counts = Counts {
        active,
        sizes,
        retained,
        identity,
        lifecycle: BTreeMap::from([days, weeks]),
    };
    Ok(assemble(defs, plan, now, totals, counts))
}

fn assemble(
    defs: &MetricDefinitions,
    plan: RefreshPlan,
    now: DateTime<Utc>,
    totals: Vec<EventTotal>,
    counts: Counts,
) -> MetricsSnapshot {
    let Counts {
        active,
        sizes,
        retained,
        identity,
        lifecycle,
    } = counts;

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
        app.previous_active_users = BTreeMap::from([
            (Window::Day, a.previous_day),
            (Window::Week, a.previous_week),
            (Window::Month, a.previous_month),
        ]);
        app.previous_month_users = a.month_to_yesterday;
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
    for (app, counts) in identity {
        if let Some(m) = apps.get_mut(&app) {
            m.identity = counts;
        }
    }
    let mut lifecycle_by_app: BTreeMap<(String, Period), BTreeMap<NaiveDate, Lifecycle>> =
        BTreeMap::new();
    for (period, rows) in lifecycle {
        for r in rows {
            let LifecycleRow {
                app,
                start,
                new,
                returning,
                resurrecting,
                dormant,
            } = r;
            lifecycle_by_app.entry((app, period)).or_default().insert(
                start,
                Lifecycle {
                    new,
                    returning,
                    resurrecting,
                    dormant,
                },
            );
        }
    }
    let empty_sizes = BTreeMap::new();
    let empty_retained = BTreeMap::new();
    for (name, app) in apps.iter_mut() {
        for w in Window::ALL {
            app.active_users.entry(w).or_insert(0);
            app.previous_active_users.entry(w).or_insert(0);
        }
        let sizes = sizes_by_app.get(name).unwrap_or(&empty_sizes);
        let retained = retained_by_app.get(name).unwrap_or(&empty_retained);
        app.cohorts = cohort_reports(defs, &plan, sizes, retained);
        app.recent_retention = recent_retention(defs, plan.today, &app.cohorts);
        for period in Period::ALL {
            let counted = lifecycle_by_app.remove(&(name.clone(), period));
            let series = lifecycle_periods(period, plan.today)
                .into_iter()
                .map(|start| {
                    let l = counted
                        .as_ref()
                        .and_then(|c| c.get(&start).copied())
                        .unwrap_or_default();
                    (start, l)
                })
                .collect();
            app.lifecycle.insert(period, series);
        }
    }
    MetricsSnapshot {
        generated_at: now,
        today: plan.today,
        timezone: defs.timezone,
        retention_days: defs.retention_days.clone(),
        exported_cohorts: defs.cohorts,
        report_cohorts: defs.report_cohorts(),
        apps,
    }
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
        let mut snapshot = Some(Arc::new(snapshot));
        match self.0.write() {
            Ok(mut guard) => std::mem::swap(&mut *guard, &mut snapshot),
            Err(poisoned) => std::mem::swap(&mut *poisoned.into_inner(), &mut snapshot),
        }
        // The previous snapshot (thousands of cohort rows at many apps) is freed here,
        // after the lock is released: readers (every /metrics request) never wait on it.
        drop(snapshot);
    }
}
