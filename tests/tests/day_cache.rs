//! The aggregator's day cache (aggregator/src/day_sets.rs) stays exact when rows
//! leave the layer, and survives a restart:
//!
//! * a user's rows deleted from the layer tables (lightweight `DELETE` and
//!   `ALTER TABLE … DELETE`, as an erasure would) leave the metrics at the next
//!   refresh, without a restart and without any timer;
//! * a restarted aggregator takes the days its predecessor saved in `--state-dir`,
//!   and what happened while it was down (a deletion, a late event) still shows;
//!   a damaged file is ignored and every day read afresh.
//!
//! The expected numbers are counted here from the few planned events.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use clickhouse::sql::Identifier;
use common::{PlannedEvent, send_with_sdk};
use growth_e2e::{Aggregator, Collector, Exposition, clickhouse, labels, unique_database};

const APP: &str = "finbrain";

/// Days are 24-hour periods counted back from a fixed "now", a little before it.
struct Days(DateTime<Utc>);

impl Days {
    /// Not within two minutes of UTC midnight, so "today" holds during the test.
    async fn new() -> Self {
        let since_midnight = Utc::now().time().num_seconds_from_midnight();
        if since_midnight < 120 {
            tokio::time::sleep(Duration::from_secs(u64::from(121 - since_midnight))).await;
        }
        Self(Utc::now())
    }

    fn at(&self, days: i64) -> DateTime<Utc> {
        self.0 - chrono::Duration::days(days) - chrono::Duration::seconds(10)
    }

    fn day(&self, days: i64) -> String {
        self.at(days).date_naive().to_string()
    }

    fn event(&self, user: &str, days: i64) -> PlannedEvent {
        PlannedEvent {
            name: "expense_logged",
            user: Some(user.to_owned()),
            at: self.at(days),
        }
    }
}

async fn send(collector: &Collector, events: Vec<PlannedEvent>) {
    let n = events.len() as u64;
    assert_eq!(
        send_with_sdk(&collector.grpc_endpoint, true, APP, None, &events).await,
        n
    );
    collector.settled().await;
}

/// What the test looks at: cohort sizes, D1 ratios of the cohorts, active users.
type Seen = (
    BTreeMap<Vec<(String, String)>, f64>,
    BTreeMap<Vec<(String, String)>, f64>,
    BTreeMap<Vec<(String, String)>, f64>,
);

fn seen(m: &Exposition) -> Seen {
    let d1 = m
        .series("growth_retention_ratio", APP)
        .into_iter()
        .filter(|(l, _)| l.iter().any(|(k, v)| k == "day" && v == "1"))
        .collect();
    (
        m.series("growth_cohort_users", APP),
        d1,
        m.series("growth_active_users", APP),
    )
}

