//! Right to erasure, end to end (issue 20, item 3): two databases get the same
//! events; one also gets two more people (several days, several events, one of
//! their rows dead-lettered, a few rows still in the spool when the erasure is
//! asked for). They are erased with `growth-collector erase`, one by raw id, one by
//! hash, at once (the two requests coalesce). Afterwards every user table holds no
//! row of theirs, the spool and the dead-letter file hold no byte of their hashes,
//! and the aggregator's `/metrics` and JSON API (the dashboard's data) equal the run
//! that never saw them — also after the aggregator restarts from its saved day
//! cache. Unauthenticated requests are refused.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use clickhouse::sql::Identifier;
use common::{PlannedEvent, send_with_sdk};
use growth_e2e::{Aggregator, Collector, binary, clickhouse, eventually, unique_database};
use growth_schema::tables::{USER_TABLES, UserColumn};
use growth_schema::user_hash::UserHasher;
use sha2::{Digest as _, Sha256};

const APP: &str = "finbrain";
const KEY: &str = "erasure-test-key";
const TOKEN: &str = "erasure-admin-token";
const EVENTS: [&str; 3] = ["expense_logged", "app_opened", "report_viewed"];

fn at(now: DateTime<Utc>, days: i64, minutes: i64) -> DateTime<Utc> {
    now - chrono::Duration::days(days) - chrono::Duration::minutes(minutes)
}

fn event(name: &'static str, user: &str, at: DateTime<Utc>) -> PlannedEvent {
    PlannedEvent {
        name,
        user: Some(user.to_owned()),
        at,
    }
}

async fn send(collector: &Collector, events: &[PlannedEvent]) {
    let n = events.len() as u64;
    assert_eq!(
        send_with_sdk(&collector.grpc_endpoint, true, APP, Some(KEY), events).await,
        n
    );
}

/// The numbers the aggregator shows: every metric of /metrics but its own refresh
/// timing, and the JSON API's answers without their timestamps.
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
        "/api/v1/apps",
        "/api/v1/summary?app=finbrain",
        "/api/v1/active?app=finbrain&days=30",
        "/api/v1/retention?app=finbrain&period=day&cohorts=14&days=1,3,7&mode=on_day",
        "/api/v1/retention?app=finbrain&period=week&cohorts=4&days=1&mode=on_or_after",
        "/api/v1/events?app=finbrain&days=30",
        "/api/v1/events?app=finbrain&days=30&by=source",
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

