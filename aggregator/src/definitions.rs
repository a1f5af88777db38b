//! The metric definitions of docs/contract.md, as pure functions of "now" and the settings.
//!
//! Nothing here talks to ClickHouse: it decides which calendar days, windows,
//! cohorts and (cohort, day N) pairs a refresh asks for, and turns the answers into
//! a report. That keeps every rule ("today contains now", "absent, never a fake 0")
//! testable without a database.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// What the operator chose: the zone that defines days, the events that make a user
/// active, the retention days and how many cohorts to report.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDefinitions {
    pub timezone: Tz,
    /// Empty means every event is an active event.
    pub active_events: Vec<String>,
    /// Sorted, without duplicates.
    pub retention_days: Vec<u32>,
    pub cohorts: u32,
}

/// A window of calendar days ending today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Window {
    Day,
    Week,
    Month,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Day, Window::Week, Window::Month];

    /// Number of calendar days, today included.
    pub fn days(self) -> u64 {
        match self {
            Window::Day => 1,
            Window::Week => 7,
            Window::Month => 30,
        }
    }

    /// The `window` label value.
    pub fn label(self) -> &'static str {
        match self {
            Window::Day => "1d",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }
}

/// The instant (UTC) at which `date` begins in `tz`. Where local midnight does not
/// exist (a DST jump at midnight) the day begins at the first instant that does.
pub fn day_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    let mut local = midnight;
    // Gaps are at most a few hours; step by quarter-hours (every zone's offsets are multiples).
    for _ in 0..(4 * 24) {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(15);
    }
    Utc.from_utc_datetime(&midnight)
}

/// The UTC half-open range covering the calendar days `first..=last` in `tz`.
pub fn days_range(tz: Tz, first: NaiveDate, last: NaiveDate) -> Range<DateTime<Utc>> {
    day_start(tz, first)..day_start(tz, next_day(last))
}

fn next_day(d: NaiveDate) -> NaiveDate {
    d.checked_add_days(Days::new(1)).unwrap_or(d)
}

fn days_before(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_sub_days(Days::new(n)).unwrap_or(d)
}

/// What one refresh asks ClickHouse for, derived from "now".
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshPlan {
    /// The calendar day, in the configured zone, that contains now.
    pub today: NaiveDate,
    /// For each window, the UTC range of its days.
    pub windows: Vec<(Window, Range<DateTime<Utc>>)>,
    /// For each window, the UTC range of the same number of days just before it.
    pub previous_windows: Vec<(Window, Range<DateTime<Utc>>)>,
    /// UTC range of the 30 days ending yesterday (the MAU of previous stickiness).
    pub previous_month: Range<DateTime<Utc>>,
    /// Every cohort day a refresh computes, oldest first, today last: enough for the
    /// report (every retention day visible), `/metrics` and the recent ratios.
    pub cohort_days: Vec<NaiveDate>,
    /// UTC range in which a computed cohort's first event falls.
    pub cohort_range: Range<DateTime<Utc>>,
    /// UTC range of activity that can count towards a computed (cohort, day N).
    pub retention_activity_range: Range<DateTime<Utc>>,
}

impl MetricDefinitions {
    /// How many cohorts people see (report, dashboard): at least `--cohorts`, and
    /// enough for the largest retention day to have a cohort old enough (D30 needs 31).
    pub fn report_cohorts(&self) -> u32 {
        let max_n = self.retention_days.last().copied().unwrap_or(0);
        self.cohorts.max(max_n.saturating_add(1))
    }

