//! The errors the SDK returns. `track` never returns one: a failure to deliver is
//! counted (see [`DeliveryReport`]) and surfaces only from `flush` and `shutdown`.

use crate::report::DeliveryReport;

/// Why building a [`Tracker`](crate::Tracker) failed, or why not every event was delivered.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The service name (the app) is empty, too long or has control characters.
    #[error(
        "invalid service name {0:?}: use 1 to {max} printable bytes",
        max = growth_schema::limits::MAX_APP_BYTES
    )]
    InvalidServiceName(String),

    /// An environment variable (`OTEL_*`, `GROWTH_*`) holds a value the SDK cannot use.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),

    /// The endpoint is not an `http://host:port` or `https://host:port` address.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A size or duration setting is out of range.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The builder method that set it.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `GROWTH_USER_HASH_KEY` is set but is not valid UTF-8.
    #[error("{var} is set but is not valid UTF-8")]
    InvalidUserHashKey {
        /// The environment variable read.
        var: &'static str,
    },

    /// The OTLP client could not be set up (bad endpoint for gRPC, TLS
    /// certificate, …).
    #[error("could not set up the OTLP exporter: {0}")]
    Exporter(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),

    /// The delivery thread could not be started.
    #[error("could not start the delivery thread: {0}")]
    Thread(#[source] std::io::Error),

    /// Some events were not delivered; the report says how many and why.
    #[error("{}", undelivered_message(.0))]
    Undelivered(DeliveryReport),
}

impl SdkError {
    /// The delivery numbers, when this error is about delivery.
    pub fn report(&self) -> Option<&DeliveryReport> {
        match self {
            SdkError::Undelivered(report) => Some(report),
            _ => None,
        }
    }
}

fn undelivered_message(report: &DeliveryReport) -> String {
    let mut message = format!(
        "{} of {} tracked events not delivered ({report})",
        report.tracked.saturating_sub(report.delivered),
        report.tracked
    );
    if let Some(error) = &report.last_error {
        message.push_str(": last error: ");
        message.push_str(error);
    }
    message
}
