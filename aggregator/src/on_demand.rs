//! Questions the JSON API asks ClickHouse when a person asks them, not on every
//! refresh: the DAU/WAU/MAU trend, retention by week or "on or after" day N, events
//! per day. They read the same materialized tables as a refresh, bind every value as
//! a query parameter and run under the source's query timeout; answers are cached
//! per snapshot (see [`AnswerCache`]), so a dashboard reloading every few seconds
//! costs one query per refresh interval.
//!
//! Nothing here knows HTTP: `api.rs` validates the parameters and renders.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Days, NaiveDate, Utc};
use clickhouse::sql::Identifier;
use growth_schema::tables::{
    EVENT_COUNTS, EVENTS, FIRST_SEEN_CHANGES, PERSON_KEYS, USER_QUARTER_HOURS,
};
use serde::Deserialize;

use crate::definitions::{
    CellStatus, Lifecycle, MetricDefinitions, cell_status, day_start, days_range,
};
use crate::source::MetricsSource;

/// What an on-demand question can fail with.
pub type QueryResult<T> = Result<T, clickhouse::error::Error>;

/// DAU, WAU and MAU of one day.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveDay {
    pub day: NaiveDate,
    pub dau: u64,
    pub wau: u64,
    pub mau: u64,
    /// The day is today: the values can still grow.
    pub in_progress: bool,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct WindowDelta {
    window: u32,
    #[serde(with = "clickhouse::serde::chrono::date")]
    day: NaiveDate,
    delta: i64,
}

/// DAU/WAU/MAU for each of the `days` days ending `today`, oldest first.
///
/// One pass over the activity: per user, the sorted local days they were active;
/// for a window of W days a user counts on day D when active in [D-W+1, D], i.e.
/// D lies in the union of the intervals [d, d+W-1]. Each merged interval becomes a
/// +1 at its start and a -1 after its end, and a running sum gives the counts, so
/// the work follows users × active days, not users × days × W.
pub async fn active_series(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    app: &str,
    today: NaiveDate,
    days: u32,
) -> QueryResult<Vec<ActiveDay>> {
    let first = today - Days::new(u64::from(days.max(1)) - 1);
    let range = days_range(defs.timezone, first - Days::new(29), today);
    let deltas: Vec<WindowDelta> = source
        .client()
        .query(
            "SELECT toUInt32(w) AS window, day, sum(delta) AS delta FROM (
                 SELECT w, arrayJoin(arrayConcat(
                     arrayMap(i -> (ds[i], toInt64(1)),
                              arrayFilter(i -> i = 1 OR dateDiff('day', ds[i - 1], ds[i]) >= w, arrayEnumerate(ds))),
                     arrayMap(i -> (addDays(ds[i], w), toInt64(-1)),
                              arrayFilter(i -> i = length(ds) OR dateDiff('day', ds[i], ds[i + 1]) >= w, arrayEnumerate(ds)))
                 )) AS point, point.1 AS day, point.2 AS delta
                 FROM (
                     SELECT if(p.person_key = 0, u.user_key, p.person_key) AS person,
                            arraySort(groupUniqArray(toDate(u.bucket, {tz:String}))) AS ds
                     FROM ? AS u LEFT JOIN (SELECT user_key, person_key FROM ? WHERE app = {app:String}) AS p
                          ON p.user_key = u.user_key
                     WHERE u.app = {app:String}
                       AND u.bucket >= toDateTime({from:Int64}, 'UTC') AND u.bucket < toDateTime({to:Int64}, 'UTC')
                       AND (empty({active:Array(String)}) OR hasAny(u.event_names, {active:Array(String)}))
                     GROUP BY person
                 )
                 ARRAY JOIN [1, 7, 30] AS w
             )
             GROUP BY window, day ORDER BY window, day",
        )
        .bind(Identifier(USER_QUARTER_HOURS))
        .bind(Identifier(PERSON_KEYS))
        .param("tz", defs.timezone.name())
        .param("app", app)
        .param("from", range.start.timestamp())
        .param("to", range.end.timestamp())
        .param("active", &defs.active_events)
        .fetch_all()
        .await?;
    Ok(running_counts(&deltas, first, today))
}

