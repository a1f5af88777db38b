//! Ad-hoc funnels (`/api/v1/funnels`, docs/contract.md "Funnels") compared with the
//! independent reference (`reference/funnel.rs`, a search over every choice of events)
//! exactly (counts) and to 1e-9 (ratios, median and p90 times), in UTC,
//! America/Los_Angeles and Asia/Kolkata.
//!
//! The data: persons whose events start a few hours before a midnight (UTC and Los
//! Angeles) and run for a day, some around the latest daylight-saving change of Los
//! Angeles (found from now, as in lifecycle_correctness.rs); repeated steps, events of
//! the same millisecond, the source filter, exclusion events; visitors identified
//! (sent through growth-sdk with raw ids) so their anonymous steps are the person's;
//! everything sent shuffled, in two deliveries, the second with older events.

mod reference;

use chrono::{DateTime, Days, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use growth_e2e::{Aggregator, Collector, unique_database};
use growth_testkit::Rng;
use reference::funnel::{self, Order, Question, Step};
use reference::{Ev, LinkEv, as_persons};
use serde_json::Value;

const APP: &str = "funnels";
const KEY: &str = "funnels-test-key";

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

fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("local midnight")
        .with_timezone(&Utc)
}

const NAMES: [&str; 5] = [
    "signup",
    "expense_logged",
    "upgrade",
    "churned",
    "page_viewed",
];
const SOURCES: [&str; 3] = ["", "pwa", "form"];

/// (events, identify links), none in the future.
fn data_set(now: DateTime<Utc>, change: NaiveDate) -> (Vec<Ev>, Vec<LinkEv>) {
    let mut rng = Rng(20261208);
    let latest = now - chrono::Duration::seconds(30);
    let mut anchors = Vec::new();
    for d in 0..4u64 {
        let day = change - Days::new(2) + Days::new(d);
        anchors.push(local_midnight(Tz::America__Los_Angeles, day));
        anchors.push(local_midnight(Tz::UTC, day));
    }
    let today = now.date_naive();
    for d in 2..5u64 {
        anchors.push(local_midnight(Tz::UTC, today - Days::new(d)));
        anchors.push(local_midnight(
            Tz::America__Los_Angeles,
            today - Days::new(d),
        ));
    }
    let mut events = Vec::new();
    let mut links = Vec::new();
    for i in 0..160u64 {
        let anchor = anchors[(i as usize) % anchors.len()];
        let name = format!("person-{i}");
        let visitor = rng.chance(30).then(|| format!("visitor-{i}"));
        let n = 3 + rng.below(10);
        let mut at = anchor - chrono::Duration::seconds(rng.below(4 * 3600) as i64);
        let mut previous: Option<Ev> = None;
        for j in 0..n {
            if let Some(p) = &previous
                && rng.chance(12)
            {
                // The same millisecond: the same event again or another one.
                let mut twin = p.clone();
                if rng.chance(50) {
                    twin.name = NAMES[rng.below(3) as usize];
                }
                twin.source = if twin.name == "expense_logged" {
                    SOURCES[rng.below(3) as usize]
                } else {
                    ""
                };
                events.push(twin);
                continue;
            }
            let gap = match rng.below(4) {
                0 => rng.below(60),
                1 => rng.below(3600),
                2 => rng.below(6 * 3600),
                _ => rng.below(20 * 3600),
            };
            at += chrono::Duration::milliseconds((gap * 1000 + rng.below(1000)) as i64);
            if at > latest {
                break;
            }
            let weights = [28u64, 40, 16, 6, 10];
            let mut pick = rng.below(100);
            let mut which = 0;
            while pick >= weights[which] {
                pick -= weights[which];
                which += 1;
            }
            let event_name = if j == 0 && rng.chance(70) {
                "signup"
            } else {
                NAMES[which]
            };
            let source = if event_name == "expense_logged" {
                SOURCES[rng.below(3) as usize]
            } else {
                ""
            };
            // Visitors act anonymously for their first events.
            let user = match &visitor {
                Some(v) if j < 2 => v.clone(),
                _ => name.clone(),
            };
            let e = Ev {
                app: APP,
                name: event_name,
                user: Some(user),
                source,
                at,
            };
            previous = Some(e.clone());
            events.push(e);
        }
        if let Some(v) = visitor {
            links.push(LinkEv {
                merge: false,
                linked: v,
                known: name.clone(),
                at: (anchor + chrono::Duration::hours(30)).min(latest),
            });
        }
    }
    // At the edges: entering exactly at a local midnight of the one-day range and a
    // millisecond before the next one (in) or at it (out), in both zones; steps exactly
    // W after S1 (in) and W + 1 ms (out), across the DST change.
    let ms = chrono::Duration::milliseconds;
    let mut edge = |who: String, steps: &[(&'static str, &'static str, DateTime<Utc>)]| {
        for &(name, source, at) in steps {
            if at <= latest {
                events.push(Ev {
                    app: APP,
                    name,
                    user: Some(who.clone()),
                    source,
                    at,
                });
            }
        }
    };
    for (z, tz) in [("la", Tz::America__Los_Angeles), ("utc", Tz::UTC)] {
        let start = local_midnight(tz, change);
        let end = local_midnight(tz, change + Days::new(1));
        for (i, t) in [start, end - ms(1), end].into_iter().enumerate() {
            edge(
                format!("edge-{z}-{i}"),
                &[
                    ("signup", "", t),
                    ("expense_logged", "pwa", t + ms(86_400_000)),
                    ("upgrade", "", t + ms(86_400_001)),
                    ("expense_logged", "", t + ms(6 * 3_600_000)),
                ],
            );
        }
        let t = start + ms(90 * 60_000);
        edge(
            format!("window-{z}"),
            &[
                ("signup", "", t),
                ("expense_logged", "pwa", t + ms(6 * 3_600_000)),
                ("expense_logged", "form", t + ms(6 * 3_600_000)),
                ("upgrade", "", t + ms(6 * 3_600_000 + 1)),
            ],
        );
    }
    (events, links)
}