/// Waits up to 20 s for the aggregator to show `expected`; panics with the last view.
async fn expect(aggregator: &Aggregator, what: &str, expected: &Seen) {
    let mut last = None;
    for _ in 0..100 {
        let got = seen(&aggregator.metrics().await);
        if &got == expected {
            return;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: expected {expected:?}\nlast seen {last:?}\naggregator log:\n{}",
        aggregator.process.output()
    );
}

/// The expected view: `cohorts` as (days ago, users) for the 7 exported cohort days
/// (absent ones are 0), D1 as (cohort days ago, ratio), and the 1d/7d/30d counts.
fn view(cohorts: &[(i64, f64)], d1: &[(i64, f64)], active: [f64; 3], days: &Days) -> Seen {
    let mut c = BTreeMap::new();
    for ago in 0..7 {
        let users = cohorts
            .iter()
            .find(|(d, _)| *d == ago)
            .map_or(0.0, |(_, u)| *u);
        c.insert(labels(&[("cohort", days.day(ago))]), users);
    }
    let r = d1
        .iter()
        .map(|(ago, ratio)| {
            (
                labels(&[("cohort", days.day(*ago)), ("day", "1".to_owned())]),
                *ratio,
            )
        })
        .collect();
    let a = ["1d", "7d", "30d"]
        .iter()
        .zip(active)
        .map(|(w, n)| (labels(&[("window", (*w).to_owned())]), n))
        .collect();
    (c, r, a)
}

/// Deletes every layer row of the one user active `days` ago, as an erasure would:
/// a lightweight DELETE and two mutations.
async fn erase_user_active_on(database: &str, days: &Days, ago: i64) {
    let ch = clickhouse(database);
    let keys: Vec<u64> = ch
        .query("SELECT DISTINCT user_key FROM user_quarter_hours WHERE toDate(bucket) = toDate(?)")
        .bind(days.day(ago))
        .fetch_all()
        .await
        .expect("find the user");
    assert_eq!(keys.len(), 1, "one user active {ago} days ago");
    ch.query("DELETE FROM user_quarter_hours WHERE user_key = ?")
        .bind(keys[0])
        .execute()
        .await
        .expect("lightweight delete");
    for table in ["first_seen_changes", "first_seen_latest"] {
        ch.query("ALTER TABLE ? DELETE WHERE user_key = ?")
            .bind(Identifier(table))
            .bind(keys[0])
            .with_setting("mutations_sync", "1")
            .execute()
            .await
            .expect("mutation");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_users_leave_the_metrics_at_the_next_refresh() {
    let database = unique_database("erase");
    let collector = Collector::start(&database, None).await;
    let mut aggregator = Aggregator::start(&database, &[]).await;
    let days = Days::new().await;
    // Ann: cohort 5 days ago, back the day after. Bob and Cay: cohort 3 days ago, Bob
    // back the day after (D1), Cay two days later.
    send(
        &collector,
        vec![
            days.event("ann", 5),
            days.event("ann", 4),
            days.event("bob", 3),
            days.event("bob", 2),
            days.event("cay", 3),
            days.event("cay", 1),
        ],
    )
    .await;
    let before = view(
        &[(5, 1.0), (3, 2.0)],
        &[(5, 1.0), (3, 0.5)],
        [0.0, 3.0, 3.0],
        &days,
    );
    expect(&aggregator, "all three users", &before).await;

    erase_user_active_on(&database, &days, 2).await;
    let after = view(
        &[(5, 1.0), (3, 1.0)],
        &[(5, 1.0), (3, 0.0)],
        [0.0, 2.0, 2.0],
        &days,
    );
    expect(&aggregator, "Bob erased", &after).await;
    assert!(aggregator.process.is_running(), "no restart");
    assert!(
        aggregator
            .process
            .output()
            .contains("layer rows deleted or rewritten"),
        "the deletion check found it:\n{}",
        aggregator.process.output()
    );
    drop(collector);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_reads_the_saved_days_and_what_changed_meanwhile() {
    let database = unique_database("restart");
    let collector = Collector::start(&database, None).await;
    let mut aggregator = Aggregator::start(&database, &[]).await;
    let days = Days::new().await;
    send(
        &collector,
        vec![
            days.event("ann", 5),
            days.event("ann", 4),
            days.event("bob", 3),
            days.event("bob", 2),
        ],
    )
    .await;
    let before = view(
        &[(5, 1.0), (3, 1.0)],
        &[(5, 1.0), (3, 1.0)],
        [0.0, 2.0, 2.0],
        &days,
    );
    expect(&aggregator, "Ann and Bob", &before).await;
    // A day just read is read once more at the next refresh (its marker had moved);
    // then it is settled and saved as such, which is what the restart must trust.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let file = aggregator
        .state_dir
        .join(format!("day-sets-{database}.bin"));
    let mut saved = false;
    for _ in 0..100 {
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > 0) {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saved, "no day cache at {}", file.display());
    aggregator.stop();

    // While it is down: Bob is erased, and a late event brings Dan's cohort 6 days ago.
    erase_user_active_on(&database, &days, 2).await;
    send(&collector, vec![days.event("dan", 6)]).await;
    let after = view(
        &[(6, 1.0), (5, 1.0)],
        &[(6, 0.0), (5, 1.0)],
        [0.0, 2.0, 2.0],
        &days,
    );
    aggregator.start_again().await;
    expect(&aggregator, "after the restart", &after).await;
    assert!(
        aggregator
            .process
            .output()
            .contains("loaded the saved day cache"),
        "the restart used the saved days:\n{}",
        aggregator.process.output()
    );

    // A damaged file is refused as a whole; the numbers come from ClickHouse.
    aggregator.stop();
    let mut bytes = std::fs::read(&file).expect("state file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).expect("damage it");
    aggregator.start_again().await;
    expect(&aggregator, "after a damaged file", &after).await;
    assert!(
        aggregator
            .process
            .output()
            .contains("ignoring the saved day cache"),
        "the damaged file was refused:\n{}",
        aggregator.process.output()
    );
    drop(collector);
}
