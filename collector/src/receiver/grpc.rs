//! OTLP/gRPC receiver: `opentelemetry.proto.collector.logs.v1.LogsService/Export`.
//!
//! tonic does the HTTP/2, framing and gzip; the message is decoded here, not by
//! tonic's prost codec, which answers undecodable input with `INTERNAL` (a server
//! error) and cannot bound what a message expands to. Our codec hands over the
//! message's bytes, and the intake reads them in place while it maps them
//! ([`super::Payload::Protobuf`]). So:
//!
//! * bytes that are not a request, and requests over the
//!   [`DecodeLimits`](super::decode::DecodeLimits), get `INVALID_ARGUMENT` with the
//!   reason;
//! * a second message in this unary call is `INVALID_ARGUMENT`, not silently dropped;
//! * what tonic itself refuses before our codec runs — a message over
//!   `--max-request-bytes` (tonic says `OUT_OF_RANGE`, which OTLP senders retry
//!   forever), a missing message or a corrupt gzip frame (`INTERNAL`) — is rewritten
//!   to `INVALID_ARGUMENT`: all are the sender's fault and none succeeds on retry.
//!   Our own handler never answers `OUT_OF_RANGE` or `INTERNAL`, so the rewrite
//!   cannot hide a server error;
//! * a missing or wrong bearer token is `UNAUTHENTICATED`, checked before the body is
//!   read; a token that may write none of the request's apps `PERMISSION_DENIED`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use tonic_types::{ErrorDetails, StatusExt as _};

use super::{DeliveryError, ExportError, Intake, Payload};
use crate::auth::AppAccess;

/// The gRPC path of the one method served.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The `LogsService` server: gzip accepted, messages bounded to `max_message_bytes`
/// (decompressed) and decoded within the intake's [`DecodeLimits`](super::decode::DecodeLimits).
#[derive(Debug, Clone)]
pub struct LogsServer {
    intake: Intake,
    max_message_bytes: usize,
}

/// The gRPC service for `intake`.
pub fn service(intake: Intake, max_message_bytes: usize) -> LogsServer {
    LogsServer {
        intake,
        max_message_bytes,
    }
}

impl NamedService for LogsServer {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl<B> Service<http::Request<B>> for LogsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            let status =
                Status::unimplemented(format!("only {EXPORT_PATH} is served here (OTLP logs)"));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // Before the body is read: an unauthenticated sender costs no decoding.
        let authorization = request.headers().get(http::header::AUTHORIZATION);
        let access = match self
            .intake
            .authenticate(authorization.map(|v| v.as_bytes()))
        {
            Ok(access) => access,
            Err(e) => {
                self.intake.count_refused(super::Refusal::Unauthenticated);
                let status = Status::unauthenticated(e.to_string());
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        // The connection must not time out as idle while this call is answered.
        let answering = request
            .extensions()
            .get::<super::serve::ConnectionInfo>()
            .map(|info| info.busy.enter());
        let export = Export {
            intake: self.intake.clone(),
            access,
        };
        let codec = ExportCodec;
        let max = self.max_message_bytes;
        let intake = self.intake.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(codec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            let mut response = grpc.unary(export, request).await;
            if sender_fault(&mut response) {
                intake.count_refused(super::Refusal::Undecodable);
            }
            drop(answering);
            Ok(response)
        })
    }
}

/// Rewrites tonic's own `OUT_OF_RANGE` / `INTERNAL` to `INVALID_ARGUMENT` (see the
/// module documentation); returns true when the answer is `INVALID_ARGUMENT`.
fn sender_fault(response: &mut http::Response<tonic::body::Body>) -> bool {
    let headers = response.headers_mut();
    let Some(code) = headers
        .get(Status::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return false;
    };
    let code = Code::from_i32(code);
    if matches!(code, Code::OutOfRange | Code::Internal) {
        headers.insert(Status::GRPC_STATUS, (Code::InvalidArgument as i32).into());
        return true;
    }
    code == Code::InvalidArgument
}

#[derive(Clone)]
struct Export {
    intake: Intake,
    access: AppAccess,
}

impl UnaryService<Bytes> for Export {
    type Response = ExportLogsServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let payload = Payload::Protobuf(request.into_inner());
            match this.intake.export_as(payload, &this.access).await {
                Ok(response) => Ok(Response::new(response)),
                Err(ExportError::Invalid(e)) => Err(Status::invalid_argument(e.to_string())),
                Err(ExportError::Forbidden(message)) => Err(Status::permission_denied(message)),
                // UNAVAILABLE is the code OTLP exporters retry on.
                Err(ExportError::Delivery(e)) => Err(backpressure_status(&e)),
            }
        })
    }
}

/// Protobuf out; in, the message's bytes as they are — decoded, within the
/// [`DecodeLimits`](super::decode::DecodeLimits), while they are mapped ([`Payload::Protobuf`]). One message per call.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { decoded: false }
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportLogsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

/// One decoder per call, so it can tell a second message from the first.
struct RequestDecoder {
    decoded: bool,
}

impl Decoder for RequestDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        if self.decoded {
            return Err(Status::invalid_argument(
                "more than one message in a unary Export call",
            ));
        }
        self.decoded = true;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// RESOURCE_EXHAUSTED (spool full) or UNAVAILABLE, with `RetryInfo`: the OTLP
/// specification makes both retryable, and RESOURCE_EXHAUSTED only with RetryInfo.
pub fn backpressure_status(error: &DeliveryError) -> Status {
    let code = if error.is_spool_full() {
        Code::ResourceExhausted
    } else {
        Code::Unavailable
    };
    Status::with_error_details(
        code,
        error.to_string(),
        ErrorDetails::with_retry_info(Some(error.retry_after)),
    )
}
