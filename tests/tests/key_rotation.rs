//! HMAC key rotation without splitting people (issue 20, item 4), end to end.
//!
//! 40 days of data. The rotated database gets them in three phases, as a deployment
//! would: days 39–21 with the old key alone, days 20–14 during an overlap (collector
//! and SDK with the new key and the old one as previous; half of the overlap's events
//! come as raw `user.id` over OTLP/HTTP, hashed with both keys by the collector),
//! days 13–0 with the new key alone; then `growth-collector rotate-keys finish`. A
//! second database gets the same events with one key throughout. For the app whose
//! users were all seen during the overlap (with an identify made under the old key),
//! DAU/WAU/MAU, cohorts and retention on `/metrics` and the JSON API equal the run
//! without rotation, in three timezones, before the finish job (continuity through
//! the rotation links) and after it; after the job no table holds an old hash of
//! theirs. Users of a second app not seen during the overlap keep their old hash
//! (documented: they count as new people when they return).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use clickhouse::sql::Identifier;
use growth_e2e::{Aggregator, Collector, binary, clickhouse, clickhouse_url, unique_database};
use growth_schema::tables::{USER_TABLES, UserColumn};
use growth_schema::user_hash::UserHasher;

const APP: &str = "finbrain";
/// Users of this app are never seen during the overlap.
const AWAY_APP: &str = "awayapp";
const OLD: &str = "rotation-old-key";
const NEW: &str = "rotation-new-key";
const PLAIN: &str = "rotation-plain-key";
const EVENTS: [&str; 3] = ["expense_logged", "app_opened", "report_viewed"];
const ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/Los_Angeles"];
/// Days ago of the overlap (inclusive).
const OVERLAP: std::ops::RangeInclusive<i64> = 14..=20;

#[derive(Clone, Debug)]
struct Planned {
    app: &'static str,
    name: &'static str,
    user: String,
    /// The anonymous id of an `identify`.
    anonymous: Option<String>,
    at: DateTime<Utc>,
}

fn at(now: DateTime<Utc>, days: i64, minutes: i64) -> DateTime<Utc> {
    now - chrono::Duration::days(days) - chrono::Duration::minutes(minutes)
}

/// The 40 days: APP's 16 users and one anonymous visitor, AWAY_APP's 4 users.
fn plan(now: DateTime<Utc>) -> Vec<Planned> {
    let mut out = Vec::new();
    let ev = |app, name, user: String, at| Planned {
        app,
        name,
        user,
        anonymous: None,
        at,
    };
    for user in 0..16i64 {
        // First seen between day 39 and day 24; every user is seen in the overlap.
        let first = 39 - user;
        for day in (0..=first).rev() {
            let in_overlap = OVERLAP.contains(&day);
            if (user + day) % 3 == 0 && !(in_overlap && day == 14 + user % 7) {
                continue;
            }
            let name = EVENTS[((user + day) % 3) as usize];
            out.push(ev(
                APP,
                name,
                format!("user-{user}"),
                at(now, day, user * 11 + 5),
            ));
        }
    }
    // An anonymous visitor on days 38–33, identified as user-1 on day 33 (old key);
    // the anonymous id itself never comes back.
    for day in 33..=38 {
        out.push(ev(APP, "app_opened", "anon-1".into(), at(now, day, 200)));
    }
    out.push(Planned {
        app: APP,
        name: "identify",
        user: "user-1".into(),
        anonymous: Some("anon-1".into()),
        at: at(now, 33, 199),
    });
    // AWAY_APP: active before and after the overlap, never during it.
    for user in 0..4i64 {
        for day in (0..=35)
            .rev()
            .filter(|d| !OVERLAP.contains(d) && d % 4 != 0)
        {
            out.push(ev(
                AWAY_APP,
                EVENTS[(day % 3) as usize],
                format!("away-{user}"),
                at(now, day, user * 13 + 7),
            ));
        }
    }
    out.sort_by_key(|e| e.at);
    out
}

