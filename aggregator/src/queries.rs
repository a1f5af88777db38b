//! The questions a refresh asks ClickHouse. They read only the tables filled by the
//! schema's materialized views, never the raw events, and only the time ranges the
//! reported windows and cohorts need. A refresh asks for whole days of users
//! ([`Queries::active_day_users`], [`Queries::cohort_day_users`]) only for
//! the days that changed ([`crate::day_sets`]); the questions that count in SQL
//! ([`Queries::active_users`] and the others) are its cross-check. They read
//! `user_quarter_hours` by quarter-hour range (cost: active users × active
//! quarter-hours of those days), `first_seen_changes` by first-seen range (cost: the
//! cohorts' new users), `layer_changes` by range (the change markers), `event_counts`
//! for the totals. History outside the ranges is never read.
//!
//! Every value is bound as a query parameter (`{name:Type}`) or an identifier; no
//! setting or user input is pasted into SQL text.

use chrono::{DateTime, NaiveDate, Utc};
use clickhouse::Client;
use clickhouse::sql::Identifier;
use growth_schema::tables::{
    EVENT_COUNTS, FIRST_SEEN_CHANGES, FIRST_SEEN_LATEST, IDENTITY_LINKS, LAYER_CHANGES,
    PERSON_KEYS, USER_QUARTER_HOURS,
};

use crate::definitions::{MetricDefinitions, Period, RefreshPlan, Window, days_range};
use crate::layer_parts::LayerParts;
use crate::rows::{
    ActiveUsers, CohortSize, DayUsers, EventTotal, KeyFirstDay, Layer, LayerMarker, LifecycleRow,
    LinkRow, Markers, Retained,
};

/// Keys asked by value in one first-day question (bound as an array parameter).
const KEYS_PER_QUERY: usize = 5_000;

/// The persons first seen in `[from, to)` and their cohort day: the keys first seen
/// there mapped to their person, joined with every key of the linked persons (a
/// person's first day is the earliest of any of their keys'). Used by the SQL path.
const PERSON_MEMBERS: &str = "
    SELECT app, person AS user_key, toDate(min(first_bucket), {tz:String}) AS cohort FROM (
        SELECT c.app AS app, if(p.person_key = 0, c.user_key, p.person_key) AS person, c.first_bucket AS first_bucket
        FROM (
            SELECT app, first_bucket, user_key FROM first_seen_changes
            WHERE first_bucket >= toDateTime({from:Int64}, 'UTC') AND first_bucket < toDateTime({to:Int64}, 'UTC')
            GROUP BY app, first_bucket, user_key HAVING sum(sign) > 0
        ) AS c LEFT JOIN person_keys AS p ON p.app = c.app AND p.user_key = c.user_key
        UNION ALL
        SELECT f.app AS app, p.person_key AS person, f.first_bucket AS first_bucket
        FROM (
            SELECT app, user_key, min(first_bucket) AS first_bucket FROM first_seen_latest
            WHERE (app, user_key) IN (SELECT app, user_key FROM person_keys)
            GROUP BY app, user_key
        ) AS f INNER JOIN person_keys AS p ON p.app = f.app AND p.user_key = f.user_key
    )
    GROUP BY app, person
    HAVING min(first_bucket) >= toDateTime({from:Int64}, 'UTC') AND min(first_bucket) < toDateTime({to:Int64}, 'UTC')";

/// Memory one query may use on the server (`max_memory_usage`): far above what a
/// refresh question takes (tens of MB at millions of users, docs/benchmarks.md), low
/// enough that a runaway question fails instead of starving the server.
pub const MAX_QUERY_MEMORY: u64 = 1 << 30;

/// Asks the growth views of one database. Keeps nothing between questions: the
/// caches a refresh keeps live in [`crate::source::MetricsSource`].
#[derive(Clone)]
pub struct Queries {
    client: Client,
}

fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn window_range(plan: &RefreshPlan, window: Window) -> (i64, i64) {
    plan.windows
        .iter()
        .find(|(w, _)| *w == window)
        .map(|(_, r)| (unix(r.start), unix(r.end)))
        .unwrap_or_default()
}

