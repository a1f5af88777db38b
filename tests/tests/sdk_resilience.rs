//! growth-sdk against the real collector and ClickHouse when it matters: a burst
//! delivered whole, a collector killed and restarted under load without losing an
//! event, and the ingest token sent from `OTEL_EXPORTER_OTLP_HEADERS`.

use std::time::{Duration, Instant};

use growth_e2e::{Collector, clickhouse, unique_database};
use growth_sdk::{Protocol, Tracker};

/// Distinct `seq` values stored for `app`, and rows stored.
async fn stored(database: &str, app: &str) -> (u64, u64) {
    clickhouse(database)
        .query("SELECT uniqExact(properties['seq']), count() FROM events WHERE app = ?")
        .bind(app)
        .fetch_one::<(u64, u64)>()
        .await
        .expect("count")
}

fn tracker(app: &str, endpoint: &str, protocol: Protocol) -> Tracker {
    Tracker::builder(app)
        .env_vars::<&str, &str>([])
        .endpoint(endpoint)
        .protocol(protocol)
        .batch_delay(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(60))
        .build()
        .expect("SDK builds")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_delivered_whole() {
    const BURST: u64 = 50_000;
    let database = unique_database("sdk_burst");
    let collector = Collector::start(&database, None).await;
    let endpoint = collector.grpc_endpoint.clone();
    let report = tokio::task::spawn_blocking(move || {
        let tracker = tracker("burst", &endpoint, Protocol::Grpc);
        for seq in 0..BURST {
            tracker.track(
                "expense_logged",
                Some(&format!("user-{}", seq % 1000)),
                &[("seq", (seq as i64).into()), ("amount", 1.5.into())],
            );
        }
        tracker.shutdown()
    })
    .await
    .expect("sender");
    let report = report.unwrap_or_else(|error| panic!("burst not delivered whole: {error}"));
    assert_eq!((report.delivered, report.dropped), (BURST, 0), "{report}");
    collector.settled().await;
    let (distinct, rows) = stored(&database, "burst").await;
    assert_eq!(distinct, BURST);
    assert!(rows >= BURST);
}

/// Tracks at a steady pace while the collector is SIGKILLed and restarted: every
/// event tracked arrives (some possibly twice: a batch stored before the kill
/// whose answer was lost is sent again).
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_restart_loses_nothing() {
    const OUTAGE: Duration = Duration::from_secs(8);
    let database = unique_database("sdk_restart");
    let mut collector = Collector::start(&database, None).await;
    let senders: Vec<_> = [
        (
            "restart-grpc",
            collector.grpc_endpoint.clone(),
            Protocol::Grpc,
        ),
        (
            "restart-http",
            collector.http_endpoint.clone(),
            Protocol::Http,
        ),
    ]
    .into_iter()
    .map(|(app, endpoint, protocol)| {
        std::thread::spawn(move || {
            let tracker = tracker(app, &endpoint, protocol);
            let started = Instant::now();
            let mut seq = 0i64;
            // 200 events a second for the outage and 3 s around it.
            while started.elapsed() < OUTAGE + Duration::from_secs(3) {
                tracker.track(
                    "expense_logged",
                    Some(&format!("user-{}", seq % 50)),
                    &[("seq", seq.into())],
                );
                seq += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (app, tracker.shutdown())
        })
    })
    .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    collector.kill();
    tokio::time::sleep(OUTAGE).await;
    collector.start_again().await;

    let mut results = Vec::new();
    for sender in senders {
        results.push(
            tokio::task::spawn_blocking(move || sender.join().expect("sender"))
                .await
                .expect("join"),
        );
    }
    collector.settled().await;
    for (app, result) in results {
        let report = result.unwrap_or_else(|error| panic!("{app}: events lost: {error}"));
        assert!(
            report.retries > 0,
            "{app}: the outage was noticed: {report}"
        );
        assert_eq!(report.delivered, report.tracked, "{app}: {report}");
        let (distinct, rows) = stored(&database, app).await;
        assert_eq!(distinct, report.tracked, "{app}: every event stored");
        assert!(rows >= report.tracked, "{app}");
    }
}

/// The collector's ingest token travels in `OTEL_EXPORTER_OTLP_HEADERS`; without
/// it the collector refuses, and the SDK reports the refusal instead of retrying.
#[tokio::test(flavor = "multi_thread")]
async fn the_ingest_token_comes_from_otel_exporter_otlp_headers() {
    let database = unique_database("sdk_token");
    let dir = std::env::temp_dir().join(format!("growth-sdk-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens.jsonl");
    std::fs::write(
        &tokens,
        "{\"token\": \"s3cret-token\", \"apps\": [\"tokened\"]}\n",
    )
    .expect("tokens file");
    let collector = Collector::start_with(
        &database,
        None,
        &["--auth-tokens-file", tokens.to_str().expect("path")],
    )
    .await;
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let endpoint = match protocol {
            Protocol::Grpc => collector.grpc_endpoint.clone(),
            Protocol::Http => collector.http_endpoint.clone(),
        };
        let (with_token, without) = tokio::task::spawn_blocking(move || {
            let send = |headers: &str| {
                let tracker = Tracker::builder("tokened")
                    .env_vars([
                        ("OTEL_EXPORTER_OTLP_HEADERS", headers),
                        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                        (
                            "OTEL_EXPORTER_OTLP_PROTOCOL",
                            match protocol {
                                Protocol::Grpc => "grpc",
                                Protocol::Http => "http/protobuf",
                            },
                        ),
                        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                    ])
                    .shutdown_timeout(Duration::from_secs(10))
                    .build()
                    .expect("builds");
                tracker.track("expense_logged", Some("u1"), &[]);
                tracker.shutdown()
            };
            (send("authorization=Bearer%20s3cret-token"), send(""))
        })
        .await
        .expect("sender");
        let report = with_token.unwrap_or_else(|error| panic!("{protocol}: {error}"));
        assert_eq!(report.delivered, 1, "{protocol}");
        let refused = without.expect_err("no token, no delivery");
        let report = refused.report().cloned().expect("report");
        assert_eq!(
            (report.failed, report.retries),
            (1, 0),
            "{protocol}: {report}"
        );
    }
    collector.settled().await;
    let (_, rows) = stored(&database, "tokened").await;
    assert_eq!(rows, 2);
    let _ = std::fs::remove_dir_all(dir);
}