/// Sends `events` with growth-sdk over gRPC: hashed with `key` (and `previous`
/// during an overlap); an identify carries the anonymous id's hash with `key`.
async fn send_sdk(endpoint: &str, key: &str, previous: Option<&str>, events: Vec<Planned>) {
    let n = events.len() as u64;
    let endpoint = endpoint.to_owned();
    let key = key.to_owned();
    let previous = previous.map(|p| p.as_bytes().to_vec());
    let delivered = tokio::task::spawn_blocking(move || {
        let hasher = UserHasher::new(Some(key.as_bytes().to_vec()));
        let mut by_app: BTreeMap<&str, Vec<&Planned>> = BTreeMap::new();
        for e in &events {
            by_app.entry(e.app).or_default().push(e);
        }
        let mut delivered = 0;
        for (app, events) in by_app {
            let client = growth_sdk::Tracker::builder(app)
                .endpoint(endpoint.clone())
                .protocol(growth_sdk::Protocol::Grpc)
                .user_hash_key(Some(key.as_bytes().to_vec()))
                .user_hash_previous_key(previous.clone())
                .queue_capacity(100_000)
                .build()
                .expect("SDK builds");
            for e in events {
                let mut event = growth_sdk::Event::new(e.name)
                    .at(e.at.into())
                    .user(e.user.as_str());
                if let Some(anonymous) = &e.anonymous {
                    event = event.attr("anonymous.hash", hasher.hash(anonymous).into_string());
                }
                client.track_event(event);
            }
            delivered += client.shutdown().expect("SDK delivered").delivered;
        }
        delivered
    })
    .await
    .expect("sender");
    assert_eq!(delivered, n);
}

/// Sends `events` as OTLP/JSON with raw `user.id`s: the collector hashes them.
async fn send_raw(endpoint: &str, events: &[Planned]) {
    let records: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "timeUnixNano": e.at.timestamp_nanos_opt().expect("time").to_string(),
                "attributes": [
                    {"key": "event.name", "value": {"stringValue": e.name}},
                    {"key": "user.id", "value": {"stringValue": e.user}},
                ],
            })
        })
        .collect();
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": APP}}]},
        "scopeLogs": [{"logRecords": records}],
    }]});
    let answer = reqwest::Client::new()
        .post(format!("{endpoint}/v1/logs"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("collector answers");
    assert!(answer.status().is_success(), "{}", answer.status());
}

/// Every number the aggregator shows for APP.
async fn numbers(aggregator: &Aggregator) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let metrics = aggregator.metrics().await;
    for name in [
        "growth_active_users",
        "growth_cohort_users",
        "growth_retention_ratio",
        "growth_retention_recent_ratio",
        "growth_stickiness_ratio",
        "growth_events_total",
    ] {
        seen.insert(name.to_owned(), format!("{:?}", metrics.series(name, APP)));
    }
    for path in [
        "/api/v1/summary?app=finbrain",
        "/api/v1/active?app=finbrain&days=40",
        "/api/v1/retention?app=finbrain&period=day&cohorts=40&days=1,3,7,14,28&mode=on_day",
        "/api/v1/retention?app=finbrain&period=week&cohorts=6&days=1,2,3&mode=on_or_after",
        "/api/v1/events?app=finbrain&days=40",
    ] {
        let mut body: serde_json::Value =
            serde_json::from_str(&aggregator.get(path).await).expect("JSON");
        strip_times(&mut body);
        seen.insert(path.to_owned(), body.to_string());
    }
    seen
}

fn strip_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("generated_at");
            map.remove("refreshed_at");
            map.remove("refresh_interval_seconds");
            map.values_mut().for_each(strip_times);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

