//! The nesting attack against a saturated collector (issue "no request can crash the
//! collector"): log bodies and attributes nested 200,000 levels deep, as arrays and
//! as key-value lists, over OTLP/HTTP (protobuf and JSON) and OTLP/gRPC, sent by many
//! senders at once while others keep the one request slot busy with good requests,
//! so that most hostile requests are turned away for load (the path that used to
//! walk them without a depth limit and overflow the stack). Afterwards the
//! collector must be alive and ready, and store the next good record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use growth_e2e::{Collector, clickhouse, eventually, unique_database};
use growth_testkit::otlp::{RawCodec, text};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

const APP: &str = "nesting";
const DEPTH: usize = 200_000;
/// How long the hostile and the good senders run side by side.
const ATTACK: Duration = Duration::from_secs(6);

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn record(case: &str, user: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: now_nanos() - 1_000_000_000,
        event_name: "expense_logged".into(),
        attributes: vec![text("user.id", user), text("case", case)],
        ..Default::default()
    }
}

fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![text("service.name", APP)],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn varint(out: &mut Vec<u8>, n: usize) {
    prost::encoding::encode_varint(n as u64, out);
}

fn varint_len(n: usize) -> usize {
    prost::encoding::encoded_len_varint(n as u64)
}

/// A protobuf request whose one record nests `depth` levels deep, built without
/// recursion (prost's own encoder recurses): every level is a tag and a length in
/// front of what it holds, so the lengths are computed from the inside out and the
/// prefixes written from the outside in. As a kvlist, each level is
/// `AnyValue.kvlist_value(6) → KeyValueList.values(1) → KeyValue{key(1)="k", value(2)}`;
/// as an array, `AnyValue.array_value(5) → ArrayValue.values(1)`. The nest is the
/// record's body (field 5) or one attribute's value (field 6).
fn deep_request(depth: usize, kvlist: bool, in_attribute: bool) -> Vec<u8> {
    // The innermost AnyValue: string_value "x".
    let leaf = [0x0a_u8, 0x01, b'x'];
    // Per level, from the inside: the prefixes of each message, inner first.
    let mut size = leaf.len();
    let mut prefixes: Vec<Vec<u8>> = Vec::with_capacity(depth * 3);
    for _ in 0..depth {
        let mut level = Vec::new();
        if kvlist {
            // KeyValue { key = "k", value = <AnyValue> }
            let mut kv = vec![0x0a, 0x01, b'k', 0x12];
            varint(&mut kv, size);
            let kv_size = kv.len() + size;
            // KeyValueList { values = <KeyValue> }
            let mut list = vec![0x0a];
            varint(&mut list, kv_size);
            let list_size = list.len() + kv_size;
            // AnyValue { kvlist_value = <KeyValueList> }
            let mut any = vec![0x32];
            varint(&mut any, list_size);
            size = any.len() + list_size;
            level.extend(any);
            level.extend(list);
            level.extend(kv);
        } else {
            let mut array = vec![0x0a];
            varint(&mut array, size);
            let array_size = array.len() + size;
            let mut any = vec![0x2a];
            varint(&mut any, array_size);
            size = any.len() + array_size;
            level.extend(any);
            level.extend(array);
        }
        prefixes.push(level);
    }
    // The record: a good event around the nest.
    let mut record = record("deep", "deep-user").encode_to_vec();
    if in_attribute {
        // KeyValue { key = "deep", value = <nest> } as attribute (field 6).
        let kv_size = 2 + 4 + varint_len(size) + size;
        record.push(0x32);
        varint(&mut record, kv_size);
        record.extend([0x0a, 0x04, b'd', b'e', b'e', b'p', 0x12]);
        varint(&mut record, size);
    } else {
        record.push(0x2a);
        varint(&mut record, size);
    }
    let record_size = record.len() + size;
    let resource = Resource {
        attributes: vec![text("service.name", APP)],
        ..Default::default()
    }
    .encode_to_vec();
    let scope_size = 1 + varint_len(record_size) + record_size;
    let resource_logs_size =
        1 + varint_len(resource.len()) + resource.len() + 1 + varint_len(scope_size) + scope_size;
    let mut out = Vec::with_capacity(resource_logs_size + 16);
    out.push(0x0a);
    varint(&mut out, resource_logs_size);
    out.push(0x0a);
    varint(&mut out, resource.len());
    out.extend(&resource);
    out.push(0x12);
    varint(&mut out, scope_size);
    out.push(0x12);
    varint(&mut out, record_size);
    out.extend(&record);
    for level in prefixes.iter().rev() {
        out.extend(level);
    }
    out.extend(leaf);
    assert_eq!(
        out.len(),
        1 + varint_len(resource_logs_size) + resource_logs_size
    );
    out
}

