//! `POST /admin/erasures` and `GET /admin/erasures/ID` on the admin port, behind a
//! bearer token (`--admin-token-file`: one `sha256:<hex of the token's SHA-256>` a
//! line). Without the file the endpoints refuse every request (403); without a
//! valid token they answer 401.
//!
//! The body is `{"user_ids": [...], "user_hashes": [...]}`: raw ids are hashed here
//! with the collector's key and dropped; hashes must be 64 lowercase hex. Neither is
//! logged. The answer (202) is the erasure's status with its id; the same status,
//! with the rows removed per table once done, is at `GET /admin/erasures/ID`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use growth_schema::user_hash::{UserHash, UserHasher};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{ErasureError, Erasures};

/// Most ids and hashes in one request (the CLI sends larger lists in parts).
pub const MAX_PER_REQUEST: usize = 100_000;
/// Largest request body.
const MAX_BODY: usize = 16 << 20;

/// The digests of the admin tokens.
#[derive(Clone, Default)]
pub struct AdminTokens(Arc<Vec<[u8; 32]>>);

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokens({} tokens)", self.0.len())
    }
}

impl AdminTokens {
    /// Reads `--admin-token-file`: `sha256:<64 hex>` a line; blank lines and `#`
    /// comments are skipped.
    pub fn load(path: &Path) -> Result<Self, ErasureError> {
        let text = std::fs::read_to_string(path).map_err(super::files::io(path))?;
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let digest = line
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| ErasureError::Tokens {
                    path: path.to_owned(),
                    message: format!(
                        "line {}: expected sha256:<64 hex characters> (the SHA-256 of a token, e.g. `printf %s TOKEN | sha256sum`)",
                        n + 1
                    ),
                })?;
            digests.push(digest);
        }
        if digests.is_empty() {
            return Err(ErasureError::Tokens {
                path: path.to_owned(),
                message: "no token in the file".into(),
            });
        }
        Ok(Self(Arc::new(digests)))
    }

    /// Tokens given directly (tests).
    pub fn from_tokens(tokens: &[&str]) -> Self {
        Self(Arc::new(
            tokens.iter().map(|t| Sha256::digest(t).into()).collect(),
        ))
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token.trim()).into();
        // Every entry is compared, in constant time each.
        self.0
            .iter()
            .fold(false, |found, d| constant_time_eq(d, &presented) | found)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
struct ApiState {
    erasures: Option<Erasures>,
    tokens: Option<AdminTokens>,
    hasher: UserHasher,
}

/// The erasure routes: `erasures` is `None` until the spool is open (503 meanwhile);
/// `tokens` is `None` without `--admin-token-file` (403).
pub fn router(
    erasures: Option<Erasures>,
    tokens: Option<AdminTokens>,
    hasher: UserHasher,
) -> Router {
    Router::new()
        .route("/admin/erasures", post(submit))
        .route("/admin/erasures/{id}", get(status))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(ApiState {
            erasures,
            tokens,
            hasher,
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    user_ids: Vec<String>,
    #[serde(default)]
    user_hashes: Vec<String>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"growth-collector admin\""),
        );
    }
    response
}

fn check(state: &ApiState, headers: &HeaderMap) -> Result<Erasures, (StatusCode, &'static str)> {
    let Some(tokens) = &state.tokens else {
        return Err((
            StatusCode::FORBIDDEN,
            "erasure is off: start the collector with --admin-token-file",
        ));
    };
    if !tokens.admits(headers) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a valid admin token is needed: Authorization: Bearer TOKEN",
        ));
    }
    state.erasures.clone().ok_or((
        StatusCode::SERVICE_UNAVAILABLE,
        "the collector is starting; retry",
    ))
}

