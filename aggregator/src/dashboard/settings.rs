//! What a deployment chooses about the admin page: the refresh period, the retention
//! colour thresholds and the display names of events. Parsed once at start-up and
//! handed to the page as JSON (the page's script never guesses a setting).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

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

/// The finance app's names, as its original report showed them.
const DEFAULT_LABELS: [(&str, &str); 5] = [
    ("expense_logged", "Total Expenses"),
    ("expense_edited", "Expenses Edited"),
    ("report_requested", "Reports Requested"),
    ("pwa_installed", "App Installs"),
    ("challenge_started", "Challenges Started"),
];

/// Bootstrap Icons ids (vendored in `dashboards/admin/vendor/bootstrap-icons/icons.svg`)
/// for the events the finance app sends; every other event gets `activity`.
const EVENT_ICONS: [(&str, &str); 5] = [
    ("expense_logged", "receipt"),
    ("expense_edited", "pencil-square"),
    ("report_requested", "file-earmark-bar-graph"),
    ("pwa_installed", "phone"),
    ("challenge_started", "trophy"),
];

/// Why the event-labels file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelsFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads a labels file: one `name=Label` a line, blank lines and `#` comments skipped.
pub fn read_labels_file(path: &Path) -> Result<Vec<(String, String)>, LabelsFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LabelsFileError::Read {
        path: shown.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(line, text)| {
            parse_event_label(text).map_err(|message| LabelsFileError::Line {
                path: shown.clone(),
                line,
                message,
            })
        })
        .collect()
}

/// Everything the page's script is told, serialised into the page.
#[derive(Debug, Clone, Serialize)]
pub struct DashboardSettings {
    pub refresh_seconds: f64,
    pub thresholds: RetentionThresholds,
    /// Event name → display name.
    pub event_labels: BTreeMap<String, String>,
    /// Event name → Bootstrap Icons id.
    pub event_icons: BTreeMap<String, String>,
}

impl DashboardSettings {
    /// Merges the labels: finance defaults, then the file's, then the flag's.
    pub fn new(
        refresh: Duration,
        thresholds: RetentionThresholds,
        from_file: Vec<(String, String)>,
        from_flag: Vec<(String, String)>,
    ) -> Self {
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let event_labels = owned(&DEFAULT_LABELS)
            .into_iter()
            .chain(from_file)
            .chain(from_flag)
            .collect();
        Self {
            refresh_seconds: refresh.as_secs_f64(),
            thresholds,
            event_labels,
            event_icons: owned(&EVENT_ICONS).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn labels_merge_defaults_file_then_flag() {
        let s = DashboardSettings::new(
            Duration::from_secs(300),
            RetentionThresholds::default(),
            vec![
                ("expense_logged".into(), "From file".into()),
                ("signup".into(), "Sign-ups".into()),
            ],
            vec![("expense_logged".into(), "From flag".into())],
        );
        assert_eq!(s.event_labels["expense_logged"], "From flag");
        assert_eq!(s.event_labels["signup"], "Sign-ups");
        assert_eq!(s.event_labels["pwa_installed"], "App Installs");
        assert_eq!(s.refresh_seconds, 300.0);
    }

    #[test]
    fn labels_file_reports_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("growth-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("labels");
        std::fs::write(&path, "# names\nexpense_logged = Spending\n\nbroken line\n")
            .expect("write");
        let err = read_labels_file(&path).expect_err("line 4 is bad");
        assert!(
            err.to_string()
                .ends_with(":4: \"broken line\": expected event_name=Display name"),
            "{err}"
        );
        std::fs::write(&path, "expense_logged = Spending\n").expect("write");
        assert_eq!(
            read_labels_file(&path).expect("valid"),
            vec![("expense_logged".to_owned(), "Spending".to_owned())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
