//! The admin endpoints on `--admin-addr`: `/healthz` (the process runs), `/readyz`
//! (it can take events: migrations applied, the spool below its high-water mark,
//! and inserts not failing for longer than `--write-stall-timeout`) and `/metrics`
//! (the collector's own counters, see [`crate::telemetry`]).
//!
//! A ClickHouse that is away for a moment does not make the collector unready: the
//! spool takes the events meanwhile. Only a stall that lasts, or a spool filling up,
//! does — that is when a load balancer should send elsewhere.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::spool::Spool;
use crate::telemetry::{self, Telemetry};
use crate::writer::WriterHealth;

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

/// What decides readiness while serving: the spool's fill and the writer's health.
#[derive(Debug)]
pub struct DeliveryCheck {
    /// The spool, for its size.
    pub spool: Spool,
    /// Unready above this many bytes.
    pub high_water_bytes: u64,
    /// Whether inserts succeed.
    pub health: Arc<WriterHealth>,
    /// Unready once inserts have failed this long.
    pub stall_timeout: Duration,
}

/// The shared, changing phase.
#[derive(Debug)]
pub struct Readiness {
    phase: Mutex<Phase>,
    delivery: OnceLock<DeliveryCheck>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            phase: Mutex::new(Phase::Starting("waiting for ClickHouse".into())),
            delivery: OnceLock::new(),
        }
    }
}

impl Readiness {
    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// The current phase.
    pub fn get(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on, readiness also depends on `check`.
    pub fn watch_delivery(&self, check: DeliveryCheck) {
        let _ = self.delivery.set(check);
    }

    /// Why the collector should not get traffic now; `None` when it should.
    pub fn not_ready_reason(&self) -> Option<String> {
        match self.get() {
            Phase::Starting(reason) => return Some(reason),
            Phase::Draining => return Some("shutting down".into()),
            Phase::Serving => {}
        }
        let check = self.delivery.get()?;
        if check.spool.above(check.high_water_bytes) {
            return Some(format!(
                "the spool holds more than its high-water mark of {} bytes",
                check.high_water_bytes
            ));
        }
        match check.health.failing_for() {
            Some((failing, error)) if failing >= check.stall_timeout => Some(format!(
                "nothing could be written to ClickHouse for {}s: {error}",
                failing.as_secs()
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    telemetry: Arc<Telemetry>,
    readiness: Arc<Readiness>,
}

/// The admin routes.
pub fn router(telemetry: Arc<Telemetry>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            telemetry,
            readiness,
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.readiness.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
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

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let readiness = Arc::new(Readiness::default());
        let router = router(Arc::new(Telemetry::new()), readiness.clone());
        assert_eq!(
            get_path(&router, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );

        let (status, body) = get_path(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("waiting for ClickHouse"), "{body}");

        readiness.set(Phase::Serving);
        assert_eq!(
            get_path(&router, "/readyz").await,
            (StatusCode::OK, "ready\n".into())
        );

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
