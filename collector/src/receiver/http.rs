//! OTLP/HTTP receiver: `POST /v1/logs` with a protobuf or JSON body, optionally gzip'd.
//!
//! Answers in the request's encoding, as the OTLP specification asks: an
//! `ExportLogsServiceResponse` on success (with `partialSuccess` when records were
//! rejected), a `google.rpc.Status` otherwise — 400 for a body that does not
//! decode, 413 for one over the size limit (measured after decompression, so a
//! small gzip bomb is as limited as a large body), 415 for another content type or
//! content encoding, 503 when the events could not be stored (the sender retries).

use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, body::Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use tower_http::decompression::RequestDecompressionLayer;

use super::Intake;

/// The path OTLP/HTTP log exporters post to.
pub const LOGS_PATH: &str = "/v1/logs";
/// Seconds a sender is asked to wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "2";

#[derive(Debug, Clone)]
struct HttpState {
    intake: Intake,
    max_request_bytes: usize,
}

/// The receiver's routes, with gzip request decompression and the body limit.
pub fn router(intake: Intake, max_request_bytes: usize) -> Router {
    Router::new()
        .route(LOGS_PATH, post(export_logs))
        .with_state(HttpState {
            intake,
            max_request_bytes,
        })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(RequestDecompressionLayer::new().gzip(true))
}

async fn export_logs(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(encoding) = Encoding::of(&headers) else {
        return unsupported_media_type();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return encoding.body_error(&rejection, state.max_request_bytes),
    };
    let request = match encoding.decode(&body) {
        Ok(request) => request,
        Err(message) => return encoding.status(StatusCode::BAD_REQUEST, message),
    };
    match state.intake.export(&request).await {
        Ok(response) => encoding.success(&response),
        Err(e) => {
            let mut response = encoding.status(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            response
        }
    }
}

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the error body the OTLP specification asks for.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Encoding {
    /// From the `Content-Type` header (parameters such as `charset` ignored).
    fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = value.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn decode(self, body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
        match self {
            Encoding::Protobuf => ExportLogsServiceRequest::decode(body)
                .map_err(|e| format!("body is not a protobuf ExportLogsServiceRequest: {e}")),
            Encoding::Json => serde_json::from_slice(body)
                .map_err(|e| format!("body is not an OTLP/JSON ExportLogsServiceRequest: {e}")),
        }
    }

    fn success(self, response: &ExportLogsServiceResponse) -> Response {
        let body = match self {
            Encoding::Protobuf => response.encode_to_vec(),
            // A full success is `{}`, not `{"partialSuccess":null}`.
            Encoding::Json if response.partial_success.is_none() => b"{}".to_vec(),
            Encoding::Json => match serde_json::to_vec(response) {
                Ok(body) => body,
                Err(e) => {
                    return self.status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot encode response: {e}"),
                    );
                }
            },
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, self.content_type())],
            body,
        )
            .into_response()
    }

    fn status(self, status: StatusCode, message: String) -> Response {
        let code = grpc_code(status);
        let body = match self {
            Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
            Encoding::Json => serde_json::json!({ "code": code, "message": message })
                .to_string()
                .into_bytes(),
        };
        (status, [(header::CONTENT_TYPE, self.content_type())], body).into_response()
    }

    fn body_error(self, rejection: &BytesRejection, limit: usize) -> Response {
        match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => self
                .status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {limit} bytes (after decompression); send smaller batches"),
                ),
            other => self.status(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body (corrupt gzip?): {}", other.body_text()),
            ),
        }
    }
}

fn unsupported_media_type() -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP)\n",
    )
        .into_response()
}

/// The gRPC status code matching an HTTP status, for `google.rpc.Status.code`.
fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument as i32,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted as i32,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable as i32,
        _ => tonic::Code::Internal as i32,
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
