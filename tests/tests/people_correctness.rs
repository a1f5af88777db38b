//! People, not ids (docs/contract.md, "People"): visitors tracked anonymously who
//! later sign up, an identify after the person's first known event, an anonymous id
//! claimed twice, a known id named as anonymous, a merge, and an identify that arrives
//! days late, after the aggregator already reported. Sent through growth-sdk and the
//! real collector (raw anonymous and merged ids hashed by the collector); `/metrics`,
//! the JSON API and the analyst's documented `person_keys` query are compared with the
//! independent reference (`reference/mod.rs`, persons computed from the raw links),
//! exactly, in three timezones.

mod reference;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use growth_e2e::{Aggregator, Collector, Exposition, clickhouse, labels, unique_database};
use reference::{Ev, LinkEv, Mode, Reference, as_persons};
use serde_json::Value;

const APP: &str = "people";
const KEY: &str = "people-test-key";
const RETENTION: [u32; 4] = [1, 3, 7, 30];

fn ago(now: DateTime<Utc>, days: i64, minutes: i64) -> DateTime<Utc> {
    now - chrono::Duration::days(days) - chrono::Duration::minutes(minutes)
}

/// (events, links sent at first, the late link).
fn data_set(now: DateTime<Utc>) -> (Vec<Ev>, Vec<LinkEv>, LinkEv) {
    let mut events = Vec::new();
    let mut ev = |user: &str, days: i64, minutes: i64| {
        events.push(Ev {
            app: APP,
            name: "expense_logged",
            user: Some(user.to_owned()),
            source: "",
            at: ago(now, days, minutes),
        });
    };
    // Visitor v1 before sign-up, identified as alice 3 days ago: first day 6 days ago.
    ev("v1", 6, 30);
    ev("v1", 5, 30);
    ev("alice", 3, 10);
    ev("alice", 1, 10);
    // Bob known 8 days ago; his visitor id v2 (2 days ago) identified after that.
    ev("bob", 8, 40);
    ev("v2", 2, 50);
    // v3 claimed by carol (earlier) and then by dave: carol's.
    ev("v3", 7, 20);
    ev("carol", 5, 20);
    ev("dave", 4, 20);
    // Erin names alice (a known id) as her anonymous id: refused.
    ev("erin", 1, 30);
    // Frank and gina merged; gina's visitor v4 goes with her, and is the earliest.
    ev("frank", 10, 15);
    ev("gina", 2, 15);
    ev("v4", 9, 15);
    // v5 is identified as hank late (after the aggregator reported).
    ev("v5", 6, 45);
    ev("v5", 3, 45);
    ev("hank", 2, 25);
    ev("hank", 0, 1);
    // Plain users and anonymous events, untouched by links.
    for (i, days) in [12, 9, 6, 4, 3, 1, 0].into_iter().enumerate() {
        ev(&format!("plain-{i}"), days, 35);
        ev(&format!("plain-{i}"), (days - 1).max(0), 36);
    }
    events.push(Ev {
        app: APP,
        name: "expense_logged",
        user: None,
        source: "",
        at: ago(now, 2, 5),
    });
    let link = |merge: bool, linked: &str, known: &str, days: i64, minutes: i64| LinkEv {
        merge,
        linked: linked.to_owned(),
        known: known.to_owned(),
        at: ago(now, days, minutes),
    };
    let links = vec![
        link(false, "v1", "alice", 3, 11),
        link(false, "v2", "bob", 2, 49),
        link(false, "v3", "carol", 5, 21),
        link(false, "v3", "dave", 4, 21),
        link(false, "alice", "erin", 1, 31),
        link(false, "v4", "gina", 2, 16),
        link(true, "gina", "frank", 1, 16),
    ];
    let late = link(false, "v5", "hank", 2, 26);
    (events, links, late)
}

/// The identify / merge events of `links` as events of their known user.
fn link_events(links: &[LinkEv]) -> Vec<Ev> {
    links
        .iter()
        .map(|l| Ev {
            app: APP,
            name: if l.merge { "merge" } else { "identify" },
            user: Some(l.known.clone()),
            source: "",
            at: l.at,
        })
        .collect()
}

async fn send(endpoint: &str, events: &[Ev], links: &[LinkEv]) {
    let (endpoint, events, links) = (endpoint.to_owned(), events.to_vec(), links.to_vec());
    tokio::task::spawn_blocking(move || {
        let tracker = growth_sdk::Tracker::builder(APP)
            .endpoint(endpoint)
            .protocol(growth_sdk::Protocol::Http)
            .user_hash_key(Some(KEY.as_bytes().to_vec()))
            .build()
            .expect("SDK builds");
        for e in &events {
            let mut event = growth_sdk::Event::new(e.name).at(e.at.into());
            if let Some(u) = &e.user {
                event = event.user(u.as_str());
            }
            tracker.track_event(event);
        }
        // Raw ids: the collector hashes them into anonymous.hash / merged.hash.
        for l in &links {
            let (name, attr) = if l.merge {
                ("merge", "merged.id")
            } else {
                ("identify", "anonymous.id")
            };
            tracker.track_event(
                growth_sdk::Event::new(name)
                    .user(l.known.as_str())
                    .attr(attr, l.linked.as_str())
                    .at(l.at.into()),
            );
        }
        tracker.shutdown().expect("SDK delivered everything");
    })
    .await
    .expect("sender thread");
}

