//! [`TrackerBuilder`]: where the tracker's configuration is read once, checked,
//! and turned into a running [`Tracker`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use growth_schema::limits::{MAX_APP_BYTES, is_valid_name};
use growth_schema::user_hash::{KEY_ENV, UserHasher};
use opentelemetry::InstrumentationScope;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry_otlp::{LogExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogExporter as _, SdkLoggerProvider};

use crate::delivery::{Delivery, DeliverySettings};
use crate::error::SdkError;
use crate::report::Counters;
use crate::tracker::Tracker;

/// Default OTLP/gRPC endpoint: the collector on this machine.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Default OTLP/HTTP endpoint (a base: logs go to `/v1/logs` under it).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://127.0.0.1:4318";
/// Path of the logs signal under an OTLP/HTTP base endpoint.
pub const HTTP_LOGS_PATH: &str = "/v1/logs";

/// How events travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    Http,
}

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
#[error("unknown protocol {0:?}: use grpc or http")]
pub struct UnknownProtocol(String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// Configures a [`Tracker`]; start with [`Tracker::builder`].
#[derive(Clone)]
pub struct TrackerBuilder {
    service_name: String,
    endpoint: Option<String>,
    protocol: Protocol,
    user_hash_key: Result<Option<Vec<u8>>, &'static str>,
    queue_capacity: usize,
    batch_size: usize,
    batch_delay: Duration,
    export_timeout: Duration,
    shutdown_timeout: Duration,
}

/// Never prints the user-hash key.
impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("service_name", &self.service_name)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("keyed", &matches!(self.user_hash_key, Ok(Some(_))))
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_size", &self.batch_size)
            .field("batch_delay", &self.batch_delay)
            .field("export_timeout", &self.export_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl TrackerBuilder {
    pub(crate) fn new(service_name: impl Into<String>) -> Self {
        TrackerBuilder {
            service_name: service_name.into(),
            endpoint: None,
            protocol: Protocol::Grpc,
            user_hash_key: Ok(None),
            queue_capacity: 8192,
            batch_size: 512,
            batch_delay: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(15),
        }
    }

    /// Collector address, `http://host:port`; for [`Protocol::Http`] the base
    /// address (logs go to `/v1/logs` under it). Default: the protocol's local port.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// OTLP over gRPC (default) or HTTP/protobuf.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// HMAC key for user hashing; must match the collector's `GROWTH_USER_HASH_KEY`.
    /// `None` or empty means plain SHA-256.
    pub fn user_hash_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.user_hash_key = Ok(key);
        self
    }

    /// Reads the user-hash key from `GROWTH_USER_HASH_KEY` (unset or empty: plain
    /// SHA-256). A value that is not UTF-8 makes [`build`](Self::build) fail.
    pub fn user_hash_key_from_env(mut self) -> Self {
        self.user_hash_key = match std::env::var(KEY_ENV) {
            Ok(key) => Ok(Some(key.into_bytes())),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KEY_ENV),
        };
        self
    }

    /// Most events waiting to be sent; beyond it `track` drops and counts. Default 8192.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Most events in one export request. Default 512.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// Longest an event waits for its batch to fill before it is sent. Default 1 s.
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.batch_delay = delay;
        self
    }

    /// Longest one export request may take, retries included. Default 10 s.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// Longest `flush` and `shutdown` wait for delivery. Default 15 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Checks the configuration and starts the delivery thread. Connects lazily:
    /// a collector that is down is not an error here (events then fail, counted).
    /// The standard `OTEL_EXPORTER_OTLP_*` variables the builder does not set
    /// (headers, for instance) are honoured by the OTLP exporter.
    pub fn build(self) -> Result<Tracker, SdkError> {
        if !is_valid_name(&self.service_name, MAX_APP_BYTES) {
            return Err(SdkError::InvalidServiceName(self.service_name));
        }
        let key = self
            .user_hash_key
            .map_err(|var| SdkError::InvalidUserHashKey { var })?;
        let endpoint = self
            .endpoint
            .unwrap_or_else(|| self.protocol.default_endpoint().to_owned());
        let target = export_target(self.protocol, &endpoint)?;
        check_positive("queue_capacity", self.queue_capacity)?;
        check_positive("batch_size", self.batch_size)?;
        for (setting, value) in [
            ("batch_delay", self.batch_delay),
            ("export_timeout", self.export_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if value.is_zero() {
                return Err(SdkError::InvalidSetting {
                    setting,
                    reason: "must be longer than zero",
                });
            }
        }

        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .build();
        let scope = InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        // The provider only makes log records here (it has no processor):
        // delivery is ours, see `delivery`.
        let logger = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .build()
            .logger_with_scope(scope.clone());

        let settings = DeliverySettings {
            queue_capacity: self.queue_capacity,
            batch_size: self.batch_size,
            batch_delay: self.batch_delay,
            export_timeout: self.export_timeout,
            shutdown_timeout: self.shutdown_timeout,
        };
        let protocol = self.protocol;
        let export_timeout = self.export_timeout;
        let counters = Arc::new(Counters::default());
        let delivery = Delivery::start(settings, scope, counters, move || {
            build_exporter(protocol, target, export_timeout, &resource)
        })?;
        Ok(Tracker::new(
            logger,
            UserHasher::new(key),
            delivery,
            self.service_name,
        ))
    }
}

