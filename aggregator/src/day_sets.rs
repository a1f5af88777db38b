//! The refresh's memory of past days: for each calendar day (in the configured zone)
//! the sorted user keys of each app's active users and of its new users (the day's
//! cohort), kept between refreshes — and across restarts ([`crate::day_store`]) —
//! and asked of ClickHouse again only for today and for the days that changed.
//!
//! Why: every metric a refresh reports is a count over these sets. DAU/WAU/MAU are
//! sizes of unions of day sets, a cohort's size is the size of its set, retention on
//! day N is the size of the intersection of cohort C's set with day C+N's active set.
//! Computing them in SQL every refresh re-reads and re-hashes every row of the 60
//! days of windows and the 38 cohorts (millions of rows at a million users) although
//! only today moved. Here a steady refresh reads today's users, the change markers
//! (`layer_changes`, a few thousand rows), the layer's parts (`system.parts`, a few
//! dozen rows) and whatever day a late event or a deletion touched, then counts in
//! memory; the unions of past days are kept too.
//!
//! Exactness: a day is read again when its marker (rows ever written into the layer
//! for its quarter-hours) changed, and once more at the next refresh, in case the
//! marker became visible before the rows it counts; and when the deletion check
//! ([`crate::layer_parts`]) finds its month partition changed by anything but an
//! insert (a mutation, a dropped part, a TTL). Today is read every refresh.
//! Everything is dropped and read afresh when the timezone or the active-event set
//! differs. Never on a timer.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate};
use chrono_tz::Tz;

use crate::day_store::{DayStore, SavedDay, SavedDays, SavedUnion};
use crate::definitions::{
    CACHED_DAYS, Lifecycle, MetricDefinitions, Period, RefreshPlan, days_range, lifecycle_periods,
};
use crate::identity;
use crate::layer_parts::LayerParts;
use crate::people::People;
use crate::queries::Queries;
use crate::rows::{ActiveUsers, CohortSize, DayUsers, Layer, LifecycleRow, Retained};

/// Days asked in one query: bounds a query's memory and lets a slow first refresh
/// keep what it read if it is cut short.
const DAYS_PER_QUERY: usize = 7;

/// Day reads in flight at once during a refresh that reads many days.
const READS_IN_FLIGHT: usize = 2;

/// Sorted, distinct user keys.
type Users = Arc<Vec<u64>>;

/// One day of one layer: each app's users, and the marker they were read at.
#[derive(Debug, Clone, Default)]
struct Day {
    marker: BTreeMap<String, u64>,
    /// Read again at the next refresh (the marker had just changed).
    unsettled: bool,
    /// Changes whenever the users change; keys the cached unions.
    version: u64,
    /// Each app's persons ([`crate::identity`]): `raw` with linked keys mapped.
    users: BTreeMap<String, Users>,
    /// Each app's user keys as read.
    raw: BTreeMap<String, Users>,
}

/// A union of consecutive active days, kept while none of them changes.
struct Union {
    versions: Vec<u64>,
    users: Users,
}

/// The cache. One per metrics source; refreshes take it in turn.
#[derive(Default)]
pub struct DaySets {
    built_for: Option<(Tz, Vec<String>)>,
    next_version: u64,
    activity: BTreeMap<NaiveDate, Day>,
    members: BTreeMap<NaiveDate, Day>,
    unions: HashMap<(String, NaiveDate, NaiveDate), Union>,
    /// The layer's parts at the last refresh: the deletion check compares with them.
    parts: Option<LayerParts>,
    /// Where the days are kept across restarts (none: memory only).
    store: Option<DayStore>,
    /// The store was read (once, at the first refresh).
    loaded: bool,
    /// A past day changed since the store was last written.
    dirty: bool,
    /// The write in progress, if any (one at a time, off the runtime).
    writing: Option<tokio::task::JoinHandle<()>>,
    /// The links and their resolution.
    people: People,
    /// The links' fingerprint the loaded unions were built under (until checked).
    loaded_links: Option<u64>,
    /// Member days whose persons are to be mapped again (all of an app's: `apps`).
    settle_days: BTreeSet<NaiveDate>,
    settle_apps: BTreeSet<String>,
    /// Linked keys that left a cohort day: their first day is asked again.
    requery: BTreeMap<String, Vec<u64>>,
    /// Each (app, period, first day)'s lifecycle and the versions of the days it was
    /// counted from (its active days, the period before's, its cohort days).
    lifecycles: HashMap<(String, Period, NaiveDate), (Vec<u64>, Lifecycle)>,
}

