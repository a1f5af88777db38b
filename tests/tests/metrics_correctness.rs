//! (c) `/metrics` equals independently computed expectations.
//!
//! A known data set — 40 days, users signing up on different days, coming back on
//! chosen days, anonymous events, events that are not "active" — goes through the
//! SDK and the real collector into ClickHouse. Three aggregators read it with
//! different timezones, active-event sets, retention days and cohort counts. The
//! expectations are computed here, from the list of events alone, by a plain
//! implementation of docs/contract.md's metric definitions that shares no code with the aggregator.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use common::{PlannedEvent, send_with_sdk};
use growth_e2e::{
    Aggregator, Collector, Exposition, clickhouse, eventually, labels, unique_database,
};
use growth_testkit::Rng;

const APP: &str = "finbrain";
const EVENTS: [&str; 5] = [
    "expense_logged",
    "expense_edited",
    "report_requested",
    "pwa_installed",
    "challenge_started",
];

/// Events of 80 users over the 40 UTC days ending now, never in the future.
fn data_set(now: DateTime<Utc>) -> Vec<PlannedEvent> {
    let mut rng = Rng(20261124);
    let mut events = Vec::new();
    // Days are counted back from now in 24-hour periods, at any second of the period,
    // so the data set is as rich at 00:05 as at 23:55, nothing lies in the future, and
    // calendar days in every zone cut through the periods.
    let mut push = |rng: &mut Rng, user: Option<String>, periods_ago: u64, name: &'static str| {
        let back = 5 + periods_ago * 86_400 + rng.below(86_400);
        let at = now - chrono::Duration::seconds(back as i64);
        events.push(PlannedEvent { name, user, at });
    };
    for u in 0..80 {
        let user = format!("user-{u}@example.com");
        // A third of the users sign up in the last 8 days, so recent cohorts are full.
        let signup_ago = if u % 3 == 0 {
            rng.below(8)
        } else {
            rng.below(40)
        };
        push(&mut rng, Some(user.clone()), signup_ago, "pwa_installed");
        push(&mut rng, Some(user.clone()), signup_ago, "expense_logged");
        let loyalty = rng.below(70);
        for period in (0..signup_ago).rev() {
            if rng.chance(loyalty) {
                for _ in 0..=rng.below(3) {
                    let name = EVENTS[rng.below(EVENTS.len() as u64) as usize];
                    push(&mut rng, Some(user.clone()), period, name);
                }
            }
        }
    }
    for _ in 0..40 {
        let period = rng.below(40);
        push(&mut rng, None, period, "report_requested");
    }
    events.sort_by_key(|e| e.at);
    events
}

/// One aggregator's settings: as the test computes them, and as flags.
struct Setting {
    tz: Tz,
    active: &'static [&'static str],
    days: &'static [u64],
    cohorts: u64,
    flags: &'static [&'static str],
}

/// docs/contract.md's metric definitions, implemented directly over the events.
struct Expected {
    active_users: BTreeMap<Vec<(String, String)>, f64>,
    cohort_users: BTreeMap<Vec<(String, String)>, f64>,
    retention: BTreeMap<Vec<(String, String)>, f64>,
    totals: BTreeMap<Vec<(String, String)>, f64>,
}