fn running_counts(deltas: &[WindowDelta], first: NaiveDate, today: NaiveDate) -> Vec<ActiveDay> {
    let count_on = |window: u32| -> BTreeMap<NaiveDate, u64> {
        let mut running = 0i64;
        let mut points = deltas.iter().filter(|d| d.window == window).peekable();
        let mut out = BTreeMap::new();
        // Deltas before `first` carry into it.
        for day in (first - Days::new(30))
            .iter_days()
            .take_while(|d| *d <= today)
        {
            while let Some(p) = points.next_if(|p| p.day <= day) {
                running += p.delta;
            }
            if day >= first {
                out.insert(day, running.max(0) as u64);
            }
        }
        out
    };
    let (dau, wau, mau) = (count_on(1), count_on(7), count_on(30));
    first
        .iter_days()
        .take_while(|d| *d <= today)
        .map(|day| ActiveDay {
            day,
            dau: dau.get(&day).copied().unwrap_or(0),
            wau: wau.get(&day).copied().unwrap_or(0),
            mau: mau.get(&day).copied().unwrap_or(0),
            in_progress: day == today,
        })
        .collect()
}

pub use crate::definitions::Period;

/// The lifecycle of `app`'s `periods` latest periods (the current one included),
/// oldest first, counted in SQL ([`crate::queries::Queries::lifecycle`]): for ranges
/// beyond the cached days the snapshot holds.
pub async fn lifecycle(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    app: &str,
    today: NaiveDate,
    period: Period,
    periods: u32,
) -> QueryResult<Vec<(NaiveDate, Lifecycle)>> {
    let last = period.start_of(today);
    let first = period.back(last, u64::from(periods.max(1)) - 1);
    let rows = source
        .queries()
        .lifecycle(defs, period, first, last, Some(app))
        .await?;
    let counted: BTreeMap<NaiveDate, Lifecycle> = rows
        .into_iter()
        .map(|r| {
            let l = Lifecycle {
                new: r.new,
                returning: r.returning,
                resurrecting: r.resurrecting,
                dormant: r.dormant,
            };
            (r.start, l)
        })
        .collect();
    let mut out = Vec::new();
    let mut start = first;
    while start <= last {
        out.push((start, counted.get(&start).copied().unwrap_or_default()));
        match start.checked_add_days(Days::new(period.days())) {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(out)
}

/// Which activity counts as "retained on N".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Active in period C+N.
    OnDay,
    /// Active in any period from C+N up to now.
    OnOrAfter,
}

/// A retention question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetentionQuestion {
    pub period: Period,
    /// How many most recent cohorts, the current period's included.
    pub cohorts: u32,
    /// The N asked for, sorted, without duplicates.
    pub days: Vec<u32>,
    pub mode: Mode,
}

/// One retention value of a cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionValue {
    pub day: u32,
    pub status: CellStatus,
    /// Users counted so far; `None` for pending days and empty cohorts.
    pub users: Option<u64>,
    pub ratio: Option<f64>,
}

/// One cohort with its values, in the order of the question's days.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortRetention {
    pub cohort: NaiveDate,
    pub users: u64,
    pub retention: Vec<RetentionValue>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CohortCount {
    #[serde(with = "clickhouse::serde::chrono::date")]
    cohort: NaiveDate,
    n: u32,
    users: u64,
}

