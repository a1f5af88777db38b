//! The admin endpoints on `--admin-addr`: `/healthz` (the process runs), `/readyz`
//! (it can take events: migrations applied and ClickHouse answering) and `/metrics`
//! (the collector's own counters, see [`crate::telemetry`]).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::clickhouse::{ClickHouseSink, describe};
use crate::telemetry::{self, Telemetry};

/// Where the collector is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for ClickHouse and applying migrations; the message says what last failed.
    Starting(String),
    /// Migrations applied, receivers serving.
    Serving,
    /// Shutting down: receivers no longer accept requests.
    Draining,
}

/// The shared, changing phase.
#[derive(Debug)]
pub struct Readiness(Mutex<Phase>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Mutex::new(Phase::Starting("waiting for ClickHouse".into())))
    }
}

impl Readiness {
    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// The current phase.
    pub fn get(&self) -> Phase {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    telemetry: Arc<Telemetry>,
    readiness: Arc<Readiness>,
    sink: ClickHouseSink,
}

/// The admin routes.
pub fn router(
    telemetry: Arc<Telemetry>,
    readiness: Arc<Readiness>,
    sink: ClickHouseSink,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            telemetry,
            readiness,
            sink,
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response()
    };
    match state.readiness.get() {
        Phase::Starting(reason) => not_ready(reason),
        Phase::Draining => not_ready("shutting down".into()),
        Phase::Serving => match state.sink.ping().await {
            Ok(()) => (StatusCode::OK, "ready\n").into_response(),
            Err(e) => not_ready(format!("ClickHouse does not answer: {}", describe(&e))),
        },
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        state.telemetry.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use growth_schema::connection::ClickHouseArgs;
    use tower::ServiceExt as _;

    use super::*;

    async fn get_path(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn unreachable_sink() -> ClickHouseSink {
        // Port 9 (discard) on loopback: nothing listens, so connecting fails at once.
        ClickHouseSink::new(&ClickHouseArgs {
            url: "http://127.0.0.1:9".into(),
            database: "growth".into(),
            user: "default".into(),
            password: String::new(),
        })
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let readiness = Arc::new(Readiness::default());
        let router = router(
            Arc::new(Telemetry::new()),
            readiness.clone(),
            unreachable_sink(),
        );
        assert_eq!(
            get_path(&router, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );

        let (status, body) = get_path(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("waiting for ClickHouse"), "{body}");

        readiness.set(Phase::Serving);
        let (status, body) = get_path(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("ClickHouse does not answer"), "{body}");

        readiness.set(Phase::Draining);
        assert!(
            get_path(&router, "/readyz")
                .await
                .1
                .contains("shutting down")
        );

        let (status, body) = get_path(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("growth_collector_records_received_total 0"),
            "{body}"
        );
    }
}
