"""Sends one encoded ExportLogsServiceRequest over OTLP/gRPC or OTLP/HTTP and
classifies the answer the OTLP way: accepted (with partial-success rejections),
retryable (with the collector's Retry-After / RetryInfo delay), or refused.

The stock OTLP exporters retry on their own for a while and then return a bare
FAILURE; the delay the collector asks for never reaches the caller. This module
uses the same libraries (grpcio, requests, the OTLP protobufs) without that.
"""

import email.utils
import gzip
import time
from dataclasses import dataclass
from typing import Optional, Tuple

MAX_RETRY_AFTER = 300.0
GRPC_RETRYABLE = {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}


@dataclass
class Outcome:
    kind: str  # "accepted", "retry", "refused"
    error: str = ""
    retry_after: Optional[float] = None
    rejected: int = 0


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(when - (time.time() if now is None else now), 0.0), MAX_RETRY_AFTER)


class GrpcTransport:
    def __init__(
        self,
        url: str,
        headers,
        compression: str,
        timeout: float,
        certificate_file: Optional[str] = None,
        client_identity: Optional[Tuple[str, str]] = None,
    ):
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

        self._grpc = grpc
        target = url.split("://", 1)[1].rstrip("/")
        if url.startswith("https://"):
            roots = None
            if certificate_file:
                with open(certificate_file, "rb") as pem:
                    roots = pem.read()
            chain = key = None
            if client_identity:
                with open(client_identity[0], "rb") as pem:
                    chain = pem.read()
                with open(client_identity[1], "rb") as pem:
                    key = pem.read()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=roots, private_key=key, certificate_chain=chain
            )
            channel = grpc.secure_channel(target, credentials)
        else:
            channel = grpc.insecure_channel(target)
        self._channel = channel
        self._stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        self._metadata = tuple((k.lower(), v) for k, v in headers)
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None
        self._timeout = timeout

    def export(self, request) -> Outcome:
        grpc = self._grpc
        try:
            response = self._stub.Export(
                request,
                timeout=self._timeout,
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.RpcError as error:
            code = error.code().name if error.code() else "UNKNOWN"
            retry_after = _retry_info(error)
            message = f"collector answered {code}: {(error.details() or '')[:300]}"
            if code in GRPC_RETRYABLE or (code == "RESOURCE_EXHAUSTED" and retry_after is not None):
                return Outcome("retry", message, retry_after)
            return Outcome("refused", message)
        partial = response.partial_success
        return Outcome("accepted", partial.error_message, rejected=max(partial.rejected_log_records, 0))

    def close(self):
        self._channel.close()


def _retry_info(error) -> Optional[float]:
    """The RetryInfo delay in a gRPC error's status details, if any."""
    try:
        from google.rpc import error_details_pb2, status_pb2

        for key, value in error.trailing_metadata() or ():
            if key != "grpc-status-details-bin":
                continue
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
                    return min(delay, MAX_RETRY_AFTER)
    except Exception:  # a malformed detail is no reason to fail the export
        return None
    return None


class HttpTransport:
    def __init__(
        self,
        url: str,
        headers,
        compression: str,
        timeout: float,
        certificate_file: Optional[str] = None,
        client_identity: Optional[Tuple[str, str]] = None,
    ):
        import requests

        self._requests = requests
        self._session = requests.Session()
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override
        # a session's `verify`, not a request's. None: requests' default trust.
        self._verify = certificate_file or None
        # mTLS: (certificate chain file, key file), as requests takes it.
        self._cert = tuple(client_identity) if client_identity else None
        self._url = url
        self._headers = dict(headers)
        self._headers["Content-Type"] = "application/x-protobuf"
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._timeout = timeout

    def export(self, request) -> Outcome:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        body = request.SerializeToString()
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            response = self._session.post(
                self._url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                verify=self._verify,
                cert=self._cert,
            )
        except self._requests.RequestException as error:
            return Outcome("retry", f"cannot reach the collector: {error}")
        if 200 <= response.status_code < 300:
            rejected, message = 0, ""
            try:
                parsed = ExportLogsServiceResponse.FromString(response.content)
                rejected = max(parsed.partial_success.rejected_log_records, 0)
                message = parsed.partial_success.error_message
            except Exception:  # a 2xx still acknowledged the data
                pass
            return Outcome("accepted", message, rejected=rejected)
        message = f"collector answered HTTP {response.status_code}: {response.text.strip()[:300]}"
        if response.status_code in (429, 502, 503, 504):
            return Outcome("retry", message, parse_retry_after(response.headers.get("Retry-After")))
        return Outcome("refused", message)

    def close(self):
        self._session.close()


def make_transport(
    protocol: str,
    url: str,
    headers,
    compression: str,
    timeout: float,
    certificate_file: Optional[str] = None,
    client_identity: Optional[Tuple[str, str]] = None,
):
    if protocol == "http":
        return HttpTransport(url, headers, compression, timeout, certificate_file, client_identity)
    return GrpcTransport(url, headers, compression, timeout, certificate_file, client_identity)