/// Answers a retention question for `app`; cohorts newest first.
pub async fn retention(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    app: &str,
    today: NaiveDate,
    question: &RetentionQuestion,
) -> QueryResult<Vec<CohortRetention>> {
    let step = question.period.days();
    let current = question.period.start_of(today);
    let oldest = current - Days::new(step * (u64::from(question.cohorts.max(1)) - 1));
    let cohort_range = days_range(defs.timezone, oldest, today);
    let min_n = u64::from(question.days.first().copied().unwrap_or(1));
    let activity_from = day_start(
        defs.timezone,
        (oldest + Days::new(step * min_n)).min(today + Days::new(1)),
    );
    let activity_to = cohort_range.end;
    let counts: Vec<CohortCount> = source
        .client()
        .query(
            "WITH links AS (SELECT user_key, person_key FROM person_keys WHERE app = {app:String}),
             members AS (
                 SELECT person AS user_key,
                        if({week:UInt8} = 1, toMonday(toDate(min(first_bucket), {tz:String})), toDate(min(first_bucket), {tz:String})) AS cohort
                 FROM (
                     SELECT if(p.person_key = 0, c.user_key, p.person_key) AS person, c.first_bucket AS first_bucket
                     FROM (
                         SELECT first_bucket, user_key FROM ?
                         WHERE app = {app:String}
                           AND first_bucket >= toDateTime({from:Int64}, 'UTC') AND first_bucket < toDateTime({to:Int64}, 'UTC')
                         GROUP BY first_bucket, user_key HAVING sum(sign) > 0
                     ) AS c LEFT JOIN links AS p ON p.user_key = c.user_key
                     UNION ALL
                     SELECT p.person_key AS person, f.first_bucket AS first_bucket
                     FROM (
                         SELECT user_key, min(first_bucket) AS first_bucket FROM first_seen_latest
                         WHERE app = {app:String} AND user_key IN (SELECT user_key FROM links)
                         GROUP BY user_key
                     ) AS f INNER JOIN links AS p ON p.user_key = f.user_key
                 )
                 GROUP BY person
                 HAVING min(first_bucket) >= toDateTime({from:Int64}, 'UTC') AND min(first_bucket) < toDateTime({to:Int64}, 'UTC')
             ),
             activity AS (
                 SELECT if(p.person_key = 0, u.user_key, p.person_key) AS user_key,
                        groupUniqArray(if({week:UInt8} = 1, toMonday(toDate(u.bucket, {tz:String})), toDate(u.bucket, {tz:String}))) AS periods
                 FROM ? AS u LEFT JOIN links AS p ON p.user_key = u.user_key
                 WHERE u.app = {app:String}
                   AND u.bucket >= toDateTime({activity_from:Int64}, 'UTC') AND u.bucket < toDateTime({activity_to:Int64}, 'UTC')
                   AND (empty({active:Array(String)}) OR hasAny(u.event_names, {active:Array(String)}))
                   AND if(p.person_key = 0, u.user_key, p.person_key) IN (SELECT user_key FROM members)
                 GROUP BY user_key
             )
             SELECT cohort, n, count() AS users FROM (
                 SELECT m.cohort AS cohort,
                        arrayFilter(o -> o >= 0, arrayMap(p -> intDiv(dateDiff('day', m.cohort, p), {step:UInt32}), a.periods)) AS offsets
                 FROM members AS m LEFT JOIN activity AS a ON m.user_key = a.user_key
             )
             ARRAY JOIN arrayConcat([toUInt32(0)], arrayFilter(n -> if({after:UInt8} = 1, arrayExists(o -> o >= n, offsets), has(offsets, toInt64(n))), {days:Array(UInt32)})) AS n
             GROUP BY cohort, n ORDER BY cohort, n",
        )
        .bind(Identifier(FIRST_SEEN_CHANGES))
        .bind(Identifier(USER_QUARTER_HOURS))
        .param("week", u8::from(question.period == Period::Week))
        .param("tz", defs.timezone.name())
        .param("app", app)
        .param("from", cohort_range.start.timestamp())
        .param("to", cohort_range.end.timestamp())
        .param("activity_from", activity_from.timestamp())
        .param("activity_to", activity_to.timestamp())
        .param("active", &defs.active_events)
        .param("step", step as u32)
        .param("after", u8::from(question.mode == Mode::OnOrAfter))
        .param("days", &question.days)
        .fetch_all()
        .await?;
    let by_cohort: BTreeMap<(NaiveDate, u32), u64> = counts
        .into_iter()
        .map(|c| ((c.cohort, c.n), c.users))
        .collect();
    Ok(retention_lines(question, oldest, current, &by_cohort))
}

