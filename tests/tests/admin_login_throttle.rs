//! Wrong passwords cannot burn the aggregator's CPU: the real binary behind
//! `--admin-auth-file` answers 429 with `Retry-After` once a client address (or a
//! user) has used its `--admin-login-attempts` slow password checks of the minute,
//! and a bearer token still gets in meanwhile.

use std::time::{Duration, Instant};

use growth_aggregator::access::credential_line;
use growth_e2e::{Aggregator, unique_database};
use sha2::{Digest, Sha256};

const TOKEN: &str = "throttle-test-token";

#[tokio::test]
async fn wrong_passwords_are_throttled_per_address() {
    let database = unique_database("login_throttle");
    let dir = std::env::temp_dir().join(format!("growth-throttle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let auth_file = dir.join("auth");
    let user = credential_line("alice", "correct horse\n".as_bytes()).expect("a line");
    std::fs::write(
        &auth_file,
        format!(
            "{user}\nbearer:sha256:{}\n",
            hex::encode(Sha256::digest(TOKEN))
        ),
    )
    .expect("auth file");
    let auth_path = auth_file.to_string_lossy().into_owned();
    let aggregator = Aggregator::start(
        &database,
        &[
            "--admin-auth-file",
            &auth_path,
            "--admin-login-attempts",
            "3",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let page = format!("{}/api/v1/apps", aggregator.url);

    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..8 {
        let response = client
            .get(&page)
            .basic_auth("alice", Some("wrong"))
            .send()
            .await
            .expect("an answer");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        statuses.push((response.status().as_u16(), retry_after));
    }
    let took = started.elapsed();
    assert_eq!(
        statuses.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![401, 401, 401, 429, 429, 429, 429, 429],
        "three checks, then throttled: {statuses:?}"
    );
    let retry: u64 = statuses[3]
        .1
        .as_deref()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert!(
        took < Duration::from_secs(10),
        "throttled answers hash nothing: {took:?}"
    );
    // A bearer token is checked in microseconds and never throttled.
    let with_token = client
        .get(&page)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("an answer");
    assert_ne!(with_token.status().as_u16(), 401);
    assert_ne!(with_token.status().as_u16(), 429);
    drop(aggregator);
    let _ = std::fs::remove_dir_all(&dir);
}
