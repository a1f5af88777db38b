//! Ad-hoc funnels (docs/contract.md, "Funnels"; the endpoint in docs/api.md).
//!
//! One query reads only the events of the range (+ the window on either side) whose
//! name is a step or an exclusion of the funnel, marks each with the steps and
//! exclusions it matches (every value bound as a parameter), maps it to its person
//! (`person_keys`) and returns, per person, their events sorted by time. Each person is
//! evaluated here as the rows stream in (memory: one person's events at a time plus
//! one time per person and step reached, for the exact quantiles).
//!
//! Evaluation of one entering S1 event (an *attempt*), exactly as the contract defines
//! it (there is a choice of distinct events; the earliest completion): ordered and
//! strict walk the few choices that can matter ([`Walk`]), any order grows the sets of
//! steps that distinct events of a window can cover ([`any_order`]).

use std::collections::HashMap;

use chrono::NaiveDate;
use growth_schema::limits::{MAX_EVENT_NAME_BYTES, MAX_PROPERTY_KEY_BYTES, is_valid_name};
use growth_schema::tables::{EVENTS, PERSON_KEYS};
use serde::Deserialize;

use crate::definitions::{MetricDefinitions, days_range};
use crate::source::MetricsSource;

/// At most this many steps, exclusions.
pub const MAX_STEPS: usize = 10;
pub const MAX_EXCLUSIONS: usize = 5;
/// The longest conversion window.
pub const MAX_WINDOW_MS: i64 = 90 * 86_400_000;
/// A person's earliest this many step and exclusion events of the range (+ W) are
/// evaluated, the rest ignored: bounds the work a bot costs.
pub const MAX_PERSON_EVENTS: u32 = 10_000;
/// At most this many choices are tried per attempt in ordered and strict order (they
/// branch only at events of one millisecond that match different sets of steps, and
/// in strict order in two): a bound no real sequence of events reaches.
pub const MAX_WALK_STEPS: usize = 100_000;
/// The most breakdown values shown (the rest: "other").
pub const MAX_BREAKDOWN_VALUES: usize = 50;
/// The longest range of entering days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// One step (or exclusion): an event name, optionally with one property equal to a
/// value (`source` means the `source` column, any other key `properties[key]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepSpec {
    pub event: String,
    pub filter: Option<(String, String)>,
}

impl StepSpec {
    /// `name` or `name[key=value]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (event, filter) = match text.find('[') {
            Some(open) => {
                let inner = text[open + 1..]
                    .strip_suffix(']')
                    .ok_or_else(|| format!("step {text:?}: a filter is written name[key=value]"))?;
                let (key, value) = inner
                    .split_once('=')
                    .ok_or_else(|| format!("step {text:?}: a filter is written name[key=value]"))?;
                if !is_valid_name(key, MAX_PROPERTY_KEY_BYTES) {
                    return Err(format!("step {text:?}: invalid property key"));
                }
                if value.len() > growth_schema::limits::MAX_PROPERTY_VALUE_BYTES {
                    return Err(format!("step {text:?}: property value too long"));
                }
                (&text[..open], Some((key.to_owned(), value.to_owned())))
            }
            None => (text, None),
        };
        if !is_valid_name(event, MAX_EVENT_NAME_BYTES) {
            return Err(format!(
                "invalid event name {event:?}: 1 to {MAX_EVENT_NAME_BYTES} bytes, no control characters"
            ));
        }
        Ok(Self {
            event: event.to_owned(),
            filter,
        })
    }

    /// A comma list of specs (commas inside `[...]` belong to the value).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        for (i, c) in text.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    out.push(Self::parse(&text[start..i])?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(Self::parse(&text[start..])?);
        Ok(out)
    }
}

/// How the steps after the first must follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// In order, other events may come between.
    Ordered,
    /// In order, no other step's event between consecutive steps.
    Strict,
    /// Any order, all within the window of the first of them.
    Any,
}