fn retention_lines(
    question: &RetentionQuestion,
    oldest: NaiveDate,
    current: NaiveDate,
    counts: &BTreeMap<(NaiveDate, u32), u64>,
) -> Vec<CohortRetention> {
    let step = question.period.days();
    let mut lines = Vec::new();
    let mut cohort = current;
    while cohort >= oldest {
        let users = counts.get(&(cohort, 0)).copied().unwrap_or(0);
        let retention = question
            .days
            .iter()
            .map(|&n| {
                let target = cohort
                    .checked_add_days(Days::new(step * u64::from(n)))
                    .unwrap_or(NaiveDate::MAX);
                let status = cell_status(users, target, current);
                let known = matches!(status, CellStatus::Final | CellStatus::InProgress);
                let back = known.then(|| counts.get(&(cohort, n)).copied().unwrap_or(0));
                RetentionValue {
                    day: n,
                    status,
                    users: back,
                    ratio: back.map(|b| b as f64 / users as f64),
                }
            })
            .collect();
        lines.push(CohortRetention {
            cohort,
            users,
            retention,
        });
        match cohort.checked_sub_days(Days::new(step)) {
            Some(c) => cohort = c,
            None => break,
        }
    }
    lines
}

/// How event counts are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Per event name.
    Event,
    /// Per `source` attribute ("" when absent).
    Source,
}

/// Events of one day, split.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDay {
    pub day: NaiveDate,
    pub total: u64,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct KeyedCount {
    // Not `day`: in ClickHouse an alias shadows a column of the same name in WHERE,
    // and `events.day` (the stored UTC day) must stay the column the filter prunes by.
    #[serde(rename = "local_day", with = "clickhouse::serde::chrono::date")]
    day: NaiveDate,
    key: String,
    events: u64,
}

