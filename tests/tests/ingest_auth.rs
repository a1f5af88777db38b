//! Ingest authentication with a stock client: the official OpenTelemetry Python SDK
//! sends its bearer token from `OTEL_EXPORTER_OTLP_HEADERS`, as any OTel SDK does.
//! A token writes only its apps; a wrong token stores nothing; the tokens file is
//! re-read on SIGHUP.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use growth_e2e::{Collector, clickhouse, eventually, python, repo_root, unique_database};
use serde_json::json;

/// Sends one growth event per protocol in `protocols` with `token` (none when
/// `None`) as `service`.
fn send(collector: &Collector, protocols: &[&str], service: &str, token: Option<&str>, case: &str) {
    for protocol in protocols {
        let endpoint = match *protocol {
            "grpc" => &collector.grpc_endpoint,
            _ => &collector.http_endpoint,
        };
        let records = json!([{
            "event_name": "expense_logged",
            "attributes": {"user.id": "auth-user", "case": case, "protocol": protocol}
        }]);
        let mut command = Command::new(python());
        command
            .arg(repo_root().join("tests/python/otel_send.py"))
            .args([
                "--endpoint",
                endpoint,
                "--protocol",
                protocol,
                "--service-name",
                service,
            ])
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            // Header values are URL-encoded in this variable (OTel specification).
            command.env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("authorization=Bearer%20{token}"),
            );
        }
        let mut child = command.spawn().expect("python starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(records.to_string().as_bytes())
            .expect("records");
        // The SDK reports a refused export only in its log, not in its exit status.
        child.wait_with_output().expect("python finishes");
    }
}

async fn stored(database: &str, case: &str) -> u64 {
    clickhouse(database)
        .query("SELECT count() FROM events WHERE properties['case'] = ?")
        .bind(case)
        .fetch_one()
        .await
        .expect("count")
}

async fn refused_unauthenticated(collector: &Collector) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", collector.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("growth_collector_requests_refused_total{reason=\"unauthenticated\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no unauthenticated counter:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_let_in_their_apps_only_and_reload_on_sighup() {
    let database = unique_database("auth");
    let dir = std::env::temp_dir().join(format!("growth-auth-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens.jsonl");
    std::fs::write(
        &tokens,
        "{\"token\": \"first-token\", \"apps\": [\"finbrain\"]}\n",
    )
    .expect("tokens");
    let flag = format!("--auth-tokens-file={}", tokens.display());
    let collector = Collector::start_with(&database, None, &[&flag]).await;

    // Each refusal over one protocol (the table of tests/tests/hostile_input.rs has
    // both); a Python interpreter start costs more than a second.
    send(
        &collector,
        &["grpc", "http"],
        "finbrain",
        Some("first-token"),
        "allowed",
    );
    send(
        &collector,
        &["grpc"],
        "finbrain",
        Some("wrong-token"),
        "wrong",
    );
    send(&collector, &["http"], "finbrain", None, "missing");
    send(
        &collector,
        &["grpc"],
        "other-app",
        Some("first-token"),
        "forbidden",
    );
    assert_eq!(
        stored(&database, "allowed").await,
        2,
        "gRPC and HTTP with the right token"
    );
    for case in ["wrong", "missing", "forbidden"] {
        assert_eq!(stored(&database, case).await, 0, "{case}");
    }
    assert!(refused_unauthenticated(&collector).await >= 2);
    let log = collector.process.output();
    assert!(
        !log.contains("first-token") && !log.contains("wrong-token"),
        "a token was logged:\n{log}"
    );

    // A new file, then SIGHUP: the new token works, the old one no longer does.
    std::fs::write(
        &tokens,
        "{\"token\": \"second-token\", \"apps\": [\"*\"]}\n",
    )
    .expect("tokens");
    let hup = Command::new("kill")
        .args(["-HUP", &collector.process.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    eventually("the reload", Duration::from_secs(10), || async {
        collector
            .process
            .output()
            .contains("auth tokens reloaded")
            .then_some(())
    })
    .await;
    send(
        &collector,
        &["grpc", "http"],
        "other-app",
        Some("second-token"),
        "after_reload",
    );
    send(
        &collector,
        &["http"],
        "finbrain",
        Some("first-token"),
        "old_token",
    );
    assert_eq!(stored(&database, "after_reload").await, 2);
    assert_eq!(stored(&database, "old_token").await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