/// What a refresh needs from the layer, as the SQL path returns it.
pub struct Counts {
    pub active: Vec<ActiveUsers>,
    pub sizes: Vec<CohortSize>,
    pub retained: Vec<Retained>,
    /// Per app: identify pairs refused (claimed by another, known as anonymous) and
    /// keys joined to another person.
    pub identity: BTreeMap<String, IdentityCounts>,
    /// Per period, the lifecycle of each app's periods
    /// ([`crate::definitions::lifecycle_periods`]; periods where nobody was active
    /// or dormant may be left out).
    pub lifecycle: BTreeMap<Period, Vec<LifecycleRow>>,
}

/// What the links of one app did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityCounts {
    pub claimed_by_another: u64,
    pub known_as_anonymous: u64,
    /// Keys whose person is another key.
    pub joined: u64,
}

fn before(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_sub_days(Days::new(n)).unwrap_or(d)
}

fn after(d: NaiveDate, n: u64) -> Option<NaiveDate> {
    d.checked_add_days(Days::new(n))
}

/// The days of the windows: today and the 59 before (the 30-day window and the one
/// before it); the lifecycle's periods lie within them.
fn window_days(today: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    before(today, CACHED_DAYS - 1)
        .iter_days()
        .take_while(move |d| *d <= today)
}

/// The days a refresh at `plan` needs: active days (windows and every C+N) and cohort
/// days (the reported cohorts, and the window days: a period's new persons for the
/// lifecycle).
fn needed_days(
    defs: &MetricDefinitions,
    plan: &RefreshPlan,
) -> (BTreeSet<NaiveDate>, BTreeSet<NaiveDate>) {
    let today = plan.today;
    let member_days: BTreeSet<NaiveDate> = plan
        .cohort_days
        .iter()
        .copied()
        .chain(window_days(today))
        .collect();
    let mut activity_days: BTreeSet<NaiveDate> = window_days(today).collect();
    for &c in &plan.cohort_days {
        for &n in &defs.retention_days {
            if let Some(d) = after(c, u64::from(n)).filter(|d| *d <= today) {
                activity_days.insert(d);
            }
        }
    }
    (activity_days, member_days)
}

impl DaySets {
    /// A cache kept across restarts in `store`.
    pub fn with_store(store: DayStore) -> Self {
        Self {
            store: Some(store),
            ..Self::default()
        }
    }

