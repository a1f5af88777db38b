//! Bad input from the network gets a clear error and nothing else is lost: the
//! collector keeps serving, and the good records of a request are stored even when
//! others in it are rejected.

use growth_e2e::{Collector, clickhouse, unique_database};
use serde_json::{Value, json};

fn record(attrs: &[(&str, &str)]) -> Value {
    let minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() - 60_000_000_000)
        .unwrap_or_default();
    json!({
        "timeUnixNano": minute_ago.to_string(),
        "attributes": attrs.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>()
    })
}

fn request(records: Vec<Value>) -> Value {
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "hostile"}}]},
        "scopeLogs": [{"scope": {}, "logRecords": records}]
    }]})
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_clearly_and_good_records_survive() {
    let database = unique_database("hostile");
    let collector = Collector::start(&database, None).await;
    let url = format!("{}/v1/logs", collector.http_endpoint);
    let http = reqwest::Client::new();

    // Not protobuf at all.
    let r = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff_u8; 64])
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400, "garbage protobuf");
    // Not JSON at all.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"resourceLogs\": [")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400, "truncated JSON");
    let body = r.text().await.expect("body");
    assert!(!body.is_empty(), "a 400 says why");
    // A content type OTLP does not define.
    let r = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 415);
    // Far larger than any request should be (the default limit is 16 MiB).
    let r = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0_u8; 17 * 1024 * 1024])
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 413);

    // One request, three records: good, bad user.hash, good anonymous.
    let body = request(vec![
        record(&[("event.name", "expense_logged"), ("user.id", "good-user")]),
        record(&[
            ("event.name", "expense_logged"),
            ("user.hash", "NOT-A-HASH"),
        ]),
        record(&[("event.name", "report_requested")]),
    ]);
    let r = http.post(&url).json(&body).send().await.expect("answer");
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json answer");
    let rejected = &answer["partialSuccess"]["rejectedLogRecords"];
    assert!(
        rejected == &json!(1) || rejected == &json!("1"),
        "partial success names the rejected record: {answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_user_hash")),
        "the message says what was wrong: {answer}"
    );

    let stored: Vec<(String, String)> = clickhouse(&database)
        .query("SELECT event, user_hash FROM events ORDER BY event")
        .fetch_all()
        .await
        .expect("select");
    assert_eq!(stored.len(), 2, "the good records are stored: {stored:?}");
    assert_eq!(stored[0].0, "expense_logged");
    assert_eq!(stored[1], ("report_requested".to_owned(), String::new()));

    // Still alive and ready after all of it.
    let ready = reqwest::get(format!("{}/readyz", collector.admin))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", collector.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("growth_collector_records_rejected_total")
                && l.contains("invalid_user_hash")
                && l.ends_with(" 1")),
        "rejections are counted by reason:\n{metrics}"
    );
}
