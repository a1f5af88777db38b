//! docs/contract.md's metric definitions written directly over a list of events, in plain
//! Rust, apart from the aggregator's SQL: the independent reference the correctness
//! tests compare `/metrics` and `/api/v1/*` with. Deliberately naive (sets of days per
//! user, loops over days): obviously right beats fast here.

#![allow(dead_code)]

pub mod funnel;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use chrono_tz::Tz;

/// One event as sent.
#[derive(Debug, Clone)]
pub struct Ev {
    pub app: &'static str,
    pub name: &'static str,
    pub user: Option<String>,
    pub source: &'static str,
    pub at: DateTime<Utc>,
}

/// The reference for one app, zone and active-event set.
pub struct Reference {
    pub tz: Tz,
    pub today: NaiveDate,
    /// user → local days with an active event.
    pub active_days: BTreeMap<String, BTreeSet<NaiveDate>>,
    /// user → first event of any kind.
    pub first_seen: BTreeMap<String, DateTime<Utc>>,
    /// (local day, event, source) → events, anonymous ones included.
    pub counts: BTreeMap<(NaiveDate, String, String), u64>,
}

/// How a retained user is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    OnDay,
    OnOrAfter,
}

/// One retention value as docs/api.md defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub day: u32,
    pub status: &'static str,
    pub users: Option<u64>,
}

impl Reference {
    /// Builds the reference of `app` on the local day `today` (every event is in
    /// the past).
    pub fn new(events: &[Ev], app: &str, tz: Tz, active: &[&str], today: NaiveDate) -> Self {
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
        let mut r = Reference {
            tz,
            today,
            active_days: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            counts: BTreeMap::new(),
        };
        for e in events.iter().filter(|e| e.app == app) {
            *r.counts
                .entry((local(e.at), e.name.to_owned(), e.source.to_owned()))
                .or_default() += 1;
            let Some(user) = &e.user else { continue };
            let first = r.first_seen.entry(user.clone()).or_insert(e.at);
            *first = (*first).min(e.at);
            if active.is_empty() || active.contains(&e.name) {
                r.active_days
                    .entry(user.clone())
                    .or_default()
                    .insert(local(e.at));
            }
        }
        r
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// Distinct users active in the `span` days ending `last`.
    pub fn active_users(&self, last: NaiveDate, span: u64) -> u64 {
        let from = last - Days::new(span - 1);
        self.active_days
            .values()
            .filter(|d| d.range(from..=last).next().is_some())
            .count() as u64
    }

    /// DAU ÷ MAU on `last`, `None` when MAU is 0.
    pub fn stickiness(&self, last: NaiveDate) -> Option<f64> {
        let mau = self.active_users(last, 30);
        (mau > 0).then(|| self.active_users(last, 1) as f64 / mau as f64)
    }

    pub fn period_start(day: NaiveDate, week: bool) -> NaiveDate {
        if week {
            day - Days::new(u64::from(day.weekday().num_days_from_monday()))
        } else {
            day
        }
    }

    /// Users whose first event falls in the period (day, or Monday week) `start`.
    pub fn cohort(&self, start: NaiveDate, week: bool) -> Vec<&str> {
        self.first_seen
            .iter()
            .filter(|(_, t)| Self::period_start(self.local(**t), week) == start)
            .map(|(u, _)| u.as_str())
            .collect()
    }

    /// Users of `members` retained on period N (`step` days a period).
    pub fn retained(
        &self,
        members: &[&str],
        start: NaiveDate,
        n: u32,
        step: u64,
        mode: Mode,
    ) -> u64 {
        let target = start + Days::new(step * u64::from(n));
        members
            .iter()
            .filter(|u| {
                self.active_days.get(**u).is_some_and(|days| {
                    days.iter().any(|d| {
                        let p = Self::period_start(*d, step == 7);
                        match mode {
                            Mode::OnDay => p == target,
                            Mode::OnOrAfter => p >= target,
                        }
                    })
                })
            })
            .count() as u64
    }

    /// The latest `cohorts` cohorts (newest first) with their values for `days`.
    pub fn retention(
        &self,
        week: bool,
        cohorts: u32,
        days: &[u32],
        mode: Mode,
    ) -> Vec<(NaiveDate, u64, Vec<Cell>)> {
        let step = if week { 7 } else { 1 };
        let current = Self::period_start(self.today, week);
        (0..u64::from(cohorts))
            .map(|back| {
                let start = current - Days::new(step * back);
                let members = self.cohort(start, week);
                let cells = days
                    .iter()
                    .map(|&n| {
                        let target = start + Days::new(step * u64::from(n));
                        let status = if members.is_empty() {
                            "empty"
                        } else if target < current {
                            "final"
                        } else if target == current {
                            "in_progress"
                        } else {
                            "pending"
                        };
                        let users = matches!(status, "final" | "in_progress")
                            .then(|| self.retained(&members, start, n, step, mode));
                        Cell {
                            day: n,
                            status,
                            users,
                        }
                    })
                    .collect();
                (start, members.len() as u64, cells)
            })
            .collect()
    }

    /// docs/contract.md's recent retention of day N: Σ cohort users and Σ retained over
    /// the `k` latest cohort days C with C + N < today (empty ones add nothing).
    pub fn recent_sums(&self, n: u32, k: u32) -> (u64, u64) {
        let (mut users, mut retained) = (0, 0);
        for back in 0..u64::from(k) {
            let cohort = self.today - Days::new(u64::from(n) + 1 + back);
            let members = self.cohort(cohort, false);
            users += members.len() as u64;
            retained += self.retained(&members, cohort, n, 1, Mode::OnDay);
        }
        (users, retained)
    }

    /// docs/contract.md's lifecycle of the period (day, or Monday week) starting
    /// `start`, as (new, returning, resurrecting, dormant), dormant as a count: per
    /// user, active in the period and in the one before, and the period of the first
    /// event of any kind.
    pub fn lifecycle(&self, start: NaiveDate, week: bool) -> [u64; 4] {
        let previous = start - Days::new(if week { 7 } else { 1 });
        let mut out = [0; 4];
        for (user, days) in &self.active_days {
            let active_in = |p: NaiveDate| days.iter().any(|d| Self::period_start(*d, week) == p);
            let (now, before) = (active_in(start), active_in(previous));
            let first = Self::period_start(self.local(self.first_seen[user]), week);
            let slot = match (now, before) {
                (true, _) if first == start => 0,
                (true, true) if first < start => 1,
                (true, false) if first < start => 2,
                (false, true) => 3,
                _ => continue,
            };
            out[slot] += 1;
        }
        out
    }

    /// Distinct users active in the period (day, or Monday week) starting `start`.
    pub fn active_in_period(&self, start: NaiveDate, week: bool) -> u64 {
        self.active_days
            .values()
            .filter(|days| days.iter().any(|d| Self::period_start(*d, week) == start))
            .count() as u64
    }

    /// Events of `day`, split by event name or by source, of one event or all.
    pub fn events_on(
        &self,
        day: NaiveDate,
        by_source: bool,
        event: Option<&str>,
    ) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((d, name, source), count) in &self.counts {
            if *d != day || event.is_some_and(|e| e != name) {
                continue;
            }
            let key = if by_source { source } else { name };
            *out.entry(key.clone()).or_default() += count;
        }
        out
    }
}