    /// Reads from ClickHouse what changed since the last refresh (everything the first
    /// time, unless the store holds the days): today, every needed day whose marker
    /// moved, and every cached day of a partition the deletion check names.
    pub async fn update(
        &mut self,
        source: &Queries,
        defs: &MetricDefinitions,
        plan: &RefreshPlan,
    ) -> clickhouse::error::Result<()> {
        if !self.loaded {
            self.loaded = true;
            self.load(defs).await;
        }
        let built_for = Some((defs.timezone, defs.active_events.clone()));
        if self.built_for != built_for {
            *self = DaySets {
                built_for,
                next_version: self.next_version,
                store: self.store.take(),
                loaded: true,
                writing: self.writing.take(),
                ..DaySets::default()
            };
        }
        let today = plan.today;
        let (activity_days, member_days) = needed_days(defs, plan);
        self.activity.retain(|d, _| activity_days.contains(d));
        self.members.retain(|d, _| member_days.contains(d));

        // Today is read every refresh, so it goes alongside the markers and the parts
        // (one round trip in a steady refresh). Other days: markers and parts first, so
        // rows that land or go after this read are caught by the next refresh.
        let first = activity_days
            .first()
            .copied()
            .unwrap_or(today)
            .min(member_days.first().copied().unwrap_or(today));
        let just_today = [today];
        let (markers, parts, today_active, today_new, mut links) = tokio::try_join!(
            source.layer_markers(defs, first, today),
            source.layer_parts(),
            source.active_day_users(defs, &just_today),
            source.cohort_day_users(defs, &just_today),
            source.identity_links(self.people.since()),
        )?;
        // Links deleted or rewritten: read them all again.
        let full = self.people.loaded()
            && self
                .parts
                .as_ref()
                .is_some_and(|before| parts.links_changed(before));
        if full {
            tracing::info!("identity links deleted or rewritten; reading them all again");
            links = source.identity_links(None).await?;
        }
        let changed = self.people.apply(source, defs, links, full).await?;
        if let Some(saved) = self.loaded_links.take() {
            // The loaded days hold keys as read: map them under the links read now;
            // the saved unions hold only under the same links.
            if saved != self.people.fingerprint() {
                self.unions.clear();
            }
            self.remap_all();
        } else {
            self.patch(&changed);
        }
        self.store(Layer::Activity, &[today], today_active, &markers);
        self.store(Layer::FirstSeen, &[today], today_new, &markers);
        // Read beside its markers, not after them: once today is yesterday, its marker
        // may already count rows this read missed, so it is read once more then.
        for days in [&mut self.activity, &mut self.members] {
            if let Some(day) = days.get_mut(&today) {
                day.unsettled = true;
            }
        }
        self.check_deletions(defs, parts);
        let empty = BTreeMap::new();
        let stale = |days: &BTreeSet<NaiveDate>, cached: &BTreeMap<NaiveDate, Day>, layer| {
            days.iter()
                .copied()
                .filter(|d| {
                    let marker = markers.get(&(layer, *d)).unwrap_or(&empty);
                    *d != today
                        && cached
                            .get(d)
                            .is_none_or(|c| c.unsettled || c.marker != *marker)
                })
                .collect::<Vec<_>>()
        };
        let stale_activity = stale(&activity_days, &self.activity, Layer::Activity);
        let stale_members = stale(&member_days, &self.members, Layer::FirstSeen);
        // Newest first: the days late events touch are the usual reads. Two queries in
        // flight: ClickHouse works on one while the other's rows are decoded and
        // stored (a cold refresh's reads took a quarter less time than one at a
        // time). Each chunk is stored as it arrives, so a refresh cut short keeps them.
        let mut queue = query_chunks(&stale_activity)
            .into_iter()
            .map(|c| (Layer::Activity, c.to_vec()))
            .chain(
                query_chunks(&stale_members)
                    .into_iter()
                    .map(|c| (Layer::FirstSeen, c.to_vec())),
            );
        let mut reads = tokio::task::JoinSet::new();
        loop {
            while reads.len() < READS_IN_FLIGHT {
                let Some((layer, days)) = queue.next() else {
                    break;
                };
                let (source, defs) = (source.clone(), defs.clone());
                reads.spawn(async move {
                    let read = match layer {
                        Layer::Activity => source.active_day_users(&defs, &days).await,
                        Layer::FirstSeen => source.cohort_day_users(&defs, &days).await,
                    };
                    read.map(|r| (layer, days, r))
                });
            }
            let Some(done) = reads.join_next().await else {
                break;
            };
            let (layer, days, read) = done.map_err(|e| {
                clickhouse::error::Error::Custom(format!("reading days failed: {e}"))
            })??;
            // Only past days are read here: what the store keeps.
            if self.store(layer, &days, read, &markers) {
                self.dirty = true;
            }
        }
        for (app, keys) in std::mem::take(&mut self.requery) {
            self.people.ask_first_days(source, defs, &app, keys).await?;
            self.settle_apps.insert(app);
        }
        self.settle_members();
        Ok(())
    }

    /// Maps every cached day's keys to persons again (after a load), keeping each
    /// day's version: the persons are what the saved unions were built from when
    /// the links are the same.
    fn remap_all(&mut self) {
        let people = &self.people;
        for day in self.activity.values_mut() {
            for (app, raw) in &day.raw {
                let persons = match people.persons(app) {
                    Some(p) => identity::persons_of(raw, &p.resolution.persons, |_| true),
                    None => raw.clone(),
                };
                day.users.insert(app.clone(), persons);
            }
        }
        self.settle_apps
            .extend(self.members.values().flat_map(|d| d.raw.keys().cloned()));
    }

    /// After new links: maps again each active day holding a key whose person
    /// changed (found by binary search), and every cohort day of those apps.
    fn patch(&mut self, changed: &BTreeMap<String, Vec<u64>>) {
        for (app, keys) in changed {
            let Some(people) = self.people.persons(app) else {
                continue;
            };
            for day in self.activity.values_mut() {
                let Some(raw) = day.raw.get(app) else {
                    continue;
                };
                if !identity::holds_any(raw, keys) {
                    continue;
                }
                let persons = identity::persons_of(raw, &people.resolution.persons, |_| true);
                if day.users.get(app).is_none_or(|u| *u != persons) {
                    day.users.insert(app.clone(), persons);
                    self.next_version += 1;
                    day.version = self.next_version;
                }
            }
            self.settle_apps.insert(app.clone());
        }
    }