/// `30s`, `15m`, `1h`, `7d` → milliseconds (1 s to 90 days).
pub fn parse_window(text: &str) -> Result<i64, String> {
    let bad =
        || format!("window must be a number with s, m, h or d, from 1s to 90d (got {text:?})");
    let unit = match text.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => return Err(bad()),
    };
    let n: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    let ms = n.checked_mul(unit).ok_or_else(bad)?;
    if !(1_000..=MAX_WINDOW_MS).contains(&ms) {
        return Err(bad());
    }
    Ok(ms)
}

/// A funnel question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunnelQuestion {
    pub steps: Vec<StepSpec>,
    pub exclusions: Vec<StepSpec>,
    pub window_ms: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub order: Order,
    /// Split by this property (`source`: the column) of each person's first entering
    /// S1 event, keeping the `breakdown_limit` values with the most persons.
    pub breakdown: Option<String>,
    pub breakdown_limit: usize,
}

/// A funnel's answer: the total, and per breakdown value (the most frequent first;
/// `None`: every other value together).
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelAnswer {
    pub total: Vec<StepResult>,
    pub breakdown: Vec<(Option<String>, Vec<StepResult>)>,
}

/// One step's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// Persons who reached this step (step 1: who entered).
    pub persons: u64,
    /// Time to convert from S1 to this step, in seconds, over those persons
    /// (`None` when nobody reached it).
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// One event of a person: time (ms), the steps it matches (bit i: step i+1), flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersonEvent {
    pub t: i64,
    pub steps: u32,
    /// [`ENTERING`] | [`EXCLUSION`].
    pub flags: u8,
}

/// An S1 event whose local day is in the range.
pub const ENTERING: u8 = 1;
/// An event that matches an exclusion.
pub const EXCLUSION: u8 = 2;

/// For one person (events sorted by time): per step, `Some(time to convert in ms)`
/// when reached.
pub fn evaluate(events: &[PersonEvent], k: usize, window: i64, order: Order) -> Vec<Option<i64>> {
    // Per step: (earliest completion, time to convert) over all attempts.
    let mut best: Vec<Option<(i64, i64)>> = vec![None; k];
    let mut used = vec![false; events.len()];
    let next = next_exclusions(events);
    for (s, e) in events.iter().enumerate() {
        if e.flags & ENTERING == 0 || e.steps & 1 == 0 {
            continue;
        }
        offer(&mut best, 0, e.t, 0);
        if order == Order::Any {
            continue;
        }
        let t1 = e.t;
        let stop = first_exclusion(events, &next, t1);
        // The walk gives back every event it takes.
        used[s] = true;
        let mut walk = Walk {
            events,
            used: &mut used,
            best: &mut best,
            k,
            t1,
            limit: (t1 + window).min(stop - 1),
            strict: order == Order::Strict,
            budget: MAX_WALK_STEPS,
        };
        walk.next(1, t1);
        used[s] = false;
    }
    if order == Order::Any {
        any_order(events, &next, k, window, &mut best);
    }
    best.into_iter().map(|b| b.map(|(_, d)| d)).collect()
}

/// Keeps the earliest completion of `step`; ties: the shorter time.
fn offer(best: &mut [Option<(i64, i64)>], step: usize, done: i64, took: i64) {
    let slot = &mut best[step];
    if slot.is_none_or(|b| (done, took) < b) {
        *slot = Some((done, took));
    }
}

/// Ordered and strict order, from one entering event. Ordered: the next step's event
/// is the earliest one at or after the previous step's time (a later one never
/// helps); strict: it is at the previous step's time or at the time of the first step
/// event after it (anything later has that event between), so both are tried (the
/// earlier completes sooner, the later may get past that event). Of one millisecond,
/// one event per distinct set of matched steps is tried (events matching the same
/// steps are interchangeable).
struct Walk<'a> {
    events: &'a [PersonEvent],
    used: &'a mut Vec<bool>,
    best: &'a mut Vec<Option<(i64, i64)>>,
    k: usize,
    t1: i64,
    limit: i64,
    strict: bool,
    /// Choices left to try ([`MAX_WALK_STEPS`]).
    budget: usize,
}

