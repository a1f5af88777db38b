//! Renders a snapshot in the Prometheus text format (0.0.4) or, when the scraper asks
//! for it, OpenMetrics 1.0.
//!
//! Why not a metrics crate: those model live instruments updated in place, while this
//! is a snapshot recomputed wholesale each refresh, with series that must vanish when
//! a value becomes unknown. The text formats are small; escaping follows the spec.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::definitions::Period;
use crate::snapshot::{AppMetrics, MetricsSnapshot};

/// Which text format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// Picks the format from an `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of the response.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// [`Format::content_type`] as a header value, built without parsing.
    pub fn content_type_header(self) -> axum::http::HeaderValue {
        axum::http::HeaderValue::from_static(self.content_type())
    }
}

struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label_value(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(self.out, value);
        self.out.push('\n');
    }
}

fn header<'a>(
    out: &'a mut String,
    format: Format,
    name: &'static str,
    kind: &str,
    help: &str,
) -> Family<'a> {
    // OpenMetrics names a counter family without its `_total` suffix.
    let family = match (format, kind) {
        (Format::OpenMetrics, "counter") => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let _ = writeln!(out, "# HELP {family} {help}");
    let _ = writeln!(out, "# TYPE {family} {kind}");
    Family { out, name }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Cardinality bounds of the exposition (`--max-apps`, `--max-events-per-app`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_apps: usize,
    pub max_events_per_app: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_apps: usize::MAX,
            max_events_per_app: usize::MAX,
        }
    }
}

/// The `event` label that sums the event names past `--max-events-per-app`.
pub const OTHER_EVENTS: &str = "other";

/// The refresh loop's own health, exported beside the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RefreshStats {
    /// How long the last refresh took.
    pub duration_seconds: f64,
    /// Failed refreshes since start.
    pub errors_total: u64,
}

/// The apps to export: those with the most events, at most `max`, by name.
fn exported_apps(snapshot: &MetricsSnapshot, max: usize) -> Vec<(&String, &AppMetrics)> {
    let mut apps: Vec<(&String, &AppMetrics)> = snapshot.apps.iter().collect();
    if apps.len() > max {
        apps.sort_by_key(|(name, m)| (std::cmp::Reverse(m.totals.values().sum::<u64>()), *name));
        apps.truncate(max);
        apps.sort_by_key(|(name, _)| *name);
    }
    apps
}

/// The event totals to export: the `max` most frequent names, the rest as "other".
fn exported_totals(totals: &BTreeMap<String, u64>, max: usize) -> BTreeMap<&str, u64> {
    if totals.len() <= max {
        return totals.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    }
    let mut by_count: Vec<(&String, &u64)> = totals.iter().collect();
    by_count.sort_by_key(|(name, count)| (std::cmp::Reverse(**count), *name));
    let mut out: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, (name, count)) in by_count.into_iter().enumerate() {
        let key = if i < max { name.as_str() } else { OTHER_EVENTS };
        *out.entry(key).or_default() += count;
    }
    out
}