impl Queries {
    /// `client` must be bound to the growth database. ClickHouse stops any query
    /// of these after `timeout` (`max_execution_time`), so a slow question
    /// never holds a refresh or an API request for long.
    pub fn new(client: Client, timeout: std::time::Duration) -> Self {
        let seconds = timeout.as_secs_f64().max(0.1);
        Self {
            client: client
                .with_setting("max_execution_time", format!("{seconds:.1}"))
                .with_setting("max_memory_usage", MAX_QUERY_MEMORY.to_string()),
        }
    }

    /// The active parts of the layer tables, for the deletion check ([`crate::layer_parts`]).
    pub async fn layer_parts(&self) -> clickhouse::error::Result<LayerParts> {
        LayerParts::read(&self.client).await
    }

    /// Per layer and calendar day in `first..=last`, the rows ever written per app.
    pub async fn layer_markers(
        &self,
        defs: &MetricDefinitions,
        first: NaiveDate,
        last: NaiveDate,
    ) -> clickhouse::error::Result<Markers> {
        let range = days_range(defs.timezone, first, last);
        let rows: Vec<LayerMarker> = self
            .client
            .query(
                "SELECT app, layer, toDate(bucket, {tz:String}) AS day, sum(rows) AS rows
                 FROM ?
                 WHERE bucket >= toDateTime({from:Int64}, 'UTC') AND bucket < toDateTime({to:Int64}, 'UTC')
                 GROUP BY app, layer, day",
            )
            .bind(Identifier(LAYER_CHANGES))
            .param("tz", defs.timezone.name())
            .param("from", unix(range.start))
            .param("to", unix(range.end))
            .fetch_all()
            .await?;
        let mut markers = Markers::new();
        for r in rows {
            let layer = if r.layer == Layer::FirstSeen.table() {
                Layer::FirstSeen
            } else if r.layer == Layer::Activity.table() {
                Layer::Activity
            } else {
                continue;
            };
            markers
                .entry((layer, r.day))
                .or_default()
                .insert(r.app, r.rows);
        }
        Ok(markers)
    }