impl Walk<'_> {
    fn next(&mut self, step: usize, prev: i64) {
        if step >= self.k || self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let times: Vec<i64> = if self.strict {
            let from = self.events.partition_point(|x| x.t <= prev);
            let after = self.events[from..]
                .iter()
                .find(|x| x.steps != 0)
                .map(|x| x.t);
            [Some(prev), after].into_iter().flatten().collect()
        } else {
            let start = self.events.partition_point(|x| x.t < prev);
            self.events[start..]
                .iter()
                .enumerate()
                .take_while(|(_, x)| x.t <= self.limit)
                .find(|(i, x)| !self.used[start + i] && x.steps & (1 << step) != 0)
                .map(|(_, x)| x.t)
                .into_iter()
                .collect()
        };
        for at in times {
            if at > self.limit {
                continue;
            }
            for i in candidates(self.events, self.used, step, at) {
                self.used[i] = true;
                offer(self.best, step, at, at - self.t1);
                self.next(step + 1, at);
                self.used[i] = false;
            }
        }
    }
}

/// Unused events at exactly `at` matching `step`: one per distinct set of matched
/// steps.
fn candidates(events: &[PersonEvent], used: &[bool], step: usize, at: i64) -> Vec<usize> {
    let start = events.partition_point(|x| x.t < at);
    let mut out: Vec<usize> = Vec::new();
    for (i, x) in events.iter().enumerate().skip(start) {
        if x.t > at {
            break;
        }
        if !used[i]
            && x.steps & (1 << step) != 0
            && !out.iter().any(|&o| events[o].steps == x.steps)
        {
            out.push(i);
        }
    }
    out
}

/// Any order, for all of a person's attempts at once: for each possible first event
/// time `a` (the time of a step event), the events of [a, a + W] (and before the
/// first exclusion at or after `a`) are added in time order to the sets of steps that
/// distinct events can cover (step 1 only by an entering event); step i completes at
/// the first event after which some set covers steps 1..i. Its time is measured from
/// `a`: the start that gives the shortest time is the earliest event actually used.
fn any_order(
    events: &[PersonEvent],
    next: &[i64],
    k: usize,
    window: i64,
    best: &mut [Option<(i64, i64)>],
) {
    let mut starts: Vec<i64> = events
        .iter()
        .filter(|x| x.steps != 0)
        .map(|x| x.t)
        .collect();
    starts.dedup();
    let mut seen = vec![false; 1 << k];
    let mut sets: Vec<u32> = Vec::new();
    for a in starts {
        let stop = first_exclusion(events, next, a);
        let limit = a.saturating_add(window).min(stop - 1);
        let from = events.partition_point(|x| x.t < a);
        let window_events = || events[from..].iter().take_while(|x| x.t <= limit);
        // The steps the window can cover at all: stop once they are reached.
        let mut present = 0u32;
        for x in window_events() {
            present |= if x.flags & ENTERING != 0 {
                x.steps
            } else {
                x.steps & !1
            };
        }
        let possible = present.trailing_ones() as usize;
        if possible < 2 {
            continue;
        }
        seen.iter_mut().for_each(|v| *v = false);
        sets.clear();
        sets.push(0);
        seen[0] = true;
        let mut reached = 1;
        for x in window_events() {
            if reached >= possible.min(k) {
                break;
            }
            let steps = if x.flags & ENTERING != 0 {
                x.steps
            } else {
                x.steps & !1
            };
            if steps == 0 {
                continue;
            }
            for n in 0..sets.len() {
                let set = sets[n];
                let mut free = steps & !set;
                while free != 0 {
                    let bit = free & free.wrapping_neg();
                    free &= !bit;
                    let grown = (set | bit) as usize;
                    if !seen[grown] {
                        seen[grown] = true;
                        sets.push(set | bit);
                    }
                }
            }
            while reached < k {
                let need = (1u32 << (reached + 1)) - 1;
                if !sets.iter().any(|set| set & need == need) {
                    break;
                }
                offer(best, reached, x.t, x.t - a);
                reached += 1;
            }
        }
    }
}