/// An identify (`merge = false`: `linked` is the anonymous id) or a merge (`linked` is
/// the known id merged into `known`), as sent, with raw ids.
#[derive(Debug, Clone)]
pub struct LinkEv {
    pub merge: bool,
    pub linked: String,
    pub known: String,
    pub at: DateTime<Utc>,
}

/// docs/contract.md's people rules, naively: each id → a name for its person (ids the
/// links do not name are their own person). Ties between identifies at the same
/// instant are not exercised (the contract breaks them by the smaller user key).
pub fn persons(links: &[LinkEv]) -> BTreeMap<String, String> {
    let mut known: BTreeSet<&str> = BTreeSet::new();
    for l in links {
        known.insert(&l.known);
        if l.merge {
            known.insert(&l.linked);
        }
    }
    // Merge components: grow each until nothing changes.
    let mut group: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in links.iter().filter(|l| l.merge) {
        for k in [&l.known, &l.linked] {
            group
                .entry(k)
                .or_insert_with(|| BTreeSet::from([k.as_str()]));
        }
    }
    loop {
        let mut grew = false;
        for l in links.iter().filter(|l| l.merge) {
            let joined: BTreeSet<&str> = group[l.known.as_str()]
                .union(&group[l.linked.as_str()])
                .copied()
                .collect();
            for k in joined.clone() {
                if group[k] != joined {
                    group.insert(k, joined.clone());
                    grew = true;
                }
            }
        }
        if !grew {
            break;
        }
    }
    let person_of_known = |k: &str| -> String {
        group
            .get(k)
            .map(|g| format!("person:{}", g.iter().next().copied().unwrap_or(k)))
            .unwrap_or_else(|| format!("person:{k}"))
    };
    let mut out = BTreeMap::new();
    for k in &known {
        out.insert(k.to_string(), person_of_known(k));
    }
    let mut owner: BTreeMap<&str, (DateTime<Utc>, &str)> = BTreeMap::new();
    for l in links.iter().filter(|l| !l.merge && l.linked != l.known) {
        if known.contains(l.linked.as_str()) {
            continue;
        }
        let claim = (l.at, l.known.as_str());
        let e = owner.entry(&l.linked).or_insert(claim);
        if claim.0 < e.0 {
            *e = claim;
        }
    }
    for (anonymous, (_, o)) in owner {
        out.insert(anonymous.to_owned(), person_of_known(o));
    }
    out
}

/// The events with each user replaced by their person.
pub fn as_persons(events: &[Ev], links: &[LinkEv]) -> Vec<Ev> {
    let persons = persons(links);
    events
        .iter()
        .map(|e| Ev {
            user: e
                .user
                .as_ref()
                .map(|u| persons.get(u).cloned().unwrap_or_else(|| u.clone())),
            ..e.clone()
        })
        .collect()
}