fn check_positive(setting: &'static str, value: usize) -> Result<(), SdkError> {
    if value == 0 {
        Err(SdkError::InvalidSetting {
            setting,
            reason: "must be at least 1",
        })
    } else {
        Ok(())
    }
}

/// The URL the exporter is given: the gRPC endpoint as is; for HTTP the logs URL,
/// since opentelemetry-otlp uses a configured HTTP endpoint verbatim.
fn export_target(protocol: Protocol, endpoint: &str) -> Result<String, SdkError> {
    let invalid = |reason| SdkError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") {
        return Err(invalid(
            "https is not built into growth-sdk; send to a local collector over http",
        ));
    }
    let Some(authority) = endpoint.strip_prefix("http://") else {
        return Err(invalid("must start with http://"));
    };
    if authority.is_empty() || authority.starts_with('/') {
        return Err(invalid("has no host"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::Http if base.ends_with(HTTP_LOGS_PATH) => base.to_owned(),
        Protocol::Http => format!("{base}{HTTP_LOGS_PATH}"),
    })
}

/// Runs on the delivery thread, inside its Tokio runtime.
fn build_exporter(
    protocol: Protocol,
    target: String,
    timeout: Duration,
    resource: &Resource,
) -> Result<LogExporter, SdkError> {
    let built = match protocol {
        Protocol::Grpc => LogExporter::builder()
            .with_tonic()
            .with_endpoint(target)
            .with_timeout(timeout)
            .build(),
        Protocol::Http => LogExporter::builder()
            .with_http()
            .with_endpoint(target)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(timeout)
            .build(),
    };
    let mut exporter = built.map_err(|error| SdkError::Exporter(Box::new(error)))?;
    exporter.set_resource(resource);
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoint_gets_the_logs_path_once() {
        for endpoint in [
            "http://127.0.0.1:4318",
            "http://127.0.0.1:4318/",
            "http://127.0.0.1:4318/v1/logs",
        ] {
            assert_eq!(
                export_target(Protocol::Http, endpoint).unwrap(),
                "http://127.0.0.1:4318/v1/logs"
            );
        }
        assert_eq!(
            export_target(Protocol::Grpc, "http://127.0.0.1:4317/").unwrap(),
            "http://127.0.0.1:4317"
        );
    }

    #[test]
    fn rejects_endpoints_it_cannot_serve() {
        for endpoint in [
            "127.0.0.1:4317",
            "https://collector:4317",
            "http://",
            "ftp://x",
        ] {
            assert!(matches!(
                export_target(Protocol::Grpc, endpoint),
                Err(SdkError::InvalidEndpoint { .. })
            ));
        }
    }

    #[test]
    fn protocol_parses_and_picks_its_port() {
        assert_eq!("grpc".parse(), Ok(Protocol::Grpc));
        assert_eq!("http/protobuf".parse(), Ok(Protocol::Http));
        assert!("udp".parse::<Protocol>().is_err());
        assert_eq!(Protocol::Http.default_endpoint(), DEFAULT_HTTP_ENDPOINT);
        assert_eq!(
            Protocol::default().default_endpoint(),
            DEFAULT_GRPC_ENDPOINT
        );
    }

    #[test]
    fn build_checks_settings() {
        let errors = [
            TrackerBuilder::new("").build().err(),
            TrackerBuilder::new("app\n").build().err(),
            TrackerBuilder::new("app").queue_capacity(0).build().err(),
            TrackerBuilder::new("app").batch_size(0).build().err(),
            TrackerBuilder::new("app")
                .export_timeout(Duration::ZERO)
                .build()
                .err(),
            TrackerBuilder::new("app")
                .endpoint("localhost:4317")
                .build()
                .err(),
        ];
        for error in errors {
            assert!(error.is_some());
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let builder = TrackerBuilder::new("app").user_hash_key(Some(b"topsecret".to_vec()));
        let shown = format!("{builder:?}");
        assert!(!shown.contains("topsecret") && shown.contains("keyed: true"));
    }
}
