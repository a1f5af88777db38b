//! (a) Events tracked with growth-sdk, over gRPC and over HTTP, arrive in ClickHouse
//! with the right hashes and fields.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use growth_e2e::{Collector, clickhouse, unique_database};
use growth_schema::tables::EventRow;
use growth_schema::user_hash::UserHasher;
use growth_sdk::{Event, Protocol, Source, Tracker};

const KEY: &str = "sdk-test-key";

fn send(
    endpoint: String,
    protocol: Protocol,
    app: &str,
    at: SystemTime,
) -> growth_sdk::DeliveryReport {
    let client = Tracker::builder(app)
        .endpoint(endpoint)
        .protocol(protocol)
        .user_hash_key(Some(KEY.as_bytes().to_vec()))
        .build()
        .expect("SDK builds");
    client.track_event(Event::expense_logged("alice", 12.5, "groceries", Source::Messenger).at(at));
    client.track_event(Event::expense_edited("alice", "exp-1").at(at));
    client.track_event(Event::report_requested("bob", "monthly").at(at));
    client.track_event(Event::pwa_installed("carol").at(at));
    client.track_event(Event::challenge_started("carol", "no-coffee-week").at(at));
    client.track(
        "expense_logged",
        Some("dave"),
        &[("amount", 3.25.into()), ("category", "transport".into())],
    );
    client.shutdown().expect("SDK delivered everything")
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_events_arrive_over_grpc_and_http() {
    let database = unique_database("sdk");
    let collector = Collector::start(&database, Some(KEY)).await;
    let at = SystemTime::now() - Duration::from_secs(3600);
    let at_ms = DateTime::<Utc>::from(at).timestamp_millis();

    for (protocol, endpoint, app) in [
        (Protocol::Grpc, collector.grpc_endpoint.clone(), "sdk-grpc"),
        (Protocol::Http, collector.http_endpoint.clone(), "sdk-http"),
    ] {
        let report = tokio::task::spawn_blocking(move || send(endpoint, protocol, app, at))
            .await
            .expect("sender");
        assert_eq!(
            (report.delivered, report.failed, report.dropped),
            (6, 0, 0),
            "{app}: {report:?}"
        );
    }

    // Acknowledged means spooled: wait until the writer has stored it.
    collector.settled().await;
    let ch = clickhouse(&database);
    let hasher = UserHasher::new(Some(KEY.as_bytes().to_vec()));
    for app in ["sdk-grpc", "sdk-http"] {
        let rows: Vec<EventRow> = ch
            .query("SELECT ?fields FROM events WHERE app = ? ORDER BY event, user_hash")
            .bind(app)
            .fetch_all()
            .await
            .expect("select");
        assert_eq!(rows.len(), 6, "{app}: {rows:#?}");
        let find = |event: &str, user: &str| {
            let hash = hasher.hash(user);
            rows.iter()
                .find(|r| r.event == event && r.user_hash == hash.as_str())
                .unwrap_or_else(|| {
                    panic!("{app}: no {event} of {user} hashed as {hash}: {rows:#?}")
                })
        };
        let prop = |r: &EventRow, k: &str| {
            r.properties
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let num =
            |r: &EventRow, k: &str| r.numbers.iter().find(|(key, _)| key == k).map(|(_, v)| *v);

        let expense = find("expense_logged", "alice");
        assert_eq!(expense.source, "messenger");
        assert_eq!(
            expense.event_time.timestamp_millis(),
            at_ms,
            "the event's own time is kept"
        );
        assert_eq!(num(expense, "amount"), Some(12.5));
        assert_eq!(prop(expense, "category").as_deref(), Some("groceries"));
        assert_eq!(
            prop(find("expense_edited", "alice"), "expense_id").as_deref(),
            Some("exp-1")
        );
        assert_eq!(
            prop(find("report_requested", "bob"), "report_type").as_deref(),
            Some("monthly")
        );
        find("pwa_installed", "carol");
        find("challenge_started", "carol");
        let tracked = find("expense_logged", "dave");
        assert_eq!(num(tracked, "amount"), Some(3.25));
        assert!(
            (Utc::now() - tracked.event_time).num_seconds().abs() < 120,
            "track() stamps the current time"
        );
        for r in &rows {
            for raw in ["alice", "bob", "carol", "dave"] {
                assert!(
                    !format!("{r:?}").contains(raw),
                    "raw id {raw} stored: {r:?}"
                );
            }
        }
    }
}
