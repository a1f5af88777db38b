//! docs/contract.md's funnel definition ("Funnels") written as a search over every
//! choice of events, apart from the aggregator's walk: for each entering S1 event, every
//! sequence of distinct events that satisfies the order, the window and the exclusions
//! is tried; per step, the earliest completion over all of them (ties: the shortest time)
//! gives the person's time to convert. Exponential, fine for a test's few events.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;

use super::Ev;

/// A step or an exclusion: an event name, optionally with the source it must have
/// or the `plan` property ([`plan`]) it must have.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub source: Option<&'static str>,
    pub plan: Option<&'static str>,
}

impl Step {
    fn matches(&self, e: &Ev) -> bool {
        e.name == self.name
            && self.source.is_none_or(|s| s == e.source)
            && self.plan.is_none_or(|p| p == plan(e))
    }
}

/// The `plan` property the funnel test sends with every event: a function of its
/// time, so the reference needs no field for it.
pub fn plan(e: &Ev) -> &'static str {
    if e.at.timestamp_subsec_millis().is_multiple_of(3) {
        "pro"
    } else {
        "free"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ordered,
    Strict,
    Any,
}

/// Per step: persons reaching it, and the median and p90 of their times (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StepAnswer {
    pub persons: u64,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

/// One person's events: (time ms, steps matched, is an exclusion, the event).
struct P<'a> {
    t: i64,
    steps: Vec<bool>,
    excl: bool,
    ev: &'a Ev,
}

pub struct Question<'a> {
    pub steps: &'a [Step],
    pub exclude: &'a [Step],
    pub window_ms: i64,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub order: Order,
}

/// The funnel of `app`'s persons (events already mapped to persons).
pub fn funnel(events: &[Ev], app: &str, tz: Tz, q: &Question) -> Vec<StepAnswer> {
    let mut times: Vec<Vec<i64>> = vec![Vec::new(); q.steps.len()];
    for evs in by_person(events, app).values() {
        add(&mut times, &person(evs, tz, q));
    }
    answers(times)
}

/// The funnel split by the source of each person's earliest entering S1 event (of one
/// millisecond, the smallest source): the `limit` sources with the most persons
/// entering (ties: the smaller source), then `None` for all the others together.
pub fn by_source(
    events: &[Ev],
    app: &str,
    tz: Tz,
    q: &Question,
    limit: usize,
) -> Vec<(Option<String>, Vec<StepAnswer>)> {
    let k = q.steps.len();
    let mut split: BTreeMap<String, Vec<Vec<i64>>> = BTreeMap::new();
    for evs in by_person(events, app).values() {
        let entering = evs
            .iter()
            .filter(|e| q.steps[0].matches(e) && entering_day(e, tz, q))
            .map(|e| (e.at, e.source))
            .min();
        let Some((_, source)) = entering else {
            continue;
        };
        let times = split
            .entry(source.to_owned())
            .or_insert_with(|| vec![Vec::new(); k]);
        add(times, &person(evs, tz, q));
    }
    let mut ranked: Vec<(String, Vec<Vec<i64>>)> = split.into_iter().collect();
    ranked.sort_by_key(|(v, t)| (std::cmp::Reverse(t[0].len()), v.clone()));
    let mut out = Vec::new();
    let mut other: Vec<Vec<i64>> = vec![Vec::new(); k];
    let mut any_other = false;
    for (i, (v, t)) in ranked.into_iter().enumerate() {
        if i < limit {
            out.push((Some(v), answers(t)));
        } else {
            any_other = true;
            for (o, x) in other.iter_mut().zip(t) {
                o.extend(x);
            }
        }
    }
    if any_other {
        out.push((None, answers(other)));
    }
    out
}

fn by_person<'a>(events: &'a [Ev], app: &str) -> BTreeMap<&'a str, Vec<&'a Ev>> {
    let mut out: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.app == app) {
        if let Some(u) = &e.user {
            out.entry(u.as_str()).or_default().push(e);
        }
    }
    out
}

fn entering_day(e: &Ev, tz: Tz, q: &Question) -> bool {
    let day = e.at.with_timezone(&tz).date_naive();
    day >= q.from && day <= q.to
}

