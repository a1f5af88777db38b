//! The JSON API's questions on the raw `events` table must let ClickHouse skip what
//! they do not ask for: their day range has to reach the stored UTC `day` column (the
//! partition and sort key). An alias of the same name in the SELECT silently shadows
//! that column in WHERE — the answer stays exact, but every partition is read.
//! ClickHouse's `force_index_by_date` / `force_primary_key` turn such a full scan
//! into an error, so the library's own query runs here with both set.

use std::time::Duration;

use chrono::NaiveDate;
use growth_aggregator::definitions::MetricDefinitions;
use growth_aggregator::on_demand::{EventDay, Split, events_per_day};
use growth_aggregator::source::MetricsSource;
use growth_e2e::{clickhouse, clickhouse_url, unique_database};
use growth_schema::migrate::migrate;

#[tokio::test]
async fn events_by_source_prunes_by_the_stored_day() {
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    let db = unique_database("pruning");
    migrate(&server, &db).await.expect("migrate");

    // Three UTC months (three partitions). In Asia/Kolkata (UTC+5:30) 18:00Z is
    // 23:30 of the same day and 19:00Z 00:30 of the next.
    let rows = [
        ("2026-01-15 12:00:00", "form"),
        ("2026-02-15 12:00:00", "pwa"),
        ("2026-03-09 18:00:00", "form"),
        ("2026-03-09 19:00:00", "messenger"),
        ("2026-03-10 12:00:00", "form"),
        ("2026-03-11 18:29:59", "pwa"),
        ("2026-03-11 18:30:00", "pwa"),
    ];
    for (at, source) in rows {
        clickhouse(&db)
            .query("INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at) VALUES ('finbrain', 'expense_logged', toDateTime64(?, 3, 'UTC'), ?, ?, map(), map(), now64(3))")
            .bind(at)
            .bind("b".repeat(64))
            .bind(source)
            .execute()
            .await
            .expect("insert");
    }

    let strict = clickhouse(&db)
        .with_setting("force_index_by_date", "1")
        .with_setting("force_primary_key", "1");
    let source = MetricsSource::new(strict, Duration::from_secs(10));
    let defs = MetricDefinitions {
        timezone: chrono_tz::Asia::Kolkata,
        active_events: Vec::new(),
        retention_days: vec![1],
        cohorts: 7,
    };
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
    let (keys, days) = events_per_day(
        &source,
        &defs,
        "finbrain",
        date("2026-03-11"),
        2,
        Split::Source,
        None,
    )
    .await
    .expect("the query uses the stored day to skip partitions");

    assert_eq!(keys, ["form", "messenger", "pwa"]);
    let day = |on: &str, counts: &[(&str, u64)]| EventDay {
        day: date(on),
        total: counts.iter().map(|(_, n)| n).sum(),
        counts: counts.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
    };
    assert_eq!(
        days,
        [
            day("2026-03-10", &[("form", 1), ("messenger", 1)]),
            day("2026-03-11", &[("pwa", 1)]),
        ]
    );

    server
        .query("DROP DATABASE ?")
        .bind(clickhouse::sql::Identifier(&db))
        .execute()
        .await
        .expect("drop");
}
