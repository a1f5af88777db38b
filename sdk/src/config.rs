//! The standard OpenTelemetry exporter variables (and the SDK's own), read once
//! into a typed [`EnvConfig`] when a tracker is built. The builder's explicit
//! settings win over them; nothing reads the environment after `build`.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` | the logs endpoint, used as is |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base endpoint (`/v1/logs` appended for HTTP) |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_PROTOCOL` | `grpc` or `http/protobuf` |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_HEADERS` | `key=value,…`, values percent-decoded (the ingest token: `authorization=Bearer%20<token>`) |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_COMPRESSION` | `gzip` or `none` |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_TIMEOUT` | export timeout in milliseconds |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_CERTIFICATE` | PEM file of an extra trusted root for HTTPS |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_CLIENT_CERTIFICATE` | PEM file of the client certificate chain (mTLS) |
//! | `OTEL_EXPORTER_OTLP[_LOGS]_CLIENT_KEY` | PEM file of the client certificate's private key (mTLS) |
//! | `OTEL_SERVICE_NAME` | the app (`service.name`) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,…` resource attributes |
//! | `GROWTH_USER_HASH_KEY` | the HMAC key for user hashing |
//! | `GROWTH_USER_HASH_PREVIOUS_KEY` | during a key rotation's overlap, the previous key: users are also sent hashed with it |
//! | `GROWTH_SDK_DISABLED` | `true` turns tracking into a no-op |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use growth_schema::attributes::SERVICE_NAME;
use growth_schema::user_hash::{KEY_ENV, PREVIOUS_KEY_ENV};

/// Turns the SDK into a no-op when `true`.
pub const DISABLED_ENV: &str = "GROWTH_SDK_DISABLED";

/// How events travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    Http,
}

/// Default OTLP/gRPC endpoint: the collector on this machine.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Default OTLP/HTTP endpoint (a base: logs go to `/v1/logs` under it).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://127.0.0.1:4318";
/// Path of the logs signal under an OTLP/HTTP base endpoint.
pub const HTTP_LOGS_PATH: &str = "/v1/logs";

impl Protocol {
    /// The endpoint used when none is configured.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => DEFAULT_GRPC_ENDPOINT,
            Protocol::Http => DEFAULT_HTTP_ENDPOINT,
        }
    }

    /// `grpc` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol name is not `grpc`, `http` or `http/protobuf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: use grpc or http/protobuf")]
pub struct UnknownProtocol(String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// Compression of export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Uncompressed (the OTLP default; best on a local network).
    #[default]
    None,
    /// gzip, on both protocols.
    Gzip,
}

impl FromStr for Compression {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "gzip" => Ok(Compression::Gzip),
            "none" | "" => Ok(Compression::None),
            _ => Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "use gzip or none",
            )),
        }
    }
}

/// An environment variable holds a value the SDK cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ConfigError {
    fn new(var: &'static str, reason: &'static str) -> Self {
        ConfigError { var, reason }
    }
}

/// What the environment says, parsed. Every field is `None` when not set.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvConfig {
    /// The logs endpoint, final (HTTP: the full URL).
    pub(crate) logs_endpoint: Option<String>,
    /// The base endpoint (HTTP: `/v1/logs` still to append).
    pub(crate) endpoint: Option<String>,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) compression: Option<Compression>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) certificate_file: Option<String>,
    /// mTLS: the client certificate chain and its key (both or neither).
    pub(crate) client_certificate_file: Option<String>,
    pub(crate) client_key_file: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) resource_attributes: Vec<(String, String)>,
    pub(crate) user_hash_key: Option<Vec<u8>>,
    pub(crate) user_hash_previous_key: Option<Vec<u8>>,
    pub(crate) disabled: bool,
}

