//! Sending one encoded `ExportLogsServiceRequest` over OTLP/gRPC (tonic's client)
//! or OTLP/HTTP-protobuf (reqwest), and reading the answer the OTLP way: what was
//! accepted, what may be retried and after how long (gRPC `RetryInfo`, HTTP
//! `Retry-After`), and what never will be.
//!
//! Why not `opentelemetry-otlp`'s exporter: its error is a string, so neither
//! the retry delay the collector asks for nor a partial success reaches the
//! caller, and its own retries give up after about a second. The SDK needs both
//! to keep every event until it is acknowledged (see `delivery`).

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use bytes::{BufMut as _, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt as _;

use crate::config::{Compression, Protocol};
use crate::error::SdkError;

/// The gRPC method of the OTLP logs service.
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// Longest wait a collector may ask for; beyond it the SDK's own backoff applies.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Longest part of an error answer's body kept for the report.
const MAX_ERROR_TEXT: usize = 300;

/// What the collector made of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Acknowledged; `rejected` records were refused one by one (OTLP partial success).
    Accepted { rejected: u64, message: String },
    /// Not acknowledged, and worth sending again (after `retry_after` if the
    /// collector said so).
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Refused for good (bad request, unauthenticated, …): resending cannot help.
    Refused { error: String },
}

/// `ExportLogsServiceResponse`, the only message the SDK decodes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) partial_success: Option<PartialSuccess>,
}

/// `ExportLogsPartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PartialSuccess {
    #[prost(int64, tag = "1")]
    pub(crate) rejected_log_records: i64,
    #[prost(string, tag = "2")]
    pub(crate) error_message: String,
}

impl ExportResponse {
    fn outcome(self) -> Outcome {
        let partial = self.partial_success.unwrap_or_default();
        Outcome::Accepted {
            rejected: u64::try_from(partial.rejected_log_records).unwrap_or(0),
            message: partial.error_message,
        }
    }
}

/// Everything a transport needs, resolved by the builder.
#[derive(Debug, Clone)]
pub(crate) struct TransportSettings {
    pub(crate) protocol: Protocol,
    /// The gRPC endpoint, or the full HTTP logs URL.
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) compression: Compression,
    /// Extra trusted root certificate (PEM) for HTTPS endpoints.
    pub(crate) ca_certificate: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM) for mTLS.
    pub(crate) client_identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) connect_timeout: Duration,
}

/// A connection (pool) to the collector; cheap to clone, one per export.
#[derive(Clone)]
pub(crate) enum Transport {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: HeaderMap,
        gzip: bool,
    },
}

impl Transport {
    /// Builds the client; must run inside a Tokio runtime (the delivery thread's).
    /// Connects lazily: a collector that is down is no error here.
    pub(crate) fn new(settings: &TransportSettings) -> Result<Transport, SdkError> {
        let invalid_header = |name: &str| SdkError::InvalidSetting {
            setting: "headers",
            reason: if name.is_empty() {
                "a header has an empty name"
            } else {
                "a header name or value is not allowed in HTTP"
            },
        };
        match settings.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.url.clone())
                    .map_err(|error| SdkError::Exporter(Box::new(error)))?
                    .connect_timeout(settings.connect_timeout)
                    .tcp_nodelay(true);
                if settings.url.starts_with("https://") {
                    let mut tls = ClientTlsConfig::new().with_webpki_roots();
                    if let Some(pem) = &settings.ca_certificate {
                        tls = tls.ca_certificate(Certificate::from_pem(pem));
                    }
                    if let Some((chain, key)) = &settings.client_identity {
                        tls = tls.identity(Identity::from_pem(chain, key));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|error| SdkError::Exporter(Box::new(error)))?;
                }
                let mut client = tonic::client::Grpc::new(endpoint.connect_lazy())
                    .max_encoding_message_size(usize::MAX);
                if settings.compression == Compression::Gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let mut metadata = MetadataMap::new();
                for (name, value) in &settings.headers {
                    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| invalid_header(name))?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|_| invalid_header(name))?;
                    metadata.insert(key, value);
                }
                Ok(Transport::Grpc { client, metadata })
            }
            Protocol::Http => {
                let mut builder = reqwest::Client::builder()
                    .use_rustls_tls()
                    .connect_timeout(settings.connect_timeout)
                    .tcp_nodelay(true)
                    .pool_idle_timeout(Duration::from_secs(30));
                if let Some(pem) = &settings.ca_certificate {
                    let certificate = reqwest::Certificate::from_pem(pem)
                        .map_err(|error| SdkError::Exporter(Box::new(error)))?;
                    builder = builder.add_root_certificate(certificate);
                }
                if let Some((chain, key)) = &settings.client_identity {
                    let mut pem = chain.clone();
                    pem.push(b'\n');
                    pem.extend_from_slice(key);
                    let identity = reqwest::Identity::from_pem(&pem)
                        .map_err(|error| SdkError::Exporter(Box::new(error)))?;
                    builder = builder.identity(identity);
                }
                let client = builder
                    .build()
                    .map_err(|error| SdkError::Exporter(Box::new(error)))?;
                let mut headers = HeaderMap::new();
                for (name, value) in &settings.headers {
                    let key = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid_header(name))?;
                    let value = HeaderValue::from_str(value).map_err(|_| invalid_header(name))?;
                    headers.insert(key, value);
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                let gzip = settings.compression == Compression::Gzip;
                if gzip {
                    headers.insert(
                        http::header::CONTENT_ENCODING,
                        HeaderValue::from_static("gzip"),
                    );
                }
                Ok(Transport::Http {
                    client,
                    url: settings.url.clone(),
                    headers,
                    gzip,
                })
            }
        }
    }

    /// Sends one request and classifies the answer. Never panics; a timeout is
    /// the caller's (`tokio::time::timeout`).
    pub(crate) async fn export(self, body: Bytes) -> Outcome {
        match self {
            Transport::Grpc {
                mut client,
                metadata,
            } => {
                if let Err(error) = client.ready().await {
                    return Outcome::Retry {
                        error: format!("cannot reach the collector: {error}"),
                        retry_after: None,
                    };
                }
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata;
                let path = http::uri::PathAndQuery::from_static(GRPC_EXPORT_PATH);
                match client.unary(request, path, RawRequestCodec).await {
                    Ok(response) => response.into_inner().outcome(),
                    Err(status) => grpc_outcome(&status),
                }
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let body = if gzip {
                    match gzip_bytes(&body) {
                        Ok(compressed) => Bytes::from(compressed),
                        Err(error) => {
                            return Outcome::Refused {
                                error: format!("gzip failed: {error}"),
                            };
                        }
                    }
                } else {
                    body
                };
                let sent = client.post(&url).headers(headers).body(body).send().await;
                let response = match sent {
                    Ok(response) => response,
                    Err(error) => {
                        return Outcome::Retry {
                            error: format!("cannot reach the collector: {}", error_chain(&error)),
                            retry_after: None,
                        };
                    }
                };
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                let body = response.bytes().await.unwrap_or_default();
                http_outcome(status, retry_after, &body)
            }
        }
    }
}

