//! Receivers: OTLP over gRPC ([`grpc`]) and over HTTP ([`http`]).
//!
//! Both only decode and render; what a request means is decided once, here, in
//! [`Intake::export`]: map the records to growth events, hand the events to the
//! batcher, and wait until they are stored.

pub mod decode;
pub mod grpc;
pub mod http;
mod otlp_json;
mod rules;
pub mod serve;

use std::sync::Arc;

use chrono::Utc;
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

pub use rules::{EdgeRules, ExportError, Refusal};

use crate::auth::{AppAccess, AuthError};
use crate::batch::{BatchSender, DeliveryError};
use crate::map;
use crate::telemetry::Telemetry;

/// What both receivers share: the edge rules, the batcher and the counters.
#[derive(Debug, Clone)]
pub struct Intake {
    rules: Arc<EdgeRules>,
    batcher: BatchSender,
    telemetry: Arc<Telemetry>,
}

impl Intake {
    /// An intake feeding `batcher`, with the default [`EdgeRules`] around `hasher`.
    pub fn new(hasher: UserHasher, batcher: BatchSender, telemetry: Arc<Telemetry>) -> Self {
        Self {
            rules: Arc::new(EdgeRules::new(hasher)),
            batcher,
            telemetry,
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

    /// Maps and stores one OTLP export request. `Ok` means every growth event in it
    /// is in ClickHouse; rejected records are reported in the response's partial
    /// success. `Err` means nothing can be promised and the sender should retry.
    pub async fn export(
        &self,
        request: &ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, DeliveryError> {
        match self.export_as(request, &AppAccess::All).await {
            Ok(response) => Ok(response),
            Err(ExportError::Delivery(e)) => Err(e),
            // Every app is allowed: nothing can be forbidden.
            Err(ExportError::Forbidden(_)) => Ok(ExportLogsServiceResponse::default()),
        }
    }

    /// [`Intake::export`] for a sender that may write only the apps `access`
    /// allows; `Err(Forbidden)` when it may write none of the request's apps.
    pub async fn export_as(
        &self,
        request: &ExportLogsServiceRequest,
        access: &AppAccess,
    ) -> Result<ExportLogsServiceResponse, ExportError> {
        let mut mapped = map::map_request_as(request, &self.rules.map, access, Utc::now());
        self.rules.catalog.admit(&mut mapped);
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
        self.batcher.submit(mapped.rows).await?;
        Ok(ExportLogsServiceResponse {
            partial_success: message.map(|error_message| ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message,
            }),
        })
    }
}
