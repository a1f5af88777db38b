//! Receivers: OTLP over gRPC ([`grpc`]) and over HTTP ([`http`]).
//!
//! Both only decode and render; what a request means is decided once, here, in
//! [`Intake::export`]: admit it (or turn it away with a retry delay), map the records
//! to growth events, write the events to the spool and wait until they are durable.

pub mod decode;
pub mod grpc;
pub mod http;
mod otlp_json;
mod rules;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;
use tokio::sync::Semaphore;

pub use rules::{EdgeRules, ExportError, Refusal};

use crate::auth::{AppAccess, AuthError};
use crate::delivery::DeliveryConfig;
use crate::map;
use crate::spool::{Spool, SpoolError};
use crate::telemetry::{Backpressure, Telemetry};

/// How long a sender turned away for a full spool is asked to wait.
const SPOOL_FULL_RETRY: Duration = Duration::from_secs(2);
/// How long a sender turned away for memory or concurrency is asked to wait.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// The in-flight byte budget is counted in units of this many bytes.
const BYTE_UNIT: usize = 1024;

/// Why a request was not accepted. The sender should retry after `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// Why (also the `reason` of `backpressure_total`).
    pub reason: Backpressure,
    /// When to try again.
    pub retry_after: Duration,
    /// What to tell the sender.
    pub message: String,
}

impl DeliveryError {
    /// True when the spool is full (RESOURCE_EXHAUSTED / 429), false when the
    /// collector is busy or unable right now (UNAVAILABLE / 503).
    pub fn is_spool_full(&self) -> bool {
        self.reason == Backpressure::SpoolFull
    }
}

/// One export request, as it arrived.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Protobuf bytes, read in place by [`decode::protobuf_visit`] (the hot path).
    Protobuf(Bytes),
    /// An already decoded request (OTLP/JSON).
    Decoded(ExportLogsServiceRequest),
}

impl Payload {
    /// Its size, standing for its memory while it is mapped and spooled.
    fn size(&self) -> usize {
        match self {
            Payload::Protobuf(bytes) => bytes.len(),
            Payload::Decoded(request) => request.encoded_len(),
        }
    }

    /// Its log records, for the counters of a request turned away unread; protobuf
    /// is read no further than `limits` allow.
    fn records(&self, limits: &decode::DecodeLimits) -> u64 {
        match self {
            Payload::Protobuf(bytes) => decode::count_records(bytes, limits),
            Payload::Decoded(request) => request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len() as u64)
                .sum(),
        }
    }
}

impl From<ExportLogsServiceRequest> for Payload {
    fn from(request: ExportLogsServiceRequest) -> Self {
        Payload::Decoded(request)
    }
}

/// What both receivers share: the edge rules, the spool, the limits and the counters.
#[derive(Debug, Clone)]
pub struct Intake {
    rules: Arc<EdgeRules>,
    spool: Spool,
    telemetry: Arc<Telemetry>,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    byte_units: usize,
}

impl Intake {
    /// An intake writing into `spool`, within `limits`, with the default
    /// [`EdgeRules`] around `hasher`.
    pub fn new(
        hasher: UserHasher,
        spool: Spool,
        limits: &DeliveryConfig,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let byte_units = (limits.max_inflight_bytes / BYTE_UNIT).max(1);
        Self {
            rules: Arc::new(EdgeRules::new(hasher)),
            spool,
            telemetry,
            requests: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            bytes: Arc::new(Semaphore::new(byte_units)),
            byte_units,
        }
    }

    /// The same intake under `rules` (limits, privacy, authentication).
    pub fn with_rules(mut self, rules: EdgeRules) -> Self {
        self.rules = Arc::new(rules);
        self
    }

    /// How far a request may expand once decoded.
    pub fn decode_limits(&self) -> decode::DecodeLimits {
        self.rules.decode
    }