    /// Plans a refresh at instant `now`.
    pub fn plan(&self, now: DateTime<Utc>) -> RefreshPlan {
        let tz = self.timezone;
        let today = now.with_timezone(&tz).date_naive();
        let windows = Window::ALL
            .iter()
            .map(|w| (*w, days_range(tz, days_before(today, w.days() - 1), today)))
            .collect();
        let previous_windows = Window::ALL
            .iter()
            .map(|w| {
                let last = days_before(today, w.days());
                (*w, days_range(tz, days_before(last, w.days() - 1), last))
            })
            .collect();
        let yesterday = days_before(today, 1);
        // The recent ratio of day N looks at the K cohorts before today-N.
        let max_n = u64::from(self.retention_days.last().copied().unwrap_or(0));
        let back =
            (u64::from(self.report_cohorts()) - 1).max(max_n + u64::from(self.cohorts.max(1)));
        let oldest = days_before(today, back);
        let cohort_days: Vec<NaiveDate> = oldest.iter_days().take_while(|d| *d <= today).collect();
        let min_n = u64::from(self.retention_days.first().copied().unwrap_or(1));
        let first_activity = oldest
            .checked_add_days(Days::new(min_n))
            .unwrap_or(today)
            .min(next_day(today));
        RefreshPlan {
            today,
            windows,
            previous_windows,
            previous_month: days_range(tz, days_before(yesterday, 29), yesterday),
            cohort_range: days_range(tz, oldest, today),
            retention_activity_range: day_start(tz, first_activity)..day_start(tz, next_day(today)),
            cohort_days,
        }
    }
}

/// Calendar days the refresh keeps per app ([`crate::day_sets`]): today and the 59
/// before (the 30-day window and the one before it).
pub const CACHED_DAYS: u64 = 60;

/// A calendar period: a day, or an ISO week (Monday to Sunday), in the configured zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Day,
    Week,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Day, Period::Week];

    /// Days in one period.
    pub fn days(self) -> u64 {
        match self {
            Period::Day => 1,
            Period::Week => 7,
        }
    }

    /// The `period` label and API value.
    pub fn label(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
        }
    }

    /// The period that contains `day`, named by its first day.
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => day,
            Period::Week => days_before(day, u64::from(day.weekday().num_days_from_monday())),
        }
    }

    /// The first day of the period `n` periods before the one starting at `start`.
    pub fn back(self, start: NaiveDate, n: u64) -> NaiveDate {
        days_before(start, self.days() * n)
    }

    /// The last day of the period starting at `start`.
    pub fn last_day(self, start: NaiveDate) -> NaiveDate {
        start
            .checked_add_days(Days::new(self.days() - 1))
            .unwrap_or(start)
    }
}

/// Lifecycle of one period (docs/contract.md, "Metric definitions"): persons active in it,
/// split by how they stood before, and the persons active in the period before
/// who were not in this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// Active, first day in this period.
    pub new: u64,
    /// Active in this period and in the one before.
    pub returning: u64,
    /// Active, not in the period before, first day before this period.
    pub resurrecting: u64,
    /// Active in the period before, not in this one (a count here; shown negative).
    pub dormant: u64,
}

impl Lifecycle {
    /// Persons active in the period: new + returning + resurrecting.
    pub fn active(&self) -> u64 {
        self.new + self.returning + self.resurrecting
    }
}

/// The periods whose lifecycle the snapshot holds, by first day, oldest first, the
/// current one (containing today) last: every period whose days and the previous
/// period's days are all among the [`CACHED_DAYS`] kept (59 days, 7 or 8 weeks).
pub fn lifecycle_periods(period: Period, today: NaiveDate) -> Vec<NaiveDate> {
    let oldest_cached = days_before(today, CACHED_DAYS - 1);
    let mut out = Vec::new();
    let mut start = period.start_of(today);
    while period.back(start, 1) >= oldest_cached {
        out.push(start);
        start = period.back(start, 1);
    }
    out.reverse();
    out
}

/// The last complete period before the one containing `today` (yesterday; last week).
pub fn last_complete(period: Period, today: NaiveDate) -> NaiveDate {
    period.back(period.start_of(today), 1)
}

/// Where a per-cohort value stands on the day it is computed (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Day C+N has ended: the value will not change.
    Final,
    /// Day C+N is today: the value so far; it can still grow.
    InProgress,
    /// Day C+N is after today: no value yet.
    Pending,
    /// The cohort has no users: no ratio.
    Empty,
}

