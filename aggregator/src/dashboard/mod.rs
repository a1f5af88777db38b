//! The admin dashboard: `/admin/metrics` (the page), `/admin/metrics.txt` (the
//! plain-text report, also the page's export), `/admin/metrics/trend.svg` (the 90-day
//! trend, drawn on the server) and `/admin/assets/*` (Bootstrap,
//! Bootstrap Icons, the page's script and styles, embedded in the binary).
//!
//! The page is a shell plus one script: the numbers come from the JSON API
//! (`/api/v1/*`, docs/api.md), so the first paint and every auto-refresh go through one
//! code path, and the API has a real client. What a deployment chooses (refresh period,
//! colour thresholds, event names) is serialised into the page as JSON.

pub mod assets;
pub mod page;
pub mod settings;
pub mod trend;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::report;
use crate::state::AppState;
pub use settings::DashboardSettings;

/// What the dashboard's handlers read: the server's state and the page's settings.
#[derive(Clone)]
pub struct DashboardState {
    pub app: AppState,
    pub settings: Arc<DashboardSettings>,
}

/// The dashboard's routes, ready to be merged into the server's router.
pub fn router<S>(state: DashboardState) -> Router<S> {
    Router::new()
        .route("/admin", get(|| async { redirect_to_page() }))
        .route("/admin/", get(|| async { redirect_to_page() }))
        .route("/admin/metrics", get(page::serve))
        .route("/admin/metrics.txt", get(report_text))
        .route("/admin/metrics/trend.svg", get(trend::serve))
        .route("/admin/assets/{name}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .with_state(state)
}

fn redirect_to_page() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/admin/metrics")],
    )
        .into_response()
}

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "metrics not computed yet: waiting for the first refresh from ClickHouse\n",
    )
        .into_response()
}

#[derive(Deserialize)]
struct TextQuery {
    /// Any value asks the browser to save the report rather than show it.
    download: Option<String>,
}

/// `GET /admin/metrics.txt[?download=1]`: the plain-text report, named for the day.
async fn report_text(State(state): State<DashboardState>, Query(q): Query<TextQuery>) -> Response {
    let Some(snapshot) = state.app.cache.latest() else {
        return not_ready();
    };
    let disposition = format!(
        "{}; filename=\"growth-report-{}.txt\"",
        if q.download.is_some() {
            "attachment"
        } else {
            "inline"
        },
        snapshot.today
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        report::text(&snapshot),
    )
        .into_response()
}