    /// Which apps the sender of an `Authorization` header value may write.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<AppAccess, AuthError> {
        self.rules.auth.check(authorization)
    }

    /// Counts a request refused as a whole.
    pub fn count_refused(&self, refusal: Refusal) {
        self.telemetry.refused(refusal);
    }

    /// Maps and spools one OTLP export request. `Ok` means every growth event in it
    /// is on disk and will reach ClickHouse; rejected records are reported in the
    /// response's partial success. `Err` means nothing was kept: retry later.
    pub async fn export(
        &self,
        request: ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, DeliveryError> {
        match self.export_as(request.into(), &AppAccess::All).await {
            Ok(response) => Ok(response),
            Err(ExportError::Delivery(e)) => Err(e),
            // Every app is allowed: nothing can be forbidden; a decoded request
            // is within the limits of its decoding.
            Err(ExportError::Forbidden(_) | ExportError::Invalid(_)) => {
                Ok(ExportLogsServiceResponse::default())
            }
        }
    }

    /// [`Intake::export`] for a sender that may write only the apps `access`
    /// allows; `Err(Forbidden)` when it may write none of the request's apps,
    /// `Err(Invalid)` when protobuf bytes are not a request within the limits.
    /// The request is taken, not borrowed: it is freed once mapped, before the
    /// wait for the spool's fsync.
    pub async fn export_as(
        &self,
        request: Payload,
        access: &AppAccess,
    ) -> Result<ExportLogsServiceResponse, ExportError> {
        let Ok(_request_permit) = self.requests.try_acquire() else {
            return Err(ExportError::Delivery(self.refuse(
                Backpressure::Concurrency,
                &request,
                "too many requests in flight; retry later".into(),
            )));
        };
        // The request's encoded size stands for its memory while it is mapped and
        // spooled; a request larger than the whole budget takes all of it.
        let size = request.size();
        let units = (size / BYTE_UNIT + 1).min(self.byte_units);
        let Ok(_byte_permit) = self.bytes.try_acquire_many(units as u32) else {
            return Err(ExportError::Delivery(self.refuse(
                Backpressure::Memory,
                &request,
                "too many bytes in flight; retry later".into(),
            )));
        };
        let inflight = i64::try_from(units * BYTE_UNIT).unwrap_or(i64::MAX);
        self.telemetry.inflight(inflight);
        let result = self.map_and_spool(request, size, access).await;
        self.telemetry.inflight(-inflight);
        result
    }

    async fn map_and_spool(
        &self,
        request: Payload,
        size: usize,
        access: &AppAccess,
    ) -> Result<ExportLogsServiceResponse, ExportError> {
        // Rows go straight into RowBinary as they are mapped, admitted against the
        // catalog on the way; RowBinary is about the size of the protobuf it came from.
        let capacity = size + size / 4 + 1024;
        let sink = crate::rowbinary::RowBinarySink::new(&self.rules.catalog, capacity);
        let mut mapper = map::Mapper::with_sink(&self.rules.map, access, Utc::now(), sink);
        match &request {
            Payload::Protobuf(bytes) => {
                if let Err(e) = decode::protobuf_visit(bytes, &self.rules.decode, &mut mapper) {
                    // Refused whole: names seen before the damage are not kept.
                    mapper.finish_with_sink().1.forget_learned();
                    return Err(e.into());
                }
            }
            Payload::Decoded(request) => crate::view::visit_request(request, &mut mapper),
        }
        let (mapped, sink) = mapper.finish_with_sink();
        let encoded = sink.finish();
        // Requests held through the fsync wait were most of the memory at 32 senders.
        drop(request);
        self.telemetry.mapped(&mapped);
        if mapped.only_forbidden_apps() {
            self.telemetry.refused(Refusal::Forbidden);
            return Err(ExportError::Forbidden(
                "the bearer token may not write the app(s) (service.name) of this request".into(),
            ));
        }
        let rejected = mapped.rejected_total();
        let message = mapped.rejection_message();
        if let Some(message) = &message {
            tracing::debug!(rejected, %message, "rejected log records");
        }
        if mapped.stored > 0 {
            let rows = mapped.stored;
            drop(mapped);
            if let Err(e) = self
                .spool
                .append(u32::try_from(rows).unwrap_or(u32::MAX), encoded)
                .await
            {
                let reason = match e {
                    SpoolError::Full { .. } => Backpressure::SpoolFull,
                    SpoolError::Closed | SpoolError::Io { .. } => Backpressure::SpoolUnavailable,
                };
                let retry_after = if reason == Backpressure::SpoolFull {
                    SPOOL_FULL_RETRY
                } else {
                    BUSY_RETRY
                };
                self.telemetry.backpressured(reason, rows);
                return Err(ExportError::Delivery(DeliveryError {
                    reason,
                    retry_after,
                    message: e.to_string(),
                }));
            }
        }
        Ok(ExportLogsServiceResponse {
            partial_success: message.map(|error_message| ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message,
            }),
        })
    }

    fn refuse(&self, reason: Backpressure, request: &Payload, message: String) -> DeliveryError {
        self.telemetry
            .backpressured(reason, request.records(&self.rules.decode));
        DeliveryError {
            reason,
            retry_after: BUSY_RETRY,
            message,
        }
    }
}