/// The status of period `target` (day or week C+N) of a cohort of `users`, when the
/// period containing now is `current`.
pub fn cell_status(users: u64, target: NaiveDate, current: NaiveDate) -> CellStatus {
    if users == 0 {
        CellStatus::Empty
    } else if target < current {
        CellStatus::Final
    } else if target == current {
        CellStatus::InProgress
    } else {
        CellStatus::Pending
    }
}

/// One cohort's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortReport {
    pub day: NaiveDate,
    pub users: u64,
    /// Day N → share of the cohort active on day C+N. Only days that have come
    /// (today included: see [`CohortReport::status`]), and only for non-empty
    /// cohorts: an unknown value is absent, never a fake 0.
    pub retention: BTreeMap<u32, f64>,
    /// Day N → users of the cohort active on day C+N, for the same keys.
    pub retained: BTreeMap<u32, u64>,
}

impl CohortReport {
    /// The status of day N of this cohort on `today`.
    pub fn status(&self, n: u32, today: NaiveDate) -> CellStatus {
        let target = self
            .day
            .checked_add_days(Days::new(u64::from(n)))
            .unwrap_or(NaiveDate::MAX);
        cell_status(self.users, target, today)
    }
}

/// Recent retention of one day N: the sums over the cohorts counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecentRetention {
    /// Σ users of the cohorts counted.
    pub cohort_users: u64,
    /// Σ users of those cohorts active on their day C+N.
    pub retained_users: u64,
}

impl RecentRetention {
    /// retained ÷ cohort users; `None` when every cohort counted was empty.
    pub fn ratio(&self) -> Option<f64> {
        (self.cohort_users > 0).then(|| self.retained_users as f64 / self.cohort_users as f64)
    }
}

/// Builds the cohort lines from the counts ClickHouse returned.
///
/// `sizes` maps a cohort day to its size; `retained` maps (cohort day, N) to the
/// number of its users active on day C+N (missing means none were).
pub fn cohort_reports(
    definitions: &MetricDefinitions,
    plan: &RefreshPlan,
    sizes: &BTreeMap<NaiveDate, u64>,
    retained: &BTreeMap<(NaiveDate, u32), u64>,
) -> Vec<CohortReport> {
    plan.cohort_days
        .iter()
        .map(|&day| {
            let users = sizes.get(&day).copied().unwrap_or(0);
            let counts: BTreeMap<u32, u64> = if users == 0 {
                BTreeMap::new()
            } else {
                definitions
                    .retention_days
                    .iter()
                    .filter(|&&n| {
                        day.checked_add_days(Days::new(u64::from(n)))
                            .is_some_and(|d| d <= plan.today)
                    })
                    .map(|&n| (n, retained.get(&(day, n)).copied().unwrap_or(0)))
                    .collect()
            };
            CohortReport {
                day,
                users,
                retention: counts
                    .iter()
                    .map(|(&n, &active)| (n, active as f64 / users as f64))
                    .collect(),
                retained: counts,
            }
        })
        .collect()
}

