//! The metric definitions of DESIGN.md, as pure functions of "now" and the settings.
//!
//! Nothing here talks to ClickHouse: it decides which calendar days, windows,
//! cohorts and (cohort, day N) pairs a refresh asks for, and turns the answers into
//! a report. That keeps every rule ("today contains now", "absent, never a fake 0")
//! testable without a database.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
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
    /// The reported cohorts, oldest first, today last.
    pub cohort_days: Vec<NaiveDate>,
    /// UTC range in which a reported cohort's first event falls.
    pub cohort_range: Range<DateTime<Utc>>,
    /// UTC range of activity that can count towards a reported (cohort, day N).
    pub retention_activity_range: Range<DateTime<Utc>>,
}

impl MetricDefinitions {
    /// Plans a refresh at instant `now`.
    pub fn plan(&self, now: DateTime<Utc>) -> RefreshPlan {
        let today = now.with_timezone(&self.timezone).date_naive();
        let windows = Window::ALL
            .iter()
            .map(|w| {
                (
                    *w,
                    days_range(self.timezone, days_before(today, w.days() - 1), today),
                )
            })
            .collect();
        let oldest = days_before(today, u64::from(self.cohorts.max(1)) - 1);
        let cohort_days: Vec<NaiveDate> = oldest.iter_days().take_while(|d| *d <= today).collect();
        let min_n = u64::from(self.retention_days.first().copied().unwrap_or(1));
        let first_activity = oldest
            .checked_add_days(Days::new(min_n))
            .unwrap_or(today)
            .min(next_day(today));
        RefreshPlan {
            today,
            windows,
            cohort_range: days_range(self.timezone, oldest, today),
            retention_activity_range: day_start(self.timezone, first_activity)
                ..day_start(self.timezone, next_day(today)),
            cohort_days,
        }
    }
}

/// One cohort's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortReport {
    pub day: NaiveDate,
    pub users: u64,
    /// Day N → share of the cohort active on day C+N. Only days that have come,
    /// and only for non-empty cohorts: an unknown value is absent, never a fake 0.
    pub retention: BTreeMap<u32, f64>,
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
            let retention = if users == 0 {
                BTreeMap::new()
            } else {
                definitions
                    .retention_days
                    .iter()
                    .filter(|&&n| {
                        day.checked_add_days(Days::new(u64::from(n)))
                            .is_some_and(|d| d <= plan.today)
                    })
                    .map(|&n| {
                        let active = retained.get(&(day, n)).copied().unwrap_or(0);
                        (n, active as f64 / users as f64)
                    })
                    .collect()
            };
            CohortReport {
                day,
                users,
                retention,
            }
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
        let plan = defs(Tz::UTC).plan(at("2026-11-24T12:00:00Z"));
        assert_eq!(plan.cohort_days.len(), 7);
        assert_eq!(plan.cohort_days[0], date("2026-11-18"));
        assert_eq!(
            *plan.cohort_days.last().expect("cohorts"),
            date("2026-11-24")
        );
        assert_eq!(plan.cohort_range.start, at("2026-11-18T00:00:00Z"));
        assert_eq!(
            plan.retention_activity_range.start,
            at("2026-11-19T00:00:00Z")
        );
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
        assert_eq!(reports.len(), 7);
        let first = &reports[0];
        assert_eq!(first.users, 4);
        // Day 7 of 11-18 is 11-25, not yet come; day 30 neither.
        assert_eq!(first.retention, BTreeMap::from([(1, 0.5), (3, 0.25)]));
        let empty = &reports[1];
        assert_eq!((empty.users, empty.retention.len()), (0, 0));
        let third = reports
            .iter()
            .find(|r| r.day == date("2026-11-21"))
            .expect("cohort");
        // Day 3 is today: reported; nobody back on day 1 is a real 0.
        assert_eq!(third.retention, BTreeMap::from([(1, 0.0), (3, 1.0)]));
        let today = reports.last().expect("today");
        assert!(today.retention.is_empty());
    }
}