    /// Maps the cohort days to be settled: a linked person counts on the day that is
    /// the earliest first day of any of their keys. A linked key found on a cohort
    /// day has that first day; when that moves a person's first day, every cohort
    /// day of the app is mapped again.
    fn settle_members(&mut self) {
        let days = std::mem::take(&mut self.settle_days);
        let mut apps = std::mem::take(&mut self.settle_apps);
        // First days seen on the cohort days read.
        for d in &days {
            let Some(day) = self.members.get(d) else {
                continue;
            };
            for (app, raw) in &day.raw {
                let Some(people) = self.people.apps.get_mut(app) else {
                    continue;
                };
                let mut moved = false;
                for k in raw.iter() {
                    if people.resolution.persons.contains_key(k) {
                        let old = people.first_days.insert(*k, Some(*d));
                        moved |= old != Some(Some(*d));
                    }
                }
                if moved {
                    people.person_first = Arc::new(identity::person_first_days(
                        &people.resolution.persons,
                        &people.first_days,
                    ));
                    apps.insert(app.clone());
                }
            }
        }
        for (d, day) in self.members.iter_mut() {
            let whole_day = days.contains(d);
            for (app, raw) in &day.raw {
                if !whole_day && !apps.contains(app) {
                    continue;
                }
                let persons = match self.people.persons(app) {
                    Some(p) => {
                        let first = &p.person_first;
                        identity::persons_of(raw, &p.resolution.persons, |person| {
                            first.get(&person) == Some(d)
                        })
                    }
                    None => raw.clone(),
                };
                if day.users.get(app).is_none_or(|u| *u != persons) {
                    day.users.insert(app.clone(), persons);
                    self.next_version += 1;
                    day.version = self.next_version;
                }
            }
        }
    }

    /// Marks for reading every cached day of a partition changed by anything other
    /// than an insert since the last refresh ([`crate::layer_parts`]).
    fn check_deletions(&mut self, defs: &MetricDefinitions, parts: LayerParts) {
        let Some(before) = self.parts.replace(parts) else {
            return; // nothing cached was read before these parts
        };
        let Some(now) = &self.parts else { return };
        for (layer, changed) in now.changes_since(&before) {
            let days = match layer {
                Layer::Activity => &mut self.activity,
                Layer::FirstSeen => &mut self.members,
            };
            let mut marked = 0;
            for (d, day) in days.iter_mut() {
                if !day.unsettled && changed.touches(&days_range(defs.timezone, *d, *d)) {
                    day.unsettled = true;
                    marked += 1;
                }
            }
            if marked > 0 {
                self.dirty = true;
                tracing::info!(
                    ?layer,
                    days = marked,
                    ?changed,
                    "layer rows deleted or rewritten; reading those days again"
                );
            }
        }
    }

