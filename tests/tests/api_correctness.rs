//! The JSON API (`docs/api.md`) and the new series on `/metrics` against an
//! independent reference (`reference/mod.rs`, plain Rust over the events sent).
//!
//! The data set: two apps over 70 days counted back from now in 24-hour periods (so
//! it is as rich at 00:05 as at 23:55 in any zone), signup days with gaps (empty
//! cohorts), sources, anonymous events, and one user whose earliest event arrives
//! last, in a later export, moving their first day 20 days earlier. Two aggregators
//! read it: one east of UTC (Asia/Kolkata) with retention past day 31, one in a zone
//! that crossed a DST change in the period (America/Los_Angeles) with an active-event
//! subset. Ratios are compared to 1e-9.

mod reference;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use growth_e2e::{Aggregator, Collector, clickhouse, eventually, unique_database};
use growth_testkit::Rng;
use reference::{Cell, Ev, Mode, Reference};
use serde_json::Value;

const APPS: [&str; 2] = ["finbrain", "habits"];
const EVENTS: [&str; 4] = [
    "expense_logged",
    "expense_edited",
    "report_requested",
    "challenge_started",
];
const SOURCES: [&str; 4] = ["messenger", "form", "pwa", ""];
const LATE_USER: &str = "late-user";

/// The events sent in the first export, and the late one sent after.
fn data_set(now: DateTime<Utc>) -> (Vec<Ev>, Vec<Ev>) {
    let mut rng = Rng(20261201);
    let mut events = Vec::new();
    let at = |rng: &mut Rng, periods_ago: u64| {
        now - chrono::Duration::seconds((5 + periods_ago * 86_400 + rng.below(86_400)) as i64)
    };
    for (a, app) in APPS.iter().enumerate() {
        for u in 0..70u64 {
            let user = format!("{app}-user-{u}");
            // Signups on about two days in three: the others are empty cohorts.
            let mut signup = rng.below(70);
            if signup % 3 == 2 {
                signup = signup.saturating_sub(1);
            }
            let loyalty = 20 + rng.below(60) + 15 * a as u64;
            for period in (0..=signup).rev() {
                if period != signup && rng.below(100) >= loyalty {
                    continue;
                }
                for _ in 0..=rng.below(2) {
                    let t = at(&mut rng, period);
                    events.push(Ev {
                        app,
                        name: EVENTS[rng.below(4) as usize],
                        user: Some(user.clone()),
                        source: SOURCES[rng.below(4) as usize],
                        at: t,
                    });
                }
            }
        }
        for _ in 0..30 {
            let period = rng.below(70);
            let t = at(&mut rng, period);
            events.push(Ev {
                app,
                name: "report_requested",
                user: None,
                source: SOURCES[rng.below(4) as usize],
                at: t,
            });
        }
    }
    // The late user: active 3 and 2 periods ago, then an event from 23 periods ago.
    for period in [3, 2] {
        let t = at(&mut rng, period);
        events.push(Ev {
            app: "finbrain",
            name: "expense_logged",
            user: Some(LATE_USER.into()),
            source: "form",
            at: t,
        });
    }
    let late = vec![Ev {
        app: "finbrain",
        name: "expense_logged",
        user: Some(LATE_USER.into()),
        source: "pwa",
        at: at(&mut rng, 23),
    }];
    (events, late)
}

async fn send(endpoint: &str, events: &[Ev]) {
    let endpoint = endpoint.to_owned();
    let events = events.to_vec();
    tokio::task::spawn_blocking(move || {
        for app in APPS {
            let tracker = growth_sdk::Tracker::builder(app)
                .endpoint(endpoint.clone())
                .protocol(growth_sdk::Protocol::Http)
                .queue_capacity(100_000)
                .build()
                .expect("SDK builds");
            for e in events.iter().filter(|e| e.app == app) {
                let mut event = growth_sdk::Event::new(e.name).at(e.at.into());
                if let Some(u) = &e.user {
                    event = event.user(u.as_str());
                }
                if !e.source.is_empty() {
                    event = event.source(e.source);
                }
                tracker.track_event(event);
            }
            tracker.shutdown().expect("SDK delivered everything");
        }
    })
    .await
    .expect("sender thread");
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("aggregator answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body: Value = r.json().await.expect("JSON body");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json; charset=utf-8"),
            "{path}"
        );
        assert_eq!(
            headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{path}"
        );
        (status, body)
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

fn today_of(body: &Value) -> NaiveDate {
    body["today"]
        .as_str()
        .expect("today")
        .parse()
        .expect("date")
}