/// Waits up to 60 s for each pair of aggregators to show the same numbers.
async fn expect_equal(pairs: &[(Aggregator, Aggregator)], what: &str) {
    for (zone, (rotated, plain)) in ZONES.iter().zip(pairs) {
        let mut last = None;
        for _ in 0..120 {
            let (a, b) = (numbers(rotated).await, numbers(plain).await);
            if a == b {
                last = None;
                break;
            }
            last = Some((a, b));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some((a, b)) = last {
            for (k, v) in &a {
                if b.get(k) != Some(v) {
                    eprintln!("{k}:\n  rotated: {v}\n  plain:   {}", b[k]);
                }
            }
            panic!(
                "{what}, {zone}: the rotated run differs from the plain one\n{}",
                rotated.process.output()
            );
        }
    }
}

async fn count_rows(ch: &clickhouse::Client, hash: &str) -> Vec<(String, u64)> {
    let key: u64 = ch
        .query("SELECT cityHash64(?)")
        .bind(hash)
        .fetch_one()
        .await
        .expect("key");
    let mut out = Vec::new();
    for &(table, column) in USER_TABLES {
        let rows: u64 = match column {
            UserColumn::Hash => ch
                .query("SELECT count() FROM ? WHERE user_hash = ?")
                .bind(Identifier(table))
                .bind(hash),
            UserColumn::Key => ch
                .query("SELECT count() FROM ? WHERE user_key = ?")
                .bind(Identifier(table))
                .bind(key),
            UserColumn::KeyPair(first, second) => ch
                .query("SELECT count() FROM ? WHERE ? = ? OR ? = ?")
                .bind(Identifier(table))
                .bind(Identifier(first))
                .bind(key)
                .bind(Identifier(second))
                .bind(key),
        }
        .fetch_one()
        .await
        .expect("count");
        out.push((table.to_owned(), rows));
    }
    out
}

fn rotate_keys(database: &str, job: &str) -> String {
    let out = Command::new(binary("growth-collector"))
        .args([
            "rotate-keys",
            job,
            "--clickhouse-url",
            &clickhouse_url(),
            "--clickhouse-database",
            database,
        ])
        .env_remove("GROWTH_USER_HASH_KEY")
        .output()
        .expect("rotate-keys runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rotate-keys {job}: {stdout}\n{stderr}"
    );
    eprintln!("rotate-keys {job}:\n{stdout}{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_key_keeps_people_whole() {
    // Away from midnight in every zone tested, so "today" holds still.
    let since_midnight = Utc::now().time().num_seconds_from_midnight();
    if !(600..86_000).contains(&since_midnight) {
        tokio::time::sleep(Duration::from_secs(u64::from(
            (86_400 + 600 - since_midnight) % 86_400,
        )))
        .await;
    }
    let now = Utc::now() - chrono::Duration::minutes(1);
    let events = plan(now);
    let rotated_db = unique_database("rotation_rotated");
    let plain_db = unique_database("rotation_plain");
    let age = ["--max-event-age", "45days"];

    let plain = Collector::start_with(&plain_db, Some(PLAIN), &age).await;
    send_sdk(&plain.grpc_endpoint, PLAIN, None, events.clone()).await;

    // Phase 1: the old key alone.
    let mut collector = Collector::start_with(&rotated_db, Some(OLD), &age).await;
    let phase = |days: std::ops::RangeInclusive<i64>| -> Vec<Planned> {
        events
            .iter()
            .filter(|e| {
                let day = (now - e.at).num_days();
                days.contains(&day)
            })
            .cloned()
            .collect()
    };
    send_sdk(&collector.grpc_endpoint, OLD, None, phase(21..=45)).await;
    collector.settled().await;

    // Phase 2: the overlap. Half the events through the SDK (both hashes), half as
    // raw ids (the collector hashes with both keys).
    collector.set_envs(vec![
        ("GROWTH_USER_HASH_KEY", NEW.to_owned()),
        ("GROWTH_USER_HASH_KEY_ID", "2026-new".to_owned()),
        ("GROWTH_USER_HASH_PREVIOUS_KEY", OLD.to_owned()),
        ("GROWTH_USER_HASH_PREVIOUS_KEY_ID", "2025-old".to_owned()),
    ]);
    collector.start_again().await;
    let (mut by_sdk, mut raw) = (Vec::new(), Vec::new());
    for (i, e) in phase(OVERLAP).into_iter().enumerate() {
        if i % 2 == 0 {
            by_sdk.push(e)
        } else {
            raw.push(e)
        }
    }
    send_sdk(&collector.grpc_endpoint, NEW, Some(OLD), by_sdk).await;
    send_raw(&collector.http_endpoint, &raw).await;
    collector.settled().await;
    let status = rotate_keys(&rotated_db, "status");
    assert!(status.contains(&format!("{APP}\t16")), "{status}");
    assert!(
        !collector.process.output().contains(OLD) && !collector.process.output().contains(NEW),
        "a key is never logged"
    );

    // Phase 3: the new key alone.
    collector.set_envs(vec![("GROWTH_USER_HASH_KEY", NEW.to_owned())]);
    collector.start_again().await;
    send_sdk(&collector.grpc_endpoint, NEW, None, phase(0..=13)).await;
    collector.settled().await;
    plain.settled().await;

    // Continuity before the finish: the rotation links join old and new hashes.
    let mut pairs = Vec::new();
    for zone in ZONES {
        let flags = ["--timezone", zone];
        pairs.push((
            Aggregator::start(&rotated_db, &flags).await,
            Aggregator::start(&plain_db, &flags).await,
        ));
    }
    expect_equal(&pairs, "during the rotation").await;

    // The finish job; a second run finds nothing left to do.
    let finished = rotate_keys(&rotated_db, "finish");
    assert!(finished.contains("pairs\t16"), "{finished}");
    rotate_keys(&rotated_db, "finish");

    let old = UserHasher::new(Some(OLD.as_bytes().to_vec()));
    let new = UserHasher::new(Some(NEW.as_bytes().to_vec()));
    let ch = clickhouse(&rotated_db);
    for user in (0..16).map(|u| format!("user-{u}")) {
        for (table, rows) in count_rows(&ch, old.hash(&user).as_str()).await {
            assert_eq!(rows, 0, "{table} still holds the old hash of {user}");
        }
        let moved = count_rows(&ch, new.hash(&user).as_str()).await;
        assert!(moved[0].1 > 0, "{user}'s events are under the new hash");
    }
    for leftover in [
        "SELECT count() FROM events WHERE user_hash_previous != ''",
        "SELECT count() FROM identity_links WHERE kind = 'rotation'",
        "SELECT count() FROM key_rotation_map",
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'key_rotation_staging_%'",
    ] {
        let n: u64 = ch.query(leftover).fetch_one().await.expect("count");
        assert_eq!(n, 0, "no pair is left: {leftover}");
    }
    // The anonymous visitor was not seen during the overlap: its old hash stays,
    // still linked to user-1's (now new) hash by the identify.
    let anon_links: u64 = ch
        .query("SELECT count() FROM identity_links WHERE linked_hash = ? AND known_hash = ?")
        .bind(old.hash("anon-1").as_str())
        .bind(new.hash("user-1").as_str())
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(anon_links, 1);
    // AWAY_APP's users were not seen during the overlap: their old hashes stay.
    let away: u64 = ch
        .query("SELECT count() FROM events WHERE app = ? AND user_hash = ?")
        .bind(AWAY_APP)
        .bind(old.hash("away-0").as_str())
        .fetch_one()
        .await
        .expect("count");
    assert!(away > 0);

    expect_equal(&pairs, "after rotate-keys finish").await;
    // And from a cold start (no saved day cache of the old hashes).
    for (rotated, _) in &mut pairs {
        rotated.stop();
        let _ = std::fs::remove_dir_all(&rotated.state_dir);
        rotated.start_again().await;
    }
    expect_equal(&pairs, "after the aggregator restarted").await;
}
