//! The bounded set of apps and event names the collector accepts.
//!
//! Every distinct app and (app, event) pair becomes rows in the views and label
//! values on the aggregator's `/metrics`, so a sender inventing names (a bug that
//! puts a user id into the event name, or an attacker) must not grow them without
//! end. The first `--max-apps` apps and, per app, the first `--max-events-per-app`
//! event names are accepted; a record that would add one more is rejected
//! (`too_many_apps`, `too_many_event_names`) while known names keep flowing.
//!
//! The known set lives in memory and is seeded at start-up from what ClickHouse
//! already holds (`event_counts`, see [`Catalog::learn`]), so a restart does not
//! open the door again; names seeded beyond the bounds stay accepted (they are
//! stored already), new ones are refused. Memory is bounded by the flags:
//! at most `max_apps × max_events_per_app` names of at most 128 bytes each.

use hashbrown::{HashMap, HashSet};
use std::sync::Mutex;

use crate::map::{MappedRequest, RejectReason};

/// Default `--max-apps`.
pub const DEFAULT_MAX_APPS: usize = 100;
/// Default `--max-events-per-app`.
pub const DEFAULT_MAX_EVENTS_PER_APP: usize = 1_000;

/// Known apps and event names, bounded.
#[derive(Debug)]
pub struct Catalog {
    max_apps: usize,
    max_events_per_app: usize,
    known: Mutex<HashMap<String, HashSet<String>>>,
}

impl Catalog {
    /// An empty catalog with these bounds.
    pub fn new(max_apps: usize, max_events_per_app: usize) -> Self {
        Self {
            max_apps,
            max_events_per_app,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Adds (app, event) pairs known to be stored already, whatever the bounds.
    pub fn learn(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        let mut known = self.lock();
        for (app, event) in pairs {
            known.entry(app).or_default().insert(event);
        }
    }

    /// Learns the (app, event) pairs ClickHouse already holds (`event_counts`), at
    /// most as many as the bounds allow plus one app's worth, so that a database
    /// full of names cannot blow up memory at start-up either.
    pub async fn learn_from(
        &self,
        client: &clickhouse::Client,
    ) -> Result<usize, clickhouse::error::Error> {
        let most = self.max_apps.saturating_mul(self.max_events_per_app) as u64;
        let pairs: Vec<(String, String)> = client
            .query(&format!(
                "SELECT app, event FROM {} GROUP BY app, event ORDER BY app, event LIMIT ?",
                growth_schema::tables::EVENT_COUNTS
            ))
            .bind(most)
            .fetch_all()
            .await?;
        let learned = pairs.len();
        self.learn(pairs);
        Ok(learned)
    }

    /// Rejects the rows of `mapped` whose app or event name is one too many.
    pub fn admit(&self, mapped: &mut MappedRequest) {
        mapped.admit_rows(|row| self.admit_one(&row.app, &row.event));
    }

    /// Whether an event of `app` named `event` may be stored; a new name within the
    /// bounds is learned.
    pub fn admit_one(&self, app: &str, event: &str) -> Result<(), RejectReason> {
        self.admit_learning(app, event).map(|_| ())
    }

    /// [`Catalog::admit_one`], saying what it learned: `Some(app_was_new)` when the
    /// (app, event) pair is new, so that [`Catalog::forget`] can take it back.
    pub fn admit_learning(&self, app: &str, event: &str) -> Result<Option<bool>, RejectReason> {
        let mut known = self.lock();
        let app_is_new = !known.contains_key(app);
        if app_is_new {
            if known.len() >= self.max_apps {
                return Err(RejectReason::TooManyApps);
            }
            known.insert(app.to_owned(), HashSet::new());
        }
        let Some(events) = known.get_mut(app) else {
            return Ok(None); // inserted just above
        };
        if events.contains(event) {
            return Ok(None);
        }
        if events.len() >= self.max_events_per_app {
            return Err(RejectReason::TooManyEventNames);
        }
        events.insert(event.to_owned());
        Ok(Some(app_is_new))
    }

    /// Takes back pairs learned by [`Catalog::admit_learning`] for a request that was
    /// then refused whole (undecodable after its first records): names nothing was
    /// stored under do not take up the bounds. An app goes too when it was new and
    /// has no other event name.
    pub fn forget(&self, learned: &[(&str, &str, bool)]) {
        let mut known = self.lock();
        for (app, event, app_was_new) in learned {
            let Some(events) = known.get_mut(*app) else {
                continue;
            };
            events.remove(*event);
            if *app_was_new && events.is_empty() {
                known.remove(*app);
            }
        }
    }

    pub fn apps(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use growth_schema::tables::EventRow;

    use super::*;

    fn row(app: &str, event: &str) -> EventRow {
        EventRow {
            app: app.into(),
            event: event.into(),
            event_time: Utc::now(),
            user_hash: String::new(),
            source: String::new(),
            properties: vec![],
            numbers: vec![],
            received_at: Utc::now(),
        }
    }

    fn admit(catalog: &Catalog, rows: &[(&str, &str)]) -> (Vec<String>, Vec<(RejectReason, u64)>) {
        let mut mapped = MappedRequest {
            rows: rows.iter().map(|(a, e)| row(a, e)).collect(),
            ..Default::default()
        };
        catalog.admit(&mut mapped);
        let kept = mapped
            .rows
            .iter()
            .map(|r| format!("{}/{}", r.app, r.event))
            .collect();
        (kept, mapped.rejected)
    }

    #[test]
    fn apps_and_event_names_are_bounded() {
        let catalog = Catalog::new(2, 2);
        let (kept, rejected) = admit(
            &catalog,
            &[
                ("a", "x"),
                ("a", "y"),
                ("a", "z"),
                ("b", "x"),
                ("c", "x"),
                ("a", "x"),
            ],
        );
        assert_eq!(kept, ["a/x", "a/y", "b/x", "a/x"]);
        assert_eq!(
            rejected,
            [
                (RejectReason::TooManyApps, 1),
                (RejectReason::TooManyEventNames, 1)
            ]
        );
        // Known names keep flowing; a later request meets the same bounds.
        let (kept, _) = admit(&catalog, &[("b", "x"), ("c", "x"), ("b", "w")]);
        assert_eq!(kept, ["b/x", "b/w"]);
    }

    #[test]
    fn learned_names_stay_accepted_beyond_the_bounds() {
        let catalog = Catalog::new(1, 1);
        catalog.learn([
            ("a".to_owned(), "x".to_owned()),
            ("b".to_owned(), "x".to_owned()),
            ("b".to_owned(), "y".to_owned()),
        ]);
        let (kept, rejected) = admit(
            &catalog,
            &[("b", "y"), ("a", "x"), ("a", "new"), ("c", "x")],
        );
        assert_eq!(kept, ["b/y", "a/x"]);
        assert_eq!(rejected.iter().map(|(_, n)| n).sum::<u64>(), 2);
        assert_eq!(catalog.apps(), 2);
    }
}