fn close(a: &Value, b: Option<f64>, what: &str) {
    match b {
        None => assert!(a.is_null(), "{what}: expected null, got {a}"),
        Some(b) => {
            let a = a
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: expected {b}, got {a}"));
            assert!((a - b).abs() < 1e-9, "{what}: got {a}, expected {b}");
        }
    }
}

fn check_cells(what: &str, got: &Value, members: u64, cells: &[Cell]) {
    let got = got.as_array().expect("retention array");
    assert_eq!(got.len(), cells.len(), "{what}");
    for (g, c) in got.iter().zip(cells) {
        assert_eq!(g["day"], c.day, "{what}");
        assert_eq!(g["status"], c.status, "{what} day {}", c.day);
        assert_eq!(g["users"].as_u64(), c.users, "{what} day {}", c.day);
        let ratio = c.users.map(|u| u as f64 / members as f64);
        close(&g["ratio"], ratio, &format!("{what} day {} ratio", c.day));
    }
}

struct Setting {
    tz: Tz,
    active: &'static [&'static str],
    days: &'static [u32],
    cohorts: u32,
    flags: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_new_series_match_an_independent_reference() {
    let database = unique_database("api");
    // The data set goes 70 days back: past the collector's default event-age window.
    let collector = Collector::start_with(&database, None, &["--max-event-age", "100days"]).await;
    let aggregator = Aggregator::start(&database, &[]).await;
    let api = Api {
        url: aggregator.url.clone(),
        http: reqwest::Client::new(),
    };
    // An empty database: no apps, and no app to summarise.
    assert_eq!(api.ok("/api/v1/apps").await["apps"], Value::Array(vec![]));
    assert_eq!(api.get("/api/v1/summary").await.0, 404);

    let (events, late) = data_set(Utc::now());
    send(&collector.http_endpoint, &events).await;
    // The late event goes in a later insert, after the user's first-seen row exists.
    let ch = clickhouse(&database);
    eventually(
        "the first export stored",
        Duration::from_secs(30),
        || async {
            let n: u64 = ch
                .query("SELECT count() FROM events")
                .fetch_one()
                .await
                .ok()?;
            (n == events.len() as u64).then_some(())
        },
    )
    .await;
    send(&collector.http_endpoint, &late).await;
    let mut all = events.clone();
    all.extend(late.iter().cloned());
    eventually("every event stored", Duration::from_secs(30), || async {
        let n: u64 = ch
            .query("SELECT count() FROM events")
            .fetch_one()
            .await
            .ok()?;
        (n == all.len() as u64).then_some(())
    })
    .await;
    let loaded_at = Utc::now();
    drop(aggregator);

    let settings = [
        Setting {
            tz: Tz::Asia__Kolkata,
            active: &[],
            days: &[1, 7, 35],
            cohorts: 5,
            flags: &[
                "--timezone",
                "Asia/Kolkata",
                "--retention-days",
                "35,1,7",
                "--cohorts",
                "5",
            ],
        },
        Setting {
            tz: Tz::America__Los_Angeles,
            active: &["expense_logged", "expense_edited"],
            days: &[1, 3, 30],
            cohorts: 7,
            flags: &[
                "--timezone",
                "America/Los_Angeles",
                "--active-events",
                "expense_logged,expense_edited",
                "--retention-days",
                "1,3,30",
            ],
        },
    ];
    for s in &settings {
        let aggregator = Aggregator::start(&database, s.flags).await;
        let api = Api {
            url: aggregator.url.clone(),
            http: reqwest::Client::new(),
        };
        let tz = s.tz;
        eventually(
            "a refresh after the load",
            Duration::from_secs(30),
            || async {
                let (status, body) = api.get("/api/v1/apps").await;
                let at: DateTime<Utc> = body["generated_at"].as_str()?.parse().ok()?;
                (status == 200 && at.timestamp() > loaded_at.timestamp()).then_some(())
            },
        )
        .await;

        // /api/v1/apps
        let apps = api.ok("/api/v1/apps").await;
        let listed: Vec<(&str, u64)> = apps["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .map(|a| {
                (
                    a["app"].as_str().expect("app"),
                    a["events_total"].as_u64().expect("n"),
                )
            })
            .collect();
        let expected: Vec<(&str, u64)> = APPS
            .iter()
            .map(|app| (*app, all.iter().filter(|e| e.app == *app).count() as u64))
            .collect();
        assert_eq!(listed, expected);

        // Validation: clear 400s and 404s.
        for bad in [
            "/api/v1/summary",
            "/api/v1/summary?app=finbrain&app=habits",
            "/api/v1/active?app=finbrain&days=0",
            "/api/v1/active?app=finbrain&days=abc",
            "/api/v1/active?app=finbrain&days=367",
            "/api/v1/retention?app=finbrain&period=month",
            "/api/v1/retention?app=finbrain&mode=sometimes",
            "/api/v1/retention?app=finbrain&days=1,,2",
            "/api/v1/retention?app=finbrain&days=0",
            "/api/v1/retention?app=finbrain&cohorts=0",
            "/api/v1/events?app=finbrain&by=country",
        ] {
            let (status, body) = api.get(bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{bad}"
            );
        }
        let (status, body) = api.get("/api/v1/summary").await;
        assert!(status == 400 && body["error"].as_str().unwrap_or("").contains("habits"));
        let (status, body) = api.get("/api/v1/summary?app=nope").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("unknown app 'nope'"))
        );

        // The late event moved the late user's first day 20 days earlier.
        let first = Reference::new(&all, "finbrain", tz, s.active, Utc::now().date_naive());
        let first_day = first.first_seen[LATE_USER].with_timezone(&tz).date_naive();
        let moved = late[0].at.with_timezone(&tz).date_naive();
        assert_eq!(
            first_day, moved,
            "late user's first day must be the late event's"
        );

        for app in APPS {
            // summary
            let body = api.ok(&format!("/api/v1/summary?app={app}")).await;
            let r = Reference::new(&all, app, tz, s.active, today_of(&body));
            let today = r.today;
            assert_eq!(body["timezone"], tz.name());
            for (label, span) in [("1d", 1), ("7d", 7), ("30d", 30)] {
                assert_eq!(
                    body["active_users"][label],
                    r.active_users(today, span),
                    "{app} {label}"
                );
                let before = today - chrono::Days::new(span);
                assert_eq!(
                    body["previous_active_users"][label],
                    r.active_users(before, span),
                    "{app} previous {label}"
                );
            }
            close(&body["stickiness"], r.stickiness(today), "stickiness");
            close(
                &body["previous_stickiness"],
                r.stickiness(today - chrono::Days::new(1)),
                "previous stickiness",
            );
            let report_cohorts = s.cohorts.max(s.days.last().copied().unwrap_or(0) + 1);
            let cohorts = body["cohorts"].as_array().expect("cohorts");
            assert_eq!(
                cohorts.len() as u32,
                report_cohorts,
                "{app}: every retention day visible"
            );
            let expected = r.retention(false, report_cohorts, s.days, Mode::OnDay);
            assert!(
                expected.iter().any(|(_, n, _)| *n == 0),
                "{app}: the data set should have empty cohorts"
            );
            for (got, (cohort, members, cells)) in cohorts.iter().zip(&expected) {
                assert_eq!(got["cohort"], cohort.to_string());
                assert_eq!(got["users"], *members, "{app} cohort {cohort}");
                check_cells(
                    &format!("{app} summary {cohort}"),
                    &got["retention"],
                    *members,
                    cells,
                );
            }
            let recent = body["recent_retention"].as_array().expect("recent");
            assert_eq!(recent.len(), s.days.len());
            for (got, &n) in recent.iter().zip(s.days) {
                let (users, retained) = r.recent_sums(n, s.cohorts);
                assert_eq!(got["day"], n);
                assert_eq!(got["cohort_users"], users, "{app} recent D{n}");
                assert_eq!(got["retained_users"], retained, "{app} recent D{n}");
                close(
                    &got["ratio"],
                    (users > 0).then(|| retained as f64 / users as f64),
                    &format!("{app} recent D{n}"),
                );
            }

            // active
            let body = api.ok(&format!("/api/v1/active?app={app}&days=40")).await;
            let r = Reference::new(&all, app, tz, s.active, today_of(&body));
            let days = body["days"].as_array().expect("days");
            assert_eq!(days.len(), 40);
            for (i, d) in days.iter().enumerate() {
                let day = r.today - chrono::Days::new(39 - i as u64);
                assert_eq!(d["day"], day.to_string());
                assert_eq!(
                    (d["dau"].as_u64(), d["wau"].as_u64(), d["mau"].as_u64()),
                    (
                        Some(r.active_users(day, 1)),
                        Some(r.active_users(day, 7)),
                        Some(r.active_users(day, 30))
                    ),
                    "{app} active on {day}"
                );
                assert_eq!(d["in_progress"], day == r.today);
            }

            // retention: weekly and daily, both modes, past day 31
            for (query, week, cohorts, days, mode) in [
                (
                    "period=week&cohorts=8&days=1,2,5&mode=on_day",
                    true,
                    8,
                    &[1u32, 2, 5][..],
                    Mode::OnDay,
                ),
                (
                    "period=week&cohorts=8&days=1,2,5&mode=on_or_after",
                    true,
                    8,
                    &[1, 2, 5][..],
                    Mode::OnOrAfter,
                ),
                (
                    "period=day&cohorts=45&days=1,32,40&mode=on_or_after",
                    false,
                    45,
                    &[1, 32, 40][..],
                    Mode::OnOrAfter,
                ),
                (
                    "period=day&cohorts=45&days=40,1,32",
                    false,
                    45,
                    &[1, 32, 40][..],
                    Mode::OnDay,
                ),
            ] {
                let body = api
                    .ok(&format!("/api/v1/retention?app={app}&{query}"))
                    .await;
                let r = Reference::new(&all, app, tz, s.active, today_of(&body));
                let expected = r.retention(week, cohorts, days, mode);
                let got = body["cohorts"].as_array().expect("cohorts");
                assert_eq!(got.len(), expected.len(), "{query}");
                assert!(
                    expected
                        .iter()
                        .flat_map(|(_, _, c)| c)
                        .any(|c| c.status == "final" && c.users > Some(0)),
                    "{query}: nothing retained in the data set"
                );
                for (g, (cohort, members, cells)) in got.iter().zip(&expected) {
                    assert_eq!(g["cohort"], cohort.to_string(), "{query}");
                    assert_eq!(g["users"], *members, "{app} {query} {cohort}");
                    check_cells(
                        &format!("{app} {query} {cohort}"),
                        &g["retention"],
                        *members,
                        cells,
                    );
                }
            }
            let default = api.ok(&format!("/api/v1/retention?app={app}")).await;
            assert_eq!(default["period"], "day");
            assert_eq!(default["mode"], "on_day");
            assert_eq!(
                default["cohorts"].as_array().map(Vec::len),
                Some(report_cohorts as usize)
            );

            // events
            for (query, by_source, event) in [
                ("days=20&by=source", true, None),
                ("days=15&by=event", false, None),
                (
                    "days=15&by=source&event=expense_logged",
                    true,
                    Some("expense_logged"),
                ),
            ] {
                let body = api.ok(&format!("/api/v1/events?app={app}&{query}")).await;
                let r = Reference::new(&all, app, tz, s.active, today_of(&body));
                let days = body["days"].as_array().expect("days");
                let mut keys = std::collections::BTreeSet::new();
                for (i, d) in days.iter().enumerate() {
                    let day = r.today - chrono::Days::new((days.len() - 1 - i) as u64);
                    let expected = r.events_on(day, by_source, event);
                    keys.extend(expected.keys().cloned());
                    let got: std::collections::BTreeMap<String, u64> = d["counts"]
                        .as_object()
                        .expect("counts")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
                        .collect();
                    assert_eq!(got, expected, "{app} {query} {day}");
                    assert_eq!(d["total"], expected.values().sum::<u64>());
                }
                let got_keys: Vec<&str> = body["keys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(
                    got_keys,
                    keys.iter().map(String::as_str).collect::<Vec<_>>()
                );
            }
        }

        // /metrics: recent retention, stickiness, and only --cohorts cohorts exported.
        let metrics = aggregator.metrics().await;
        let at = metrics
            .series("growth_metrics_refresh_timestamp_seconds", "finbrain")
            .into_values()
            .next()
            .expect("timestamp");
        let now = DateTime::from_timestamp_millis((at * 1000.0).round() as i64).expect("instant");
        for app in APPS {
            let r = Reference::new(&all, app, tz, s.active, now.with_timezone(&tz).date_naive());
            let sticky = metrics.series("growth_stickiness_ratio", app);
            close(
                &sticky.values().next().map_or(Value::Null, |v| (*v).into()),
                r.stickiness(r.today),
                "growth_stickiness_ratio",
            );
            let recent = metrics.series("growth_retention_recent_ratio", app);
            for &n in s.days {
                let (users, retained) = r.recent_sums(n, s.cohorts);
                let key = vec![("day".to_owned(), n.to_string())];
                close(
                    &recent.get(&key).map_or(Value::Null, |v| (*v).into()),
                    (users > 0).then(|| retained as f64 / users as f64),
                    &format!("growth_retention_recent_ratio {app} D{n}"),
                );
            }
            assert_eq!(
                metrics.series("growth_cohort_users", app).len() as u32,
                s.cohorts,
                "/metrics exports --cohorts cohorts"
            );
        }
    }
    drop(collector);
}
