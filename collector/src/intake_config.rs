//! The flags of the edge: input bounds, privacy, authentication and timeouts.
//!
//! Kept apart from `config.rs` (flattened into it) so the rules of what the
//! collector lets in are read in one place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use growth_schema::service::duration;
use growth_schema::user_hash::UserHasher;

use crate::auth::{Auth, TokensFileError};
use crate::catalog::{Catalog, DEFAULT_MAX_APPS, DEFAULT_MAX_EVENTS_PER_APP};
use crate::map::{MapRules, TimeWindow};
use crate::privacy::{IdentifyingAction, Privacy};
use crate::receiver::EdgeRules;
use crate::receiver::decode::DecodeLimits;
use crate::receiver::serve::Timeouts;

/// What the collector lets in.
#[derive(Debug, Clone, Args)]
pub struct IntakeArgs {
    /// Oldest accepted event time, counted back from its arrival (e.g. 31d; raise it for
    /// backfills, at most 2555d). Older records are rejected one by one (time_too_old).
    #[arg(long, value_name = "DURATION", env = "GROWTH_MAX_EVENT_AGE", default_value = "31days", value_parser = parse_max_age)]
    pub max_event_age: Duration,

    /// Furthest accepted event time ahead of the collector's clock (e.g. 1h). Later
    /// records are rejected one by one (time_in_future).
    #[arg(long, value_name = "DURATION", env = "GROWTH_MAX_CLOCK_SKEW", default_value = "1h", value_parser = parse_skew)]
    pub max_clock_skew: Duration,

    /// Most distinct apps (service.name) accepted; records of further apps are rejected (too_many_apps).
    #[arg(long, value_name = "N", env = "GROWTH_MAX_APPS", default_value_t = DEFAULT_MAX_APPS as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_apps: u32,

    /// Most distinct event names per app; records of further names are rejected (too_many_event_names).
    #[arg(long, value_name = "N", env = "GROWTH_MAX_EVENTS_PER_APP", default_value_t = DEFAULT_MAX_EVENTS_PER_APP as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_events_per_app: u32,

    /// Most log records in one request; a request with more is refused (400 / INVALID_ARGUMENT).
    #[arg(long, value_name = "N", env = "GROWTH_MAX_RECORDS_PER_REQUEST", default_value_t = DecodeLimits::default().max_records as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_records_per_request: u32,

    /// Most attributes, array/map elements (at any depth) and resource/scope groups in one
    /// request; more is refused.
    #[arg(long, value_name = "N", env = "GROWTH_MAX_VALUES_PER_REQUEST", default_value_t = DecodeLimits::default().max_values as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_values_per_request: u32,

    /// Deepest nesting of array/map attribute values; deeper is refused.
    #[arg(long, value_name = "N", env = "GROWTH_MAX_VALUE_DEPTH", default_value_t = DecodeLimits::default().max_depth as u32, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_value_depth: u32,

    /// More attribute names that identify a person (comma list), added to the built-in
    /// list (user.email, enduser.id, client.address, ...): never stored raw.
    #[arg(
        long,
        value_name = "NAMES",
        env = "GROWTH_IDENTIFYING_ATTRIBUTES",
        value_delimiter = ','
    )]
    pub identifying_attributes: Vec<String>,

    /// What becomes of identifying attribute values: hashed like user.id, or dropped.
    #[arg(long, value_name = "ACTION", env = "GROWTH_IDENTIFYING_ATTRIBUTE_ACTION", value_enum, default_value_t = IdentifyingAction::Hash)]
    pub identifying_attribute_action: IdentifyingAction,

    /// File of bearer tokens and the apps each may write (JSON lines, reloaded on
    /// SIGHUP); without it no token is needed.
    #[arg(long, value_name = "FILE", env = "GROWTH_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Longest wait for a request's headers on OTLP/HTTP.
    #[arg(long, value_name = "DURATION", env = "GROWTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// Longest wait for a request's body (both receivers); a gRPC call must also be answered within it.
    #[arg(long, value_name = "DURATION", env = "GROWTH_REQUEST_READ_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub request_read_timeout: Duration,

    /// A connection that sends nothing for this long is closed (both receivers).
    #[arg(long, value_name = "DURATION", env = "GROWTH_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
}