/// Writes every series of docs/contract.md for the exported apps, and the refresh's health.
pub fn render(
    snapshot: &MetricsSnapshot,
    limits: &Limits,
    refresh: &RefreshStats,
    format: Format,
) -> String {
    let apps = exported_apps(snapshot, limits.max_apps);
    let mut out = String::with_capacity(4096);
    let mut f = header(
        &mut out,
        format,
        "growth_active_users",
        "gauge",
        "Distinct users with at least one active event in the window of calendar days ending today (1d = today).",
    );
    for &(app, m) in &apps {
        for (window, users) in &m.active_users {
            f.sample(&[("app", app), ("window", window.label())], *users as f64);
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_cohort_users",
        "gauge",
        "Users whose first event of any kind fell on the cohort day.",
    );
    for &(app, m) in &apps {
        for c in m.latest_cohorts(snapshot.exported_cohorts) {
            let day = c.day.to_string();
            f.sample(&[("app", app), ("cohort", &day)], c.users as f64);
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_retention_ratio",
        "gauge",
        "Share of the cohort with an active event on day cohort+N; absent until that day comes.",
    );
    for &(app, m) in &apps {
        for c in m.latest_cohorts(snapshot.exported_cohorts) {
            let day = c.day.to_string();
            for (n, ratio) in &c.retention {
                let n = n.to_string();
                f.sample(&[("app", app), ("cohort", &day), ("day", &n)], *ratio);
            }
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_retention_recent_ratio",
        "gauge",
        "Over the latest --cohorts cohorts whose day cohort+N has ended: users active on that day / cohort users; absent when all are empty.",
    );
    for &(app, m) in &apps {
        for (n, recent) in &m.recent_retention {
            if let Some(ratio) = recent.ratio() {
                f.sample(&[("app", app), ("day", &n.to_string())], ratio);
            }
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_stickiness_ratio",
        "gauge",
        "DAU / MAU (window 1d / 30d); absent when MAU is 0.",
    );
    for &(app, m) in &apps {
        if let Some(ratio) = m.stickiness() {
            f.sample(&[("app", app)], ratio);
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_lifecycle_users",
        "gauge",
        "Persons of the last complete period (period=day: yesterday; week: the last ISO week) by lifecycle status: new (first day in the period), returning (active in the period before too), resurrecting (not in the period before, first day earlier), dormant (active in the period before, not in this one; negative).",
    );
    for &(app, m) in &apps {
        for period in Period::ALL {
            let Some((_, l)) = m.last_lifecycle(period, snapshot.today) else {
                continue;
            };
            let label = period.label();
            for (status, value) in [
                ("new", l.new as f64),
                ("returning", l.returning as f64),
                ("resurrecting", l.resurrecting as f64),
                ("dormant", -(l.dormant as f64)),
            ] {
                f.sample(
                    &[("app", app), ("period", label), ("status", status)],
                    value,
                );
            }
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_identity_conflicts",
        "gauge",
        "Identify links refused, ever: reason=claimed (the anonymous id belongs to an earlier identify of another known id), reason=known (the anonymous id is a known id).",
    );
    for &(app, m) in &apps {
        if m.identity.claimed_by_another + m.identity.known_as_anonymous + m.identity.joined == 0 {
            continue;
        }
        f.sample(
            &[("app", app), ("reason", "claimed")],
            m.identity.claimed_by_another as f64,
        );
        f.sample(
            &[("app", app), ("reason", "known")],
            m.identity.known_as_anonymous as f64,
        );
    }
    let mut f = header(
        &mut out,
        format,
        "growth_identity_linked_ids",
        "gauge",
        "User ids counted as part of another person (an identified anonymous id, a merged known id).",
    );
    for &(app, m) in &apps {
        if m.identity.joined > 0
            || m.identity.claimed_by_another + m.identity.known_as_anonymous > 0
        {
            f.sample(&[("app", app)], m.identity.joined as f64);
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_events_total",
        "counter",
        "Events received per app and event name, ever.",
    );
    for &(app, m) in &apps {
        for (event, count) in exported_totals(&m.totals, limits.max_events_per_app) {
            f.sample(&[("app", app), ("event", event)], count as f64);
        }
    }
    let mut f = header(
        &mut out,
        format,
        "growth_metrics_refresh_timestamp_seconds",
        "gauge",
        "When these metrics were computed (Unix seconds).",
    );
    let at = snapshot.generated_at.timestamp_millis() as f64 / 1000.0;
    for (app, _) in &apps {
        f.sample(&[("app", app)], at);
    }
    let mut f = header(
        &mut out,
        format,
        "growth_metrics_refresh_duration_seconds",
        "gauge",
        "How long the last refresh of these metrics took (good or failed).",
    );
    f.sample(&[], refresh.duration_seconds);
    let mut f = header(
        &mut out,
        format,
        "growth_metrics_refresh_errors_total",
        "counter",
        "Refreshes that failed (ClickHouse error or timeout) since the aggregator started.",
    );
    f.sample(&[], refresh.errors_total as f64);
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::definitions::{CohortReport, Lifecycle, Window};
    use crate::snapshot::AppMetrics;

    fn snapshot() -> MetricsSnapshot {
        let app = AppMetrics {
            active_users: BTreeMap::from([(Window::Day, 2), (Window::Week, 5), (Window::Month, 9)]),
            cohorts: vec![
                CohortReport {
                    day: "2026-11-20".parse().expect("date"),
                    users: 14,
                    retention: BTreeMap::from([(1, 0.5), (3, 0.0)]),
                    retained: BTreeMap::from([(1, 7), (3, 0)]),
                },
                CohortReport {
                    day: "2026-11-24".parse().expect("date"),
                    users: 0,
                    retention: BTreeMap::new(),
                    retained: BTreeMap::new(),
                },
            ],
            totals: BTreeMap::from([("expense_logged".to_owned(), 1234)]),
            lifecycle: BTreeMap::from([
                (
                    Period::Day,
                    vec![(
                        "2026-11-23".parse().expect("date"),
                        Lifecycle {
                            new: 3,
                            returning: 4,
                            resurrecting: 1,
                            dormant: 2,
                        },
                    )],
                ),
                // 2026-11-24 is a Tuesday: the last complete week began 11-16.
                (
                    Period::Week,
                    vec![("2026-11-09".parse().expect("date"), Lifecycle::default())],
                ),
            ]),
            ..Default::default()
        };
        MetricsSnapshot {
            generated_at: "2026-11-24T12:00:00.5Z".parse().expect("instant"),
            today: "2026-11-24".parse().expect("date"),
            timezone: chrono_tz::Tz::UTC,
            retention_days: vec![1, 3],
            exported_cohorts: 7,
            report_cohorts: 7,
            apps: BTreeMap::from([("fin\"brain".to_owned(), app)]),
        }
    }

    #[test]
    fn prometheus_text_has_the_designed_series() {
        let text = render(
            &snapshot(),
            &Limits::default(),
            &RefreshStats::default(),
            Format::Prometheus,
        );
        for line in [
            r#"growth_active_users{app="fin\"brain",window="1d"} 2"#,
            r#"growth_active_users{app="fin\"brain",window="30d"} 9"#,
            r#"growth_cohort_users{app="fin\"brain",cohort="2026-11-20"} 14"#,
            r#"growth_cohort_users{app="fin\"brain",cohort="2026-11-24"} 0"#,
            r#"growth_retention_ratio{app="fin\"brain",cohort="2026-11-20",day="1"} 0.5"#,
            r#"growth_retention_ratio{app="fin\"brain",cohort="2026-11-20",day="3"} 0"#,
            r#"growth_events_total{app="fin\"brain",event="expense_logged"} 1234"#,
            r#"growth_metrics_refresh_timestamp_seconds{app="fin\"brain"} 1795521600.5"#,
            "# TYPE growth_events_total counter",
            r#"growth_lifecycle_users{app="fin\"brain",period="day",status="new"} 3"#,
            r#"growth_lifecycle_users{app="fin\"brain",period="day",status="returning"} 4"#,
            r#"growth_lifecycle_users{app="fin\"brain",period="day",status="resurrecting"} 1"#,
            r#"growth_lifecycle_users{app="fin\"brain",period="day",status="dormant"} -2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Only the last complete period is exported (no week 11-16 in this snapshot).
        assert!(!text.contains("period=\"week\""), "{text}");
        assert!(
            !text.contains("cohort=\"2026-11-24\",day"),
            "retention of an empty cohort must be absent"
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_names_counter_families_and_ends_with_eof() {
        let text = render(
            &snapshot(),
            &Limits::default(),
            &RefreshStats::default(),
            Format::OpenMetrics,
        );
        assert!(text.contains("# TYPE growth_events counter\n"));
        assert!(text.contains("growth_events_total{"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn labels_are_bounded_and_refresh_health_is_exported() {
        let mut snap = snapshot();
        let mut small = AppMetrics::default();
        small.totals.insert("x".into(), 1);
        snap.apps.insert("small".into(), small);
        let big = snap.apps.get_mut("fin\"brain").expect("app");
        big.totals.insert("a".into(), 5);
        big.totals.insert("b".into(), 3);
        big.totals.insert("other".into(), 1);
        let limits = Limits {
            max_apps: 1,
            max_events_per_app: 2,
        };
        let stats = RefreshStats {
            duration_seconds: 0.25,
            errors_total: 3,
        };
        let text = render(&snap, &limits, &stats, Format::Prometheus);
        assert!(!text.contains("app=\"small\""), "{text}");
        for line in [
            r#"growth_events_total{app="fin\"brain",event="expense_logged"} 1234"#,
            r#"growth_events_total{app="fin\"brain",event="a"} 5"#,
            r#"growth_events_total{app="fin\"brain",event="other"} 4"#,
            "growth_metrics_refresh_duration_seconds 0.25",
            "growth_metrics_refresh_errors_total 3",
            r#"growth_stickiness_ratio{app="fin\"brain"} 0.2222222222222222"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("event=\"b\""), "{text}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