/// Never prints header values (they hold tokens) nor the key.
impl fmt::Debug for EnvConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvConfig")
            .field("logs_endpoint", &self.logs_endpoint)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("service_name", &self.service_name)
            .field("keyed", &self.user_hash_key.is_some())
            .field("previous_key", &self.user_hash_previous_key.is_some())
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl EnvConfig {
    /// Reads the process environment.
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Self::read(|name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(()),
        })
    }

    /// Reads variables through `lookup` (`Err` for a value that is not UTF-8).
    pub(crate) fn read(
        lookup: impl Fn(&'static str) -> Result<Option<String>, ()>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &'static str| -> Result<Option<String>, ConfigError> {
            lookup(name)
                .map_err(|()| ConfigError::new(name, "is not valid UTF-8"))
                .map(|value| value.filter(|v| !v.trim().is_empty()))
        };
        // The logs-specific variable wins over the general one.
        let either = |logs: &'static str,
                      general: &'static str|
         -> Result<Option<(&'static str, String)>, ConfigError> {
            Ok(match get(logs)? {
                Some(value) => Some((logs, value)),
                None => get(general)?.map(|value| (general, value)),
            })
        };

        let protocol = match either(
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )? {
            Some((var, value)) => Some(value.parse::<Protocol>().map_err(|_| {
                ConfigError::new(
                    var,
                    "use grpc or http/protobuf (http/json is not supported)",
                )
            })?),
            None => None,
        };
        let headers = match either(
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        )? {
            Some((var, value)) => parse_key_values(&value).ok_or(ConfigError::new(
                var,
                "use key=value pairs separated by commas, values percent-encoded",
            ))?,
            None => Vec::new(),
        };
        let compression = match either(
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        )? {
            Some((var, value)) => Some(
                value
                    .parse::<Compression>()
                    .map_err(|_| ConfigError::new(var, "use gzip or none"))?,
            ),
            None => None,
        };
        let timeout = match either(
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        )? {
            Some((var, value)) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Some(Duration::from_millis(ms)),
                _ => {
                    return Err(ConfigError::new(
                        var,
                        "use a whole number of milliseconds above 0",
                    ));
                }
            },
            None => None,
        };
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES")? {
            Some(value) => parse_key_values(&value).ok_or(ConfigError::new(
                "OTEL_RESOURCE_ATTRIBUTES",
                "use key=value pairs separated by commas, values percent-encoded",
            ))?,
            None => Vec::new(),
        };
        let service_name = get("OTEL_SERVICE_NAME")?.or_else(|| {
            resource_attributes
                .iter()
                .find(|(key, _)| key == SERVICE_NAME)
                .map(|(_, value)| value.clone())
        });
        let disabled = match get(DISABLED_ENV)? {
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(ConfigError::new(DISABLED_ENV, "use true or false")),
            },
            None => false,
        };
        Ok(EnvConfig {
            logs_endpoint: get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")?,
            endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT")?,
            protocol,
            headers,
            compression,
            timeout,
            certificate_file: either(
                "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            )?
            .map(|(_, path)| path),
            client_certificate_file: either(
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            )?
            .map(|(_, path)| path),
            client_key_file: either(
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            )?
            .map(|(_, path)| path),
            service_name,
            resource_attributes,
            user_hash_key: get(KEY_ENV)?.map(String::into_bytes),
            user_hash_previous_key: get(PREVIOUS_KEY_ENV)?.map(String::into_bytes),
            disabled,
        })
    }
}

