//! What the refresh keeps of identity ([`crate::identity`]): every app's links as a
//! set, their resolution, and the first day of every linked key; read incrementally
//! (the links inserted since the last refresh, with an overlap, deduplicated by the
//! set), in full at the first refresh and when the links table changed by anything
//! but an insert ([`crate::layer_parts`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;

use crate::definitions::MetricDefinitions;
use crate::identity::{self, AppLinks, Link, Resolution};
use crate::queries::Queries;
use crate::rows::LinkRow;

/// Links inserted this long before the newest one seen are read again: an insert's
/// `inserted_at` is taken when it starts, and a long insert becomes visible after a
/// short one that started later.
const OVERLAP_MS: i64 = 5 * 60 * 1000;

/// Per app: the resolution and the first days of its linked keys.
#[derive(Default)]
pub struct AppPeople {
    pub resolution: Arc<Resolution>,
    /// Linked key → its first day (`None`: no event yet).
    pub first_days: HashMap<u64, Option<NaiveDate>>,
    /// Linked person → the earliest first day of any of their keys.
    pub person_first: Arc<HashMap<u64, NaiveDate>>,
}

/// The identity state of one database.
#[derive(Default)]
pub struct People {
    links: AppLinks,
    /// Newest `inserted_at` read (ms); `None`: nothing read yet.
    newest_ms: Option<i64>,
    pub apps: BTreeMap<String, AppPeople>,
}

impl People {
    /// From which insert time the next incremental read starts.
    pub fn since(&self) -> Option<i64> {
        self.newest_ms.map(|t| t - OVERLAP_MS)
    }

    /// Whether links were ever read.
    pub fn loaded(&self) -> bool {
        self.newest_ms.is_some()
    }

    /// Forgets everything (the next read is a full one).
    pub fn reset(&mut self) {
        *self = People::default();
    }

    /// The resolved persons of `app` (empty when it has no links).
    pub fn persons(&self, app: &str) -> Option<&AppPeople> {
        self.apps.get(app)
    }

    /// Takes the rows read; for each app whose resolution changed, re-resolves it,
    /// asks the first days of its new linked keys and returns the keys whose person
    /// changed.
    pub async fn apply(
        &mut self,
        source: &Queries,
        defs: &MetricDefinitions,
        rows: Vec<LinkRow>,
        full: bool,
    ) -> clickhouse::error::Result<BTreeMap<String, Vec<u64>>> {
        let mut touched: HashSet<String> = HashSet::new();
        if full {
            touched.extend(self.links.keys().cloned());
            self.links.clear();
        }
        let mut newest = self.newest_ms.unwrap_or(0);
        for r in rows {
            newest = newest.max(r.inserted_ms);
            let link = Link {
                merge: r.merge,
                linked: r.linked_key,
                known: r.known_key,
                time_ms: r.time_ms,
            };
            if self.links.entry(r.app.clone()).or_default().insert(link) {
                touched.insert(r.app);
            }
        }
        self.newest_ms = Some(newest);
        let mut changed = BTreeMap::new();
        let mut ask: Vec<(String, Vec<u64>)> = Vec::new();
        for app in touched {
            let resolution = identity::resolve(self.links.get(&app).into_iter().flatten());
            let entry = self.apps.entry(app.clone()).or_default();
            let keys = identity::changed_keys(&entry.resolution.persons, &resolution.persons);
            entry
                .first_days
                .retain(|k, _| resolution.persons.contains_key(k));
            let new_keys: Vec<u64> = resolution
                .persons
                .keys()
                .filter(|k| !entry.first_days.contains_key(k))
                .copied()
                .collect();
            entry.resolution = Arc::new(resolution);
            if !new_keys.is_empty() {
                ask.push((app.clone(), new_keys));
            }
            if !keys.is_empty() {
                changed.insert(app, keys);
            }
        }
        for (app, keys) in ask {
            self.ask_first_days(source, defs, &app, keys).await?;
        }
        for (app, entry) in self.apps.iter_mut() {
            if changed.contains_key(app) {
                entry.person_first = Arc::new(identity::person_first_days(
                    &entry.resolution.persons,
                    &entry.first_days,
                ));
            }
        }
        Ok(changed)
    }

    /// Asks ClickHouse the first days of `keys` of `app` (keys without an event: `None`).
    pub async fn ask_first_days(
        &mut self,
        source: &Queries,
        defs: &MetricDefinitions,
        app: &str,
        mut keys: Vec<u64>,
    ) -> clickhouse::error::Result<()> {
        keys.sort_unstable();
        keys.dedup();
        let rows = source.first_days(defs, app, &keys).await?;
        let entry = self.apps.entry(app.to_owned()).or_default();
        for k in keys {
            entry.first_days.insert(k, None);
        }
        for r in rows {
            entry.first_days.insert(r.user_key, Some(r.day));
        }
        entry.person_first = Arc::new(identity::person_first_days(
            &entry.resolution.persons,
            &entry.first_days,
        ));
        Ok(())
    }

    /// An order-independent digest of every link: equal digests, equal resolutions.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut total: u64 = 0;
        for (app, links) in &self.links {
            for l in links {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (app, l).hash(&mut h);
                total = total.wrapping_add(h.finish());
            }
        }
        total
    }
}
