//! What a deployment chooses about the admin page: the refresh period, the retention
//! colour thresholds and the display names of events. Parsed once at start-up and
//! handed to the page as JSON (the page's script never guesses a setting).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{RetentionThresholds, parse_event_label};

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