    /// At the first refresh: takes the days the store kept, if they were read for
    /// this timezone and active-event set. Anything unusable is logged and ignored.
    async fn load(&mut self, defs: &MetricDefinitions) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let started = Instant::now();
        let path = store.path();
        let saved = match tokio::task::spawn_blocking(move || store.load()).await {
            Ok(Ok(Some(saved))) => saved,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ignoring the saved day cache; reading every day");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the saved day cache failed");
                return;
            }
        };
        if saved.timezone != defs.timezone.name() || saved.active_events != defs.active_events {
            tracing::info!(
                path = %path.display(),
                timezone = saved.timezone,
                active_events = ?saved.active_events,
                "the saved day cache was read for another timezone or active-event set; reading every day"
            );
            return;
        }
        let days = saved.days.len();
        for d in saved.days {
            self.next_version += 1;
            let day = Day {
                marker: d.marker,
                unsettled: d.unsettled,
                version: self.next_version,
                users: d.users.clone(),
                raw: d.users,
            };
            match d.layer {
                Layer::Activity => self.activity.insert(d.day, day),
                Layer::FirstSeen => self.members.insert(d.day, day),
            };
        }
        // A union is valid for the days it was built from, now under new versions.
        for u in saved.unions {
            let versions = self.versions(u.first, u.last);
            self.unions.insert(
                (u.app, u.first, u.last),
                Union {
                    versions,
                    users: u.users,
                },
            );
        }
        self.parts = Some(saved.parts);
        self.loaded_links = Some(saved.links);
        self.built_for = Some((defs.timezone, defs.active_events.clone()));
        tracing::info!(
            path = %path.display(),
            days,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded the saved day cache"
        );
    }

    /// Writes the past days (and the unions built from them) to the store when one
    /// changed, off the runtime; one write at a time (a change during a write is
    /// written at the next refresh). Called after [`DaySets::count`], so the unions
    /// of a first build go with it.
    pub fn save(&mut self, defs: &MetricDefinitions, today: NaiveDate) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if !self.dirty || self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        self.dirty = false;
        let days = |layer, days: &BTreeMap<NaiveDate, Day>| {
            days.iter()
                .filter(|(d, _)| **d != today)
                .map(|(d, day)| SavedDay {
                    layer,
                    day: *d,
                    unsettled: day.unsettled,
                    marker: day.marker.clone(),
                    users: day.raw.clone(),
                })
                .collect::<Vec<_>>()
        };
        let mut saved_days = days(Layer::Activity, &self.activity);
        saved_days.extend(days(Layer::FirstSeen, &self.members));
        let unions = self
            .unions
            .iter()
            .filter(|((_, first, last), u)| u.versions == self.versions(*first, *last))
            .map(|((app, first, last), u)| SavedUnion {
                app: app.clone(),
                first: *first,
                last: *last,
                users: u.users.clone(),
            })
            .collect();
        let saved = SavedDays {
            timezone: defs.timezone.name().to_owned(),
            active_events: defs.active_events.clone(),
            parts: self.parts.clone().unwrap_or_default(),
            days: saved_days,
            unions,
            links: self.people.fingerprint(),
        };
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match store.save(&saved) {
                Ok(bytes) => tracing::debug!(
                    bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "saved the day cache"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot save the day cache"),
            }
        }));
    }

    /// Waits for the write in progress and writes what changed since (the benchmark
    /// and tests, before they start another aggregator on the same store).
    pub async fn flush(&mut self, defs: &MetricDefinitions, today: NaiveDate) {
        for _ in 0..2 {
            if let Some(w) = self.writing.take() {
                let _ = w.await;
            }
            self.save(defs, today);
        }
    }

    /// Counts the metrics of `plan` from the cached days (after [`DaySets::update`]).
    /// CPU only: a first refresh sorts millions of keys, so run it off the runtime.
    pub fn count(&mut self, defs: &MetricDefinitions, plan: &RefreshPlan) -> Counts {
        let today = plan.today;
        let apps: BTreeSet<String> = self
            .activity
            .values()
            .chain(self.members.values())
            .flat_map(|d| d.users.keys().cloned())
            .collect();
        let mut counts = Counts {
            active: Vec::new(),
            sizes: Vec::new(),
            retained: Vec::new(),
            identity: BTreeMap::new(),
            lifecycle: BTreeMap::new(),
        };
        for (app, p) in &self.people.apps {
            let r = &p.resolution;
            counts.identity.insert(
                app.clone(),
                IdentityCounts {
                    claimed_by_another: r.claimed_by_another,
                    known_as_anonymous: r.known_as_anonymous,
                    joined: r.persons.iter().filter(|(k, p)| k != p).count() as u64,
                },
            );
        }
        for app in &apps {
            if let Some(a) = self.active_users(app, today) {
                counts.active.push(a);
            }
            for period in Period::ALL {
                for start in lifecycle_periods(period, today) {
                    let l = self.lifecycle(app, period, start, today);
                    counts
                        .lifecycle
                        .entry(period)
                        .or_default()
                        .push(LifecycleRow {
                            app: app.clone(),
                            start,
                            new: l.new,
                            returning: l.returning,
                            resurrecting: l.resurrecting,
                            dormant: l.dormant,
                        });
                }
            }
            for &c in &plan.cohort_days {
                let members = self.users(Layer::FirstSeen, app, c);
                if members.is_empty() {
                    continue;
                }
                counts.sizes.push(CohortSize {
                    app: app.clone(),
                    cohort: c,
                    users: members.len() as u64,
                });
                for &n in defs.retention_days.iter().filter(|n| **n > 0) {
                    let Some(day) = after(c, u64::from(n)).filter(|d| *d <= today) else {
                        continue;
                    };
                    let users = intersection_len(&members, &self.users(Layer::Activity, app, day));
                    if users > 0 {
                        counts.retained.push(Retained {
                            app: app.clone(),
                            cohort: c,
                            day_n: n,
                            users,
                        });
                    }
                }
            }
        }
        // Keep only the unions today's windows and this week's lifecycle use, and the
        // lifecycles of the periods reported.
        let keep = window_unions(today);
        let keep_weeks = week_unions(today);
        self.unions.retain(|(_, first, last), _| {
            keep.contains(&(*first, *last)) || keep_weeks.contains(&(*first, *last))
        });
        let reported: BTreeSet<(Period, NaiveDate)> = Period::ALL
            .iter()
            .flat_map(|p| lifecycle_periods(*p, today).into_iter().map(|d| (*p, d)))
            .collect();
        self.lifecycles
            .retain(|(_, p, d), _| reported.contains(&(*p, *d)));
        counts
    }

    /// Bytes of user keys held (days and unions), for the benchmark's memory figure.
    pub fn bytes(&self) -> usize {
        let days: usize = self
            .activity
            .values()
            .chain(self.members.values())
            .flat_map(|d| d.users.values())
            .map(|u| u.len() * 8)
            .sum();
        days + self
            .unions
            .values()
            .map(|u| u.users.len() * 8)
            .sum::<usize>()
    }

    /// Replaces the days of `chunk` in `layer` with what was read; true when a
    /// day's users, marker or settledness changed.
    fn store(
        &mut self,
        layer: Layer,
        chunk: &[NaiveDate],
        read: Vec<DayUsers>,
        markers: &HashMap<(Layer, NaiveDate), BTreeMap<String, u64>>,
    ) -> bool {
        let mut changed = false;
        let mut by_day: BTreeMap<NaiveDate, BTreeMap<String, Users>> = BTreeMap::new();
        for r in read {
            let mut users = r.users;
            // ClickHouse sorts them; a cheap guarantee for the merges below.
            if !users.is_sorted() {
                users.sort_unstable();
                users.dedup();
            }
            by_day
                .entry(r.day)
                .or_default()
                .insert(r.app, Arc::new(users));
        }
        let days = match layer {
            Layer::Activity => &mut self.activity,
            Layer::FirstSeen => &mut self.members,
        };
        for d in chunk {
            let marker = markers.get(&(layer, *d)).cloned().unwrap_or_default();
            let raw = by_day.remove(d).unwrap_or_default();
            let previous = days.get(d);
            let users: BTreeMap<String, Users> = match layer {
                Layer::Activity => raw
                    .iter()
                    .map(|(app, keys)| {
                        let persons = match self.people.persons(app) {
                            Some(p) => identity::persons_of(keys, &p.resolution.persons, |_| true),
                            None => keys.clone(),
                        };
                        (app.clone(), persons)
                    })
                    .collect(),
                Layer::FirstSeen => {
                    // Mapped once the first days are known (settle_members); a
                    // linked key that left the day has its first day asked again.
                    self.settle_days.insert(*d);
                    if let Some(p) = previous {
                        for (app, old) in &p.raw {
                            let Some(people) = self.people.persons(app) else {
                                continue;
                            };
                            let new = raw.get(app).cloned().unwrap_or_default();
                            let gone: Vec<u64> = old
                                .iter()
                                .filter(|k| {
                                    people.resolution.persons.contains_key(k)
                                        && new.binary_search(k).is_err()
                                })
                                .copied()
                                .collect();
                            if !gone.is_empty() {
                                self.requery.entry(app.clone()).or_default().extend(gone);
                            }
                        }
                    }
                    raw.clone()
                }
            };
            let changed_marker = previous.is_none_or(|p| p.marker != marker);
            let version = match previous {
                Some(p) if p.users == users => p.version,
                _ => {
                    self.next_version += 1;
                    self.next_version
                }
            };
            // A first read (cold) trusts its marker; a changed one is read once more.
            let unsettled = changed_marker && previous.is_some();
            changed |= previous
                .is_none_or(|p| changed_marker || p.unsettled != unsettled || p.version != version);
            days.insert(
                *d,
                Day {
                    marker,
                    unsettled,
                    version,
                    users,
                    raw,
                },
            );
        }
        changed
    }

    fn users(&self, layer: Layer, app: &str, day: NaiveDate) -> Users {
        let days = match layer {
            Layer::Activity => &self.activity,
            Layer::FirstSeen => &self.members,
        };
        days.get(&day)
            .and_then(|d| d.users.get(app))
            .cloned()
            .unwrap_or_default()
    }

    /// The versions of the active days `first..=last` (0: not cached).
    fn versions(&self, first: NaiveDate, last: NaiveDate) -> Vec<u64> {
        first
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|d| self.activity.get(&d).map_or(0, |x| x.version))
            .collect()
    }

    /// The union of `app`'s active days `first..=last`, cached while they stay the same.
    fn union(&mut self, app: &str, first: NaiveDate, last: NaiveDate) -> Users {
        let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        let versions = self.versions(first, last);
        let key = (app.to_owned(), first, last);
        if let Some(u) = self.unions.get(&key).filter(|u| u.versions == versions) {
            return u.users.clone();
        }
        let parts: Vec<Users> = days
            .iter()
            .map(|d| self.users(Layer::Activity, app, *d))
            .collect();
        let users = Arc::new(union(&parts));
        self.unions.insert(
            key,
            Union {
                versions,
                users: users.clone(),
            },
        );
        users
    }

    /// The lifecycle of `app`'s period starting `start` (docs/contract.md): set sizes
    /// of its active persons, the period before's and its new persons (the cohort
    /// days' sets), counted again only when one of those days changed.
    fn lifecycle(
        &mut self,
        app: &str,
        period: Period,
        start: NaiveDate,
        today: NaiveDate,
    ) -> Lifecycle {
        let previous = period.back(start, 1);
        let last = period.last_day(start).min(today);
        let mut versions = self.versions(previous, last);
        versions.extend(
            start
                .iter_days()
                .take_while(|d| *d <= last)
                .map(|d| self.members.get(&d).map_or(0, |x| x.version)),
        );
        let key = (app.to_owned(), period, start);
        if let Some((v, l)) = self.lifecycles.get(&key)
            && *v == versions
        {
            return *l;
        }
        let active = self.period_users(app, start, last, today);
        let before = self.period_users(app, previous, period.last_day(previous), today);
        let cohorts: Vec<Users> = start
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|d| self.users(Layer::FirstSeen, app, d))
            .collect();
        let l = classify(&active, &before, &union(&cohorts));
        self.lifecycles.insert(key, (versions, l));
        l
    }

    /// `app`'s persons active in the days `first..=last`: a day's set, or a union
    /// (kept while its days stay the same; a union ending today is the kept union
    /// up to yesterday joined with today).
    fn period_users(
        &mut self,
        app: &str,
        first: NaiveDate,
        last: NaiveDate,
        today: NaiveDate,
    ) -> Users {
        if first >= last {
            return self.users(Layer::Activity, app, first);
        }
        if last == today {
            let past = self.union(app, first, before(today, 1));
            let now = self.users(Layer::Activity, app, today);
            return Arc::new(union(&[past, now]));
        }
        self.union(app, first, last)
    }

    /// The seven window counts of `app`; `None` when nobody was active in the 60 days.
    fn active_users(&mut self, app: &str, today: NaiveDate) -> Option<ActiveUsers> {
        let yesterday = before(today, 1);
        let now = self.users(Layer::Activity, app, today);
        let [week, month, previous_week, previous_month] = window_unions(today);
        let week_before = self.union(app, week.0, week.1);
        let month_before = self.union(app, month.0, month.1);
        let previous_week = self.union(app, previous_week.0, previous_week.1);
        let previous_month = self.union(app, previous_month.0, previous_month.1);
        let a = ActiveUsers {
            app: app.to_owned(),
            day: now.len() as u64,
            week: union_len(&week_before, &now),
            month: union_len(&month_before, &now),
            previous_day: self.users(Layer::Activity, app, yesterday).len() as u64,
            previous_week: previous_week.len() as u64,
            previous_month: previous_month.len() as u64,
            month_to_yesterday: union_len(
                &month_before,
                &self.users(Layer::Activity, app, before(today, 30)),
            ),
        };
        (a.month > 0 || a.previous_month > 0).then_some(a)
    }
}

