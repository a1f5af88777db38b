//! Receivers: OTLP over gRPC ([`grpc`]) and over HTTP ([`http`]).
//!
//! Both only decode and render; what a request means is decided once, here, in
//! [`Intake::export`]: map the records to growth events, hand the events to the
//! batcher, and wait until they are stored.

pub mod grpc;
pub mod http;

use std::sync::Arc;

use chrono::Utc;
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

use crate::batch::{BatchSender, DeliveryError};
use crate::map;
use crate::telemetry::Telemetry;

/// What both receivers share: the hasher, the batcher and the counters.
#[derive(Debug, Clone)]
pub struct Intake {
    hasher: UserHasher,
    batcher: BatchSender,
    telemetry: Arc<Telemetry>,
}

impl Intake {
    /// An intake feeding `batcher`.
    pub fn new(hasher: UserHasher, batcher: BatchSender, telemetry: Arc<Telemetry>) -> Self {
        Self {
            hasher,
            batcher,
            telemetry,
        }
    }

    /// Maps and stores one OTLP export request. `Ok` means every growth event in it
    /// is in ClickHouse; rejected records are reported in the response's partial
    /// success. `Err` means nothing can be promised and the sender should retry.
    pub async fn export(
        &self,
        request: &ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, DeliveryError> {
        let mapped = map::map_request(request, &self.hasher, Utc::now());
        self.telemetry.mapped(&mapped);
        let rejected = mapped.rejected_total();
        let message = mapped.rejection_message();
        if let Some(message) = &message {
            tracing::debug!(rejected, %message, "rejected log records");
        }
        self.batcher.submit(mapped.rows).await?;
        Ok(ExportLogsServiceResponse {
            partial_success: message.map(|error_message| ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message,
            }),
        })
    }
}
