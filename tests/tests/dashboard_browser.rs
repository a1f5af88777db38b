//! The admin dashboard in a real browser: Debian's headless Chromium, driven by
//! playwright-core (`tests/browser/dashboard.spec.mjs`), against the real aggregator
//! behind `--admin-auth-file`, with events sent through growth-sdk and the collector
//! into the embedded ClickHouse. The script compares the page with `/metrics`, the
//! heatmap colours with the thresholds, the exports with the server's report, drives
//! the auto-refresh with a controlled clock, checks print media, console errors and
//! that no request leaves the origin, and saves screenshots under
//! `target/screenshots/`. This file checks what needs no browser: status codes and
//! headers.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use growth_e2e::{Aggregator, Collector, binary, eventually, repo_root, unique_database};
use growth_sdk::{Event, Protocol, Tracker};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};

const APP: &str = "finbrain";
const USER: &str = "growth-team";
const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "dashboard-test-token-5d41402abc4b2a76";
const DAY: Duration = Duration::from_secs(86_400);
/// A second app, so the page offers its app selector.
const OTHER_APP: &str = "budgetbot";

/// (user, days ago, event, source): cohorts of 8 days ago (4 users: D1 50 %, D3 25 %,
/// D7 0 %), 3 days ago (3 users: D1 33 %, D3 in progress), none 2 days ago (an empty
/// cohort), yesterday (2 users: D1 in progress) and today; a custom event for labels.
const PLAN: &[(&str, u64, &str, &str)] = &[
    ("a1", 8, "expense_logged", "messenger"),
    ("a2", 8, "expense_logged", "form"),
    ("a3", 8, "report_requested", "pwa"),
    ("a4", 8, "pwa_installed", "pwa"),
    ("a1", 7, "expense_logged", "messenger"),
    ("a2", 7, "expense_edited", "form"),
    ("a1", 5, "report_requested", "messenger"),
    ("b1", 3, "expense_logged", "messenger"),
    ("b2", 3, "expense_logged", "messenger"),
    ("b3", 3, "budget_set", "form"),
    ("b1", 2, "expense_logged", "messenger"),
    ("b1", 0, "expense_logged", "pwa"),
    ("b2", 0, "challenge_started", "pwa"),
    ("c1", 1, "expense_logged", "form"),
    ("c2", 1, "expense_logged", "messenger"),
    ("c1", 0, "expense_logged", ""),
    ("d1", 0, "expense_logged", "messenger"),
];

fn send(endpoint: String) -> u64 {
    send_app(
        endpoint.clone(),
        OTHER_APP,
        &[
            ("z1", 0, "expense_logged", "form"),
            ("z2", 0, "report_requested", ""),
        ],
    ) + send_app(endpoint, APP, PLAN)
}

