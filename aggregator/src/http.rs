//! HTTP surface: the router; its shared state is [`crate::state`]. Handlers are thin:
//! they read the cached snapshot (or ask [`crate::on_demand`] through the API) and
//! render it. Every response passes access control, security headers and compression
//! ([`layered`]).

use std::io::Write;
use std::net::SocketAddr;

use axum::body::Bytes;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::access::{AccessPolicy, require_credentials};
use crate::dashboard::{self, DashboardState};
use crate::exposition::{self, Format};
use crate::state::{AppState, ExpositionKey};

const NOT_READY: &str = "metrics not computed yet: waiting for the first refresh from ClickHouse\n";

/// How many connections may wait to be accepted. The standard library's 128 is too
/// few for a crowd of scrapers connecting at once: the kernel drops the SYNs past it
/// and the client retries a second later (a 1 s latency spike).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the HTTP listener with a backlog deep enough for hundreds of scrapers
/// (the kernel caps it at `net.core.somaxconn`); serve it through [`no_delay`].
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepted connections send without Nagle's delay: a small response must not wait
/// for the client's delayed ACK.
/// The concrete type (not `impl Listener`) lets axum give handlers the client's
/// address (`ConnectInfo<SocketAddr>`).
pub fn no_delay(listener: tokio::net::TcpListener) -> NoDelay {
    listener.tap_io(set_no_delay)
}

/// The listener [`no_delay`] returns.
pub type NoDelay = axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

/// For a TLS listener (which set `TCP_NODELAY` itself): `tap_io` with this gives
/// it the connect-info support axum has for tapped listeners.
pub fn no_tap<S>(_: &mut S) {}

fn set_no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// The routes: `/metrics`, `/healthz`, `/api/v1/*`, and the dashboard's `/admin/*`.
pub fn router(state: AppState, dashboard: DashboardState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Html("<a href=\"/admin/metrics\">admin metrics</a> · <a href=\"/metrics\">/metrics</a>") }))
        .merge(crate::api::routes())
        .with_state(state)
        .merge(dashboard::router(dashboard))
}

/// The page may load only what the aggregator itself serves, runs no inline script and
/// may not be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Wraps the routes in access control, security headers and compression.
pub fn layered(routes: Router, access: AccessPolicy) -> Router {
    let security = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    let mut app = routes
        .layer(axum::middleware::from_fn_with_state(
            access,
            require_credentials,
        ))
        .layer(CompressionLayer::new());
    for (name, value) in security {
        app = app.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    app
}

/// 503 with `Retry-After: 1`: no refresh has succeeded yet.
pub fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        NOT_READY,
    )
        .into_response()
}

/// 200 while a good refresh happened within `--ready-max-intervals` intervals.
async fn readyz(State(state): State<AppState>) -> Response {
    let max_age = state.config.refresh_interval * state.config.ready_max_intervals;
    if state.health.is_ready(max_age) {
        return "ready\n".into_response();
    }
    let why = match state.health.since_last_good() {
        None => "not ready: no refresh has succeeded yet\n".to_owned(),
        Some(age) => format!(
            "not ready: the last good refresh was {:.0}s ago (allowed {:.0}s)\n",
            age.as_secs_f64(),
            max_age.as_secs_f64()
        ),
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(snapshot) = state.cache.latest() else {
        return not_ready();
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let key = ExpositionKey {
        generated_at: snapshot.generated_at,
        errors_total: state.health.errors_total(),
        format,
        gzip: accepts_gzip(&headers),
    };
    let cached = {
        let cache = state
            .exposition_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| b.clone())
    };
    let body = match cached {
        Some(body) => body,
        None => {
            let limits = exposition::Limits {
                max_apps: state.config.max_apps as usize,
                max_events_per_app: state.config.max_events_per_app as usize,
            };
            let refresh = exposition::RefreshStats {
                duration_seconds: state.health.last_duration().as_secs_f64(),
                errors_total: key.errors_total,
            };
            let text = exposition::render(&snapshot, &limits, &refresh, format);
            let body = if key.gzip {
                gzip(text.as_bytes())
            } else {
                Bytes::from(text)
            };
            let mut cache = state
                .exposition_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            cache.retain(|(k, _)| (k.format, k.gzip) != (format, key.gzip));
            cache.push((key, body.clone()));
            body
        }
    };
    metrics_response(format, key.gzip, body)
}

/// The response around a cached body: a reference-counted copy of the bytes and
/// headers built from static values, nothing formatted per request.
fn metrics_response(format: Format, gzip: bool, body: Bytes) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, format.content_type_header());
    if gzip {
        // Already encoded: the compression layer leaves a response with a
        // Content-Encoding alone, so each scrape is a copy, not a gzip run.
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether the client takes gzip (Prometheus sends `Accept-Encoding: gzip`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            // `gzip;q=0` refuses it.
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn gzip(text: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    Bytes::from(encoder.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_encoding(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&with_encoding("gzip")));
        assert!(accepts_gzip(&with_encoding("br, GZIP;q=0.5")));
        assert!(!accepts_gzip(&with_encoding("gzip;q=0, br")));
        assert!(!accepts_gzip(&with_encoding("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzipped_body_decodes_to_the_text() {
        use std::io::Read;
        let text = "growth_active_users{app=\"a\",window=\"1d\"} 2\n".repeat(50);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(text.as_bytes())[..])
            .read_to_string(&mut out)
            .expect("gzip");
        assert_eq!(out, text);
    }
}
