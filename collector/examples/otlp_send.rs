//! Sends one growth event to a collector, for trying it out by hand.
//!
//! ```text
//! cargo run -p growth-collector --example otlp_send -- grpc http://127.0.0.1:4317 [gzip]
//! cargo run -p growth-collector --example otlp_send -- protobuf > request.pb
//! curl --data-binary @request.pb -H 'Content-Type: application/x-protobuf' http://127.0.0.1:4318/v1/logs
//! ```
//!
//! The event is `challenge_started` from app `finbrain` with user id `raw-id-<tag>`
//! (the collector hashes it), where `<tag>` is the mode unless given as the last argument.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tonic::codec::CompressionEncoding;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request(tag: &str) -> ExportLogsServiceRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![attribute(
                    "service.name",
                    Value::StringValue("finbrain".into()),
                )],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: now,
                    event_name: "challenge_started".into(),
                    attributes: vec![
                        attribute("user.id", Value::StringValue(format!("raw-id-{tag}"))),
                        attribute("source", Value::StringValue("pwa".into())),
                        attribute("sent_by", Value::StringValue(tag.into())),
                        attribute("stake", Value::IntValue(100)),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("protobuf") => {
            let tag = args.get(1).map_or("protobuf", String::as_str);
            std::io::stdout().write_all(&request(tag).encode_to_vec())?;
        }
        Some("grpc") => {
            let endpoint = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:4317".into());
            let gzip = args.get(2).is_some_and(|a| a == "gzip");
            let tag = args
                .get(3)
                .map_or(if gzip { "grpc-gzip" } else { "grpc" }, String::as_str);
            let mut client = LogsServiceClient::connect(endpoint).await?;
            if gzip {
                client = client.send_compressed(CompressionEncoding::Gzip);
            }
            let response = client.export(request(tag)).await?;
            println!("{:?}", response.into_inner());
        }
        _ => {
            eprintln!(
                "usage: otlp_send grpc [ENDPOINT] [gzip|plain] [TAG] | otlp_send protobuf [TAG]"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
