//! Lifecycle (docs/contract.md, "Metric definitions"): new, returning, resurrecting and dormant
//! persons per day and per ISO week, on `/metrics` (the last complete period) and on
//! `/api/v1/lifecycle` (series: from the refresh's cached days, and asked in SQL for a
//! longer range), compared with the independent reference (`reference/mod.rs`) exactly,
//! in three timezones, with the invariants active = new + returning + resurrecting and
//! dormant(t) = returning(t) − active(t−1).
//!
//! The data: visitors tracked anonymously who sign up (identify, sent through
//! growth-sdk with raw ids the collector hashes), an identify that arrives late,
//! persons whose first event is not an active one, and a group of persons active
//! around the latest daylight-saving change of Los Angeles (found from now, so the
//! change lies inside the data whenever the test runs; on 2026-12-08 it is
//! 2026-11-01, inside the cached days, and the SQL range covers it too).

mod reference;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use growth_e2e::{Aggregator, Collector, Exposition, labels, unique_database};
use growth_testkit::Rng;
use reference::{Ev, LinkEv, Reference, as_persons};
use serde_json::Value;

const APP: &str = "lifecycle";
const KEY: &str = "lifecycle-test-key";
const ACTIVE: &[&str] = &["expense_logged"];

/// The latest local day on or before today on which `tz`'s UTC offset changed.
fn last_offset_change(tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&tz).date_naive();
    let offset = |d: NaiveDate| {
        let noon = d.and_hms_opt(12, 0, 0).expect("noon");
        tz.offset_from_local_datetime(&noon)
            .earliest()
            .map(|o| o.fix().local_minus_utc())
    };
    (0..400)
        .map(|back| today - Days::new(back))
        .find(|d| offset(*d) != offset(*d - Days::new(1)))
        .expect("Los Angeles changes its offset twice a year")
}

/// (events, links sent at first, the late link), none in the future.
fn data_set(now: DateTime<Utc>) -> (Vec<Ev>, Vec<LinkEv>, LinkEv) {
    let mut rng = Rng(20261208);
    let mut events = Vec::new();
    let mut links = Vec::new();
    let latest = now - chrono::Duration::seconds(5);
    // Instants in 24-hour periods counted back from `anchor`, at any second, so
    // calendar days of every zone cut through them.
    let mut person = |rng: &mut Rng, name: String, anchor: DateTime<Utc>, span: u64| {
        let visitor = rng.chance(50).then(|| format!("visitor-of-{name}"));
        let start = rng.below(span);
        let loyalty = 15 + rng.below(75);
        let quiet_first = rng.chance(20);
        let mut signed_up = visitor.is_none();
        let mut first = true;
        for period in (0..=start).rev() {
            if !first && !rng.chance(loyalty) {
                continue;
            }
            let at =
                anchor - chrono::Duration::seconds((period * 86_400 + rng.below(86_400)) as i64);
            if at > latest {
                continue;
            }
            let user = if signed_up {
                name.clone()
            } else {
                visitor.clone().unwrap_or_else(|| name.clone())
            };
            let event = if first && quiet_first {
                "page_viewed"
            } else {
                "expense_logged"
            };
            events.push(Ev {
                app: APP,
                name: event,
                user: Some(user),
                source: "",
                at,
            });
            if !first && !signed_up && rng.chance(50) {
                // Signs up: identified a minute later, then tracked as the known id.
                signed_up = true;
                let at = (at + chrono::Duration::minutes(1)).min(latest);
                links.push(LinkEv {
                    merge: false,
                    linked: visitor.clone().unwrap_or_default(),
                    known: name.clone(),
                    at,
                });
            }
            first = false;
        }
    };
    for i in 0..50 {
        person(&mut rng, format!("recent-{i}"), now, 50);
    }
    // Around the latest DST change of Los Angeles: activity from 12 days before it
    // to 12 after (as far as now allows).
    let change = last_offset_change(Tz::America__Los_Angeles, now);
    let anchor = Tz::America__Los_Angeles
        .from_local_datetime(
            &(change + Days::new(12))
                .and_hms_opt(23, 0, 0)
                .expect("time"),
        )
        .earliest()
        .expect("local time")
        .with_timezone(&Utc)
        .min(now);
    for i in 0..25 {
        person(&mut rng, format!("dst-{i}"), anchor, 25);
    }
    // A visitor active 9 to 4 days ago, identified as a known user only after the
    // aggregators reported: the identify moves those days into the person.
    let ago = |days: i64, minutes: i64| {
        now - chrono::Duration::days(days) - chrono::Duration::minutes(minutes)
    };
    for (user, days) in [
        ("late-visitor", 9),
        ("late-visitor", 8),
        ("late-visitor", 5),
        ("late-visitor", 4),
        ("late-user", 6),
        ("late-user", 3),
        ("late-user", 1),
    ] {
        events.push(Ev {
            app: APP,
            name: "expense_logged",
            user: Some(user.to_owned()),
            source: "",
            at: ago(days, 17),
        });
    }
    let late = LinkEv {
        merge: false,
        linked: "late-visitor".to_owned(),
        known: "late-user".to_owned(),
        at: ago(3, 16),
    };
    events.sort_by_key(|e| e.at);
    (events, links, late)
}