async fn send(endpoint: &str, events: Vec<Ev>, links: Vec<LinkEv>) {
    let endpoint = endpoint.to_owned();
    tokio::task::spawn_blocking(move || {
        let tracker = growth_sdk::Tracker::builder(APP)
            .endpoint(endpoint)
            .protocol(growth_sdk::Protocol::Http)
            .user_hash_key(Some(KEY.as_bytes().to_vec()))
            .queue_capacity(100_000)
            .build()
            .expect("SDK builds");
        for e in &events {
            let mut event = growth_sdk::Event::new(e.name).at(e.at.into());
            if let Some(u) = &e.user {
                event = event.user(u.as_str());
            }
            if !e.source.is_empty() {
                event = event.source(e.source);
            }
            event = event.attr("plan", funnel::plan(e));
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

struct Case {
    steps: &'static str,
    parsed: Vec<Step>,
    exclude: &'static str,
    excluded: Vec<Step>,
    window: &'static str,
    window_ms: i64,
}

fn step(name: &'static str, source: Option<&'static str>) -> Step {
    Step {
        name,
        source,
        plan: None,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            steps: "signup,expense_logged,upgrade",
            parsed: vec![
                step("signup", None),
                step("expense_logged", None),
                step("upgrade", None),
            ],
            exclude: "",
            excluded: vec![],
            window: "1d",
            window_ms: 86_400_000,
        },
        Case {
            steps: "signup,expense_logged[source=pwa],expense_logged,upgrade",
            parsed: vec![
                step("signup", None),
                step("expense_logged", Some("pwa")),
                step("expense_logged", None),
                step("upgrade", None),
            ],
            exclude: "churned",
            excluded: vec![step("churned", None)],
            window: "6h",
            window_ms: 6 * 3_600_000,
        },
        Case {
            steps: "expense_logged,expense_logged,expense_logged",
            parsed: vec![step("expense_logged", None); 3],
            exclude: "",
            excluded: vec![],
            window: "2h",
            window_ms: 2 * 3_600_000,
        },
        Case {
            steps: "expense_logged,expense_logged[source=pwa],upgrade",
            parsed: vec![
                step("expense_logged", None),
                step("expense_logged", Some("pwa")),
                step("upgrade", None),
            ],
            exclude: "",
            excluded: vec![],
            window: "3h",
            window_ms: 3 * 3_600_000,
        },
        Case {
            steps: "signup,expense_logged[plan=pro],upgrade[plan=free]",
            parsed: vec![
                step("signup", None),
                Step {
                    plan: Some("pro"),
                    ..step("expense_logged", None)
                },
                Step {
                    plan: Some("free"),
                    ..step("upgrade", None)
                },
            ],
            exclude: "churned[plan=pro]",
            excluded: vec![Step {
                plan: Some("pro"),
                ..step("churned", None)
            }],
            window: "1d",
            window_ms: 86_400_000,
        },
        Case {
            steps: "upgrade,signup",
            parsed: vec![step("upgrade", None), step("signup", None)],
            exclude: "churned,page_viewed",
            excluded: vec![step("churned", None), step("page_viewed", None)],
            window: "90m",
            window_ms: 90 * 60_000,
        },
    ]
}

/// Percent-encodes what a step list may hold besides names and commas.
fn encode(steps: &str) -> String {
    steps
        .replace('[', "%5B")
        .replace(']', "%5D")
        .replace('=', "%3D")
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9,
        _ => false,
    }
}

async fn funnels_match(
    aggregator: &Aggregator,
    tz: Tz,
    persons: &[Ev],
    ranges: &[(NaiveDate, NaiveDate)],
) {
    let mut checked = 0;
    let mut converted = 0;
    for case in cases() {
        for (order, label) in [
            (Order::Ordered, "ordered"),
            (Order::Strict, "strict"),
            (Order::Any, "any"),
        ] {
            for &(from, to) in ranges {
                let exclude = if case.exclude.is_empty() {
                    String::new()
                } else {
                    format!("&exclude={}", encode(case.exclude))
                };
                let path = format!(
                    "/api/v1/funnels?app={APP}&steps={}&window={}&from={from}&to={to}&order={label}{exclude}",
                    encode(case.steps),
                    case.window
                );
                let body: Value = serde_json::from_str(&aggregator.get(&path).await).expect("JSON");
                let q = Question {
                    steps: &case.parsed,
                    exclude: &case.excluded,
                    window_ms: case.window_ms,
                    from,
                    to,
                    order,
                };
                let expected = funnel::funnel(persons, APP, tz, &q);
                assert_eq!(body["timezone"], tz.name());
                converted += check_steps(&body["steps"], &expected, &format!("{tz} {path}"));
                // Split by the source of the entering event: the top 2 and the rest.
                let split: Value = serde_json::from_str(
                    &aggregator
                        .get(&format!("{path}&breakdown=source&breakdown_limit=2"))
                        .await,
                )
                .expect("JSON");
                check_steps(
                    &split["steps"],
                    &expected,
                    &format!("{tz} {path} split total"),
                );
                let values = split["values"].as_array().expect("values");
                let expected_values = funnel::by_source(persons, APP, tz, &q, 2);
                assert_eq!(values.len(), expected_values.len(), "{tz} {path}: {split}");
                for (g, (value, e)) in values.iter().zip(&expected_values) {
                    assert_eq!(
                        g["value"].as_str(),
                        value.as_deref(),
                        "{tz} {path}: {split}"
                    );
                    check_steps(&g["steps"], e, &format!("{tz} {path} value {value:?}"));
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked > 0 && converted > 20,
        "{tz}: the data converts too little ({converted})"
    );
}

/// One answer's steps equal the reference's; returns the persons past step 1.
fn check_steps(got: &Value, expected: &[funnel::StepAnswer], what: &str) -> u64 {
    let got = got.as_array().expect("steps");
    assert_eq!(got.len(), expected.len(), "{what}");
    let first = expected[0].persons;
    let mut converted = 0;
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let what = format!("{what} step {}: got {g}, expected {e:?}", i + 1);
        assert_eq!(g["persons"].as_u64(), Some(e.persons), "{what}");
        assert!(close(g["median_seconds"].as_f64(), e.median), "{what}");
        assert!(close(g["p90_seconds"].as_f64(), e.p90), "{what}");
        let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        assert!(
            close(g["conversion_from_first"].as_f64(), ratio(e.persons, first)),
            "{what}"
        );
        let prev = if i == 0 {
            first
        } else {
            expected[i - 1].persons
        };
        assert!(
            close(
                g["conversion_from_previous"].as_f64(),
                ratio(e.persons, prev)
            ),
            "{what}"
        );
        if i > 0 {
            converted += e.persons;
        }
    }
    converted
}

async fn bad_parameters_are_refused(aggregator: &Aggregator) {
    for query in [
        "steps=a",
        "steps=a,b,c,d,e,f,g,h,i,j,k",
        "steps=a,",
        "steps=a,b[x]",
        "steps=a,b&window=0s",
        "steps=a,b&window=91d",
        "steps=a,b&window=1w",
        "steps=a,b&order=random",
        "steps=a,b&from=2026-13-01",
        "steps=a,b&from=2026-12-02&to=2026-12-01",
        "steps=a,b&from=2024-01-01&to=2026-01-01",
        "steps=a,b&steps=c,d",
        "window=1h",
        "steps=a,b&breakdown=",
        "steps=a,b&breakdown=source&breakdown_limit=0",
        "steps=a,b&breakdown=source&breakdown_limit=51",
    ] {
        let url = format!("{}/api/v1/funnels?app={APP}&{query}", aggregator.url);
        let response = reqwest::get(&url).await.expect("request");
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.expect("JSON error");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn funnels_equal_the_reference_in_three_timezones() {
    let database = unique_database("funnels");
    let collector = Collector::start_with(&database, Some(KEY), &["--max-event-age=400days"]).await;
    let now = Utc::now();
    let change = last_offset_change(Tz::America__Los_Angeles, now);
    let (events, links) = data_set(now, change);
    // Shuffled, newer half first: arrival order is not time order.
    let mut shuffled = events.clone();
    let mut rng = Rng(7);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let half = shuffled.len() / 2;
    send(&collector.http_endpoint, shuffled[half..].to_vec(), vec![]).await;
    send(
        &collector.http_endpoint,
        shuffled[..half].to_vec(),
        links.clone(),
    )
    .await;
    collector.settled().await;
    let mut all = events.clone();
    all.extend(links.iter().map(|l| Ev {
        app: APP,
        name: "identify",
        user: Some(l.known.clone()),
        source: "",
        at: l.at,
    }));
    let persons = as_persons(&all, &links);
    let today = now.date_naive();
    let ranges = [
        (change - Days::new(2), change + Days::new(1)),
        (change, change),
        (today - Days::new(5), today),
    ];
    for (tz, flags) in [
        (Tz::UTC, &[][..]),
        (
            Tz::America__Los_Angeles,
            &["--timezone", "America/Los_Angeles"][..],
        ),
        (Tz::Asia__Kolkata, &["--timezone", "Asia/Kolkata"][..]),
    ] {
        let aggregator = Aggregator::start(&database, flags).await;
        aggregator.metrics().await;
        funnels_match(&aggregator, tz, &persons, &ranges).await;
        if tz == Tz::UTC {
            bad_parameters_are_refused(&aggregator).await;
        }
    }
    drop(collector);
}
