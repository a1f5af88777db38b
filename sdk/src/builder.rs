//! [`TrackerBuilder`]: where the configuration is read once — the builder's own
//! settings over the standard environment variables (see `config`) over the
//! defaults — checked, and turned into a running [`Tracker`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use growth_schema::attributes::SERVICE_NAME;
use growth_schema::limits::{MAX_APP_BYTES, is_valid_name};
use growth_schema::user_hash::{KEY_ENV, PREVIOUS_KEY_ENV, UserHasher};

use crate::config::{Compression, ConfigError, EnvConfig, Protocol, export_target};
use crate::delivery::{Delivery, LossCallback};
use crate::error::SdkError;
use crate::queue::{Queue, QueueLimits};
use crate::report::{Counters, Loss};
use crate::request::RequestTemplate;
use crate::tracker::Tracker;
use crate::transport::TransportSettings;
use crate::worker::DeliverySettings;

/// The app name when neither the builder nor the environment gives one (the
/// OpenTelemetry default).
const UNKNOWN_SERVICE: &str = "unknown_service";

/// The tracker's entry points live here, beside what they return, so that
/// `tracker` does not import its builder back.
impl Tracker {
    /// Starts configuring a tracker for the app `service_name` (the resource
    /// attribute `service.name`, the `app` of every metric; it wins over
    /// `OTEL_SERVICE_NAME`).
    pub fn builder(service_name: impl Into<String>) -> TrackerBuilder {
        TrackerBuilder::new(Some(service_name.into()))
    }

    /// Starts configuring a tracker entirely from the environment: the app from
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
    /// else `unknown_service`), the rest as [`builder`](Self::builder) reads it.
    pub fn from_env() -> TrackerBuilder {
        TrackerBuilder::new(None)
    }
}

/// Configures a [`Tracker`]; start with [`Tracker::builder`] or [`Tracker::from_env`].
#[derive(Clone)]
pub struct TrackerBuilder {
    service_name: Option<String>,
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    headers: Vec<(String, String)>,
    compression: Option<Compression>,
    resource: Vec<(String, String)>,
    user_hash_key: Option<Result<Option<Vec<u8>>, &'static str>>,
    user_hash_previous_key: Option<Result<Option<Vec<u8>>, &'static str>>,
    ca_certificate: Option<Vec<u8>>,
    client_identity: Option<(Vec<u8>, Vec<u8>)>,
    disabled: Option<bool>,
    queue_capacity: usize,
    queue_max_bytes: usize,
    batch_size: usize,
    batch_max_bytes: usize,
    batch_delay: Duration,
    max_concurrent_exports: usize,
    export_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    backoff_max: Duration,
    on_loss: Option<LossCallback>,
    env: Option<Vec<(String, String)>>,
}