/// The identify events of `links`, as events of their known user.
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
        for l in &links {
            tracker.track_event(
                growth_sdk::Event::new("identify")
                    .user(l.known.as_str())
                    .attr("anonymous.id", l.linked.as_str())
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

const STATUSES: [&str; 4] = ["new", "returning", "resurrecting", "dormant"];

type Series = BTreeMap<Vec<(String, String)>, f64>;

/// `/metrics`' lifecycle series for the persons of `events` on `today`.
fn expected_metrics(events: &[Ev], tz: Tz, active: &[&str], today: NaiveDate) -> Series {
    let r = Reference::new(events, APP, tz, active, today);
    let mut out = Series::new();
    for (period, week) in [("day", false), ("week", true)] {
        let current = Reference::period_start(today, week);
        let last = current - Days::new(if week { 7 } else { 1 });
        let counts = r.lifecycle(last, week);
        for (status, count) in STATUSES.iter().zip(counts) {
            let value = if *status == "dormant" {
                -(count as f64)
            } else {
                count as f64
            };
            out.insert(
                labels(&[
                    ("period", period.to_owned()),
                    ("status", status.to_string()),
                ]),
                value,
            );
        }
    }
    out
}

/// Waits until `/metrics`' lifecycle equals the reference's, at the refresh's day.
async fn metrics_match(
    aggregator: &Aggregator,
    tz: Tz,
    active: &[&str],
    events: &[Ev],
    after: DateTime<Utc>,
    what: &str,
) {
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = aggregator.metrics().await;
        if let Some(at) = refresh_time(&m).filter(|t| *t > after) {
            let today = at.with_timezone(&tz).date_naive();
            let exp = expected_metrics(events, tz, active, today);
            let got = m.series("growth_lifecycle_users", APP);
            if got == exp {
                return;
            }
            last = format!("got {got:#?}\nexpected {exp:#?}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} ({tz}): /metrics' lifecycle never matched the reference: {last}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `/api/v1/lifecycle` for `periods` periods equals the reference, period by
/// period, and keeps the invariants.
async fn api_matches(
    aggregator: &Aggregator,
    tz: Tz,
    active: &[&str],
    events: &[Ev],
    week: bool,
    periods: u64,
) {
    let period = if week { "week" } else { "day" };
    let body: Value = serde_json::from_str(
        &aggregator
            .get(&format!(
                "/api/v1/lifecycle?app={APP}&period={period}&periods={periods}"
            ))
            .await,
    )
    .expect("JSON");
    let today: NaiveDate = body["today"]
        .as_str()
        .expect("today")
        .parse()
        .expect("date");
    assert_eq!(body["period"], period);
    assert_eq!(body["timezone"], tz.name());
    let r = Reference::new(events, APP, tz, active, today);
    let got = body["periods"].as_array().expect("periods");
    assert_eq!(got.len() as u64, periods, "{tz} {period} {periods}");
    let step = if week { 7 } else { 1 };
    let current = Reference::period_start(today, week);
    let mut nonzero = 0;
    for (i, g) in got.iter().enumerate() {
        let start = current - Days::new(step * (periods - 1 - i as u64));
        let what = format!("{tz} {period} {start} (of {periods})");
        assert_eq!(g["start"], start.to_string(), "{what}");
        let [new, returning, resurrecting, dormant] = r.lifecycle(start, week);
        let num = |f: &str| g[f].as_i64().unwrap_or_else(|| panic!("{what}: {f}"));
        assert_eq!(
            [
                num("new"),
                num("returning"),
                num("resurrecting"),
                num("dormant")
            ],
            [
                new as i64,
                returning as i64,
                resurrecting as i64,
                -(dormant as i64)
            ],
            "{what}: {g}"
        );
        // active(t) = new + returning + resurrecting, the persons active in t.
        let active_now = r.active_in_period(start, week) as i64;
        assert_eq!(num("active"), active_now, "{what}");
        assert_eq!(
            num("new") + num("returning") + num("resurrecting"),
            active_now,
            "{what}"
        );
        // dormant(t) = returning(t) − active(t−1).
        let active_before = r.active_in_period(start - Days::new(step), week) as i64;
        assert_eq!(num("dormant"), num("returning") - active_before, "{what}");
        assert_eq!(g["in_progress"], start == current, "{what}");
        nonzero += usize::from(active_now > 0 || num("dormant") != 0);
    }
    assert!(
        nonzero > 0,
        "{tz} {period} {periods}: the data shows no lifecycle"
    );
}

/// Bad parameters answer 400 with a message.
async fn bad_parameters_are_refused(aggregator: &Aggregator) {
    for query in [
        "period=month",
        "periods=0",
        "periods=367",
        "period=week&periods=105",
        "periods=x",
        "periods=3&periods=4",
    ] {
        let url = format!("{}/api/v1/lifecycle?app={APP}&{query}", aggregator.url);
        let response = reqwest::get(&url).await.expect("request");
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.expect("JSON error");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_equals_the_reference_in_three_timezones() {
    let database = unique_database("lifecycle");
    let collector = Collector::start_with(&database, Some(KEY), &["--max-event-age=400days"]).await;
    let now = Utc::now();
    let (mut events, links, late) = data_set(now);
    assert!(links.len() >= 10, "the data identifies visitors");
    send(&collector.http_endpoint, &events, &links).await;
    collector.settled().await;
    events.extend(link_events(&links));
    let loaded = Utc::now();

    // The late identify: before it, the visitor is a person of their own (a
    // resurrecting or new person on their days); after it, those days are the
    // known person's.
    let utc = Aggregator::start(&database, &[]).await;
    let before = as_persons(&events, &links);
    metrics_match(
        &utc,
        Tz::UTC,
        &[],
        &before,
        loaded,
        "before the late identify",
    )
    .await;
    api_matches(&utc, Tz::UTC, &[], &before, false, 14).await;
    let sent_late = Utc::now();
    send(&collector.http_endpoint, &[], std::slice::from_ref(&late)).await;
    collector.settled().await;
    let mut all_links = links.clone();
    all_links.push(late.clone());
    events.extend(link_events(std::slice::from_ref(&late)));
    let persons = as_persons(&events, &all_links);
    metrics_match(
        &utc,
        Tz::UTC,
        &[],
        &persons,
        sent_late,
        "after the late identify",
    )
    .await;
    api_matches(&utc, Tz::UTC, &[], &persons, false, 59).await;
    drop(utc);

    // Days back to the DST change, with a margin: past the cached days (SQL).
    let change = last_offset_change(Tz::America__Los_Angeles, now);
    let today_la = now.with_timezone(&Tz::America__Los_Angeles).date_naive();
    let far_days = ((today_la - change).num_days() as u64 + 20).clamp(70, 366);
    let far_weeks = (far_days / 7 + 2).min(104);
    let after_all = Utc::now();
    for (tz, active, flags) in [
        (Tz::UTC, &[][..], &[][..]),
        (
            Tz::America__Los_Angeles,
            ACTIVE,
            &[
                "--timezone",
                "America/Los_Angeles",
                "--active-events",
                "expense_logged",
            ][..],
        ),
        (
            Tz::Asia__Kolkata,
            &[][..],
            &["--timezone", "Asia/Kolkata"][..],
        ),
    ] {
        let aggregator = Aggregator::start(&database, flags).await;
        metrics_match(&aggregator, tz, active, &persons, after_all, "all links").await;
        // From the snapshot (the cached days), then asked in SQL (longer ranges).
        api_matches(&aggregator, tz, active, &persons, false, 59).await;
        api_matches(&aggregator, tz, active, &persons, true, 7).await;
        api_matches(&aggregator, tz, active, &persons, false, far_days).await;
        api_matches(&aggregator, tz, active, &persons, true, far_weeks).await;
        if tz == Tz::UTC {
            bad_parameters_are_refused(&aggregator).await;
        }
    }

    drop(collector);
}