fn refresh_time(m: &Exposition) -> Option<DateTime<Utc>> {
    let secs = m
        .series("growth_metrics_refresh_timestamp_seconds", APP)
        .into_values()
        .next()?;
    Utc.timestamp_millis_opt((secs * 1000.0).round() as i64)
        .single()
}

type Series = BTreeMap<Vec<(String, String)>, f64>;

/// What `/metrics` should show for the persons of `events`, on `today`.
fn expected(events: &[Ev], tz: Tz, today: NaiveDate) -> BTreeMap<&'static str, Series> {
    let r = Reference::new(events, APP, tz, &[], today);
    let mut out: BTreeMap<&'static str, Series> = BTreeMap::new();
    for (label, span) in [("1d", 1), ("7d", 7), ("30d", 30)] {
        out.entry("growth_active_users").or_default().insert(
            labels(&[("window", label.to_owned())]),
            r.active_users(today, span) as f64,
        );
    }
    for back in 0..7u64 {
        let c = today - Days::new(back);
        let members = r.cohort(c, false);
        out.entry("growth_cohort_users")
            .or_default()
            .insert(labels(&[("cohort", c.to_string())]), members.len() as f64);
        for n in RETENTION {
            if members.is_empty() || c + Days::new(u64::from(n)) > today {
                continue;
            }
            let back = r.retained(&members, c, n, 1, Mode::OnDay);
            out.entry("growth_retention_ratio").or_default().insert(
                labels(&[("cohort", c.to_string()), ("day", n.to_string())]),
                back as f64 / members.len() as f64,
            );
        }
    }
    for n in RETENTION {
        let (users, back) = r.recent_sums(n, 7);
        if users > 0 {
            out.entry("growth_retention_recent_ratio")
                .or_default()
                .insert(
                    labels(&[("day", n.to_string())]),
                    back as f64 / users as f64,
                );
        }
    }
    if let Some(s) = r.stickiness(today) {
        out.entry("growth_stickiness_ratio")
            .or_default()
            .insert(Vec::new(), s);
    }
    out
}

fn actual(
    m: &Exposition,
    names: impl Iterator<Item = &'static str>,
) -> BTreeMap<&'static str, Series> {
    names
        .map(|n| (n, m.series(n, APP)))
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

fn same(a: &BTreeMap<&'static str, Series>, b: &BTreeMap<&'static str, Series>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(name, series)| {
            b.get(name).is_some_and(|other| {
                series.len() == other.len()
                    && series
                        .iter()
                        .all(|(k, v)| other.get(k).is_some_and(|w| (v - w).abs() < 1e-9))
            })
        })
}

const NAMES: [&str; 5] = [
    "growth_active_users",
    "growth_cohort_users",
    "growth_retention_ratio",
    "growth_retention_recent_ratio",
    "growth_stickiness_ratio",
];

