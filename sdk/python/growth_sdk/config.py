"""The standard OpenTelemetry exporter variables, read once into a Config.

Same variables as the Rust SDK: OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT,
OTEL_EXPORTER_OTLP_[LOGS_]PROTOCOL (grpc, http/protobuf),
OTEL_EXPORTER_OTLP_[LOGS_]HEADERS (e.g. authorization=Bearer%20<token>),
OTEL_EXPORTER_OTLP_[LOGS_]COMPRESSION (gzip, none), OTEL_EXPORTER_OTLP_[LOGS_]TIMEOUT
(ms), OTEL_EXPORTER_OTLP_[LOGS_]CERTIFICATE (a PEM file of the CA to trust for an
https:// endpoint, as the OpenTelemetry exporters read it),
OTEL_EXPORTER_OTLP_[LOGS_]CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_[LOGS_]CLIENT_KEY
(PEM files of a client certificate and its key, for a collector that requires one:
mTLS), OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, GROWTH_USER_HASH_KEY and
GROWTH_SDK_DISABLED. Arguments given to Tracker win over them.
"""

import os
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple
from urllib.parse import unquote

DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
HTTP_LOGS_PATH = "/v1/logs"


class ConfigError(ValueError):
    """An environment variable holds a value the SDK cannot use."""


@dataclass
class Config:
    service_name: str = "unknown_service"
    protocol: str = "grpc"
    #: gRPC: the endpoint; HTTP: the full logs URL.
    url: str = DEFAULT_GRPC_ENDPOINT
    headers: List[Tuple[str, str]] = field(default_factory=list)
    compression: str = "none"
    timeout: float = 10.0
    #: PEM file of the trusted CA(s) for an https:// endpoint; None: the system's.
    certificate_file: Optional[str] = None
    #: mTLS: PEM files of the client certificate chain and its key; both or neither.
    client_certificate_file: Optional[str] = None
    client_key_file: Optional[str] = None
    resource_attributes: List[Tuple[str, str]] = field(default_factory=list)
    user_hash_key: Optional[bytes] = None
    #: During a key rotation's overlap: the previous key (user.hash.previous).
    user_hash_previous_key: Optional[bytes] = None
    disabled: bool = False

    def __repr__(self) -> str:  # never shows header values (tokens) or the key
        return (
            f"Config(service_name={self.service_name!r}, protocol={self.protocol!r}, "
            f"url={self.url!r}, headers={[k for k, _ in self.headers]!r}, "
            f"compression={self.compression!r}, keyed={self.user_hash_key is not None}, "
            f"previous_key={self.user_hash_previous_key is not None})"
        )


def parse_key_values(text: str, var: str) -> List[Tuple[str, str]]:
    """`k=v,k2=v2`, trimmed and percent-decoded (W3C baggage style)."""
    pairs = []
    for pair in text.split(","):
        if not pair.strip():
            continue
        if "=" not in pair:
            raise ConfigError(f"{var}: use key=value pairs separated by commas")
        key, value = pair.split("=", 1)
        key = unquote(key.strip(), errors="strict")
        if not key:
            raise ConfigError(f"{var}: a key is empty")
        pairs.append((key, unquote(value.strip(), errors="strict")))
    return pairs


def export_url(protocol: str, endpoint: str, is_logs_url: bool) -> str:
    endpoint = endpoint.strip()
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint {endpoint!r} must start with http:// or https://")
    base = endpoint.rstrip("/")
    if protocol == "grpc" or is_logs_url or base.endswith(HTTP_LOGS_PATH):
        return base
    return base + HTTP_LOGS_PATH


