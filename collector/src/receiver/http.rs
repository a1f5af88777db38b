//! OTLP/HTTP receiver: `POST /v1/logs` with a protobuf or JSON body, optionally gzip'd.
//!
//! Answers in the request's encoding, as the OTLP specification asks: an
//! `ExportLogsServiceResponse` on success (with `partialSuccess` when records were
//! rejected), a `google.rpc.Status` otherwise, always with a message saying what
//! was wrong: 400 for a body that does not decode or exceeds the decoding limits,
//! 401 without a valid bearer token, 403 when the token may write none of the
//! request's apps, 408 for a body that does not arrive within
//! `--request-read-timeout`, 413 for one over the size limit (measured after
//! decompression, so a small gzip bomb is as limited as a large body), 415 for
//! another content type or content encoding (only gzip, once, is accepted), 503 when
//! the events could not be stored (the sender retries).

use std::io::Read as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, body::Bytes};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;

use super::decode::{self, DecodeError, DecodeLimits};
use super::{ExportError, Intake, Payload, Refusal};

/// The path OTLP/HTTP log exporters post to.
pub const LOGS_PATH: &str = "/v1/logs";

#[derive(Debug, Clone)]
struct HttpState {
    intake: Intake,
    max_request_bytes: usize,
    limits: DecodeLimits,
    read_timeout: Duration,
}

/// The receiver's routes; bodies are limited to `max_request_bytes` after
/// decompression and must arrive within `read_timeout`.
pub fn router(intake: Intake, max_request_bytes: usize, read_timeout: Duration) -> Router {
    let limits = intake.decode_limits();
    Router::new()
        .route(
            LOGS_PATH,
            post(export_logs).fallback(|method: Method| async move {
                plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not served here: POST OTLP logs to {LOGS_PATH}"),
                )
            }),
        )
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                format!("only OTLP logs are received here: POST to {LOGS_PATH}"),
            )
        })
        .with_state(HttpState {
            intake,
            max_request_bytes,
            limits,
            read_timeout,
        })
}

async fn export_logs(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let Some(encoding) = Encoding::of(&headers) else {
        state.intake.count_refused(Refusal::UnsupportedMedia);
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP)".into(),
        );
    };
    let compression = match Compression::of(&headers) {
        Ok(compression) => compression,
        Err(message) => {
            state.intake.count_refused(Refusal::UnsupportedMedia);
            return encoding.status(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
        }
    };
    // Before the body is read: an unauthenticated sender costs no decoding.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let access = match state.intake.authenticate(authorization) {
        Ok(access) => access,
        Err(e) => {
            state.intake.count_refused(Refusal::Unauthenticated);
            let mut response = encoding.status(StatusCode::UNAUTHORIZED, e.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let read = tokio::time::timeout(
        state.read_timeout,
        read_body(body, compression, state.max_request_bytes),
    );
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => {
            state.intake.count_refused(Refusal::TooLarge);
            return encoding.status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than {} bytes (after decompression); send smaller batches",
                    state.max_request_bytes
                ),
            );
        }
        Ok(Err(BodyError::Unreadable(message))) => {
            state.intake.count_refused(Refusal::Undecodable);
            return encoding.status(StatusCode::BAD_REQUEST, message);
        }
        Err(_) => {
            state.intake.count_refused(Refusal::ReadTimeout);
            let mut response = encoding.status(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?} (--request-read-timeout)",
                    state.read_timeout
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let payload = match encoding.payload(body, &state.limits) {
        Ok(payload) => payload,
        Err(e) => {
            state.intake.count_refused(Refusal::Undecodable);
            return encoding.status(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    match state.intake.export_as(payload, &access).await {
        Ok(response) => encoding.success(&response),
        Err(ExportError::Invalid(e)) => {
            state.intake.count_refused(Refusal::Undecodable);
            encoding.status(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(ExportError::Forbidden(message)) => encoding.status(StatusCode::FORBIDDEN, message),
        Err(ExportError::Delivery(e)) => {
            // 429 for a full spool, 503 for a busy or unable collector; both retryable
            // per OTLP/HTTP, after Retry-After.
            let status = if e.is_spool_full() {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut response = encoding.status(status, e.to_string());
            let seconds = e.retry_after.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

/// The `Content-Encoding`s accepted: none (identity) or one gzip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Identity,
    Gzip,
}

impl Compression {
    fn of(headers: &HeaderMap) -> Result<Self, String> {
        let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(header::CONTENT_ENCODING) {
                Err("more than one Content-Encoding header: send at most one (gzip)".into())
            } else {
                Ok(Compression::Identity)
            };
        };
        let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
        match value.as_str() {
            "" | "identity" => Ok(Compression::Identity),
            "gzip" | "x-gzip" => Ok(Compression::Gzip),
            other => Err(format!(
                "Content-Encoding {other:?} is not supported: send gzip or no encoding"
            )),
        }
    }
}

pub(crate) enum BodyError {
    TooLarge,
    Unreadable(String),
}

/// Decompresses `raw`, refusing more than `limit` bytes of output. The buffer grows
/// by at most its size and never past `limit + 1`, so a bomb costs no more memory
/// than an honest body of the limit's size (`read_to_end` would double to 2×).
pub(crate) fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0_u8; 64 * 1024];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| BodyError::Unreadable(format!("the gzip body is corrupt: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(BodyError::TooLarge);
        }
        if out.capacity() - out.len() < n {
            let grow = out.capacity().max(n).min(limit - out.len());
            out.reserve_exact(grow);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the whole body, refusing more than `limit` bytes before or after gunzip.
async fn read_body(body: Body, compression: Compression, limit: usize) -> Result<Bytes, BodyError> {
    let mut body = body;
    let mut raw = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| BodyError::Unreadable(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if raw.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            raw.extend_from_slice(&data);
        }
    }
    match compression {
        Compression::Identity => Ok(Bytes::from(raw)),
        Compression::Gzip => {
            let out = gunzip(&raw, limit)?;
            Ok(Bytes::from(out))
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

    /// Protobuf as it is (it is read while it is mapped); JSON decoded.
    fn payload(self, body: Bytes, limits: &DecodeLimits) -> Result<Payload, DecodeError> {
        match self {
            Encoding::Protobuf => Ok(Payload::Protobuf(body)),
            Encoding::Json => decode::json(&body, limits).map(Payload::Decoded),
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
}

/// A plain-text answer, for when the request's encoding is unknown.
fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The gRPC status code matching an HTTP status, for `google.rpc.Status.code`.
fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            tonic::Code::InvalidArgument as i32
        }
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted as i32,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated as i32,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied as i32,
        StatusCode::REQUEST_TIMEOUT => tonic::Code::DeadlineExceeded as i32,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable as i32,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted as i32,
        _ => tonic::Code::Internal as i32,
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