fn expected(
    events: &[PlannedEvent],
    now: DateTime<Utc>,
    tz: Tz,
    active: &[&str],
    days: &[u64],
    cohorts: u64,
) -> Expected {
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
    let today = local(now);
    let is_active = |name: &str| active.is_empty() || active.contains(&name);

    let mut active_days: BTreeMap<&str, BTreeSet<NaiveDate>> = BTreeMap::new();
    let mut first_seen: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        *totals.entry(e.name).or_default() += 1;
        let Some(user) = e.user.as_deref() else {
            continue;
        };
        let first = first_seen.entry(user).or_insert(e.at);
        *first = (*first).min(e.at);
        if is_active(e.name) {
            active_days.entry(user).or_default().insert(local(e.at));
        }
    }

    let mut out = Expected {
        active_users: BTreeMap::new(),
        cohort_users: BTreeMap::new(),
        retention: BTreeMap::new(),
        totals: BTreeMap::new(),
    };
    for (label, span) in [("1d", 1u64), ("7d", 7), ("30d", 30)] {
        let from = today - Days::new(span - 1);
        let n = active_days
            .values()
            .filter(|d| d.range(from..=today).next().is_some())
            .count();
        out.active_users
            .insert(labels(&[("window", label.to_owned())]), n as f64);
    }
    for back in 0..cohorts {
        let cohort = today - Days::new(back);
        let members: Vec<&str> = first_seen
            .iter()
            .filter(|(_, t)| local(**t) == cohort)
            .map(|(u, _)| *u)
            .collect();
        out.cohort_users.insert(
            labels(&[("cohort", cohort.to_string())]),
            members.len() as f64,
        );
        if members.is_empty() {
            continue;
        }
        for &n in days {
            let target = cohort + Days::new(n);
            if target > today {
                continue;
            }
            let back = members
                .iter()
                .filter(|u| active_days.get(*u).is_some_and(|d| d.contains(&target)))
                .count();
            out.retention.insert(
                labels(&[("cohort", cohort.to_string()), ("day", n.to_string())]),
                back as f64 / members.len() as f64,
            );
        }
    }
    for (name, count) in totals {
        out.totals
            .insert(labels(&[("event", name.to_owned())]), count as f64);
    }
    out
}

fn refresh_time(metrics: &Exposition) -> DateTime<Utc> {
    let secs = metrics
        .series("growth_metrics_refresh_timestamp_seconds", APP)
        .into_values()
        .next()
        .expect("refresh timestamp");
    Utc.timestamp_millis_opt((secs * 1000.0).round() as i64)
        .single()
        .expect("timestamp")
}