/// Waits until `/metrics` equals the reference for `events` (persons), at the refresh's day.
async fn matches(aggregator: &Aggregator, tz: Tz, events: &[Ev], after: DateTime<Utc>, what: &str) {
    let last = std::sync::Mutex::new(String::new());
    let done = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let m = aggregator.metrics().await;
            if let Some(at) = refresh_time(&m).filter(|t| *t > after) {
                let today = at.with_timezone(&tz).date_naive();
                let exp = expected(events, tz, today);
                let got = actual(&m, NAMES.into_iter());
                if same(&got, &exp) {
                    return;
                }
                *last.lock().unwrap_or_else(|p| p.into_inner()) =
                    format!("got {got:#?}\nexpected {exp:#?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "{what} ({tz}): /metrics never matched the reference: {}",
        last.lock().unwrap_or_else(|p| p.into_inner())
    );
}

async fn api(aggregator: &Aggregator, path: &str) -> Value {
    serde_json::from_str(&aggregator.get(path).await).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn people_are_counted_once_everywhere() {
    let database = unique_database("people");
    let collector = Collector::start_with(&database, Some(KEY), &["--max-event-age=60days"]).await;
    let now = Utc::now();
    let (mut events, links, late) = data_set(now);
    send(&collector.http_endpoint, &events, &links).await;
    collector.settled().await;
    events.extend(link_events(&links));
    let loaded = Utc::now();

    // A raw anonymous or merged id is in no table.
    let ch = clickhouse(&database);
    let tables: Vec<String> = ch
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View'")
        .fetch_all()
        .await
        .expect("tables");
    for t in tables {
        let text: String = ch
            .query(&format!("SELECT toString(groupArray(tuple(*))) FROM `{t}`"))
            .fetch_one()
            .await
            .expect("table text");
        for raw in ["\\'v1\\'", "'v3'", "'gina'"] {
            assert!(!text.contains(raw), "raw id {raw} stored in {t}");
        }
    }

    // UTC: the numbers before the late identify, then after it.
    let utc = Aggregator::start(&database, &[]).await;
    matches(
        &utc,
        Tz::UTC,
        &as_persons(&events, &links),
        loaded,
        "before the late identify",
    )
    .await;
    let before_late = Utc::now();
    send(&collector.http_endpoint, &[], std::slice::from_ref(&late)).await;
    collector.settled().await;
    let mut all_links = links.clone();
    all_links.push(late.clone());
    events.extend(link_events(std::slice::from_ref(&late)));
    let persons = as_persons(&events, &all_links);
    matches(
        &utc,
        Tz::UTC,
        &persons,
        before_late,
        "after the late identify",
    )
    .await;
    // The refused claims are counted: v3 by dave, alice (known) by erin.
    let m = utc.metrics().await;
    let conflicts = m.series("growth_identity_conflicts", APP);
    assert_eq!(conflicts[&labels(&[("reason", "claimed".to_owned())])], 1.0);
    assert_eq!(conflicts[&labels(&[("reason", "known".to_owned())])], 1.0);
    drop(utc);

    let after_all = Utc::now();
    for (tz, flags) in [
        (Tz::UTC, &[][..]),
        (
            Tz::America__Los_Angeles,
            &["--timezone", "America/Los_Angeles"][..],
        ),
        (Tz::Asia__Kolkata, &["--timezone", "Asia/Kolkata"][..]),
    ] {
        let aggregator = Aggregator::start(&database, flags).await;
        matches(&aggregator, tz, &persons, after_all, "all links").await;
        let active = api(&aggregator, &format!("/api/v1/active?app={APP}&days=14")).await;
        let today: NaiveDate = active["today"]
            .as_str()
            .expect("today")
            .parse()
            .expect("date");
        let r = Reference::new(&persons, APP, tz, &[], today);
        for d in active["days"].as_array().expect("days") {
            let day: NaiveDate = d["day"].as_str().expect("day").parse().expect("date");
            for (field, span) in [("dau", 1), ("wau", 7), ("mau", 30)] {
                assert_eq!(
                    d[field].as_u64(),
                    Some(r.active_users(day, span)),
                    "{tz} {day} {field}"
                );
            }
        }
        for (period, mode, rmode) in [
            ("day", "on_day", Mode::OnDay),
            ("week", "on_or_after", Mode::OnOrAfter),
        ] {
            let body = api(
                &aggregator,
                &format!(
                    "/api/v1/retention?app={APP}&period={period}&cohorts=12&days=1,2,3&mode={mode}"
                ),
            )
            .await;
            let exp = r.retention(period == "week", 12, &[1, 2, 3], rmode);
            let got = body["cohorts"].as_array().expect("cohorts");
            assert_eq!(got.len(), exp.len(), "{tz} {period}");
            for (g, (start, users, cells)) in got.iter().zip(&exp) {
                assert_eq!(g["cohort"], start.to_string(), "{tz} {period}");
                assert_eq!(g["users"].as_u64(), Some(*users), "{tz} {period} {start}");
                for (gc, c) in g["retention"].as_array().expect("cells").iter().zip(cells) {
                    assert_eq!(gc["status"], c.status, "{tz} {period} {start} {}", c.day);
                    assert_eq!(
                        gc["users"].as_u64(),
                        c.users,
                        "{tz} {period} {start} {}",
                        c.day
                    );
                }
            }
        }
        // The analyst's documented query (docs/contract.md) counts the same people.
        let analyst: u64 = ch
            .query(
                "SELECT uniqExact(if(p.person_key = 0, e.user_key, p.person_key))
                 FROM events AS e LEFT JOIN person_keys AS p ON p.app = e.app AND p.user_key = e.user_key
                 WHERE e.app = ? AND e.user_key != 0
                   AND toDate(e.event_time, ?) BETWEEN ? AND ?",
            )
            .bind(APP)
            .bind(tz.name())
            .bind((today - Days::new(29)).to_string())
            .bind(today.to_string())
            .fetch_one()
            .await
            .expect("analyst query");
        assert_eq!(analyst, r.active_users(today, 30), "{tz}: analyst's MAU");
    }
    drop(collector);
}