fn add(times: &mut [Vec<i64>], person: &[Option<i64>]) {
    for (t, p) in times.iter_mut().zip(person) {
        if let Some(p) = p {
            t.push(*p);
        }
    }
}

fn answers(times: Vec<Vec<i64>>) -> Vec<StepAnswer> {
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            StepAnswer {
                persons: t.len() as u64,
                median: r7(&t, 0.5),
                p90: r7(&t, 0.9),
            }
        })
        .collect()
}

/// One person's time to convert to each step they reach.
fn person(evs: &[&Ev], tz: Tz, q: &Question) -> Vec<Option<i64>> {
    let k = q.steps.len();
    let ps: Vec<P> = evs
        .iter()
        .map(|e| P {
            t: e.at.timestamp_millis(),
            steps: q.steps.iter().map(|s| s.matches(e)).collect(),
            excl: q.exclude.iter().any(|s| s.matches(e)),
            ev: e,
        })
        .collect();
    // best[i] = (completion, time)
    let mut best: Vec<Option<(i64, i64)>> = vec![None; k];
    for (s, e1) in ps.iter().enumerate() {
        if !e1.steps[0] || !entering_day(e1.ev, tz, q) {
            continue;
        }
        let mut used = vec![false; ps.len()];
        used[s] = true;
        let mut chosen = vec![s];
        search(&ps, q, &mut used, &mut chosen, &mut best);
    }
    best.iter().map(|b| b.map(|(_, d)| d)).collect()
}

/// Records the sequence `chosen` (events for steps 1..=len), then extends it.
fn search(
    ps: &[P],
    q: &Question,
    used: &mut Vec<bool>,
    chosen: &mut Vec<usize>,
    best: &mut Vec<Option<(i64, i64)>>,
) {
    let times: Vec<i64> = chosen.iter().map(|&i| ps[i].t).collect();
    let (first, last) = (times[0], times[times.len() - 1]);
    let lo = times.iter().copied().fold(i64::MAX, i64::min);
    let hi = times.iter().copied().fold(i64::MIN, i64::max);
    let (done, took) = match q.order {
        Order::Ordered | Order::Strict => (last, last - first),
        Order::Any => (hi, hi - lo),
    };
    let step = chosen.len() - 1;
    if best[step].is_none_or(|b| (done, took) < b) {
        best[step] = Some((done, took));
    }
    if chosen.len() == q.steps.len() {
        return;
    }
    let next = chosen.len();
    for c in 0..ps.len() {
        if used[c] || !ps[c].steps[next] {
            continue;
        }
        let ok = match q.order {
            Order::Ordered | Order::Strict => {
                let (t1, prev, t) = (first, last, ps[c].t);
                t >= prev
                    && t - t1 <= q.window_ms
                    && !excluded_before(ps, t1, t)
                    && (q.order == Order::Ordered
                        || !ps
                            .iter()
                            .any(|x| x.steps.iter().any(|&m| m) && x.t > prev && x.t < t))
            }
            Order::Any => {
                let (lo, hi) = (lo.min(ps[c].t), hi.max(ps[c].t));
                hi - lo <= q.window_ms && !excluded_before(ps, lo, hi)
            }
        };
        if ok {
            used[c] = true;
            chosen.push(c);
            search(ps, q, used, chosen, best);
            chosen.pop();
            used[c] = false;
        }
    }
}

/// An exclusion event at a time in [from, until]: the steps after `from` must all
/// come before the first exclusion at or after it.
fn excluded_before(ps: &[P], from: i64, until: i64) -> bool {
    ps.iter().any(|x| x.excl && x.t >= from && x.t <= until)
}

/// The quantile of type 7 of sorted `v` (linear interpolation), in seconds.
fn r7(v: &[i64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let pos = q * (v.len() - 1) as f64;
    let below = pos.floor();
    let frac = pos - below;
    let i = below as usize;
    let a = v[i] as f64;
    let b = v[(i + 1).min(v.len() - 1)] as f64;
    Some((a + frac * (b - a)) / 1000.0)
}