async fn submit(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let erasures = match check(&state, &headers) {
        Ok(erasures) => erasures,
        Err((status, message)) => return refuse(status, message),
    };
    // The body's text is never echoed or logged: it may hold raw ids.
    let body: Body = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"user_ids\": [...], \"user_hashes\": [...]}} ({} at line {} column {})",
                    match e.classify() {
                        serde_json::error::Category::Data => "wrong field or type",
                        _ => "not JSON",
                    },
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    let total = body.user_ids.len() + body.user_hashes.len();
    if total == 0 {
        return refuse(StatusCode::BAD_REQUEST, "no user_ids and no user_hashes");
    }
    if total > MAX_PER_REQUEST {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {MAX_PER_REQUEST} ids and hashes a request"),
        );
    }
    let mut hashes = BTreeSet::new();
    for (n, hash) in body.user_hashes.iter().enumerate() {
        match UserHash::parse(hash) {
            Ok(hash) => {
                hashes.insert(hash.into_string());
            }
            Err(e) => {
                return refuse(StatusCode::BAD_REQUEST, &format!("user_hashes[{n}]: {e}"));
            }
        }
    }
    for (n, id) in body.user_ids.iter().enumerate() {
        if id.is_empty() {
            return refuse(StatusCode::BAD_REQUEST, &format!("user_ids[{n}] is empty"));
        }
        hashes.insert(state.hasher.hash(id).into_string());
    }
    drop(body);
    match erasures.submit(hashes) {
        Ok(status) => (StatusCode::ACCEPTED, axum::Json(status)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot queue an erasure");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot save the erasure queue",
            )
        }
    }
}

async fn status(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let erasures = match check(&state, &headers) {
        Ok(erasures) => erasures,
        Err((status, message)) => return refuse(status, message),
    };
    match erasures.status(&id) {
        Some(status) => axum::Json(status).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no such erasure"),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body as HttpBody, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(router: &Router, token: Option<&str>, body: &str) -> (StatusCode, String) {
        let mut request = Request::post("/admin/erasures");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(
                request
                    .body(HttpBody::from(body.to_owned()))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn tokens_ids_and_hashes() {
        let dir = crate::testing::temp_dir("erasure-api");
        let erasures = Erasures::open(&dir).expect("open");
        let hasher = UserHasher::new(Some(b"key".to_vec()));
        let off = router(Some(erasures.clone()), None, hasher.clone());
        assert_eq!(call(&off, Some("t"), "{}").await.0, StatusCode::FORBIDDEN);

        let on = router(
            Some(erasures.clone()),
            Some(AdminTokens::from_tokens(&["secret"])),
            hasher.clone(),
        );
        let ask = r#"{"user_ids":["alice"]}"#;
        assert_eq!(call(&on, None, ask).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(&on, Some("wrong"), ask).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = call(&on, Some("secret"), r#"{"user_hashes":["ABC"]}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = call(&on, Some("secret"), r#"{"user_ids":["alice"],"x":1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!body.contains("alice"), "{body}");

        let hash = hasher.hash("bob").into_string();
        let both = format!(r#"{{"user_ids":["alice"],"user_hashes":["{hash}"]}}"#);
        let (status, body) = call(&on, Some("secret"), &both).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(answer["state"], "queued");
        assert_eq!(answer["hashes"], 2);
        let pending = std::fs::read_to_string(dir.join(super::super::PENDING_FILE)).expect("saved");
        assert!(pending.contains(&hash));
        assert!(pending.contains(hasher.hash("alice").as_str()));
        assert!(!pending.contains("alice"), "no raw id is stored");
        let id = answer["id"].as_str().expect("id");
        assert_eq!(erasures.status(id).expect("known").hashes, 2);
    }

    #[test]
    fn token_file_lines() {
        let dir = crate::testing::temp_dir("erasure-tokens");
        let path = dir.join("tokens");
        let digest = hex::encode(Sha256::digest("secret"));
        std::fs::write(&path, format!("# admin\nsha256:{digest}\n")).expect("write");
        let tokens = AdminTokens::load(&path).expect("load");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer secret".parse().expect("header"),
        );
        assert!(tokens.admits(&headers));
        std::fs::write(&path, "secret\n").expect("write");
        assert!(AdminTokens::load(&path).is_err());
    }
}