    /// Each app's users with an active event on each of `days` (calendar days in
    /// the configured zone), sorted.
    pub async fn active_day_users(
        &self,
        defs: &MetricDefinitions,
        days: &[NaiveDate],
    ) -> clickhouse::error::Result<Vec<DayUsers>> {
        let (Some(first), Some(last)) = (days.iter().min(), days.iter().max()) else {
            return Ok(Vec::new());
        };
        let range = days_range(defs.timezone, *first, *last);
        self.client
            .query(
                "SELECT app, toDate(bucket, {tz:String}) AS day, arraySort(groupUniqArray(user_key)) AS users
                 FROM ?
                 WHERE bucket >= toDateTime({from:Int64}, 'UTC') AND bucket < toDateTime({to:Int64}, 'UTC')
                   AND has({days:Array(Date)}, toDate(bucket, {tz:String}))
                   AND (empty({active:Array(String)}) OR hasAny(event_names, {active:Array(String)}))
                 GROUP BY app, day",
            )
            .bind(Identifier(USER_QUARTER_HOURS))
            .param("tz", defs.timezone.name())
            .param("from", unix(range.start))
            .param("to", unix(range.end))
            .param("days", days.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .param("active", &defs.active_events)
            .fetch_all()
            .await
    }

    /// Each app's users first seen on each of `days` (the cohorts), sorted.
    pub async fn cohort_day_users(
        &self,
        defs: &MetricDefinitions,
        days: &[NaiveDate],
    ) -> clickhouse::error::Result<Vec<DayUsers>> {
        let (Some(first), Some(last)) = (days.iter().min(), days.iter().max()) else {
            return Ok(Vec::new());
        };
        let range = days_range(defs.timezone, *first, *last);
        self.client
            .query(
                "SELECT app, toDate(first_bucket, {tz:String}) AS day, arraySort(groupUniqArray(user_key)) AS users
                 FROM (
                     SELECT app, first_bucket, user_key FROM ?
                     WHERE first_bucket >= toDateTime({from:Int64}, 'UTC') AND first_bucket < toDateTime({to:Int64}, 'UTC')
                     GROUP BY app, first_bucket, user_key HAVING sum(sign) > 0
                 )
                 WHERE has({days:Array(Date)}, day)
                 GROUP BY app, day",
            )
            .bind(Identifier(FIRST_SEEN_CHANGES))
            .param("tz", defs.timezone.name())
            .param("from", unix(range.start))
            .param("to", unix(range.end))
            .param("days", days.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .fetch_all()
            .await
    }

    /// The identify and merge links inserted at or after `since_ms` (all: `None`).
    pub async fn identity_links(
        &self,
        since_ms: Option<i64>,
    ) -> clickhouse::error::Result<Vec<LinkRow>> {
        self.client
            .query(
                "SELECT app, kind = 'merge' AS merge, linked_key, known_key,
                        toUnixTimestamp64Milli(event_time) AS time_ms,
                        toUnixTimestamp64Milli(inserted_at) AS inserted_ms
                 FROM ?
                 WHERE inserted_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')",
            )
            .bind(Identifier(IDENTITY_LINKS))
            .param("since", since_ms.unwrap_or(0))
            .fetch_all()
            .await
    }

    /// The first calendar day of each of `keys` of `app` that has an event.
    pub async fn first_days(
        &self,
        defs: &MetricDefinitions,
        app: &str,
        keys: &[u64],
    ) -> clickhouse::error::Result<Vec<KeyFirstDay>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let rows: Vec<KeyFirstDay> = self
                .client
                .query(
                    "SELECT app, user_key, toDate(min(first_bucket), {tz:String}) AS day
                     FROM ?
                     WHERE app = {app:String} AND user_key IN {keys:Array(UInt64)}
                     GROUP BY app, user_key",
                )
                .bind(Identifier(FIRST_SEEN_LATEST))
                .param("tz", defs.timezone.name())
                .param("app", app)
                .param("keys", chunk)
                .fetch_all()
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The first calendar day of every key the links name (a cold start).
    pub async fn all_linked_first_days(
        &self,
        defs: &MetricDefinitions,
    ) -> clickhouse::error::Result<Vec<KeyFirstDay>> {
        self.client
            .query(
                "SELECT app, user_key, toDate(min(first_bucket), {tz:String}) AS day
                 FROM ?
                 WHERE (app, user_key) IN (
                     SELECT app, linked_key FROM ? UNION ALL SELECT app, known_key FROM ?
                 )
                 GROUP BY app, user_key",
            )
            .bind(Identifier(FIRST_SEEN_LATEST))
            .bind(Identifier(IDENTITY_LINKS))
            .bind(Identifier(IDENTITY_LINKS))
            .param("tz", defs.timezone.name())
            .fetch_all()
            .await
    }

    /// The client, for the on-demand questions of the JSON API.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Events per app and name, ever (anonymous events included).
    pub async fn event_totals(&self) -> clickhouse::error::Result<Vec<EventTotal>> {
        self.client
            .query("SELECT app, event, sum(events) AS events FROM ? GROUP BY app, event ORDER BY app, event")
            .bind(Identifier(EVENT_COUNTS))
            .fetch_all()
            .await
    }

    /// Distinct users with an active event in each window ending today, in the
    /// window before it, and in the 30 days ending yesterday.
    pub async fn active_users(
        &self,
        defs: &MetricDefinitions,
        plan: &RefreshPlan,
    ) -> clickhouse::error::Result<Vec<ActiveUsers>> {
        let range = |ranges: &[(Window, std::ops::Range<DateTime<Utc>>)], w: Window| {
            ranges
                .iter()
                .find(|(x, _)| *x == w)
                .map(|(_, r)| (unix(r.start), unix(r.end)))
                .unwrap_or_default()
        };
        let (day_from, end) = window_range(plan, Window::Day);
        let (week_from, _) = window_range(plan, Window::Week);
        let (month_from, _) = window_range(plan, Window::Month);
        let (prev_day_from, _) = range(&plan.previous_windows, Window::Day);
        let (prev_week_from, _) = range(&plan.previous_windows, Window::Week);
        let (prev_month_from, _) = range(&plan.previous_windows, Window::Month);
        let yesterday_month_from = unix(plan.previous_month.start);
        self.client
            .query(
                "SELECT app,
                    uniqExactIf(user_key, bucket >= toDateTime({day_from:Int64}, 'UTC')) AS day,
                    uniqExactIf(user_key, bucket >= toDateTime({week_from:Int64}, 'UTC')) AS week,
                    uniqExactIf(user_key, bucket >= toDateTime({month_from:Int64}, 'UTC')) AS month,
                    uniqExactIf(user_key, bucket >= toDateTime({prev_day_from:Int64}, 'UTC') AND bucket < toDateTime({day_from:Int64}, 'UTC')) AS previous_day,
                    uniqExactIf(user_key, bucket >= toDateTime({prev_week_from:Int64}, 'UTC') AND bucket < toDateTime({week_from:Int64}, 'UTC')) AS previous_week,
                    uniqExactIf(user_key, bucket < toDateTime({month_from:Int64}, 'UTC')) AS previous_month,
                    uniqExactIf(user_key, bucket >= toDateTime({yesterday_month_from:Int64}, 'UTC') AND bucket < toDateTime({day_from:Int64}, 'UTC')) AS month_to_yesterday
                 FROM (
                     SELECT a.app AS app, a.bucket AS bucket, if(p.person_key = 0, a.user_key, p.person_key) AS user_key
                     FROM ? AS a LEFT JOIN ? AS p ON p.app = a.app AND p.user_key = a.user_key
                     WHERE a.bucket >= toDateTime({prev_month_from:Int64}, 'UTC') AND a.bucket < toDateTime({end:Int64}, 'UTC')
                       AND (empty({active:Array(String)}) OR hasAny(a.event_names, {active:Array(String)}))
                 )
                 GROUP BY app ORDER BY app",
            )
            .bind(Identifier(USER_QUARTER_HOURS))
            .bind(Identifier(PERSON_KEYS))
            .param("day_from", day_from)
            .param("week_from", week_from)
            .param("month_from", month_from)
            .param("prev_day_from", prev_day_from)
            .param("prev_week_from", prev_week_from)
            .param("prev_month_from", prev_month_from)
            .param("yesterday_month_from", yesterday_month_from)
            .param("end", end)
            .param("active", &defs.active_events)
            .fetch_all()
            .await
    }

    /// Lifecycle of each period (day or Monday week) from `first` to `last` (their
    /// first days), per app, of one app or of all (`None`), counted in SQL over the
    /// persons: the SQL path's cross-check and the JSON API's answer beyond the
    /// cached days. A person active in period t: `returning` when active in t−1 too,
    /// else `new` when their first day (the earliest of any of their keys) is in t,
    /// else `resurrecting`; active in t−1 and not in t: `dormant`. Reads the activity
    /// of the periods and the one before, and every person's first day.
    pub async fn lifecycle(
        &self,
        defs: &MetricDefinitions,
        period: Period,
        first: NaiveDate,
        last: NaiveDate,
        app: Option<&str>,
    ) -> clickhouse::error::Result<Vec<LifecycleRow>> {
        let range = days_range(defs.timezone, period.back(first, 1), period.last_day(last));
        self.client
            .query(
                "WITH links AS (
                     SELECT app, user_key, person_key FROM ? WHERE {app:String} = '' OR app = {app:String}
                 ),
                 activity AS (
                     SELECT u.app AS app, if(p.person_key = 0, u.user_key, p.person_key) AS person,
                            groupUniqArray(if({week:UInt8} = 1, toMonday(toDate(u.bucket, {tz:String})), toDate(u.bucket, {tz:String}))) AS periods
                     FROM ? AS u LEFT JOIN links AS p ON p.app = u.app AND p.user_key = u.user_key
                     WHERE ({app:String} = '' OR u.app = {app:String})
                       AND u.bucket >= toDateTime({from:Int64}, 'UTC') AND u.bucket < toDateTime({to:Int64}, 'UTC')
                       AND (empty({active:Array(String)}) OR hasAny(u.event_names, {active:Array(String)}))
                     GROUP BY app, person
                 ),
                 firsts AS (
                     SELECT f.app AS app, if(p.person_key = 0, f.user_key, p.person_key) AS person,
                            min(f.first_bucket) AS first_bucket
                     FROM (
                         SELECT app, user_key, min(first_bucket) AS first_bucket FROM ?
                         WHERE {app:String} = '' OR app = {app:String}
                         GROUP BY app, user_key
                     ) AS f LEFT JOIN links AS p ON p.app = f.app AND p.user_key = f.user_key
                     GROUP BY app, person
                 )
                 SELECT app, start,
                        countIf(status = 1) AS new, countIf(status = 2) AS returning,
                        countIf(status = 3) AS resurrecting, countIf(status = 4) AS dormant
                 FROM (
                     SELECT a.app AS app, t AS start,
                            has(a.periods, t) AS cur, has(a.periods, subtractDays(t, {step:UInt32})) AS prev,
                            if({week:UInt8} = 1, toMonday(toDate(f.first_bucket, {tz:String})), toDate(f.first_bucket, {tz:String})) AS first_period,
                            multiIf(cur AND prev, 2, cur AND first_period = t, 1, cur, 3, prev, 4, 0) AS status
                     FROM activity AS a LEFT JOIN firsts AS f ON f.app = a.app AND f.person = a.person
                     ARRAY JOIN arrayDistinct(arrayConcat(a.periods, arrayMap(x -> addDays(x, {step:UInt32}), a.periods))) AS t
                     WHERE t >= {first:Date} AND t <= {last:Date}
                 )
                 GROUP BY app, start ORDER BY app, start",
            )
            .bind(Identifier(PERSON_KEYS))
            .bind(Identifier(USER_QUARTER_HOURS))
            .bind(Identifier(FIRST_SEEN_LATEST))
            .param("app", app.unwrap_or(""))
            .param("week", u8::from(period == Period::Week))
            .param("step", period.days() as u32)
            .param("tz", defs.timezone.name())
            .param("from", unix(range.start))
            .param("to", unix(range.end))
            .param("first", first.to_string())
            .param("last", last.to_string())
            .param("active", &defs.active_events)
            .fetch_all()
            .await
    }

    /// Users whose first event (of any kind) falls on each computed cohort day.
    pub async fn cohort_sizes(
        &self,
        defs: &MetricDefinitions,
        plan: &RefreshPlan,
    ) -> clickhouse::error::Result<Vec<CohortSize>> {
        self.client
            .query(&format!(
                "SELECT app, cohort, uniqExact(user_key) AS users
                     FROM ({PERSON_MEMBERS})
                     GROUP BY app, cohort ORDER BY app, cohort"
            ))
            .param("tz", defs.timezone.name())
            .param("from", unix(plan.cohort_range.start))
            .param("to", unix(plan.cohort_range.end))
            .fetch_all()
            .await
    }

    /// For each computed cohort C and retention day N with C+N ≤ today: users of C
    /// with an active event on day C+N (days in the configured zone).
    pub async fn retained(
        &self,
        defs: &MetricDefinitions,
        plan: &RefreshPlan,
    ) -> clickhouse::error::Result<Vec<Retained>> {
        if defs.retention_days.is_empty()
            || plan.retention_activity_range.start >= plan.retention_activity_range.end
        {
            return Ok(Vec::new());
        }
        self.client
            .query(
                &format!(
                    "WITH members AS ({PERSON_MEMBERS})
                     SELECT c.app AS app, c.cohort AS cohort,
                            toUInt32(dateDiff('day', c.cohort, a.day)) AS day_n,
                            uniqExact(a.user_key) AS users
                     FROM (
                         SELECT DISTINCT u.app AS app, if(p.person_key = 0, u.user_key, p.person_key) AS user_key,
                                toDate(u.bucket, {{tz:String}}) AS day
                         FROM user_quarter_hours AS u LEFT JOIN person_keys AS p ON p.app = u.app AND p.user_key = u.user_key
                         WHERE u.bucket >= toDateTime({{activity_from:Int64}}, 'UTC') AND u.bucket < toDateTime({{activity_to:Int64}}, 'UTC')
                           AND (empty({{active:Array(String)}}) OR hasAny(u.event_names, {{active:Array(String)}}))
                           AND if(p.person_key = 0, u.user_key, p.person_key) IN (SELECT user_key FROM members)
                     ) AS a
                     INNER JOIN members AS c ON a.app = c.app AND a.user_key = c.user_key
                     WHERE a.day > c.cohort
                     GROUP BY app, cohort, day_n
                     HAVING has({{days:Array(UInt32)}}, day_n)
                     ORDER BY app, cohort, day_n"
                ),
            )
            .param("tz", defs.timezone.name())
            .param("from", unix(plan.cohort_range.start))
            .param("to", unix(plan.cohort_range.end))
            .param("activity_from", unix(plan.retention_activity_range.start))
            .param("activity_to", unix(plan.retention_activity_range.end))
            .param("active", &defs.active_events)
            .param("days", &defs.retention_days)
            .fetch_all()
            .await
    }
}