/// docs/contract.md's recent retention for each configured N: over the `--cohorts` most
/// recent cohort days C with C + N < today, Σ retained ÷ Σ cohort users.
pub fn recent_retention(
    definitions: &MetricDefinitions,
    today: NaiveDate,
    cohorts: &[CohortReport],
) -> BTreeMap<u32, RecentRetention> {
    definitions
        .retention_days
        .iter()
        .map(|&n| {
            let ended = |c: &&CohortReport| {
                c.day
                    .checked_add_days(Days::new(u64::from(n)))
                    .is_some_and(|d| d < today)
            };
            let mut sum = RecentRetention::default();
            for c in cohorts
                .iter()
                .rev()
                .filter(ended)
                .take(definitions.cohorts as usize)
            {
                sum.cohort_users += c.users;
                sum.retained_users += c.retained.get(&n).copied().unwrap_or(0);
            }
            (n, sum)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(tz: Tz) -> MetricDefinitions {
        MetricDefinitions {
            timezone: tz,
            active_events: vec![],
            retention_days: vec![1, 3, 7, 30],
            cohorts: 7,
        }
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    #[test]
    fn lifecycle_periods_are_those_the_cached_days_cover() {
        // 2026-12-08 is a Tuesday; the cache holds 2026-10-10 ..= 2026-12-08.
        let today = date("2026-12-08");
        let days = lifecycle_periods(Period::Day, today);
        assert_eq!(days.len(), 59);
        assert_eq!(days[0], date("2026-10-11"));
        assert_eq!(days[58], today);
        let weeks = lifecycle_periods(Period::Week, today);
        // The oldest week's previous week (from 10-12) is cached whole.
        assert_eq!(weeks[0], date("2026-10-19"));
        assert_eq!(*weeks.last().expect("weeks"), date("2026-12-07"));
        assert_eq!(weeks.len(), 8);
        assert_eq!(last_complete(Period::Day, today), date("2026-12-07"));
        assert_eq!(last_complete(Period::Week, today), date("2026-11-30"));
        assert_eq!(
            last_complete(Period::Week, date("2026-12-07")),
            date("2026-11-30")
        );
        assert_eq!(
            Period::Week.start_of(date("2026-12-06")),
            date("2026-11-30")
        );
        assert_eq!(
            Period::Week.last_day(date("2026-11-30")),
            date("2026-12-06")
        );
    }

    #[test]
    fn today_is_the_local_calendar_day() {
        let now = at("2026-11-24T03:00:00Z");
        assert_eq!(defs(Tz::UTC).plan(now).today, date("2026-11-24"));
        assert_eq!(
            defs(Tz::America__Los_Angeles).plan(now).today,
            date("2026-11-23")
        );
        assert_eq!(
            defs(Tz::Asia__Tokyo).plan(at("2026-11-24T16:00:00Z")).today,
            date("2026-11-25")
        );
    }

    #[test]
    fn windows_end_today_and_span_their_days() {
        let plan = defs(Tz::UTC).plan(at("2026-11-24T12:00:00Z"));
        let (w, day) = &plan.windows[0];
        assert_eq!(*w, Window::Day);
        assert_eq!(day.start, at("2026-11-24T00:00:00Z"));
        assert_eq!(day.end, at("2026-11-25T00:00:00Z"));
        assert_eq!(plan.windows[1].1.start, at("2026-11-18T00:00:00Z"));
        assert_eq!(plan.windows[2].1.start, at("2026-10-26T00:00:00Z"));
    }

    #[test]
    fn local_days_are_converted_to_utc_ranges() {
        let plan = defs(Tz::Asia__Kolkata).plan(at("2026-11-24T12:00:00Z"));
        assert_eq!(plan.windows[0].1.start, at("2026-11-23T18:30:00Z"));
        // Across a DST change the day is 25 hours long (Los Angeles, 2026-11-01).
        let r = days_range(
            Tz::America__Los_Angeles,
            date("2026-11-01"),
            date("2026-11-01"),
        );
        assert_eq!(r.start, at("2026-11-01T07:00:00Z"));
        assert_eq!(r.end, at("2026-11-02T08:00:00Z"));
    }

    #[test]
    fn midnight_in_a_dst_gap_starts_the_day_at_the_first_real_instant() {
        // Chile (America/Santiago) springs forward at midnight on 2026-09-06.
        let start = day_start(Tz::America__Santiago, date("2026-09-06"));
        assert_eq!(start, at("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn cohorts_are_the_last_k_days_with_today() {
        let d = defs(Tz::UTC);
        // D30 needs 31 cohorts; the recent D30 ratio the 7 cohorts before today-30.
        assert_eq!(d.report_cohorts(), 31);
        let plan = d.plan(at("2026-11-24T12:00:00Z"));
        assert_eq!(plan.cohort_days.len(), 38);
        assert_eq!(plan.cohort_days[0], date("2026-10-18"));
        assert_eq!(
            *plan.cohort_days.last().expect("cohorts"),
            date("2026-11-24")
        );
        assert_eq!(plan.cohort_range.start, at("2026-10-18T00:00:00Z"));
        assert_eq!(
            plan.retention_activity_range.start,
            at("2026-10-19T00:00:00Z")
        );
        let short = MetricDefinitions {
            retention_days: vec![1, 3],
            ..d
        };
        assert_eq!(short.report_cohorts(), 7);
        assert_eq!(short.plan(at("2026-11-24T12:00:00Z")).cohort_days.len(), 11);
        assert_eq!(
            plan.retention_activity_range.end,
            at("2026-11-25T00:00:00Z")
        );
    }

    #[test]
    fn retention_is_absent_until_the_day_comes_and_for_empty_cohorts() {
        let d = defs(Tz::UTC);
        let plan = d.plan(at("2026-11-24T12:00:00Z"));
        let sizes = BTreeMap::from([
            (date("2026-11-18"), 4),
            (date("2026-11-21"), 2),
            (date("2026-11-24"), 5),
        ]);
        let retained = BTreeMap::from([
            ((date("2026-11-18"), 1), 2),
            ((date("2026-11-18"), 3), 1),
            ((date("2026-11-21"), 3), 2),
        ]);
        let reports = cohort_reports(&d, &plan, &sizes, &retained);
        assert_eq!(reports.len(), plan.cohort_days.len());
        let day = |s: &str| reports.iter().find(|r| r.day == date(s)).expect("cohort");
        let first = day("2026-11-18");
        assert_eq!(first.users, 4);
        // Day 7 of 11-18 is 11-25, not yet come; day 30 neither.
        assert_eq!(first.retention, BTreeMap::from([(1, 0.5), (3, 0.25)]));
        assert_eq!(first.retained, BTreeMap::from([(1, 2), (3, 1)]));
        assert_eq!(first.status(3, plan.today), CellStatus::Final);
        assert_eq!(first.status(7, plan.today), CellStatus::Pending);
        let empty = day("2026-11-19");
        assert_eq!((empty.users, empty.retention.len()), (0, 0));
        assert_eq!(empty.status(1, plan.today), CellStatus::Empty);
        let third = reports
            .iter()
            .find(|r| r.day == date("2026-11-21"))
            .expect("cohort");
        // Day 3 is today: reported, in progress; nobody back on day 1 is a real 0.
        assert_eq!(third.retention, BTreeMap::from([(1, 0.0), (3, 1.0)]));
        assert_eq!(third.status(3, plan.today), CellStatus::InProgress);
        let today = reports.last().expect("today");
        assert!(today.retention.is_empty());
    }

    #[test]
    fn recent_retention_sums_the_latest_ended_cohorts() {
        let d = MetricDefinitions {
            retention_days: vec![1, 3],
            cohorts: 2,
            ..defs(Tz::UTC)
        };
        let plan = d.plan(at("2026-11-24T12:00:00Z"));
        // Day 1 ended for cohorts up to 11-22; the latest two are 11-22 (empty) and 11-21.
        let sizes = BTreeMap::from([
            (date("2026-11-20"), 10),
            (date("2026-11-21"), 4),
            (date("2026-11-23"), 5),
        ]);
        let retained = BTreeMap::from([
            ((date("2026-11-20"), 1), 5),
            ((date("2026-11-21"), 1), 1),
            ((date("2026-11-23"), 1), 5),
            ((date("2026-11-20"), 3), 2),
        ]);
        let reports = cohort_reports(&d, &plan, &sizes, &retained);
        let recent = recent_retention(&d, plan.today, &reports);
        assert_eq!(
            recent[&1],
            RecentRetention {
                cohort_users: 4,
                retained_users: 1
            }
        );
        assert_eq!(recent[&1].ratio(), Some(0.25));
        // Day 3 ended for cohorts up to 11-20: 11-20 and 11-19 (empty).
        assert_eq!(recent[&3].ratio(), Some(0.2));
        let none = recent_retention(&d, plan.today, &reports[..1]);
        assert_eq!(none[&1].ratio(), None);
    }
}