/// `key=value,key2=value2` (W3C baggage style, as the OTel specification uses
/// for headers and resource attributes), keys and values trimmed and
/// percent-decoded. `None` when a pair has no `=`, an empty key, or bad escapes.
pub(crate) fn parse_key_values(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for pair in text.split(',') {
        if pair.trim().is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=')?;
        let key = percent_decode(key.trim())?;
        if key.is_empty() {
            return None;
        }
        pairs.push((key, percent_decode(value.trim())?));
    }
    Some(pairs)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL an exporter is given: the gRPC endpoint as is; for HTTP the logs URL
/// (`/v1/logs` appended to a base endpoint unless `is_logs_url`).
pub(crate) fn export_target(
    protocol: Protocol,
    endpoint: &str,
    is_logs_url: bool,
) -> Result<String, &'static str> {
    let endpoint = endpoint.trim();
    let authority = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    if authority.is_empty() || authority.starts_with('/') {
        return Err("has no host");
    }
    let base = endpoint.trim_end_matches('/');
    Ok(match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::Http if is_logs_url || base.ends_with(HTTP_LOGS_PATH) => base.to_owned(),
        Protocol::Http => format!("{base}{HTTP_LOGS_PATH}"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&'static str, &str)]) -> Result<EnvConfig, ConfigError> {
        let vars: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        EnvConfig::read(|name| Ok(vars.get(name).cloned()))
    }

    #[test]
    fn nothing_set_is_all_defaults() {
        assert_eq!(read(&[]).unwrap(), EnvConfig::default());
    }

    #[test]
    fn reads_every_standard_variable() {
        let config = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cret, x-tenant = a%2Cb",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-resource,deployment.environment=prod",
            ),
            ("GROWTH_USER_HASH_KEY", "k3y"),
            ("GROWTH_SDK_DISABLED", "false"),
        ])
        .unwrap();
        assert_eq!(config.endpoint.as_deref(), Some("https://collector:4318"));
        assert_eq!(config.protocol, Some(Protocol::Http));
        assert_eq!(
            config.headers,
            [
                ("authorization".to_owned(), "Bearer s3cret".to_owned()),
                ("x-tenant".to_owned(), "a,b".to_owned())
            ]
        );
        assert_eq!(config.compression, Some(Compression::Gzip));
        assert_eq!(config.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(config.service_name.as_deref(), Some("from-resource"));
        assert_eq!(config.resource_attributes.len(), 2);
        assert_eq!(config.user_hash_key.as_deref(), Some(&b"k3y"[..]));
        assert!(!config.disabled);
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn logs_specific_variables_win() {
        let config = read(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "named"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=other"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://c:4318/custom/logs",
            ),
        ])
        .unwrap();
        assert_eq!(config.protocol, Some(Protocol::Grpc));
        assert_eq!(config.service_name.as_deref(), Some("named"));
        assert_eq!(
            config.logs_endpoint.as_deref(),
            Some("http://c:4318/custom/logs")
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("GROWTH_SDK_DISABLED", "maybe"),
        ] {
            let error = read(&[(var, value)]).unwrap_err();
            assert_eq!(error.var, var, "{value}");
        }
        assert!(read(&[("GROWTH_SDK_DISABLED", "TRUE")]).unwrap().disabled);
    }

    #[test]
    fn http_endpoint_gets_the_logs_path_once() {
        for endpoint in [
            "http://127.0.0.1:4318",
            "http://127.0.0.1:4318/",
            "http://127.0.0.1:4318/v1/logs",
        ] {
            assert_eq!(
                export_target(Protocol::Http, endpoint, false).unwrap(),
                "http://127.0.0.1:4318/v1/logs"
            );
        }
        assert_eq!(
            export_target(Protocol::Http, "https://c/custom", true).unwrap(),
            "https://c/custom"
        );
        assert_eq!(
            export_target(Protocol::Grpc, "http://127.0.0.1:4317/", false).unwrap(),
            "http://127.0.0.1:4317"
        );
        for endpoint in ["127.0.0.1:4317", "http://", "ftp://x"] {
            assert!(export_target(Protocol::Grpc, endpoint, false).is_err());
        }
    }

    #[test]
    fn protocol_parses_and_picks_its_port() {
        assert_eq!("grpc".parse(), Ok(Protocol::Grpc));
        assert_eq!("http/protobuf".parse(), Ok(Protocol::Http));
        assert!("udp".parse::<Protocol>().is_err());
        assert_eq!(Protocol::Http.default_endpoint(), DEFAULT_HTTP_ENDPOINT);
    }
}