/// The same attack in OTLP/JSON: a body of arrays nested `depth` deep.
fn deep_json(depth: usize) -> Vec<u8> {
    let mut body = String::with_capacity(depth * 32);
    for _ in 0..depth {
        body.push_str("{\"arrayValue\":{\"values\":[");
    }
    body.push_str("{\"stringValue\":\"x\"}");
    for _ in 0..depth {
        body.push_str("]}}");
    }
    format!(
        "{{\"resourceLogs\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"service.name\",\"value\":{{\"stringValue\":\"{APP}\"}}}}]}},\"scopeLogs\":[{{\"logRecords\":[{{\"eventName\":\"expense_logged\",\"body\":{body}}}]}}]}}]}}"
    )
    .into_bytes()
}

/// One unary Export call with `body` as the message; the gRPC status code.
async fn grpc_export(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    body: Vec<u8>,
) -> tonic::Code {
    let body = bytes::Bytes::from(body);
    if client.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let path = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        .parse()
        .expect("path");
    match client
        .unary(tonic::Request::new(body), path, RawCodec)
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

async fn grpc_client(endpoint: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connects");
    tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    refused_for_load: AtomicU64,
    refused_as_invalid: AtomicU64,
    accepted: AtomicU64,
}

impl Tally {
    fn http(&self, status: u16) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match status {
            200 => &self.accepted,
            429 | 503 => &self.refused_for_load,
            _ => &self.refused_as_invalid,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn grpc(&self, code: tonic::Code) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match code {
            tonic::Code::Ok => &self.accepted,
            tonic::Code::Unavailable | tonic::Code::ResourceExhausted => &self.refused_for_load,
            _ => &self.refused_as_invalid,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<24} sent {:>5}  refused for load {:>5}  refused as invalid {:>5}  accepted {:>4}",
            self.sent.load(Ordering::Relaxed),
            self.refused_for_load.load(Ordering::Relaxed),
            self.refused_as_invalid.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_nesting_cannot_crash_a_saturated_collector() {
    let database = unique_database("nesting_load");
    let mut collector = Collector::start_with(
        &database,
        Some("nesting-key"),
        &["--max-concurrent-requests=1"],
    )
    .await;

    let all_hostile: Arc<Vec<(&str, Vec<u8>)>> = Arc::new(vec![
        ("body_arrays", deep_request(DEPTH, false, false)),
        ("body_kvlists", deep_request(DEPTH, true, false)),
        ("attribute_arrays", deep_request(DEPTH, false, true)),
        ("attribute_kvlists", deep_request(DEPTH, true, true)),
    ]);
    for (name, body) in all_hostile.iter() {
        eprintln!("{name}: {} bytes", body.len());
        assert!(body.len() > 1_000_000, "{name} is the 1.6 MB attack");
    }
    let json = Arc::new(deep_json(DEPTH));
    // Good requests that keep the one slot busy: 5,000 records each.
    let good = Arc::new(
        request(
            (0..5_000)
                .map(|i| record("busy", &format!("busy-{i}")))
                .collect(),
        )
        .encode_to_vec(),
    );

    let http = reqwest::Client::new();
    let deadline = Instant::now() + ATTACK;
    let all_tallies: Arc<[Tally; 4]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for sender in 0..8 {
        // Hostile over HTTP, protobuf.
        let (http, url, hostile, tallies) = (
            http.clone(),
            format!("{}/v1/logs", collector.http_endpoint),
            all_hostile.clone(),
            all_tallies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = sender;
            while Instant::now() < deadline {
                let body = hostile[n % hostile.len()].1.clone();
                n += 1;
                if let Ok(response) = http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                {
                    tallies[0].http(response.status().as_u16());
                }
            }
        }));
        // Hostile over gRPC.
        let (endpoint, hostile, tallies) = (
            collector.grpc_endpoint.clone(),
            all_hostile.clone(),
            all_tallies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = grpc_client(&endpoint).await;
            let mut n = sender;
            while Instant::now() < deadline {
                let body = hostile[n % hostile.len()].1.clone();
                n += 1;
                tallies[1].grpc(grpc_export(&mut client, body).await);
            }
        }));
        // Good senders, over gRPC, keeping the slot taken.
        let (endpoint, good, tallies) = (
            collector.grpc_endpoint.clone(),
            good.clone(),
            all_tallies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = grpc_client(&endpoint).await;
            while Instant::now() < deadline {
                tallies[2].grpc(grpc_export(&mut client, good.to_vec()).await);
            }
        }));
    }
    // Hostile OTLP/JSON, two senders.
    for _ in 0..2 {
        let (http, url, json, tallies) = (
            http.clone(),
            format!("{}/v1/logs", collector.http_endpoint),
            json.clone(),
            all_tallies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Ok(response) = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json.to_vec())
                    .send()
                    .await
                {
                    tallies[3].http(response.status().as_u16());
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("sender task");
    }
    for (i, what) in [
        "deep, HTTP protobuf",
        "deep, gRPC",
        "good, gRPC",
        "deep, HTTP JSON",
    ]
    .iter()
    .enumerate()
    {
        eprintln!("{}", all_tallies[i].line(what));
    }

    assert!(
        collector.process.is_running(),
        "the collector died under the nesting attack:\n{}",
        collector.process.output()
    );
    for (i, what) in ["HTTP protobuf", "gRPC", "", "HTTP JSON"]
        .iter()
        .enumerate()
    {
        if what.is_empty() {
            continue;
        }
        let tally = &all_tallies[i];
        assert_eq!(
            tally.accepted.load(Ordering::Relaxed),
            0,
            "{what}: a deep request was accepted"
        );
        assert!(
            tally.sent.load(Ordering::Relaxed) >= 10,
            "{what}: too few requests sent to mean anything"
        );
    }
    assert!(
        all_tallies[0].refused_for_load.load(Ordering::Relaxed)
            + all_tallies[1].refused_for_load.load(Ordering::Relaxed)
            > 0,
        "the collector never turned a deep request away for load: the test did not saturate it"
    );
    assert!(
        all_tallies[2].accepted.load(Ordering::Relaxed) > 0,
        "no good request got through"
    );

    // Alive and ready, and the next good record is stored, over both protocols.
    let ready = http
        .get(format!("{}/readyz", collector.admin))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 200, "not ready after the attack");
    let after_http = request(vec![record("after_http", "after-user")]).encode_to_vec();
    let response = http
        .post(format!("{}/v1/logs", collector.http_endpoint))
        .header("content-type", "application/x-protobuf")
        .body(after_http)
        .send()
        .await
        .expect("HTTP answers");
    assert_eq!(response.status(), 200, "the next good request over HTTP");
    let mut client = grpc_client(&collector.grpc_endpoint).await;
    let after_grpc = request(vec![record("after_grpc", "after-user")]).encode_to_vec();
    assert_eq!(
        grpc_export(&mut client, after_grpc).await,
        tonic::Code::Ok,
        "the next good request over gRPC"
    );
    collector.settled().await;
    let ch = clickhouse(&database);
    let stored: Vec<(String, u64)> = eventually(
        "the next good records to be stored",
        Duration::from_secs(30),
        || async {
            let rows: Vec<(String, u64)> = ch
                .query("SELECT properties['case'] AS c, count() FROM events WHERE c IN ('after_http', 'after_grpc', 'deep') GROUP BY c ORDER BY c")
                .fetch_all()
                .await
                .ok()?;
            (rows.len() == 2).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        stored,
        vec![("after_grpc".to_owned(), 1), ("after_http".to_owned(), 1)],
        "the good records after the attack, and no deep one"
    );
    let metrics = collector.metrics().await;
    assert!(
        metrics.value("growth_collector_backpressure_total") > 0.0,
        "requests turned away for load are counted"
    );
    assert!(collector.process.is_running());
    collector.kill();
}