fn assert_same(
    what: &str,
    tz: Tz,
    actual: BTreeMap<Vec<(String, String)>, f64>,
    expected: &BTreeMap<Vec<(String, String)>, f64>,
) {
    let a: Vec<_> = actual.keys().collect();
    let e: Vec<_> = expected.keys().collect();
    assert_eq!(a, e, "{what} ({tz}): series differ");
    for (k, v) in expected {
        let got = actual[k];
        assert!(
            (got - v).abs() < 1e-9,
            "{what} ({tz}) {k:?}: got {got}, expected {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_independent_expectations_across_timezones() {
    let database = unique_database("metrics");
    // The data set spans 40 days: more history than the default --max-event-age.
    let collector = Collector::start_with(
        &database,
        Some("metrics-test-key"),
        &["--max-event-age=60days"],
    )
    .await;
    let now = Utc::now();
    let events = data_set(now);
    let users: BTreeSet<_> = events.iter().filter_map(|e| e.user.clone()).collect();
    assert!(
        events.len() > 500 && users.len() == 80,
        "data set too small: {} events",
        events.len()
    );

    let report = send_with_sdk(
        &collector.http_endpoint,
        false,
        APP,
        Some("metrics-test-key"),
        &events,
    )
    .await;
    assert_eq!(
        report,
        events.len() as u64,
        "SDK did not deliver every event"
    );
    // Acknowledged means spooled: wait until the writer has stored it.
    collector.settled().await;
    let ch = clickhouse(&database);
    let stored: u64 = ch
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(
        stored,
        events.len() as u64,
        "collector acknowledged events that are not in ClickHouse"
    );
    let loaded_at = Utc::now();

    let settings = [
        Setting {
            tz: Tz::UTC,
            active: &[],
            days: &[1, 3, 7, 30],
            cohorts: 7,
            flags: &[],
        },
        Setting {
            tz: Tz::America__Los_Angeles,
            active: &["expense_logged", "expense_edited"],
            days: &[1, 3, 7, 30],
            cohorts: 7,
            flags: &[
                "--timezone",
                "America/Los_Angeles",
                "--active-events",
                "expense_logged,expense_edited",
            ],
        },
        Setting {
            tz: Tz::Asia__Kolkata,
            active: &[],
            days: &[1, 2, 7],
            cohorts: 10,
            flags: &[
                "--timezone",
                "Asia/Kolkata",
                "--retention-days",
                "7,1,2",
                "--cohorts",
                "10",
            ],
        },
    ];
    for Setting {
        tz,
        active,
        days,
        cohorts,
        flags,
    } in settings
    {
        let aggregator = Aggregator::start(&database, flags).await;
        // A refresh that began after every event was stored.
        let metrics = eventually(
            "a refresh after the load",
            Duration::from_secs(30),
            || async {
                let m = aggregator.metrics().await;
                (m.samples
                    .iter()
                    .any(|s| s.name == "growth_metrics_refresh_timestamp_seconds")
                    && refresh_time(&m) > loaded_at)
                    .then_some(m)
            },
        )
        .await;
        let exp = expected(&events, refresh_time(&metrics), tz, active, days, cohorts);
        assert!(
            exp.retention.len() >= 10,
            "the data set should exercise retention"
        );
        assert_same(
            "growth_active_users",
            tz,
            metrics.series("growth_active_users", APP),
            &exp.active_users,
        );
        assert_same(
            "growth_cohort_users",
            tz,
            metrics.series("growth_cohort_users", APP),
            &exp.cohort_users,
        );
        assert_same(
            "growth_retention_ratio",
            tz,
            metrics.series("growth_retention_ratio", APP),
            &exp.retention,
        );
        assert_same(
            "growth_events_total",
            tz,
            metrics.series("growth_events_total", APP),
            &exp.totals,
        );

        let report = aggregator.get("/admin/metrics.txt").await;
        let dau = exp.active_users[&labels(&[("window", "1d".to_owned())])];
        assert!(
            report.contains(&format!("today (DAU) {dau}")),
            "text report lacks DAU {dau}:\n{report}"
        );
        assert!(
            report.contains("expense_logged"),
            "text report lacks totals:\n{report}"
        );
        let page = aggregator.get("/admin/metrics").await;
        assert!(
            page.contains(APP) && page.contains("Retention"),
            "admin page incomplete"
        );
    }

    // Days differ between zones: the same events must not give the same numbers everywhere.
    let numbers = |tz| {
        let e = expected(&events, now, tz, &[], &[1, 3], 7);
        let mut v: Vec<f64> = e.cohort_users.into_values().collect();
        v.extend(e.retention.into_values());
        v.extend(e.active_users.into_values());
        v
    };
    assert_ne!(
        numbers(Tz::UTC),
        numbers(Tz::Asia__Kolkata),
        "data set does not exercise timezones"
    );
    drop(collector);
}

#[tokio::test(flavor = "multi_thread")]
async fn days_that_have_not_come_are_absent_and_empty_databases_report_nothing() {
    let database = unique_database("absent");
    let collector = Collector::start(&database, None).await;
    let aggregator = Aggregator::start(&database, &[]).await;
    let empty = aggregator.metrics().await;
    // Only the refresh's own health (unlabelled) may show: no app, no fake numbers.
    let samples: Vec<_> = empty
        .samples
        .iter()
        .filter(|s| !s.name.starts_with("growth_metrics_refresh_"))
        .collect();
    assert!(
        samples.is_empty(),
        "an empty database must expose no app samples: {samples:?}"
    );

    // One user who signed up today: a cohort of 1 with no retention value yet.
    // (Not within a minute of UTC midnight, where "today" could change under the test.)
    let since_midnight = Utc::now().time().num_seconds_from_midnight();
    if since_midnight < 60 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - since_midnight))).await;
    }
    let now = Utc::now();
    let events = vec![PlannedEvent {
        name: "expense_logged",
        user: Some("solo".into()),
        at: now - chrono::Duration::seconds(10),
    }];
    assert_eq!(
        send_with_sdk(&collector.grpc_endpoint, true, APP, None, &events).await,
        1
    );
    let metrics = eventually("the new user", Duration::from_secs(30), || async {
        let m = aggregator.metrics().await;
        (m.series("growth_active_users", APP).values().next() == Some(&1.0)).then_some(m)
    })
    .await;
    let today = refresh_time(&metrics).date_naive();
    let cohorts = metrics.series("growth_cohort_users", APP);
    assert_eq!(cohorts[&labels(&[("cohort", today.to_string())])], 1.0);
    assert_eq!(cohorts.values().sum::<f64>(), 1.0);
    assert!(
        metrics.series("growth_retention_ratio", APP).is_empty(),
        "retention of today's cohort must be absent, not 0"
    );
    drop(collector);
}

