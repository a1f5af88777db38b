//! `/admin/metrics`: the page shell, rendered from `dashboards/admin/metrics.html`.
//! It carries the settings and the app names (so the page names its app before the
//! script has run); the numbers are fetched by `dashboard.js`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, context};

use super::{DashboardState, assets};
use crate::snapshot::MetricsSnapshot;

/// Why the page could not be rendered (a template error: a bug, not bad input).
#[derive(Debug, thiserror::Error)]
#[error("admin page template: {0}")]
pub struct TemplateError(String);

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        Self(e.to_string())
    }
}

/// The template environment, parsed once on first use rather than on every request.
fn templates() -> Result<&'static Environment<'static>, TemplateError> {
    static TEMPLATES: OnceLock<Result<Environment<'static>, TemplateError>> = OnceLock::new();
    let parsed = TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        env.add_template(
            "metrics.html",
            include_str!("../../../dashboards/admin/metrics.html"),
        )?;
        Ok(env)
    });
    parsed.as_ref().map_err(|e| TemplateError(e.0.clone()))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Renders the page. Values are HTML-escaped by the template engine; the settings
/// JSON goes through `tojson`, which escapes `<`, `>` and `&` for a script element.
pub fn render(
    state: &DashboardState,
    snapshot: Option<&MetricsSnapshot>,
) -> Result<String, TemplateError> {
    let apps: Vec<&str> = snapshot
        .map(|s| s.apps.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let page = templates()?.get_template("metrics.html")?.render(context! {
        v => assets::version(),
        settings => &*state.settings,
        refresh_text => human(Duration::from_secs_f64(state.settings.refresh_seconds)),
        apps => apps,
        timezone => snapshot.map(|s| s.timezone.name()),
        today => snapshot.map(|s| s.today.to_string()),
        generated_at => snapshot.map(|s| s.generated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
    })?;
    Ok(page)
}

/// `GET /admin/metrics`. Served even before the first refresh: the script shows that
/// the aggregator is not ready and retries.
pub async fn serve(State(state): State<DashboardState>) -> Response {
    let snapshot = state.app.cache.latest();
    match render(&state, snapshot.as_deref()) {
        Ok(page) => ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "admin page failed to render\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use growth_schema::service::ServiceCli;

    use crate::config::RetentionThresholds;
    use crate::dashboard::settings::DashboardSettings;
    use crate::snapshot::AppMetrics;
    use crate::source::MetricsSource;
    use crate::state::AppState;

    fn state(labels: Vec<(String, String)>) -> DashboardState {
        let config = crate::config::Cli::try_parse_args(["growth-aggregator"])
            .expect("defaults")
            .run
            .into_config();
        // No ClickHouse is asked: the client only connects when a query runs.
        let source = MetricsSource::new(config.clickhouse.client(), config.query_timeout);
        DashboardState {
            app: AppState::new(config, source),
            settings: Arc::new(DashboardSettings::new(
                Duration::from_secs(300),
                RetentionThresholds::default(),
                vec![],
                labels,
            )),
        }
    }

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            generated_at: "2026-11-24T12:00:00Z".parse().expect("instant"),
            today: "2026-11-24".parse().expect("date"),
            timezone: chrono_tz::Tz::Europe__Berlin,
            retention_days: vec![1, 3],
            exported_cohorts: 7,
            report_cohorts: 7,
            apps: BTreeMap::from([("<finbrain>".to_owned(), AppMetrics::default())]),
        }
    }

    #[test]
    fn page_names_the_app_escaped_and_links_only_local_assets() {
        let page = render(&state(vec![]), Some(&snapshot())).expect("renders");
        assert!(page.contains("&lt;finbrain&gt;"));
        assert!(!page.contains("<finbrain>"));
        // minijinja escapes the slash too.
        assert!(page.contains("Europe&#x2f;Berlin"), "{page}");
        assert!(page.contains("5 min"));
        assert!(page.contains(&format!(
            "/admin/assets/dashboard.js?v={}",
            assets::version()
        )));
        assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"));
    }

    #[test]
    fn settings_json_cannot_close_the_script_element() {
        let hostile = vec![(
            "x".to_owned(),
            "</script><script>alert(1)</script>".to_owned(),
        )];
        let page = render(&state(hostile), None).expect("renders");
        // Exactly two script elements: the settings and dashboard.js; no inline code.
        assert_eq!(page.matches("<script").count(), 2, "{page}");
        let marker = "id=\"dashboard-settings\">";
        let json_start = page.find(marker).expect("settings") + marker.len();
        let json_end = json_start + page[json_start..].find("</script>").expect("end");
        let parsed: serde_json::Value =
            serde_json::from_str(&page[json_start..json_end]).expect("valid JSON");
        assert_eq!(
            parsed["event_labels"]["x"],
            "</script><script>alert(1)</script>"
        );
        assert_eq!(parsed["thresholds"]["good"], 40.0);
        assert_eq!(parsed["refresh_seconds"], 300.0);
    }
}