/// Per index i, the time of the first exclusion event at index ≥ i (`i64::MAX`: none).
fn next_exclusions(events: &[PersonEvent]) -> Vec<i64> {
    let mut out = vec![i64::MAX; events.len() + 1];
    for i in (0..events.len()).rev() {
        out[i] = if events[i].flags & EXCLUSION != 0 {
            events[i].t
        } else {
            out[i + 1]
        };
    }
    out
}

/// The time of the first exclusion event at or after `t` (`i64::MAX` when none).
fn first_exclusion(events: &[PersonEvent], next: &[i64], t: i64) -> i64 {
    next[events.partition_point(|x| x.t < t)]
}

/// The R-7 quantile (linear between order statistics, as numpy's default) of sorted
/// `values`.
pub fn quantile(sorted: &[i64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    let (a, b) = (sorted[lo] as f64, sorted[hi] as f64);
    Some(a + (h - lo as f64) * (b - a))
}

/// Per step, the times of the persons who reached it.
pub fn summarize(mut times: Vec<Vec<i64>>) -> Vec<StepResult> {
    times
        .iter_mut()
        .map(|t| {
            t.sort_unstable();
            StepResult {
                persons: t.len() as u64,
                median_seconds: quantile(t, 0.5).map(|v| v / 1000.0),
                p90_seconds: quantile(t, 0.9).map(|v| v / 1000.0),
            }
        })
        .collect()
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct PersonRow {
    ts: Vec<i64>,
    steps: Vec<u32>,
    flags: Vec<u8>,
    values: Vec<String>,
}

/// Runs `question` for `app`.
pub async fn funnel(
    source: &MetricsSource,
    defs: &MetricDefinitions,
    app: &str,
    question: &FunnelQuestion,
) -> Result<FunnelAnswer, clickhouse::error::Error> {
    let range = days_range(defs.timezone, question.from, question.to);
    let w = question.window_ms;
    // Any order may use events up to W before the entering event.
    let lo = range.start.timestamp_millis() - if question.order == Order::Any { w } else { 0 };
    let hi = range.end.timestamp_millis() + w;
    fn split(specs: &[StepSpec]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        let names: Vec<&str> = specs.iter().map(|s| s.event.as_str()).collect();
        let keys: Vec<&str> = specs
            .iter()
            .map(|s| s.filter.as_ref().map_or("", |f| f.0.as_str()))
            .collect();
        let values: Vec<&str> = specs
            .iter()
            .map(|s| s.filter.as_ref().map_or("", |f| f.1.as_str()))
            .collect();
        (names, keys, values)
    }
    let (s_names, s_keys, s_values) = split(&question.steps);
    let (x_names, x_keys, x_values) = split(&question.exclusions);
    let bits: Vec<u32> = (0..question.steps.len()).map(|i| 1u32 << i).collect();
    let mut all_names: Vec<&str> = s_names.iter().chain(x_names.iter()).copied().collect();
    all_names.sort_unstable();
    all_names.dedup();
    let mut cursor = source
        .client()
        .query(
            "SELECT arrayMap(x -> x.1, s) AS ts, arrayMap(x -> x.2, s) AS steps, arrayMap(x -> x.3, s) AS flags, arrayMap(x -> x.4, s) AS values
             FROM (
                 SELECT if(p.person_key = 0, e.user_key, p.person_key) AS person,
                        arraySlice(arraySort(groupArray((e.t, e.steps, e.flags, e.value))), 1, {cap:UInt32}) AS s
                 FROM (
                     SELECT user_key, toUnixTimestamp64Milli(event_time) AS t,
                            toUInt32(arraySum(arrayMap((n, k, v, b) ->
                                if(event = n AND (k = '' OR if(k = 'source', toString(source), properties[k]) = v), b, 0),
                                {s_names:Array(String)}, {s_keys:Array(String)}, {s_values:Array(String)}, {bits:Array(UInt32)}))) AS steps,
                            toUInt8(
                                if(bitAnd(steps, 1) = 1 AND toDate(event_time, {tz:String}) BETWEEN {from:Date} AND {to:Date}, 1, 0)
                                + if(arrayExists((n, k, v) ->
                                    event = n AND (k = '' OR if(k = 'source', toString(source), properties[k]) = v),
                                    {x_names:Array(String)}, {x_keys:Array(String)}, {x_values:Array(String)}), 2, 0)) AS flags,
                            if(bitAnd(flags, 1) = 1 AND {bkey:String} != '',
                               if({bkey:String} = 'source', toString(source), properties[{bkey:String}]), '') AS value
                     FROM ?
                     WHERE app = {app:String} AND user_key != 0
                       AND day BETWEEN toDate(fromUnixTimestamp64Milli({lo:Int64}, 'UTC')) AND toDate(fromUnixTimestamp64Milli({hi:Int64}, 'UTC'))
                       AND event IN {names:Array(String)}
                       AND t BETWEEN {lo:Int64} AND {hi:Int64}
                       AND (steps != 0 OR flags != 0)
                 ) AS e
                 LEFT JOIN (SELECT user_key, person_key FROM ? WHERE app = {app:String}) AS p
                      ON p.user_key = e.user_key
                 GROUP BY person
                 HAVING max(bitAnd(e.flags, 1)) = 1
             )",
        )
        .bind(clickhouse::sql::Identifier(EVENTS))
        .bind(clickhouse::sql::Identifier(PERSON_KEYS))
        .param("s_names", &s_names)
        .param("s_keys", &s_keys)
        .param("s_values", &s_values)
        .param("bits", &bits)
        .param("x_names", &x_names)
        .param("x_keys", &x_keys)
        .param("x_values", &x_values)
        .param("names", &all_names)
        .param("bkey", question.breakdown.as_deref().unwrap_or(""))
        .param("cap", MAX_PERSON_EVENTS)
        .param("tz", defs.timezone.name())
        .param("from", question.from.to_string())
        .param("to", question.to.to_string())
        .param("app", app)
        .param("lo", lo)
        .param("hi", hi - 1)
        .fetch::<PersonRow>()?;
    let k = question.steps.len();
    let mut times: Vec<Vec<i64>> = vec![Vec::new(); k];
    let mut split: HashMap<String, Vec<Vec<i64>>> = HashMap::new();
    let mut events = Vec::new();
    let mut persons = 0u64;
    while let Some(row) = cursor.next().await? {
        // The evaluation is CPU work: let the runtime (and the query timeout) in.
        persons += 1;
        if persons.is_multiple_of(1024) {
            tokio::task::yield_now().await;
        }
        events.clear();
        events.extend(
            row.ts
                .iter()
                .zip(&row.steps)
                .zip(&row.flags)
                .map(|((&t, &steps), &flags)| PersonEvent { t, steps, flags }),
        );
        let reached = evaluate(&events, k, question.window_ms, question.order);
        let add = |times: &mut Vec<Vec<i64>>| {
            for (step, took) in reached.iter().enumerate() {
                if let Some(took) = took {
                    times[step].push(*took);
                }
            }
        };
        add(&mut times);
        if question.breakdown.is_some() {
            let value = person_value(&events, &row.values);
            add(split.entry(value).or_insert_with(|| vec![Vec::new(); k]));
        }
    }
    Ok(FunnelAnswer {
        total: summarize(times),
        breakdown: top_values(split, question.breakdown_limit, k),
    })
}

/// A person's breakdown value: that of their earliest entering S1 event (of one
/// millisecond, the smallest value).
fn person_value(events: &[PersonEvent], values: &[String]) -> String {
    let mut best: Option<(i64, &str)> = None;
    for (e, v) in events.iter().zip(values) {
        if e.flags & ENTERING != 0 && best.is_none_or(|b| (e.t, v.as_str()) < b) {
            best = Some((e.t, v));
        }
    }
    best.map(|b| b.1.to_owned()).unwrap_or_default()
}

/// The `limit` values with the most persons entering (ties: the smaller value), then
/// every other value together (`None`) when there are any.
fn top_values(
    split: HashMap<String, Vec<Vec<i64>>>,
    limit: usize,
    k: usize,
) -> Vec<(Option<String>, Vec<StepResult>)> {
    let mut values: Vec<(String, Vec<Vec<i64>>)> = split.into_iter().collect();
    values.sort_by(|a, b| b.1[0].len().cmp(&a.1[0].len()).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    let mut other: Option<Vec<Vec<i64>>> = None;
    for (i, (value, times)) in values.into_iter().enumerate() {
        if i < limit {
            out.push((Some(value), summarize(times)));
        } else {
            let o = other.get_or_insert_with(|| vec![Vec::new(); k]);
            for (all, t) in o.iter_mut().zip(times) {
                all.extend(t);
            }
        }
    }
    if let Some(o) = other {
        out.push((None, summarize(o)));
    }
    out
}

/// The step labels, as asked (`name` or `name[key=value]`).
pub fn label(spec: &StepSpec) -> String {
    match &spec.filter {
        Some((k, v)) => format!("{}[{k}={v}]", spec.event),
        None => spec.event.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, steps: u32, flags: u8) -> PersonEvent {
        PersonEvent { t, steps, flags }
    }

    #[test]
    fn parses_steps_and_windows() {
        let s = StepSpec::parse_list("a,b[source=pwa],c[k=x,y]").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].filter, Some(("source".into(), "pwa".into())));
        assert_eq!(s[2].filter, Some(("k".into(), "x,y".into())));
        assert!(StepSpec::parse("a[b]").is_err());
        assert!(StepSpec::parse("").is_err());
        assert_eq!(parse_window("1h"), Ok(3_600_000));
        assert!(parse_window("91d").is_err());
        assert!(parse_window("0s").is_err());
        assert!(parse_window("h").is_err());
    }

    #[test]
    fn ordered_strict_and_exclusions() {
        // a@0, c@5, b@10, c@20 (steps a, b, c)
        let evs = [ev(0, 1, 1), ev(5, 4, 0), ev(10, 2, 0), ev(20, 4, 0)];
        assert_eq!(
            evaluate(&evs, 3, 100, Order::Ordered),
            vec![Some(0), Some(10), Some(20)]
        );
        assert_eq!(
            evaluate(&evs, 3, 100, Order::Strict),
            vec![Some(0), None, None]
        );
        assert_eq!(
            evaluate(&evs, 3, 15, Order::Ordered),
            vec![Some(0), Some(10), None]
        );
        let excluded = [ev(0, 1, 1), ev(5, 0, 2), ev(10, 2, 0)];
        assert_eq!(
            evaluate(&excluded, 2, 100, Order::Ordered),
            vec![Some(0), None]
        );
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), Some(2.5));
    }

    #[test]
    fn choices_that_greed_would_miss() {
        // Steps s, e, e[pwa]: e{pwa} matches steps 2 and 3, e{form} step 2 only.
        let tie = [ev(0, 1, 1), ev(1, 0b110, 0), ev(1, 0b010, 0)];
        assert_eq!(
            evaluate(&tie, 3, 100, Order::Ordered),
            vec![Some(0), Some(1), Some(1)]
        );
        // Any order: e{pwa} first, e{form} later: e must take the later one.
        let any = [ev(0, 1, 1), ev(3, 0b110, 0), ev(5, 0b010, 0)];
        assert_eq!(
            evaluate(&any, 3, 100, Order::Any),
            vec![Some(0), Some(3), Some(5)]
        );
        assert_eq!(
            evaluate(&any, 3, 100, Order::Ordered),
            vec![Some(0), Some(3), None]
        );
        // Strict: b at a's millisecond, then b and c: the later b gets past it.
        let strict = [ev(0, 1, 1), ev(0, 2, 0), ev(5, 2, 0), ev(6, 4, 0)];
        assert_eq!(
            evaluate(&strict, 3, 100, Order::Strict),
            vec![Some(0), Some(0), Some(6)]
        );
        // Any order: steps before the entering event count, timed from the first.
        let before = [ev(0, 2, 0), ev(10, 1, 1)];
        assert_eq!(
            evaluate(&before, 2, 100, Order::Any),
            vec![Some(0), Some(10)]
        );
        assert_eq!(evaluate(&before, 2, 5, Order::Any), vec![Some(0), None]);
    }
}