/// The aggregator keeps past days between refreshes (aggregator/src/day_sets.rs) and
/// reads a day again when an insert touches it: late events for past days, a cohort
/// that appears in the past and a user whose first day moves earlier all show, exactly,
/// while it runs.
#[tokio::test(flavor = "multi_thread")]
async fn late_events_for_past_days_show_while_the_aggregator_runs() {
    let database = unique_database("late_days");
    let collector = Collector::start(&database, None).await;
    let aggregator = Aggregator::start(&database, &[]).await;
    // Days are UTC days counted back from now; not within a minute of midnight.
    let since_midnight = Utc::now().time().num_seconds_from_midnight();
    if since_midnight < 60 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - since_midnight))).await;
    }
    let now = Utc::now();
    let ago = |days: i64| now - chrono::Duration::days(days) - chrono::Duration::seconds(10);
    let day = |days: i64| ago(days).date_naive().to_string();
    let event = |user: &str, days: i64| PlannedEvent {
        name: "expense_logged",
        user: Some(user.to_owned()),
        at: ago(days),
    };
    let send = |events: Vec<PlannedEvent>| {
        let endpoint = collector.grpc_endpoint.clone();
        async move {
            let n = events.len() as u64;
            assert_eq!(send_with_sdk(&endpoint, true, APP, None, &events).await, n);
        }
    };
    let cohort = |m: &Exposition, days: i64| {
        m.series("growth_cohort_users", APP)
            .get(&labels(&[("cohort", day(days))]))
            .copied()
    };

    // Ann signs up 5 days ago and is back the day after: the aggregator caches those days.
    send(vec![event("ann", 5), event("ann", 4)]).await;
    eventually("ann's cohort", Duration::from_secs(30), || async {
        let m = aggregator.metrics().await;
        (cohort(&m, 5) == Some(1.0)).then_some(())
    })
    .await;

    // Later inserts into days the aggregator holds: Ann back 2 days ago (her D3), Bob
    // first seen 3 days ago and back 2 days ago (his D1), Cay first seen yesterday,
    // then a late event of Cay 6 days ago that moves her cohort.
    send(vec![
        event("ann", 2),
        event("bob", 3),
        event("bob", 2),
        event("cay", 1),
    ])
    .await;
    send(vec![event("cay", 6)]).await;

    let mut expected_cohorts = BTreeMap::new();
    for (days, users) in [
        (6, 1.0),
        (5, 1.0),
        (4, 0.0),
        (3, 1.0),
        (2, 0.0),
        (1, 0.0),
        (0, 0.0),
    ] {
        expected_cohorts.insert(labels(&[("cohort", day(days))]), users);
    }
    let mut expected_retention = BTreeMap::new();
    // (cohort days ago, N, ratio): only days C+N that have come, only non-empty cohorts.
    for (c, n, ratio) in [
        (6, 1, 0.0),
        (6, 3, 0.0),
        (5, 1, 1.0),
        (5, 3, 1.0),
        (3, 1, 1.0),
        (3, 3, 0.0),
    ] {
        expected_retention.insert(labels(&[("cohort", day(c)), ("day", n.to_string())]), ratio);
    }
    let mut expected_active = BTreeMap::new();
    for (window, users) in [("1d", 0.0), ("7d", 3.0), ("30d", 3.0)] {
        expected_active.insert(labels(&[("window", window.to_owned())]), users);
    }
    let last = std::sync::Mutex::new(None);
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = aggregator.metrics().await;
            let got = (
                m.series("growth_cohort_users", APP),
                m.series("growth_retention_ratio", APP),
                m.series("growth_active_users", APP),
            );
            if got
                == (
                    expected_cohorts.clone(),
                    expected_retention.clone(),
                    expected_active.clone(),
                )
            {
                return;
            }
            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "late events not reflected: last seen {:?}",
        last.lock().unwrap_or_else(|p| p.into_inner())
    );
    drop(collector);
}