fn send_app(endpoint: String, app: &str, plan: &[(&str, u64, &'static str, &str)]) -> u64 {
    // Events of past days at their midday, of today a minute ago: always on the planned day.
    let now = SystemTime::now();
    let today_start = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400 * 86_400)
        .unwrap_or(0);
    let tracker = Tracker::builder(app)
        .endpoint(endpoint)
        .protocol(Protocol::Grpc)
        .build()
        .expect("SDK builds");
    for (user, days_ago, event, source) in plan {
        let at = if *days_ago == 0 {
            now - Duration::from_secs(60)
        } else {
            SystemTime::UNIX_EPOCH + Duration::from_secs(today_start + 43_200)
                - DAY * *days_ago as u32
        };
        let mut e = Event::new(*event).user(*user).at(at);
        if !source.is_empty() {
            e = e.source(source);
        }
        tracker.track_event(e);
    }
    tracker
        .shutdown()
        .expect("SDK delivered everything")
        .delivered
}

fn hash_password_line() -> String {
    let mut child = Command::new(binary("growth-aggregator"))
        .args(["hash-password", USER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("growth-aggregator hash-password");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("password written");
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success(), "hash-password failed");
    let line = String::from_utf8(out.stdout).expect("utf-8");
    assert!(line.starts_with(&format!("{USER}:$argon2id$")), "{line}");
    line.trim().to_owned()
}

fn token_line() -> String {
    use sha2::Digest;
    format!("bearer:sha256:{}", hex::encode(sha2::Sha256::digest(TOKEN)))
}

/// Where the browser test's tools are; panics with directions when one is missing.
fn browser_tools() -> (PathBuf, PathBuf) {
    let chromium = PathBuf::from(
        std::env::var("GROWTH_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        chromium.exists(),
        "{} is missing: apt-get install chromium (.ci/run does)",
        chromium.display()
    );
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: (cd tests/browser && npm ci) (.ci/run and scripts/test do)"
    );
    (chromium, browser_dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_headless_chromium() {
    let (chromium, browser_dir) = browser_tools();
    let database = unique_database("dashboard");
    let collector = Collector::start(&database, None).await;
    let endpoint = collector.grpc_endpoint.clone();
    let delivered = tokio::task::spawn_blocking(move || send(endpoint))
        .await
        .expect("sender");
    assert_eq!(delivered, PLAN.len() as u64 + 2);

    let dir = std::env::temp_dir().join(format!("growth-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let auth_file = dir.join("admins");
    std::fs::write(
        &auth_file,
        format!(
            "# test credentials\n{}\n{}\n",
            hash_password_line(),
            token_line()
        ),
    )
    .expect("auth file");
    let auth_path = auth_file.to_string_lossy().into_owned();
    let aggregator = Aggregator::start(
        &database,
        &[
            "--admin-auth-file",
            &auth_path,
            "--retention-thresholds",
            "50,25",
            "--event-labels",
            "budget_set=Budgets Set",
        ],
    )
    .await;

    // Everything sent is counted before the browser looks.
    eventually(
        "all events on /metrics",
        Duration::from_secs(30),
        || async {
            let m = aggregator.metrics().await;
            let total: f64 = m.series("growth_events_total", APP).values().sum();
            (total == PLAN.len() as f64).then_some(())
        },
    )
    .await;

    check_access_and_headers(&aggregator.url).await;

    let screenshots = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshots dir");
    let config = json!({
        "url": aggregator.url,
        "user": USER,
        "password": PASSWORD,
        "app": APP,
        "other_app": OTHER_APP,
        "collector_http": collector.http_endpoint,
        "chromium": chromium,
        "screenshots": screenshots,
        "thresholds": {"good": 50, "fair": 25},
        "labels": {"budget_set": "Budgets Set", "expense_logged": "Total Expenses"},
        "refresh_seconds": 300,
    });
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("dashboard.spec.mjs")
            .arg(config.to_string())
            .current_dir(&browser_dir)
            .output()
    })
    .await
    .expect("node thread")
    .expect("node runs (install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed after {:?}:\n{stdout}\n{stderr}\naggregator log:\n{}",
        started.elapsed(),
        aggregator.process.output()
    );
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from the browser test:\n{stdout}\n{stderr}"));
    assert_eq!(report["ok"], true, "{report}");
    let weight = report["page_bytes_transferred"]
        .as_u64()
        .expect("page weight");
    assert!(
        weight > 10_000 && weight < 300_000,
        "page weight {weight} bytes"
    );
    eprintln!(
        "browser test: {:.1}s, page {weight} bytes transferred, {} checks",
        started.elapsed().as_secs_f64(),
        report["checks"].as_array().map_or(0, Vec::len)
    );
    let _ = std::fs::remove_dir_all(dir);
}

async fn check_access_and_headers(base: &str) {
    let http = reqwest::Client::new();
    for path in [
        "/admin/metrics",
        "/admin/metrics.txt",
        "/api/v1/apps",
        "/admin/assets/dashboard.js",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path} without credentials"
        );
        let challenges: Vec<_> = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .collect();
        assert!(
            challenges
                .iter()
                .any(|c| c.as_bytes().starts_with(b"Basic realm=")),
            "{path}: {challenges:?}"
        );
        let wrong = http
            .get(format!("{base}{path}"))
            .basic_auth(USER, Some("wrong"))
            .send()
            .await
            .expect("answer");
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong password"
        );
    }
    for path in ["/metrics", "/healthz", "/favicon.ico"] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK, "{path} stays open");
    }
    let bearer = http
        .get(format!("{base}/admin/metrics.txt"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(bearer.status(), StatusCode::OK, "bearer token");

    let page = http
        .get(format!("{base}/admin/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers();
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let body = page.text().await.expect("body");
    assert!(
        body.contains(APP) && body.contains("Retention"),
        "page shell"
    );

    let css = http
        .get(format!("{base}/admin/assets/bootstrap.min.css"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("css");
    assert_eq!(css.status(), StatusCode::OK);
    let etag = css.headers()[header::ETAG].clone();
    assert!(css.headers().contains_key(header::CACHE_CONTROL));
    let again = http
        .get(format!("{base}/admin/assets/bootstrap.min.css"))
        .basic_auth(USER, Some(PASSWORD))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .expect("css again");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let report = http
        .get(format!("{base}/admin/metrics.txt?download=1"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("report");
    let disposition = report.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"growth-report-"),
        "{disposition}"
    );
}