/// Waits up to 60 s for both aggregators to show the same numbers.
async fn expect_equal(with: &Aggregator, without: &Aggregator, what: &str) {
    let mut last = None;
    for _ in 0..120 {
        let (a, b) = (numbers(with).await, numbers(without).await);
        if a == b {
            return;
        }
        last = Some((a, b));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (a, b) = last.expect("compared");
    for (k, v) in &a {
        if b.get(k) != Some(v) {
            eprintln!("{k}:\n  erased run: {v}\n  never saw:  {}", b[k]);
        }
    }
    panic!("{what}: the aggregators differ\n{}", with.process.output());
}

fn erase(
    collector: &Collector,
    token_file: &std::path::Path,
    by_hash: bool,
    lines: &str,
) -> std::process::Child {
    let admin = collector.admin.trim_start_matches("http://");
    let mut args = vec!["erase", "--admin-addr", admin, "--token-file"];
    let token = token_file.to_str().expect("path");
    args.push(token);
    if by_hash {
        args.push("--hashes");
    }
    let mut child = Command::new(binary("growth-collector"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("erase runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("ids written");
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_person_leaves_no_trace() {
    let since_midnight = Utc::now().time().num_seconds_from_midnight();
    if !(600..86_000).contains(&since_midnight) {
        tokio::time::sleep(Duration::from_secs(u64::from(
            (86_400 + 600 - since_midnight) % 86_400,
        )))
        .await;
    }
    let now = Utc::now() - chrono::Duration::minutes(1);
    let hasher = UserHasher::new(Some(KEY.as_bytes().to_vec()));
    let (ann, bo) = ("ann@example.com", "bo-4711");
    let (ann_hash, bo_hash) = (
        hasher.hash(ann).into_string(),
        hasher.hash(bo).into_string(),
    );

    let never = unique_database("erasure_never");
    let erased = unique_database("erasure_erased");
    let dir = std::env::temp_dir().join(format!("growth-e2e-erasure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("admin-tokens");
    std::fs::write(
        &tokens,
        format!("sha256:{}\n", hex::encode(Sha256::digest(TOKEN))),
    )
    .expect("tokens");
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");

    let plain = Collector::start(&never, Some(KEY)).await;
    let collector = Collector::start_with(
        &erased,
        Some(KEY),
        &[
            "--admin-token-file",
            tokens.to_str().expect("path"),
            "--batch-max-delay",
            "3s",
            "--batch-quiet-rows",
            "0",
        ],
    )
    .await;
    // A row ClickHouse refuses for good: Ann's "poison" event is dead-lettered.
    clickhouse(&erased)
        .query("ALTER TABLE events ADD CONSTRAINT no_poison CHECK event != 'poison'")
        .execute()
        .await
        .expect("constraint");

    // Everyone else: 12 people over 10 days.
    let mut common = Vec::new();
    for user in 0..12 {
        for day in 0..10i64 {
            if (user + day) % 3 != 0 {
                let name = EVENTS[((user + day) % 3) as usize];
                common.push(event(name, &format!("user-{user}"), at(now, day, user * 7)));
            }
        }
    }
    // The two people to erase: first seen 8 and 6 days ago, back on several days,
    // with events of every name, in quarter-hours and days others use too.
    let mut people = Vec::new();
    for (who, days) in [(ann, [8i64, 7, 5, 2, 0]), (bo, [6, 5, 4, 1, 0])] {
        for (i, day) in days.into_iter().enumerate() {
            for name in EVENTS {
                people.push(event(name, who, at(now, day, 3 + i as i64)));
            }
        }
    }
    people.push(event("poison", ann, at(now, 3, 2)));
    send(&plain, &common).await;
    send(&collector, &common).await;
    send(&collector, &people).await;
    plain.settled().await;
    collector.settled().await;
    let dead = std::fs::read_to_string(collector.spool_dir.join("dead-letter.jsonl"))
        .expect("a dead letter");
    assert!(
        dead.contains(&ann_hash),
        "Ann's poison row is dead-lettered: {dead}"
    );

    let without = Aggregator::start(&never, &[]).await;
    let mut with = Aggregator::start(&erased, &[]).await;
    // The aggregator has cached the days with the two people in them.
    eventually(
        "the aggregator to see the two people",
        Duration::from_secs(60),
        || async {
            let (a, b) = (numbers(&with).await, numbers(&without).await);
            (a["growth_active_users"] != b["growth_active_users"]).then_some(())
        },
    )
    .await;

    // Refused without the token, and with a wrong one.
    let http = reqwest::Client::new();
    let url = format!("{}/admin/erasures", collector.admin);
    let body = format!(r#"{{"user_hashes":["{ann_hash}"]}}"#);
    let anonymous = http
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .post(&url)
        .bearer_auth("nope")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);
    let off = http
        .post(format!("{}/admin/erasures", plain.admin))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(off.status(), 403, "no --admin-token-file: erasure is off");

    // A few more rows of both, acknowledged (spooled) but not yet inserted (the batch
    // delay is 3 s) when the erasure is asked for.
    let late = vec![
        event("expense_logged", ann, at(now, 0, 5)),
        event("app_opened", bo, at(now, 0, 6)),
    ];
    send(&collector, &late).await;
    let by_id = erase(&collector, &token_file, false, &format!("{ann}\n"));
    let by_hash = erase(&collector, &token_file, true, &format!("{bo_hash}\n"));
    for (what, child) in [("by id", by_id), ("by hash", by_hash)] {
        let out = child.wait_with_output().expect("erase ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "erase {what}: {stdout}\n{stderr}\n{}",
            collector.process.output()
        );
        assert!(
            stdout.contains("events"),
            "erase {what} prints the rows removed: {stdout}"
        );
        eprintln!("erase {what}:\n{stdout}{stderr}");
    }

    // Every user table: no row of either.
    let ch = clickhouse(&erased);
    for hash in [&ann_hash, &bo_hash] {
        let key: u64 = ch
            .query("SELECT cityHash64(?)")
            .bind(hash.as_str())
            .fetch_one()
            .await
            .expect("key");
        for &(table, column) in USER_TABLES {
            let rows: u64 = match column {
                UserColumn::Hash => ch
                    .query("SELECT count() FROM ? WHERE user_hash = ?")
                    .bind(Identifier(table))
                    .bind(hash.as_str()),
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
            assert_eq!(rows, 0, "{table} still holds rows of {hash}");
        }
    }
    // Every table of the database that names users is in USER_TABLES.
    let user_tables: Vec<String> = ch
        .query(
            "SELECT DISTINCT table FROM system.columns
             WHERE database = currentDatabase() AND (endsWith(name, '_hash') OR endsWith(name, '_key'))
               AND table IN (SELECT name FROM system.tables
                             WHERE database = currentDatabase() AND engine LIKE '%MergeTree')",
        )
        .fetch_all()
        .await
        .expect("tables");
    for table in user_tables {
        assert!(
            USER_TABLES.iter().any(|(t, _)| *t == table),
            "{table} holds users but is not in growth_schema::tables::USER_TABLES"
        );
    }

    // The spool and the dead-letter file hold no byte of them; the audit has a line each.
    for entry in std::fs::read_dir(&collector.spool_dir).expect("spool") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name == "erasures.jsonl" {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        for hash in [&ann_hash, &bo_hash] {
            assert!(!text.contains(hash.as_str()), "{name} still holds {hash}");
        }
        assert!(
            !text.contains(ann) && !text.contains(bo),
            "{name} holds a raw id"
        );
    }
    let audit = std::fs::read_to_string(collector.spool_dir.join("erasures.jsonl")).expect("audit");
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert!(
        !audit.contains(ann) && !audit.contains(bo),
        "no raw id in the audit"
    );
    for line in &lines {
        let removed = &line["removed"];
        assert!(removed["events"].as_u64().unwrap_or(0) >= 15, "{line}");
        assert!(
            removed["user_quarter_hours"].as_u64().unwrap_or(0) >= 5,
            "{line}"
        );
        assert!(
            line["erasure"].is_string() && line["time"].is_string(),
            "{line}"
        );
        if line["hash"] == ann_hash.as_str() {
            assert_eq!(removed["dead-letter"], 1, "{line}");
        }
    }
    assert!(
        !collector.process.output().contains(ann),
        "the raw id is never logged"
    );

    // The aggregators agree, live and after a restart from the saved day cache.
    plain.settled().await;
    expect_equal(&with, &without, "after the erasure").await;
    with.stop();
    with.start_again().await;
    expect_equal(&with, &without, "after the aggregator restarted").await;
    for entry in std::fs::read_dir(&with.state_dir).expect("state dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("state file");
        for hash in [&ann_hash, &bo_hash] {
            let key: u64 = ch
                .query("SELECT cityHash64(?)")
                .bind(hash.as_str())
                .fetch_one()
                .await
                .expect("key");
            assert!(
                !bytes.windows(8).any(|w| w == key.to_le_bytes()),
                "the saved day cache still holds the user key of {hash}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
