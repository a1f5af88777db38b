//! The plain-text report of a snapshot (`/admin/metrics.txt`, the admin page's
//! export). The HTML page lives in [`crate::dashboard`].

use std::fmt::Write;

use crate::definitions::{CellStatus, CohortReport, Window};
use crate::snapshot::MetricsSnapshot;

const NOT_YET: &str = "-";
/// Appended to a value whose day is still running (it can still grow).
const IN_PROGRESS: &str = "*";

fn percent(ratio: Option<&f64>) -> String {
    ratio.map_or_else(|| NOT_YET.to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn cell(c: &CohortReport, n: u32, today: chrono::NaiveDate) -> String {
    let value = percent(c.retention.get(&n));
    match c.status(n, today) {
        CellStatus::InProgress => format!("{value}{IN_PROGRESS}"),
        _ => value,
    }
}

/// The plain-text report: generated at, active users, the cohort table, totals.
pub fn text(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "growth report\ngenerated at {} (UTC)\ntimezone {}, today {}\n",
        snapshot.generated_at.format("%Y-%m-%d %H:%M:%S"),
        snapshot.timezone.name(),
        snapshot.today
    );
    if snapshot.apps.is_empty() {
        out.push_str("no events yet: send growth events to the collector (see README)\n");
    }
    for (app, m) in &snapshot.apps {
        let users = |w| m.active_users.get(&w).copied().unwrap_or(0);
        let _ = writeln!(out, "== app {app} ==");
        let _ = writeln!(
            out,
            "active users: today (DAU) {}, 7 days {}, 30 days {}",
            users(Window::Day),
            users(Window::Week),
            users(Window::Month)
        );
        let ratio = |r: Option<f64>| percent(r.as_ref());
        let _ = writeln!(out, "stickiness (DAU/MAU): {}", ratio(m.stickiness()));
        let recent: Vec<String> = m
            .recent_retention
            .iter()
            .map(|(n, r)| format!("D{n} {}", ratio(r.ratio())))
            .collect();
        let _ = writeln!(
            out,
            "recent retention (last {} ended cohorts): {}\n",
            snapshot.exported_cohorts,
            recent.join(", ")
        );
        let _ = write!(out, "{:<12} {:>7}", "cohort", "users");
        for n in &snapshot.retention_days {
            let _ = write!(out, " {:>7}", format!("D{n}"));
        }
        out.push('\n');
        for c in m.latest_cohorts(snapshot.report_cohorts).iter().rev() {
            let _ = write!(out, "{:<12} {:>7}", c.day.to_string(), c.users);
            for n in &snapshot.retention_days {
                let _ = write!(out, " {:>7}", cell(c, *n, snapshot.today));
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "({NOT_YET} = day not reached yet, or empty cohort; {IN_PROGRESS} = day still in progress, can still grow)\n\nrunning totals"
        );
        let width = m.totals.keys().map(String::len).max().unwrap_or(0);
        for (event, count) in &m.totals {
            let _ = writeln!(out, "  {event:<width$}  {count:>10}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::definitions::CohortReport;
    use crate::snapshot::AppMetrics;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            generated_at: "2026-11-24T12:00:00Z".parse().expect("instant"),
            today: "2026-11-24".parse().expect("date"),
            timezone: chrono_tz::Tz::UTC,
            retention_days: vec![1, 3],
            exported_cohorts: 7,
            report_cohorts: 7,
            apps: BTreeMap::from([(
                "<finbrain>".to_owned(),
                AppMetrics {
                    active_users: BTreeMap::from([
                        (Window::Day, 2),
                        (Window::Week, 5),
                        (Window::Month, 9),
                    ]),
                    cohorts: vec![CohortReport {
                        day: "2026-11-23".parse().expect("date"),
                        users: 4,
                        retention: BTreeMap::from([(1, 0.25)]),
                        retained: BTreeMap::from([(1, 1)]),
                    }],
                    totals: BTreeMap::from([("expense_logged".to_owned(), 7)]),
                    ..Default::default()
                },
            )]),
        }
    }

    #[test]
    fn text_report_shows_dau_cohorts_and_totals() {
        let t = text(&snapshot());
        assert!(t.contains("today (DAU) 2, 7 days 5, 30 days 9"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["2026-11-23", "4", "25.0%*", "-"]),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["expense_logged", "7"]),
            "{t}"
        );
    }
}