def read(
    env: Optional[Mapping[str, str]] = None,
    *,
    service_name: Optional[str] = None,
    endpoint: Optional[str] = None,
    protocol: Optional[str] = None,
    headers: Optional[Mapping[str, str]] = None,
    compression: Optional[str] = None,
    timeout: Optional[float] = None,
    certificate_file: Optional[str] = None,
    user_hash_key=None,
    user_hash_previous_key=None,
    disabled: Optional[bool] = None,
) -> Config:
    """The configuration: explicit arguments over `env` (default os.environ)."""
    env = os.environ if env is None else env

    def get(name):
        value = env.get(name)
        return value if value and value.strip() else None

    def either(logs, general):
        for name in (logs, general):
            value = get(name)
            if value is not None:
                return name, value
        return None, None

    var, value = either("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is None and value is not None:
        protocol = value.strip()
        if protocol not in ("grpc", "http/protobuf", "http"):
            raise ConfigError(f"{var}: use grpc or http/protobuf (http/json is not supported)")
    protocol = "http" if protocol in ("http/protobuf", "http") else "grpc"

    if endpoint is not None:
        url = export_url(protocol, endpoint, False)
    elif get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
        url = export_url(protocol, get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"), True)
    elif get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        url = export_url(protocol, get("OTEL_EXPORTER_OTLP_ENDPOINT"), False)
    else:
        url = export_url(
            protocol, DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT, False
        )

    var, value = either("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    header_pairs = parse_key_values(value, var) if value else []
    for name, val in (headers or {}).items():
        header_pairs = [(k, v) for k, v in header_pairs if k.lower() != name.lower()]
        header_pairs.append((name, val))

    var, value = either("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
    if compression is None and value is not None:
        compression = value.strip()
        if compression not in ("gzip", "none"):
            raise ConfigError(f"{var}: use gzip or none")
    compression = compression or "none"

    var, value = either("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if timeout is None and value is not None:
        try:
            timeout = int(value.strip()) / 1000.0
        except ValueError:
            raise ConfigError(f"{var}: use a whole number of milliseconds") from None
        if timeout <= 0:
            raise ConfigError(f"{var}: use a whole number of milliseconds above 0")

    if certificate_file is None:
        var, certificate_file = either("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
        if certificate_file is not None and not os.path.isfile(certificate_file.strip()):
            raise ConfigError(f"{var}: {certificate_file!r} is not a readable file")
    certificate_file = certificate_file.strip() if certificate_file else None

    client_files = []
    for suffix in ("CLIENT_CERTIFICATE", "CLIENT_KEY"):
        var, path = either(f"OTEL_EXPORTER_OTLP_LOGS_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}")
        path = path.strip() if path else None
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{var}: {path!r} is not a readable file")
        client_files.append(path)
    client_certificate_file, client_key_file = client_files
    if (client_certificate_file is None) != (client_key_file is None):
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY: set both or neither"
        )

    resource = parse_key_values(get("OTEL_RESOURCE_ATTRIBUTES") or "", "OTEL_RESOURCE_ATTRIBUTES")
    if service_name is None:
        service_name = get("OTEL_SERVICE_NAME") or next(
            (v for k, v in resource if k == "service.name"), "unknown_service"
        )

    if user_hash_key is None:
        key = get("GROWTH_USER_HASH_KEY")
        user_hash_key = key.encode("utf-8") if key else None
    elif isinstance(user_hash_key, str):
        user_hash_key = user_hash_key.encode("utf-8")

    if user_hash_previous_key is None:
        key = get("GROWTH_USER_HASH_PREVIOUS_KEY")
        user_hash_previous_key = key.encode("utf-8") if key else None
    elif isinstance(user_hash_previous_key, str):
        user_hash_previous_key = user_hash_previous_key.encode("utf-8")

    if disabled is None:
        value = (get("GROWTH_SDK_DISABLED") or "false").strip().lower()
        if value not in ("true", "1", "yes", "false", "0", "no"):
            raise ConfigError("GROWTH_SDK_DISABLED: use true or false")
        disabled = value in ("true", "1", "yes")

    return Config(
        service_name=service_name,
        protocol=protocol,
        url=url,
        headers=header_pairs,
        compression=compression,
        timeout=timeout or 10.0,
        certificate_file=certificate_file,
        client_certificate_file=client_certificate_file,
        client_key_file=client_key_file,
        resource_attributes=[(k, v) for k, v in resource if k != "service.name"],
        user_hash_key=user_hash_key or None,
        user_hash_previous_key=user_hash_previous_key or None,
        disabled=disabled,
    )
