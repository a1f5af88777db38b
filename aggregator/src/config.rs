//! Command line and environment, parsed once into [`Config`] at the edge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand};
use growth_schema::connection::ClickHouseArgs;
use growth_schema::service::duration::parse_duration_at_least;
use growth_schema::service::tls::{TlsArgs, TlsFiles};
use serde::Serialize;

use crate::definitions::MetricDefinitions;

/// growth-aggregator: DAU/WAU/MAU, cohort retention and event totals from the
/// growth views in ClickHouse, served on /metrics (Prometheus) and /admin/metrics.
///
/// Every flag can also be set by the environment variable shown beside it.
#[derive(Debug, Parser)]
#[command(name = "growth-aggregator", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What to do; `run` when omitted.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the metrics (the default).
    Run,
    /// Apply the schema migrations to the database and exit.
    Migrate,
    /// Read a password from standard input and print `USER:<argon2 hash>`, a line for
    /// the --admin-auth-file.
    HashPassword {
        /// The user name the line is for.
        user: String,
    },
}

/// Flags of the server.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// Address of /metrics, /admin/metrics, /admin/metrics.txt and /healthz.
    #[arg(long, env = "GROWTH_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// How often the metrics are recomputed from ClickHouse (e.g. 60s, 1s, 5m).
    #[arg(long, env = "GROWTH_REFRESH_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub refresh_interval: Duration,

    /// IANA timezone whose calendar days define "today", DAU and cohorts.
    #[arg(long, env = "GROWTH_TIMEZONE", default_value = "UTC", value_parser = parse_timezone)]
    pub timezone: Tz,

    /// Events that make a user active (comma list); empty means every event.
    #[arg(
        long,
        env = "GROWTH_ACTIVE_EVENTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub active_events: Vec<String>,

    /// Days after signup whose retention is reported (comma list).
    #[arg(long, env = "GROWTH_RETENTION_DAYS", value_delimiter = ',', default_value = "1,3,7,30", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: Vec<u32>,

    /// How many of the latest cohorts (signup days, today included) are reported.
    #[arg(long, env = "GROWTH_COHORTS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub cohorts: u32,

    /// How long to wait for ClickHouse at start-up before giving up.
    #[arg(long, env = "GROWTH_STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_interval)]
    pub startup_timeout: Duration,

    /// Directory of the saved day cache (created if missing): a restarted aggregator
    /// reads only the days that changed instead of every day. Safe to delete.
    #[arg(long, env = "GROWTH_STATE_DIR", default_value = "growth-state")]
    pub state_dir: PathBuf,

    /// Longest any ClickHouse query may run (a refresh's, or one asked by the JSON API).
    #[arg(long, env = "GROWTH_QUERY_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
    pub query_timeout: Duration,

    /// /readyz fails once the last good refresh is older than this many refresh intervals.
    #[arg(long, env = "GROWTH_READY_MAX_INTERVALS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub ready_max_intervals: u32,

    /// At most this many event names per app on /metrics (the most frequent); the rest
    /// are summed as event="other".
    #[arg(long, env = "GROWTH_MAX_EVENTS_PER_APP", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_events_per_app: u32,

    /// At most this many apps on /metrics (those with the most events).
    #[arg(long, env = "GROWTH_MAX_APPS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_apps: u32,

    /// How often the open admin page fetches fresh numbers (e.g. 5m, 30s).
    #[arg(long, env = "GROWTH_DASHBOARD_REFRESH", default_value = "5m", value_parser = parse_interval)]
    pub dashboard_refresh: Duration,

    /// Retention heatmap colours, in percent: green at or above the first, yellow at or
    /// above the second, red below.
    #[arg(long, env = "GROWTH_RETENTION_THRESHOLDS", default_value = "40,20", value_parser = RetentionThresholds::parse)]
    pub retention_thresholds: RetentionThresholds,

    /// Display names of events on the admin page, over the finance defaults
    /// (comma list of name=Label, e.g. expense_logged=Total Expenses).
    #[arg(long, env = "GROWTH_EVENT_LABELS", value_delimiter = ',', value_parser = parse_event_label)]
    pub event_labels: Vec<(String, String)>,

    /// A file of event display names, one `name=Label` a line (`#` comments); the
    /// --event-labels flag wins over it.
    #[arg(long, env = "GROWTH_EVENT_LABELS_FILE")]
    pub event_labels_file: Option<PathBuf>,

    /// Credentials that /admin/* and /api/* require (Basic users with password hashes,
    /// or bearer tokens; see README). Without it those paths are open.
    #[arg(long, env = "GROWTH_ADMIN_AUTH_FILE")]
    pub admin_auth_file: Option<PathBuf>,

    /// With --admin-auth-file: require the credentials on /metrics and /healthz too.
    #[arg(long, env = "GROWTH_ADMIN_AUTH_ALL")]
    pub admin_auth_all: bool,

    /// With --admin-auth-file: password checks (argon2/bcrypt, tens of milliseconds of
    /// CPU each) allowed per minute per client address and per user name, in bursts of
    /// as many; beyond that the answer is 429 with Retry-After and nothing is hashed.
    /// Credentials that verified once are remembered and never counted again.
    #[arg(long, value_name = "N", env = "GROWTH_ADMIN_LOGIN_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub admin_login_attempts: u32,

    // --tls-cert, --tls-key: serve HTTPS on --listen-addr (README "TLS").
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A duration flag: at least 100ms, so that a typo never spins the refresh loop.
fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_duration_at_least(text, Duration::from_millis(100), "60s, 1s or 5m")
}

