//! The growth events of a personal-finance app's backend, as the benchmarks and load
//! tests send them: deterministic for a seed, realistic in mix and size.

use std::time::{SystemTime, UNIX_EPOCH};

use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::Rng;
use crate::otlp::{kv, text};

/// The app every record belongs to (`service.name`).
pub const APP: &str = "finbrain";

/// How records name their user.
#[derive(Debug, Clone, Copy)]
pub enum UserIds {
    /// This share sends `user.hash` (hashed by the app), the rest `user.id`.
    Mix(f64),
    /// Every record sends a raw `user.id`.
    AllRaw,
    /// Every record sends `user.hash`.
    AllHashed,
}

/// A seeded source of finance-app records and requests.
#[derive(Debug)]
pub struct FinanceEvents {
    rng: Rng,
    users: u64,
    mode: UserIds,
    app_hasher: UserHasher,
    now_nanos: u64,
    /// Added to every record, last (e.g. a sequence-number placeholder).
    extra: Vec<KeyValue>,
}

impl FinanceEvents {
    /// Events of `users` users from the seed `seed`; `user.hash` is computed with
    /// `hash_key`, the key the collector gets too.
    pub fn new(seed: u64, users: u64, mode: UserIds, hash_key: &str) -> Self {
        let now_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            rng: Rng(seed),
            users: users.max(1),
            mode,
            app_hasher: UserHasher::new(Some(hash_key.as_bytes().to_vec())),
            now_nanos,
            extra: Vec::new(),
        }
    }

    /// Adds `attribute` to every record, after the event's own.
    pub fn with_record_attribute(mut self, attribute: KeyValue) -> Self {
        self.extra.push(attribute);
        self
    }

    /// One finance-app event: expense_logged 55 %, expense_edited 15 %,
    /// report_requested 15 %, challenge_started 10 %, pwa_installed 5 % (anonymous).
    /// Half name the event in `LogRecord.event_name`, half in the `event.name` attribute.
    pub fn record(&mut self) -> LogRecord {
        let rng = &mut self.rng;
        let roll = rng.below(100);
        let event = match roll {
            0..55 => "expense_logged",
            55..70 => "expense_edited",
            70..85 => "report_requested",
            85..95 => "challenge_started",
            _ => "pwa_installed",
        };
        let mut attributes = Vec::with_capacity(7);
        let in_field = rng.probability(0.5);
        if !in_field {
            attributes.push(text("event.name", event));
        }
        if event != "pwa_installed" {
            let id = format!("tg-{}", 100_000_000 + rng.below(self.users));
            let hashed = match self.mode {
                UserIds::Mix(share) => rng.probability(share),
                UserIds::AllRaw => false,
                UserIds::AllHashed => true,
            };
            if hashed {
                attributes.push(text("user.hash", self.app_hasher.hash(&id).as_str()));
            } else {
                attributes.push(text("user.id", &id));
            }
        }
        let source = rng.pick(&["messenger", "messenger", "form", "pwa"]);
        attributes.push(text("source", source));
        match event {
            "expense_logged" | "expense_edited" => {
                let cents = 50 + rng.below(50_000);
                attributes.push(kv("amount", Value::DoubleValue(cents as f64 / 100.0)));
                attributes.push(text(
                    "category",
                    rng.pick(&[
                        "groceries",
                        "transport",
                        "eating_out",
                        "rent",
                        "utilities",
                        "health",
                        "entertainment",
                        "other",
                    ]),
                ));
                attributes.push(text("currency", rng.pick(&["EUR", "EUR", "USD", "GBP"])));
            }
            "report_requested" => {
                attributes.push(text(
                    "report_type",
                    rng.pick(&["monthly", "weekly", "by_category"]),
                ));
                attributes.push(text("period", rng.pick(&["2026-10", "2026-11"])));
            }
            "challenge_started" => {
                attributes.push(text(
                    "challenge",
                    rng.pick(&["no_takeaway_week", "save_100", "coffee_at_home"]),
                ));
                attributes.push(kv("stake", Value::IntValue(rng.below(5) as i64 * 50)));
            }
            _ => {
                attributes.push(text("platform", rng.pick(&["android", "ios", "desktop"])));
                attributes.push(text("locale", rng.pick(&["en-GB", "de-DE", "ru-RU"])));
            }
        }
        attributes.extend(self.extra.iter().cloned());
        // Events of the last ten minutes, as a live app sends them.
        let time = self.now_nanos - rng.below(600_000_000_000);
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + 1_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: if in_field {
                event.into()
            } else {
                String::new()
            },
            attributes,
            ..Default::default()
        }
    }

    /// An export request of `records` records of the app [`APP`].
    pub fn request(&mut self, records: u64) -> ExportLogsServiceRequest {
        let log_records = (0..records).map(|_| self.record()).collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", APP),
                        text("service.version", "2.14.0"),
                        text("telemetry.sdk.name", "opentelemetry"),
                        text("telemetry.sdk.language", "rust"),
                        text("telemetry.sdk.version", "0.33.0"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "growth".into(),
                        version: "0.1.0".into(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}
