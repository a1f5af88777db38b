//! HTTP surface: thin handlers that read the cached snapshot and render it.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::exposition::{self, Format};
use crate::report;
use crate::snapshot::SnapshotCache;

const NOT_READY: &str = "metrics not computed yet: waiting for the first refresh from ClickHouse\n";

/// The routes: `/metrics`, `/admin/metrics`, `/admin/metrics.txt`, `/healthz`.
pub fn router(cache: SnapshotCache) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/metrics", get(admin_html))
        .route("/admin/metrics.txt", get(admin_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(|| async { Html("<a href=\"/admin/metrics\">admin metrics</a> · <a href=\"/metrics\">/metrics</a>") }))
        .with_state(cache)
}

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        NOT_READY,
    )
        .into_response()
}

async fn metrics(State(cache): State<SnapshotCache>, headers: HeaderMap) -> Response {
    let Some(snapshot) = cache.latest() else {
        return not_ready();
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [(header::CONTENT_TYPE, format.content_type())],
        exposition::render(&snapshot, format),
    )
        .into_response()
}

async fn admin_text(State(cache): State<SnapshotCache>) -> Response {
    let Some(snapshot) = cache.latest() else {
        return not_ready();
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        report::text(&snapshot),
    )
        .into_response()
}

async fn admin_html(State(cache): State<SnapshotCache>) -> Response {
    let Some(snapshot) = cache.latest() else {
        return not_ready();
    };
    match report::html(&snapshot) {
        Ok(page) => Html(page).into_response(),
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