/// Never prints the user-hash key or header values (tokens).
impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("service_name", &self.service_name)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("compression", &self.compression)
            .field("keyed", &matches!(self.user_hash_key, Some(Ok(Some(_)))))
            .field(
                "previous_key",
                &matches!(self.user_hash_previous_key, Some(Ok(Some(_)))),
            )
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("batch_size", &self.batch_size)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("batch_delay", &self.batch_delay)
            .field("max_concurrent_exports", &self.max_concurrent_exports)
            .field("export_timeout", &self.export_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl TrackerBuilder {
    pub(crate) fn new(service_name: Option<String>) -> Self {
        TrackerBuilder {
            service_name,
            endpoint: None,
            protocol: None,
            headers: Vec::new(),
            compression: None,
            resource: Vec::new(),
            user_hash_key: None,
            user_hash_previous_key: None,
            ca_certificate: None,
            client_identity: None,
            disabled: None,
            queue_capacity: 4_000_000,
            queue_max_bytes: 64 << 20,
            batch_size: 8192,
            batch_max_bytes: 1 << 20,
            batch_delay: Duration::from_millis(500),
            max_concurrent_exports: 4,
            export_timeout: None,
            shutdown_timeout: Duration::from_secs(15),
            backoff_max: Duration::from_secs(5),
            on_loss: None,
            env: None,
        }
    }

    /// Collector address, `http://host:port` or `https://host:port`; for
    /// [`Protocol::Http`] the base address (logs go to `/v1/logs` under it).
    /// Default: `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else the protocol's local port.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// OTLP over gRPC or HTTP/protobuf. Default: `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Adds a header (gRPC metadata) to every export, e.g. the collector's
    /// ingest token: `.header("authorization", "Bearer <token>")`. Replaces a
    /// header of the same name from `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// gzip or no compression, on either protocol. Default:
    /// `OTEL_EXPORTER_OTLP_COMPRESSION`, else none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Adds a resource attribute (e.g. `deployment.environment`), over
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// HMAC key for user hashing; must match the collector's `GROWTH_USER_HASH_KEY`.
    /// `None` or empty means plain SHA-256. Default: `GROWTH_USER_HASH_KEY`.
    pub fn user_hash_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.user_hash_key = Some(Ok(key));
        self
    }

    /// Reads the user-hash key from `GROWTH_USER_HASH_KEY` now (unset or empty:
    /// plain SHA-256). `build` does the same when no key was set; this is for
    /// reading it at a chosen moment. A value that is not UTF-8 makes
    /// [`build`](Self::build) fail.
    pub fn user_hash_key_from_env(mut self) -> Self {
        self.user_hash_key = Some(match std::env::var(KEY_ENV) {
            Ok(key) => Ok(Some(key.into_bytes())),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KEY_ENV),
        });
        self
    }

    /// During a key rotation's overlap (docs/contract.md, "Rotating the key"): the
    /// previous HMAC key, the collector's `GROWTH_USER_HASH_PREVIOUS_KEY`. Every event
    /// of a user then also carries `user.hash.previous`, the user hashed with it, so
    /// the collector pairs the two hashes. `None` or empty: no overlap. Default:
    /// `GROWTH_USER_HASH_PREVIOUS_KEY`.
    pub fn user_hash_previous_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.user_hash_previous_key = Some(Ok(key));
        self
    }

    /// Reads both keys now: [`user_hash_key_from_env`](Self::user_hash_key_from_env)
    /// and `GROWTH_USER_HASH_PREVIOUS_KEY` (unset or empty: no overlap).
    pub fn user_hash_keys_from_env(mut self) -> Self {
        self.user_hash_previous_key = Some(match std::env::var(PREVIOUS_KEY_ENV) {
            Ok(key) => Ok(Some(key.into_bytes())),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(PREVIOUS_KEY_ENV),
        });
        self.user_hash_key_from_env()
    }

    /// An extra trusted root certificate (PEM) for an `https://` endpoint with a
    /// private CA. Default: `OTEL_EXPORTER_OTLP_CERTIFICATE` (a file), else the
    /// public web roots only.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// A client certificate chain and its private key (both PEM) presented over
    /// `https://`, for a collector that requires client certificates (mTLS,
    /// `--tls-client-ca`). Default: the files named by
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `OTEL_EXPORTER_OTLP_CLIENT_KEY`
    /// (both or neither), else none.
    pub fn client_identity_pem(
        mut self,
        certificate_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some((certificate_chain.into(), key.into()));
        self
    }

    /// `true` makes every tracking call a no-op (nothing queued, counted or
    /// sent). Default: `GROWTH_SDK_DISABLED`, else false.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// Most events held (queued, being sent or waiting for a retry); beyond it
    /// `track` drops and counts. Default 4,000,000 — the byte budget
    /// ([`queue_max_bytes`](Self::queue_max_bytes)) normally binds first.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Most bytes held (queued, being sent or waiting for a retry); beyond it
    /// `track` drops and counts. Default 64 MiB (about 200,000 typical events).
    pub fn queue_max_bytes(mut self, bytes: usize) -> Self {
        self.queue_max_bytes = bytes;
        self
    }

    /// Most events in one export request. Default 8192.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// Most bytes in one export request (before compression). Default 1 MiB,
    /// well under the 4 MiB a stock OTLP/gRPC receiver accepts.
    pub fn batch_max_bytes(mut self, bytes: usize) -> Self {
        self.batch_max_bytes = bytes;
        self
    }

    /// Longest an event waits for its batch to fill before it is sent. Default 500 ms.
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.batch_delay = delay;
        self
    }

    /// Export requests in flight at once while the collector is healthy. Default 4.
    pub fn max_concurrent_exports(mut self, exports: usize) -> Self {
        self.max_concurrent_exports = exports;
        self
    }

    /// Longest one export attempt may take before it is retried. Default:
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, else 10 s.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = Some(timeout);
        self
    }

    /// Longest `flush`, `shutdown` and a drop outside an async runtime wait for
    /// delivery. Default 15 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Longest pause between two retries of a failing export when the collector
    /// names no delay. Default 5 s.
    pub fn max_retry_backoff(mut self, backoff: Duration) -> Self {
        self.backoff_max = backoff;
        self
    }

    /// Called on the delivery thread (at most about once a second) with the
    /// events newly dropped or given up on, e.g. to count them in the app's own
    /// metrics. A warning is logged through `tracing` as well.
    pub fn on_loss(mut self, callback: impl Fn(&Loss) + Send + Sync + 'static) -> Self {
        self.on_loss = Some(Arc::new(callback));
        self
    }

    /// Reads the configuration variables (`OTEL_*`, `GROWTH_*`) from these pairs
    /// instead of the process environment — e.g. from the app's own config file.
    pub fn env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    fn read_env(&self) -> Result<EnvConfig, ConfigError> {
        match &self.env {
            None => EnvConfig::from_env(),
            Some(vars) => EnvConfig::read(|name| {
                Ok(vars
                    .iter()
                    .rev()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.clone()))
            }),
        }
    }

    /// Checks the configuration and starts the delivery thread. Connects lazily:
    /// a collector that is down is not an error here (events wait, then retry).
    /// With `GROWTH_SDK_DISABLED=true` (or [`disabled`](Self::disabled)) the
    /// tracker is a no-op and no thread starts.
    pub fn build(self) -> Result<Tracker, SdkError> {
        let env = self.read_env().map_err(SdkError::Config)?;
        let service_name = self
            .service_name
            .clone()
            .or_else(|| env.service_name.clone())
            .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
        if !is_valid_name(&service_name, MAX_APP_BYTES) {
            return Err(SdkError::InvalidServiceName(service_name));
        }
        let key = match self.user_hash_key.clone() {
            Some(key) => key.map_err(|var| SdkError::InvalidUserHashKey { var })?,
            None => env.user_hash_key.clone(),
        };
        let hasher = UserHasher::new(key);
        let previous = match self.user_hash_previous_key.clone() {
            Some(key) => key.map_err(|var| SdkError::InvalidUserHashKey { var })?,
            None => env.user_hash_previous_key.clone(),
        }
        .filter(|k| !k.is_empty())
        .map(|k| UserHasher::new(Some(k)));
        if self.disabled.unwrap_or(env.disabled) {
            return Ok(Tracker::disabled(hasher, service_name));
        }

        let protocol = self.protocol.or(env.protocol).unwrap_or_default();
        let (endpoint, is_logs_url) = match (&self.endpoint, &env.logs_endpoint, &env.endpoint) {
            (Some(endpoint), _, _) => (endpoint.clone(), false),
            (None, Some(logs), _) => (logs.clone(), true),
            (None, None, Some(base)) => (base.clone(), false),
            (None, None, None) => (protocol.default_endpoint().to_owned(), false),
        };
        let url = export_target(protocol, &endpoint, is_logs_url).map_err(|reason| {
            SdkError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                reason,
            }
        })?;
        let ca_certificate = match (&self.ca_certificate, &env.certificate_file) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(path)) => Some(std::fs::read(path).map_err(|error| {
                SdkError::Exporter(
                    format!("cannot read the certificate file {path}: {error}").into(),
                )
            })?),
            (None, None) => None,
        };
        let read_pem = |path: &String| {
            std::fs::read(path).map_err(|error| {
                SdkError::Exporter(format!("cannot read the file {path}: {error}").into())
            })
        };
        let client_identity = match (
            &self.client_identity,
            &env.client_certificate_file,
            &env.client_key_file,
        ) {
            (Some(identity), _, _) => Some(identity.clone()),
            (None, Some(cert), Some(key)) => Some((read_pem(cert)?, read_pem(key)?)),
            (None, None, None) => None,
            (None, _, _) => {
                return Err(SdkError::InvalidSetting {
                    setting: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    reason: "set both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY, or neither",
                });
            }
        };
        let mut headers = env.headers.clone();
        for (name, value) in &self.headers {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            headers.push((name.clone(), value.clone()));
        }

        for (setting, value) in [
            ("queue_capacity", self.queue_capacity),
            ("queue_max_bytes", self.queue_max_bytes),
            ("batch_size", self.batch_size),
            ("batch_max_bytes", self.batch_max_bytes),
            ("max_concurrent_exports", self.max_concurrent_exports),
        ] {
            if value == 0 {
                return Err(SdkError::InvalidSetting {
                    setting,
                    reason: "must be at least 1",
                });
            }
        }
        let export_timeout = self
            .export_timeout
            .or(env.timeout)
            .unwrap_or(Duration::from_secs(10));
        for (setting, value) in [
            ("batch_delay", self.batch_delay),
            ("export_timeout", export_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("max_retry_backoff", self.backoff_max),
        ] {
            if value.is_zero() {
                return Err(SdkError::InvalidSetting {
                    setting,
                    reason: "must be longer than zero",
                });
            }
        }

        // service.name first; builder attributes over the environment's.
        let mut resource = vec![(SERVICE_NAME.to_owned(), service_name.clone())];
        for (key, value) in env.resource_attributes.iter().chain(&self.resource) {
            if key == SERVICE_NAME {
                continue;
            }
            resource.retain(|(existing, _)| existing != key);
            resource.push((key.clone(), value.clone()));
        }

        let queue = Arc::new(Queue::new(QueueLimits {
            max_bytes: self.queue_max_bytes,
            max_events: self.queue_capacity,
            wake_bytes: self.batch_max_bytes,
        }));
        let settings = DeliverySettings {
            batch_max_events: self.batch_size,
            batch_max_bytes: self.batch_max_bytes,
            batch_delay: self.batch_delay,
            max_concurrent_exports: self.max_concurrent_exports,
            export_timeout,
            shutdown_timeout: self.shutdown_timeout,
            backoff_initial: Duration::from_millis(100).min(self.backoff_max),
            backoff_max: self.backoff_max,
        };
        let transport = TransportSettings {
            protocol,
            url,
            headers,
            compression: self.compression.or(env.compression).unwrap_or_default(),
            ca_certificate,
            client_identity,
            connect_timeout: export_timeout.min(Duration::from_secs(5)),
        };
        let counters = Arc::new(Counters::default());
        let delivery = Delivery::start(
            settings,
            queue,
            RequestTemplate::with_previous(&resource, hasher.clone(), previous.clone()),
            transport,
            counters,
            self.on_loss.clone(),
        )?;
        Ok(Tracker::new(hasher, delivery, service_name).with_previous_key(previous.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> TrackerBuilder {
        TrackerBuilder::new(Some("app".into())).env_vars::<&str, &str>([])
    }

    #[test]
    fn build_checks_its_settings() {
        let errors = [
            TrackerBuilder::new(Some(String::new())).build().err(),
            TrackerBuilder::new(Some("app\n".into())).build().err(),
            builder().queue_capacity(0).build().err(),
            builder().queue_max_bytes(0).build().err(),
            builder().batch_size(0).build().err(),
            builder().max_concurrent_exports(0).build().err(),
            builder().export_timeout(Duration::ZERO).build().err(),
            builder().endpoint("localhost:4317").build().err(),
            builder()
                .env_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
                .build()
                .err(),
            builder().header("bad header", "x").build().err(),
        ];
        for error in errors {
            assert!(error.is_some());
        }
    }

    #[test]
    fn https_endpoints_build_on_both_protocols() {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let tracker = builder()
                .endpoint("https://collector.example:4317")
                .protocol(protocol)
                .build()
                .expect("https is supported");
            drop(tracker);
        }
    }

    #[test]
    fn the_environment_names_the_app_and_the_builder_wins() {
        let from_env = TrackerBuilder::new(None)
            .env_vars([("OTEL_SERVICE_NAME", "from-env")])
            .disabled(true)
            .build()
            .unwrap();
        assert_eq!(from_env.service_name(), "from-env");
        let unnamed = TrackerBuilder::new(None)
            .env_vars::<&str, &str>([])
            .disabled(true)
            .build()
            .unwrap();
        assert_eq!(unnamed.service_name(), UNKNOWN_SERVICE);
        let named = TrackerBuilder::new(Some("mine".into()))
            .env_vars([("OTEL_SERVICE_NAME", "from-env")])
            .disabled(true)
            .build()
            .unwrap();
        assert_eq!(named.service_name(), "mine");
    }

    #[test]
    fn a_previous_key_from_the_builder_or_the_environment_starts_an_overlap() {
        let debug = |b: TrackerBuilder| format!("{:?}", b.build().expect("builds"));
        let from_env = debug(builder().env_vars([
            ("GROWTH_USER_HASH_KEY", "new-secret"),
            ("GROWTH_USER_HASH_PREVIOUS_KEY", "old-secret"),
        ]));
        assert!(from_env.contains("previous: true"), "{from_env}");
        assert!(!from_env.contains("secret"));
        let set = debug(
            builder()
                .env_vars([("GROWTH_USER_HASH_KEY", "k")])
                .user_hash_previous_key(Some(b"old".to_vec())),
        );
        assert!(set.contains("previous: true"));
        // The builder wins over the environment; empty means no overlap.
        let none = debug(
            builder()
                .env_vars([("GROWTH_USER_HASH_PREVIOUS_KEY", "old")])
                .user_hash_previous_key(Some(Vec::new())),
        );
        assert!(none.contains("previous: false"));
    }

    #[test]
    fn the_key_comes_from_the_environment_unless_set() {
        let keyed = builder()
            .env_vars([("GROWTH_USER_HASH_KEY", "k")])
            .disabled(true)
            .build()
            .unwrap();
        assert_eq!(
            keyed.hash_user("u1"),
            UserHasher::new(Some(b"k".to_vec())).hash("u1")
        );
        let overridden = builder()
            .env_vars([("GROWTH_USER_HASH_KEY", "k")])
            .user_hash_key(None)
            .disabled(true)
            .build()
            .unwrap();
        assert!(!overridden.keyed_hashing());
    }

    #[test]
    fn debug_hides_the_key_and_header_values() {
        let builder = builder()
            .user_hash_key(Some(b"topsecret".to_vec()))
            .header("authorization", "Bearer hidden-token");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("topsecret") && shown.contains("keyed: true"));
        assert!(!shown.contains("hidden-token"));
    }
}