fn parse_timezone(text: &str) -> Result<Tz, String> {
    text.parse::<Tz>().map_err(|_| {
        format!("unknown IANA timezone {text:?} (e.g. UTC, Europe/Berlin, America/Los_Angeles)")
    })
}

/// Heatmap colours: green at or above `good` percent, yellow at or above `fair`, red below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetentionThresholds {
    pub good: f64,
    pub fair: f64,
}

impl Default for RetentionThresholds {
    fn default() -> Self {
        Self {
            good: 40.0,
            fair: 20.0,
        }
    }
}

impl RetentionThresholds {
    /// Parses `GOOD,FAIR` in percent, e.g. `40,20` (0 ≤ FAIR ≤ GOOD ≤ 100).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (good, fair) = text
            .split_once(',')
            .ok_or_else(|| format!("{text:?}: expected GOOD,FAIR in percent, e.g. 40,20"))?;
        let number = |s: &str| {
            s.trim()
                .trim_end_matches('%')
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=100.0).contains(v))
                .ok_or_else(|| format!("{s:?} is not a percentage between 0 and 100"))
        };
        let (good, fair) = (number(good)?, number(fair)?);
        if fair > good {
            return Err(format!(
                "the yellow threshold {fair} is above the green one {good}"
            ));
        }
        Ok(Self { good, fair })
    }
}

/// Parses one `name=Label` of `--event-labels`.
pub fn parse_event_label(text: &str) -> Result<(String, String), String> {
    let (name, label) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected event_name=Display name"))?;
    let (name, label) = (name.trim(), label.trim());
    if name.is_empty() || label.is_empty() {
        return Err(format!(
            "{text:?}: both the event name and the label are needed"
        ));
    }
    Ok((name.to_owned(), label.to_owned()))
}

/// The aggregator's settings, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub clickhouse: ClickHouseArgs,
    pub listen_addr: SocketAddr,
    pub refresh_interval: Duration,
    pub startup_timeout: Duration,
    pub query_timeout: Duration,
    /// Where the day cache is kept across restarts (`--state-dir`).
    pub state_dir: PathBuf,
    pub ready_max_intervals: u32,
    pub max_events_per_app: u32,
    pub max_apps: u32,
    pub definitions: MetricDefinitions,
    pub dashboard: DashboardConfig,
    pub access: AccessConfig,
    /// HTTPS on `listen_addr` from these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// How the admin page looks and refreshes (files are read at start-up by `serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardConfig {
    pub refresh: Duration,
    pub thresholds: RetentionThresholds,
    /// From `--event-labels`, in order; they win over the file and the defaults.
    pub event_labels: Vec<(String, String)>,
    pub event_labels_file: Option<PathBuf>,
}

/// Who may read the admin page and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessConfig {
    pub auth_file: Option<PathBuf>,
    /// Also protect /metrics and /healthz.
    pub protect_all: bool,
    /// Slow password checks per minute per client address and per user.
    pub login_attempts_per_minute: u32,
}

impl RunArgs {
    /// Normalises the lists (trims, drops empties, sorts, dedups) into a [`Config`].
    pub fn into_config(self) -> Config {
        let mut active: Vec<String> = self
            .active_events
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        active.sort();
        active.dedup();
        let mut days = self.retention_days.clone();
        days.sort_unstable();
        days.dedup();
        Config {
            definitions: MetricDefinitions {
                timezone: self.timezone,
                active_events: active,
                retention_days: days,
                cohorts: self.cohorts,
            },
            clickhouse: self.clickhouse,
            listen_addr: self.listen_addr,
            refresh_interval: self.refresh_interval,
            startup_timeout: self.startup_timeout,
            query_timeout: self.query_timeout,
            state_dir: self.state_dir,
            ready_max_intervals: self.ready_max_intervals,
            max_events_per_app: self.max_events_per_app,
            max_apps: self.max_apps,
            dashboard: DashboardConfig {
                refresh: self.dashboard_refresh,
                thresholds: self.retention_thresholds,
                event_labels: self.event_labels,
                event_labels_file: self.event_labels_file,
            },
            access: AccessConfig {
                auth_file: self.admin_auth_file,
                protect_all: self.admin_auth_all,
                login_attempts_per_minute: self.admin_login_attempts,
            },
            tls: self.tls.files(),
        }
    }
}

