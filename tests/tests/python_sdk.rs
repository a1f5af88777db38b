//! The Python package (`sdk/python`, growth_sdk) against the real collector: its
//! own unit tests pass; its finance events arrive over gRPC and HTTP hashed
//! exactly as the Rust hasher hashes (the collector's key); and a collector
//! SIGKILLed and restarted while Python tracks loses nothing.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use growth_e2e::{Collector, clickhouse, python, repo_root, unique_database};
use growth_schema::tables::EventRow;
use growth_schema::user_hash::UserHasher;

const KEY: &str = "python-sdk-key";

fn sender(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let root = repo_root();
    let mut command = Command::new(python());
    command
        .arg(root.join("sdk/python/examples/send_events.py"))
        .args(args)
        .env("PYTHONPATH", root.join("sdk/python"))
        .env("GROWTH_USER_HASH_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    command
}

fn report(output: Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python sender failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("a JSON report")
}

#[test]
fn the_python_package_unit_tests_pass() {
    let root = repo_root();
    let output = Command::new(python())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(root.join("sdk/python/tests"))
        .arg("-t")
        .arg(root.join("sdk/python"))
        .env("PYTHONPATH", root.join("sdk/python"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python unit tests failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_finance_events_arrive_hashed_like_rust() {
    let database = unique_database("python_sdk");
    let collector = Collector::start(&database, Some(KEY)).await;
    for (protocol, endpoint, app) in [
        ("grpc", collector.grpc_endpoint.clone(), "py-sdk-grpc"),
        (
            "http/protobuf",
            collector.http_endpoint.clone(),
            "py-sdk-http",
        ),
    ] {
        let output = tokio::task::spawn_blocking(move || {
            sender(
                &["--app", app, "--finance"],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ],
            )
            .output()
            .expect("python runs")
        })
        .await
        .expect("sender");
        let report = report(output);
        assert_eq!(report["delivered"], 6, "{app}: {report}");
    }
    collector.settled().await;
    let hasher = UserHasher::new(Some(KEY.as_bytes().to_vec()));
    for app in ["py-sdk-grpc", "py-sdk-http"] {
        let rows: Vec<EventRow> = clickhouse(&database)
            .query("SELECT ?fields FROM events WHERE app = ? ORDER BY event")
            .bind(app)
            .fetch_all()
            .await
            .expect("select");
        let events: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.event.as_str(), r.user_hash.as_str()))
            .collect();
        let (alice, bob, carol, dave) = (
            hasher.hash("alice"),
            hasher.hash("bob"),
            hasher.hash("carol"),
            hasher.hash("dave"),
        );
        assert_eq!(
            events,
            [
                ("challenge_started", carol.as_str()),
                ("expense_edited", alice.as_str()),
                ("expense_logged", alice.as_str()),
                ("identify", dave.as_str()),
                ("pwa_installed", carol.as_str()),
                ("report_requested", bob.as_str()),
            ],
            "{app}"
        );
        let expense = &rows[2];
        assert_eq!(expense.source, "messenger");
        assert!(
            expense
                .numbers
                .iter()
                .any(|(k, v)| k == "amount" && *v == 12.5)
        );
        let identify = &rows[3];
        assert!(
            identify
                .properties
                .iter()
                .any(|(k, v)| k == "anonymous.hash" && *v == hasher.hash("visitor-7").as_str()),
            "{identify:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_restart_loses_nothing_from_python() {
    let database = unique_database("python_restart");
    let mut collector = Collector::start(&database, Some(KEY)).await;
    let endpoint = collector.http_endpoint.clone();
    let child: Child = sender(
        &["--app", "py-restart", "--rate", "200", "--seconds", "10"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )
    .spawn()
    .expect("python runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    collector.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    collector.start_again().await;
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("python ends"))
            .await
            .expect("join");
    let report = report(output);
    let tracked = report["tracked"].as_u64().expect("tracked");
    assert!(tracked > 1000, "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(tracked), "{report}");
    assert!(
        report["retries"].as_u64() > Some(0),
        "the outage was noticed: {report}"
    );
    collector.settled().await;
    let (distinct, rows): (u64, u64) = clickhouse(&database)
        .query("SELECT uniqExact(properties['seq']), count() FROM events WHERE app = 'py-restart'")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(distinct, tracked);
    assert!(rows >= tracked);
}
