//! The aggregator tells operators when its numbers go stale: when every refresh
//! fails, `/readyz` turns 503 after `--ready-max-intervals` intervals while `/healthz`
//! stays 200, `/metrics` keeps the last good numbers and counts the failures.

use std::time::Duration;

use growth_e2e::{Aggregator, clickhouse, eventually, unique_database};

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_when_refreshes_fail_and_errors_are_counted() {
    let database = unique_database("operable");
    // The aggregator creates the database and its tables itself (migrations).
    let aggregator = Aggregator::start(&database, &["--ready-max-intervals", "2"]).await;
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", aggregator.url);
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(status("/readyz").await, 200);
    let metrics = aggregator.metrics().await;
    let errors = |m: &growth_e2e::Exposition| {
        m.samples
            .iter()
            .find(|s| s.name == "growth_metrics_refresh_errors_total")
            .map(|s| s.value)
    };
    assert_eq!(errors(&metrics), Some(0.0));
    assert!(
        metrics
            .samples
            .iter()
            .any(|s| s.name == "growth_metrics_refresh_duration_seconds" && s.value > 0.0)
    );

    // Every refresh fails from now on: the tables are gone.
    clickhouse(&database)
        .query("DROP DATABASE ?")
        .bind(clickhouse::sql::Identifier(&database))
        .execute()
        .await
        .expect("drop database");
    eventually("/readyz to fail", Duration::from_secs(20), || async {
        (status("/readyz").await == 503).then_some(())
    })
    .await;
    assert_eq!(status("/healthz").await, 200, "the process is alive");
    let metrics = aggregator.metrics().await;
    assert!(
        errors(&metrics).is_some_and(|e| e >= 1.0),
        "failed refreshes are counted"
    );
}