/// Events per day for the `days` days ending `today` (oldest first), split by
/// `split`, optionally of one event name; and the keys that occur, sorted.
pub async fn events_per_day(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    app: &str,
    today: NaiveDate,
    days: u32,
    split: Split,
    event: Option<&str>,
) -> QueryResult<(Vec<String>, Vec<EventDay>)> {
    let first = today - Days::new(u64::from(days.max(1)) - 1);
    let range = days_range(defs.timezone, first, today);
    let rows: Vec<KeyedCount> = match split {
        Split::Event => {
            source
                .client()
                .query(
                    "SELECT toDate(bucket, {tz:String}) AS local_day, toString(event) AS key, sum(events) AS events
                     FROM ?
                     WHERE app = {app:String}
                       AND bucket >= toDateTime({from:Int64}, 'UTC') AND bucket < toDateTime({to:Int64}, 'UTC')
                       AND ({event:String} = '' OR event = {event:String})
                     GROUP BY local_day, key ORDER BY local_day, key",
                )
                .bind(Identifier(EVENT_COUNTS))
                .param("tz", defs.timezone.name())
                .param("app", app)
                .param("from", range.start.timestamp())
                .param("to", range.end.timestamp())
                .param("event", event.unwrap_or(""))
                .fetch_all()
                .await?
        }
        Split::Source => {
            // The stored UTC `day` bounds the scan to the asked days (partition and
            // sort key); the local day is aliased `local_day` so it does not shadow it.
            source
                .client()
                .query(
                    "SELECT toDate(event_time, {tz:String}) AS local_day, toString(source) AS key, count() AS events
                     FROM ?
                     WHERE app = {app:String}
                       AND day >= toDate(toDateTime({from:Int64}, 'UTC')) AND day <= toDate(toDateTime({to:Int64}, 'UTC'))
                       AND event_time >= toDateTime64({from:Int64}, 3, 'UTC') AND event_time < toDateTime64({to:Int64}, 3, 'UTC')
                       AND ({event:String} = '' OR event = {event:String})
                     GROUP BY local_day, key ORDER BY local_day, key",
                )
                .bind(Identifier(EVENTS))
                .param("tz", defs.timezone.name())
                .param("app", app)
                .param("from", range.start.timestamp())
                .param("to", range.end.timestamp())
                .param("event", event.unwrap_or(""))
                .fetch_all()
                .await?
        }
    };
    let keys: Vec<String> = rows
        .iter()
        .map(|r| r.key.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_day: BTreeMap<NaiveDate, EventDay> = first
        .iter_days()
        .take_while(|d| *d <= today)
        .map(|day| {
            (
                day,
                EventDay {
                    day,
                    total: 0,
                    counts: BTreeMap::new(),
                },
            )
        })
        .collect();
    for r in rows {
        if let Some(d) = by_day.get_mut(&r.day) {
            d.total += r.events;
            *d.counts.entry(r.key).or_default() += r.events;
        }
    }
    Ok((keys, by_day.into_values().collect()))
}

/// Serialized answers of the API, keyed by the request and the snapshot they were
/// computed for: a new snapshot makes every older answer unreachable. Bounded.
#[derive(Clone, Default)]
pub struct AnswerCache(Arc<Mutex<CacheInner>>);

#[derive(Default)]
struct CacheInner {
    entries: HashMap<(String, DateTime<Utc>), Arc<String>>,
    order: VecDeque<(String, DateTime<Utc>)>,
}

/// How many answers are kept.
const CACHE_CAPACITY: usize = 256;

impl AnswerCache {
    /// The cached answer for `key` computed at snapshot `at`.
    pub fn get(&self, key: &str, at: DateTime<Utc>) -> Option<Arc<String>> {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.get(&(key.to_owned(), at)).cloned()
    }

    /// Keeps an answer, forgetting the oldest beyond the capacity.
    pub fn put(&self, key: String, at: DateTime<Utc>, answer: Arc<String>) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if inner.entries.insert((key.clone(), at), answer).is_none() {
            inner.order.push_back((key, at));
        }
        while inner.order.len() > CACHE_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.entries.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn weeks_start_on_monday() {
        assert_eq!(
            Period::Week.start_of(date("2026-12-06")),
            date("2026-11-30")
        );
        assert_eq!(
            Period::Week.start_of(date("2026-11-30")),
            date("2026-11-30")
        );
        assert_eq!(Period::Day.start_of(date("2026-12-06")), date("2026-12-06"));
    }

    #[test]
    fn running_counts_follow_the_deltas() {
        // One user active on 11-28 only: DAU 1 that day, WAU 1 for 7 days, MAU for 30.
        let d = |window, day: &str, delta| WindowDelta {
            window,
            day: date(day),
            delta,
        };
        let deltas = vec![
            d(1, "2026-11-28", 1),
            d(1, "2026-11-29", -1),
            d(7, "2026-11-28", 1),
            d(7, "2026-12-05", -1),
            d(30, "2026-11-28", 1),
            d(30, "2026-12-28", -1),
        ];
        let days = running_counts(&deltas, date("2026-11-27"), date("2026-12-05"));
        assert_eq!(days.len(), 9);
        assert_eq!((days[0].dau, days[0].wau, days[0].mau), (0, 0, 0));
        assert_eq!((days[1].dau, days[1].wau, days[1].mau), (1, 1, 1));
        assert_eq!((days[2].dau, days[2].wau, days[2].mau), (0, 1, 1));
        assert_eq!((days[8].dau, days[8].wau, days[8].mau), (0, 0, 1));
        assert!(days[8].in_progress && !days[7].in_progress);
    }

    #[test]
    fn retention_lines_mark_status() {
        let q = RetentionQuestion {
            period: Period::Day,
            cohorts: 3,
            days: vec![1, 2],
            mode: Mode::OnDay,
        };
        let counts = BTreeMap::from([
            ((date("2026-11-28"), 0), 4),
            ((date("2026-11-28"), 1), 2),
            ((date("2026-11-28"), 2), 1),
            ((date("2026-11-29"), 0), 2),
        ]);
        let lines = retention_lines(&q, date("2026-11-28"), date("2026-11-30"), &counts);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].cohort, date("2026-11-30"));
        assert_eq!(lines[0].users, 0);
        assert_eq!(lines[0].retention[0].status, CellStatus::Empty);
        let c29 = &lines[1];
        assert_eq!(c29.retention[0].status, CellStatus::InProgress);
        assert_eq!(c29.retention[0].users, Some(0));
        assert_eq!(c29.retention[1].status, CellStatus::Pending);
        assert_eq!(c29.retention[1].ratio, None);
        let c28 = &lines[2];
        assert_eq!(c28.retention[0].status, CellStatus::Final);
        assert_eq!(c28.retention[0].ratio, Some(0.5));
        assert_eq!(c28.retention[1].status, CellStatus::InProgress);
        assert_eq!(c28.retention[1].ratio, Some(0.25));
    }
}
