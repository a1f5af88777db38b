//! The page's static files, embedded in the binary (no CDN, nothing to install next to
//! it) and served with an ETag and cache headers: the page links them with `?v=` set to
//! [`version`], so a browser keeps them for a year and an upgrade changes the link.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    etag: HeaderValue,
}

macro_rules! asset {
    ($name:literal, $type:literal, $file:literal) => {
        ($name, $type, include_bytes!($file).as_slice())
    };
}

const FILES: [(&str, &str, &[u8]); 8] = [
    asset!(
        "bootstrap.min.css",
        "text/css; charset=utf-8",
        "../../../dashboards/admin/vendor/bootstrap/bootstrap.min.css"
    ),
    asset!(
        "bootstrap.LICENSE.txt",
        "text/plain; charset=utf-8",
        "../../../dashboards/admin/vendor/bootstrap/LICENSE"
    ),
    asset!(
        "icons.svg",
        "image/svg+xml",
        "../../../dashboards/admin/vendor/bootstrap-icons/icons.svg"
    ),
    asset!(
        "bootstrap-icons.LICENSE.txt",
        "text/plain; charset=utf-8",
        "../../../dashboards/admin/vendor/bootstrap-icons/LICENSE"
    ),
    asset!(
        "dashboard.css",
        "text/css; charset=utf-8",
        "../../../dashboards/admin/static/dashboard.css"
    ),
    asset!(
        "dashboard.js",
        "text/javascript; charset=utf-8",
        "../../../dashboards/admin/static/dashboard.js"
    ),
    asset!(
        "print.css",
        "text/css; charset=utf-8",
        "../../../dashboards/admin/static/print.css"
    ),
    asset!(
        "favicon.svg",
        "image/svg+xml",
        "../../../dashboards/admin/static/favicon.svg"
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, bytes)| Asset {
            name,
            content_type,
            bytes,
            etag: etag_of(&[bytes]),
        })
        .collect()
});

/// A digest of every asset: the `?v=` the page links them with.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let all: Vec<&[u8]> = FILES.iter().map(|f| f.2).collect();
    hex::encode(&Sha256::digest(all.concat())[..8])
});

fn etag_of(parts: &[&[u8]]) -> HeaderValue {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p);
    }
    let tag = format!("\"{}\"", hex::encode(&hasher.finalize()[..12]));
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The version string the page puts in asset links.
pub fn version() -> &'static str {
    &VERSION
}

/// The embedded file called `name`, if any.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[derive(Deserialize)]
pub struct AssetQuery {
    v: Option<String>,
}

/// `GET /admin/assets/{name}`.
pub async fn serve(
    Path(name): Path<String>,
    Query(query): Query<AssetQuery>,
    headers: HeaderMap,
) -> Response {
    match find(&name) {
        Some(asset) => respond(asset, query.v.as_deref() == Some(version()), &headers),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says.
pub async fn favicon(headers: HeaderMap) -> Response {
    match find("favicon.svg") {
        Some(asset) => respond(asset, false, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// 304 when the browser already has this version, else the bytes.
pub fn respond(asset: &Asset, versioned: bool, request: &HeaderMap) -> Response {
    // A versioned link never changes content; an unversioned one must be revalidated.
    let cache = if versioned {
        "private, max-age=31536000, immutable"
    } else {
        "private, no-cache"
    };
    let headers = [
        (header::ETAG, asset.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
    ];
    if matches_etag(request, &asset.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.bytes,
    )
        .into_response()
}

fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_its_licence() {
        for name in [
            "bootstrap.min.css",
            "icons.svg",
            "dashboard.js",
            "favicon.svg",
        ] {
            let a = find(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!a.bytes.is_empty());
        }
        let licence = std::str::from_utf8(find("bootstrap.LICENSE.txt").expect("licence").bytes)
            .expect("text");
        assert!(licence.contains("The MIT License"));
        let css = std::str::from_utf8(find("bootstrap.min.css").expect("css").bytes).expect("css");
        assert!(css.contains("Bootstrap  v5"), "not Bootstrap 5");
    }

    #[test]
    fn if_none_match_gives_304() {
        let asset = find("dashboard.js").expect("asset");
        let mut request = HeaderMap::new();
        let fresh = respond(asset, true, &request);
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(
            fresh.headers()[header::CACHE_CONTROL],
            "private, max-age=31536000, immutable"
        );
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{}", asset.etag.to_str().expect("tag")))
                .expect("header"),
        );
        assert_eq!(
            respond(asset, true, &request).status(),
            StatusCode::NOT_MODIFIED
        );
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(respond(asset, false, &request).status(), StatusCode::OK);
    }
}