#[cfg(test)]
mod tests {
    use growth_schema::service::ServiceCli;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["growth-aggregator"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("valid flags")
            .run
            .into_config()
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = parse(&[]);
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.refresh_interval, Duration::from_secs(60));
        assert_eq!(c.definitions.timezone, Tz::UTC);
        assert!(c.definitions.active_events.is_empty());
        assert_eq!(c.definitions.retention_days, vec![1, 3, 7, 30]);
        assert_eq!(c.definitions.cohorts, 7);
        assert_eq!(c.clickhouse.database, "growth");
        assert_eq!(c.dashboard.refresh, Duration::from_secs(300));
        assert_eq!(c.dashboard.thresholds, RetentionThresholds::default());
        assert_eq!(c.access.auth_file, None);
        assert_eq!(c.state_dir, PathBuf::from("growth-state"));
    }

    #[test]
    fn dashboard_flags() {
        let c = parse(&[
            "--dashboard-refresh",
            "30s",
            "--retention-thresholds",
            "50,25",
            "--event-labels",
            "expense_logged=Expenses,signup=New accounts",
            "--admin-auth-file",
            "/etc/growth/admins",
        ]);
        assert_eq!(c.dashboard.refresh, Duration::from_secs(30));
        assert_eq!(
            c.dashboard.thresholds,
            RetentionThresholds::parse("50,25").expect("valid")
        );
        assert_eq!(
            c.dashboard.event_labels,
            vec![
                ("expense_logged".to_owned(), "Expenses".to_owned()),
                ("signup".to_owned(), "New accounts".to_owned())
            ]
        );
        assert_eq!(
            c.access.auth_file.as_deref(),
            Some(std::path::Path::new("/etc/growth/admins"))
        );
    }

    #[test]
    fn lists_are_normalised() {
        let c = parse(&[
            "--active-events",
            "b, a,,b",
            "--retention-days",
            "7,1,7",
            "--timezone",
            "Asia/Kolkata",
            "--refresh-interval",
            "1s",
        ]);
        assert_eq!(c.definitions.active_events, vec!["a", "b"]);
        assert_eq!(c.definitions.retention_days, vec![1, 7]);
        assert_eq!(c.definitions.timezone, Tz::Asia__Kolkata);
        assert_eq!(c.refresh_interval, Duration::from_secs(1));
    }

    #[test]
    fn flags_may_follow_the_migrate_subcommand() {
        let cli = Cli::try_parse_args([
            "growth-aggregator",
            "migrate",
            "--clickhouse-database",
            "other",
        ])
        .expect("valid");
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.run.clickhouse.database, "other");
    }

    #[test]
    fn definition_is_consistent() {
        Cli::definition().debug_assert();
    }

    #[test]
    fn hash_password_takes_a_user() {
        let cli =
            Cli::try_parse_args(["growth-aggregator", "hash-password", "alice"]).expect("valid");
        assert!(matches!(cli.command, Some(Command::HashPassword { user }) if user == "alice"));
        assert!(Cli::try_parse_args(["growth-aggregator", "hash-password"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            vec!["--timezone", "Mars/Olympus"],
            vec!["--refresh-interval", "soon"],
            vec!["--retention-days", "0"],
            vec!["--cohorts", "0"],
            vec!["--clickhouse-database", "x;DROP"],
            vec!["--retention-thresholds", "20,40"],
            vec!["--retention-thresholds", "140,20"],
            vec!["--event-labels", "no_equals_sign"],
        ] {
            let mut argv = vec!["growth-aggregator"];
            argv.extend_from_slice(&bad);
            assert!(Cli::try_parse_args(argv).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn thresholds_parse_and_refuse_nonsense() {
        assert_eq!(
            RetentionThresholds::parse("40,20"),
            Ok(RetentionThresholds::default())
        );
        let t = RetentionThresholds::parse(" 55.5% , 30 ").expect("valid");
        assert_eq!((t.good, t.fair), (55.5, 30.0));
        for bad in ["40", "20,40", "101,20", "-1,-2", "a,b", "40,20,10"] {
            assert!(RetentionThresholds::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