/// Splits sorted days into the days of one query each, newest first: runs of
/// consecutive days (a query reads the time range from its first to its last day, so
/// today and a day a late event touched a month ago go apart), at most
/// [`DAYS_PER_QUERY`] a query.
fn query_chunks(days: &[NaiveDate]) -> Vec<&[NaiveDate]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=days.len() {
        let breaks = i == days.len() || after(days[i - 1], 1) != Some(days[i]);
        if breaks {
            runs.extend(days[start..i].rchunks(DAYS_PER_QUERY));
            start = i;
        }
    }
    runs.sort_by_key(|chunk| std::cmp::Reverse(chunk.last().copied()));
    runs
}

/// The past days whose unions the windows use: the 6 and 29 days before today (the
/// 7d and 30d windows without today), the 7d window before the current one, the
/// 30d window before the current one.
fn window_unions(today: NaiveDate) -> [(NaiveDate, NaiveDate); 4] {
    let yesterday = before(today, 1);
    [
        (before(today, 6), yesterday),
        (before(today, 29), yesterday),
        (before(today, 13), before(today, 7)),
        (before(today, 59), before(today, 30)),
    ]
}

/// The unions this week's lifecycle uses: this week up to yesterday and last week.
fn week_unions(today: NaiveDate) -> [(NaiveDate, NaiveDate); 2] {
    let monday = Period::Week.start_of(today);
    let last_week = Period::Week.back(monday, 1);
    [
        (monday, before(today, 1)),
        (last_week, Period::Week.last_day(last_week)),
    ]
}