/// OTLP/gRPC: which status codes may be retried (the OTLP specification's table).
fn grpc_outcome(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    let retry_after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .map(|delay| delay.min(MAX_RETRY_AFTER));
    let error = format!(
        "collector answered {:?}: {}",
        status.code(),
        truncate(status.message())
    );
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retry { error, retry_after },
        // Retryable only when the server says when (RetryInfo).
        Code::ResourceExhausted if retry_after.is_some() => Outcome::Retry { error, retry_after },
        // Connection-level failures surface as Unknown/Internal from the transport.
        Code::Unknown if status.message().contains("transport error") => {
            Outcome::Retry { error, retry_after }
        }
        _ => Outcome::Refused { error },
    }
}

/// OTLP/HTTP: 429, 502, 503 and 504 may be retried; other errors may not.
fn http_outcome(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    if status.is_success() {
        return ExportResponse::decode(body)
            .map(ExportResponse::outcome)
            // A 2xx whose body is not the response message still acknowledged the data.
            .unwrap_or(Outcome::Accepted {
                rejected: 0,
                message: String::new(),
            });
    }
    let text = String::from_utf8_lossy(body);
    let error = format!(
        "collector answered HTTP {status}: {}",
        truncate(text.trim())
    );
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry { error, retry_after },
        _ => Outcome::Refused { error },
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

fn truncate(text: &str) -> &str {
    growth_schema::limits::truncate_to(text, MAX_ERROR_TEXT)
}

/// reqwest's top-level message hides the cause ("error sending request"): add it.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends the pre-encoded request bytes as they are; decodes the response.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = Bytes;
    type Decode = ExportResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

#[derive(Debug)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportResponse>, tonic::Status> {
        ExportResponse::decode(src)
            .map(Some)
            .map_err(|error| tonic::Status::internal(format!("bad response: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("100000", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn http_statuses_are_classified_per_otlp() {
        for code in [429, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(
                http_outcome(status, Some(Duration::from_secs(2)), b"busy"),
                Outcome::Retry {
                    retry_after: Some(_),
                    ..
                }
            ));
        }
        for code in [400, 401, 403, 404, 413, 500] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(http_outcome(status, None, b""), Outcome::Refused { .. }),
                "{code}"
            );
        }
        let partial = ExportResponse {
            partial_success: Some(PartialSuccess {
                rejected_log_records: 2,
                error_message: "bad time".into(),
            }),
        };
        assert_eq!(
            http_outcome(StatusCode::OK, None, &partial.encode_to_vec()),
            Outcome::Accepted {
                rejected: 2,
                message: "bad time".into()
            }
        );
    }

    #[test]
    fn grpc_codes_are_classified_per_otlp() {
        use tonic::Code;
        let retry = |status: tonic::Status| matches!(grpc_outcome(&status), Outcome::Retry { .. });
        assert!(retry(tonic::Status::unavailable("down")));
        assert!(retry(tonic::Status::deadline_exceeded("slow")));
        assert!(!retry(tonic::Status::invalid_argument("bad")));
        assert!(!retry(tonic::Status::unauthenticated("token")));
        assert!(!retry(tonic::Status::resource_exhausted("full")));
        let with_delay = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "full",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert_eq!(
            grpc_outcome(&with_delay),
            Outcome::Retry {
                error: "collector answered ResourceExhausted: full".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }
}
