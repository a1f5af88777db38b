//! What the end-to-end tests share: sending planned events with growth-sdk.

#![allow(dead_code)]

use chrono::{DateTime, Utc};

/// One event the test plans to send, with its own timestamp.
#[derive(Debug, Clone)]
pub struct PlannedEvent {
    pub name: &'static str,
    pub user: Option<String>,
    pub at: DateTime<Utc>,
}

/// Sends `events` through growth-sdk (gRPC or HTTP) and returns how many the SDK
/// reports delivered after `shutdown`.
pub async fn send_with_sdk(
    endpoint: &str,
    grpc: bool,
    app: &str,
    key: Option<&str>,
    events: &[PlannedEvent],
) -> u64 {
    let endpoint = endpoint.to_owned();
    let app = app.to_owned();
    let key = key.map(|k| k.as_bytes().to_vec());
    let events = events.to_vec();
    tokio::task::spawn_blocking(move || {
        let protocol = if grpc {
            growth_sdk::Protocol::Grpc
        } else {
            growth_sdk::Protocol::Http
        };
        let client = growth_sdk::Tracker::builder(app)
            .endpoint(endpoint)
            .protocol(protocol)
            .user_hash_key(key)
            .queue_capacity(100_000)
            .build()
            .expect("SDK builds");
        for e in &events {
            let mut event = growth_sdk::Event::new(e.name).at(e.at.into());
            if let Some(user) = &e.user {
                event = event.user(user.as_str());
            }
            client.track_event(event);
        }
        let report = client.shutdown().expect("SDK delivered everything");
        report.delivered
    })
    .await
    .expect("sender thread")
}