/// A period's lifecycle from its active persons, the period before's and the persons
/// whose first day is in it (all sorted): returning = active in both; new = active,
/// not before, first day in the period; the other active persons resurrect; the
/// persons of the period before not active now are dormant.
fn classify(active: &[u64], before: &[u64], first_here: &[u64]) -> Lifecycle {
    let returning = intersection_len(active, before);
    let new = first_here
        .iter()
        .filter(|k| active.binary_search(k).is_ok() && before.binary_search(k).is_err())
        .count() as u64;
    Lifecycle {
        new,
        returning,
        resurrecting: active.len() as u64 - returning - new,
        dormant: before.len() as u64 - returning,
    }
}

/// The sorted union of sorted sets.
fn union(parts: &[Users]) -> Vec<u64> {
    let mut all: Vec<u64> = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        all.extend_from_slice(p);
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// |a ∪ b| of two sorted sets.
fn union_len(a: &[u64], b: &[u64]) -> u64 {
    (a.len() + b.len()) as u64 - intersection_len(a, b)
}

/// |a ∩ b| of two sorted sets: a merge walk, or binary searches when one is much smaller.
fn intersection_len(a: &[u64], b: &[u64]) -> u64 {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if small.len() * 16 < large.len() {
        return small
            .iter()
            .filter(|x| large.binary_search(x).is_ok())
            .count() as u64;
    }
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < small.len() && j < large.len() {
        match small[i].cmp(&large[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_sizes_follow_their_definitions() {
        let a = vec![1, 3, 5, 7, 9];
        let b = vec![2, 3, 4, 9, 10, 11];
        assert_eq!(intersection_len(&a, &b), 2);
        assert_eq!(union_len(&a, &b), 9);
        assert_eq!(intersection_len(&[], &b), 0);
        let many: Vec<u64> = (0..1000).map(|x| x * 2).collect();
        // The binary-search path agrees with the merge walk.
        assert_eq!(intersection_len(&[4, 5, 1998, 2000], &many), 2);
        let parts = vec![
            Arc::new(vec![1, 4]),
            Arc::new(vec![2, 4, 8]),
            Arc::new(vec![]),
        ];
        assert_eq!(union(&parts), vec![1, 2, 4, 8]);
    }

    #[test]
    fn lifecycle_follows_its_definition() {
        // Before: 1 2 3 4; now: 2 3 5 6 7 (5 first seen now, 6 and 7 seen earlier;
        // 8 first seen now but not active: not counted).
        let l = classify(&[2, 3, 5, 6, 7], &[1, 2, 3, 4], &[5, 8]);
        assert_eq!(
            l,
            Lifecycle {
                new: 1,
                returning: 2,
                resurrecting: 2,
                dormant: 2
            }
        );
        assert_eq!(l.active(), 5);
        // dormant(t) = returning(t) − active(t−1), as a count: active(t−1) − returning.
        assert_eq!(l.dormant, 4 - l.returning);
        assert_eq!(classify(&[], &[], &[]), Lifecycle::default());
    }

    #[test]
    fn queries_cover_runs_of_consecutive_days_newest_first() {
        let d = |s: &str| s.parse::<NaiveDate>().expect("date");
        let days: Vec<NaiveDate> = d("2026-10-01")
            .iter_days()
            .take(9)
            .chain([d("2026-11-20"), d("2026-12-01"), d("2026-12-02")])
            .collect();
        let chunks = query_chunks(&days);
        let spans: Vec<(NaiveDate, NaiveDate, usize)> = chunks
            .iter()
            .map(|c| (c[0], c[c.len() - 1], c.len()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (d("2026-12-01"), d("2026-12-02"), 2),
                (d("2026-11-20"), d("2026-11-20"), 1),
                (d("2026-10-03"), d("2026-10-09"), 7),
                (d("2026-10-01"), d("2026-10-02"), 2),
            ]
        );
        assert!(query_chunks(&[]).is_empty());
    }

    #[test]
    fn window_days_are_the_sixty_days_ending_today() {
        let today: NaiveDate = "2026-12-02".parse().expect("date");
        let days: Vec<NaiveDate> = window_days(today).collect();
        assert_eq!(days.len(), 60);
        assert_eq!(days[0], "2026-10-04".parse::<NaiveDate>().expect("date"));
        assert_eq!(days[59], today);
    }
}