/// The resolved edge configuration.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Time window, privacy and limits (the hasher is filled in by [`IntakeConfig::rules`]).
    pub time_window: TimeWindow,
    /// Identifying attributes.
    pub privacy: Privacy,
    /// Decoding bounds.
    pub decode: DecodeLimits,
    /// Catalog bounds.
    pub max_apps: usize,
    /// Catalog bounds.
    pub max_events_per_app: usize,
    /// Tokens file, when authentication is on.
    pub auth_tokens_file: Option<PathBuf>,
    /// Receiver timeouts.
    pub timeouts: Timeouts,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            time_window: TimeWindow::default(),
            privacy: Privacy::default(),
            decode: DecodeLimits::default(),
            max_apps: DEFAULT_MAX_APPS,
            max_events_per_app: DEFAULT_MAX_EVENTS_PER_APP,
            auth_tokens_file: None,
            timeouts: Timeouts::default(),
        }
    }
}

impl IntakeArgs {
    /// Resolves the flags.
    pub fn into_config(self) -> IntakeConfig {
        IntakeConfig {
            time_window: TimeWindow {
                max_age: self.max_event_age,
                max_skew: self.max_clock_skew,
            },
            privacy: Privacy::new(
                self.identifying_attributes,
                self.identifying_attribute_action,
            ),
            decode: DecodeLimits {
                max_records: self.max_records_per_request as usize,
                max_values: self.max_values_per_request as usize,
                max_depth: self.max_value_depth as usize,
            },
            max_apps: self.max_apps as usize,
            max_events_per_app: self.max_events_per_app as usize,
            auth_tokens_file: self.auth_tokens_file,
            timeouts: Timeouts {
                header_read: self.header_read_timeout,
                request_read: self.request_read_timeout,
                idle: self.idle_timeout,
            },
        }
    }
}

impl IntakeConfig {
    /// The rules the intake runs with; reads the tokens file when one is configured.
    pub fn rules(&self, hasher: UserHasher) -> Result<EdgeRules, TokensFileError> {
        let auth = match &self.auth_tokens_file {
            Some(path) => Auth::from_file(path)?,
            None => Auth::off(),
        };
        Ok(EdgeRules {
            map: MapRules {
                hasher,
                time_window: self.time_window,
                privacy: self.privacy.clone(),
            },
            decode: self.decode,
            auth,
            catalog: Arc::new(Catalog::new(self.max_apps, self.max_events_per_app)),
        })
    }
}

/// The examples a bad duration flag of the intake is answered with.
const DURATION_EXAMPLES: &str = "31days, 1h or 30s";

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse_duration(text, DURATION_EXAMPLES)
}

fn parse_max_age(text: &str) -> Result<Duration, String> {
    let age = parse_duration(text)?;
    if age > TimeWindow::MAX_AGE {
        return Err(format!(
            "at most {}d: one insert may not span more monthly partitions than ClickHouse allows",
            TimeWindow::MAX_AGE.as_secs() / 86_400
        ));
    }
    Ok(age)
}

fn parse_skew(text: &str) -> Result<Duration, String> {
    let skew = parse_duration(text)?;
    if skew > Duration::from_secs(31 * 86_400) {
        return Err("at most 31days".into());
    }
    Ok(skew)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    duration::parse_positive_duration(text, DURATION_EXAMPLES)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        intake: IntakeArgs,
    }

    fn parse(args: &[&str]) -> Result<IntakeConfig, clap::Error> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.intake.into_config())
    }

    #[test]
    fn defaults_follow_the_issue() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.time_window, TimeWindow::default());
        assert_eq!(config.time_window.max_age, Duration::from_secs(31 * 86_400));
        assert_eq!(config.time_window.max_skew, Duration::from_secs(3_600));
        assert_eq!(config.decode, DecodeLimits::default());
        assert_eq!(config.timeouts, Timeouts::default());
        assert!(config.timeouts.idle < Duration::from_secs(60));
        assert_eq!(config.privacy.action(), IdentifyingAction::Hash);
    }

    #[test]
    fn flags_are_checked() {
        let config = parse(&[
            "--max-event-age=400days",
            "--identifying-attributes=a.b, c",
            "--identifying-attribute-action=drop",
            "--idle-timeout=2s",
        ])
        .expect("valid");
        assert_eq!(
            config.time_window.max_age,
            Duration::from_secs(400 * 86_400)
        );
        assert!(config.privacy.is_identifying("A.B") && config.privacy.is_identifying("c"));
        assert_eq!(config.privacy.action(), IdentifyingAction::Drop);
        assert_eq!(config.timeouts.idle, Duration::from_secs(2));
        // Past 7 years one insert could span more than 100 monthly partitions.
        assert!(parse(&["--max-event-age=3000days"]).is_err());
        assert!(parse(&["--idle-timeout=0s"]).is_err());
        assert!(parse(&["--max-apps=0"]).is_err());
    }
}
