//! The start-up path both binaries share (`growth_schema::service`), as an operator
//! meets it: `migrate` with the flags on either side of it, giving up with exit code 1
//! when ClickHouse never answers, and a clean exit on SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use growth_e2e::{Aggregator, binary, clickhouse, clickhouse_url, free_port, unique_database};
use growth_schema::migrate::MIGRATIONS;

const BINARIES: [&str; 2] = ["growth-collector", "growth-aggregator"];

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(binary(bin))
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("GROWTH_USER_HASH_KEY")
        .env_remove("GROWTH_ALLOW_UNKEYED_HASH")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

#[tokio::test]
async fn migrate_takes_the_flags_before_or_after_it() {
    let url = clickhouse_url();
    for bin in BINARIES {
        let database = unique_database(&bin.replace('-', "_"));
        let after = run(
            bin,
            &[
                "migrate",
                "--clickhouse-url",
                &url,
                "--clickhouse-database",
                &database,
            ],
        );
        let log = String::from_utf8_lossy(&after.stderr);
        assert!(after.status.success(), "{bin}: {}\n{log}", after.status);
        assert!(log.contains("schema is up to date"), "{bin}: {log}");
        let latest = MIGRATIONS.last().map_or(0, |m| m.version);
        let version: u32 = clickhouse(&database)
            .query("SELECT max(version) FROM schema_migrations")
            .fetch_one()
            .await
            .expect("migrations recorded");
        assert_eq!(version, latest, "{bin}");

        let before = run(
            bin,
            &[
                "--clickhouse-url",
                &url,
                "--clickhouse-database",
                &database,
                "migrate",
            ],
        );
        let log = String::from_utf8_lossy(&before.stderr);
        assert!(before.status.success(), "{bin}: {}\n{log}", before.status);
        assert!(
            log.contains("applied=[]"),
            "{bin}: nothing left to apply\n{log}"
        );

        clickhouse::Client::default()
            .with_url(&url)
            .query("DROP DATABASE ?")
            .bind(clickhouse::sql::Identifier(&database))
            .execute()
            .await
            .expect("drop");
    }
}

#[test]
fn gives_up_with_exit_code_1_when_clickhouse_never_answers() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    for bin in BINARIES {
        let out = run(
            bin,
            &[
                "migrate",
                "--clickhouse-url",
                &nowhere,
                "--startup-timeout",
                "1s",
            ],
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bin}: {log}");
        assert!(
            log.contains("ClickHouse is not usable yet; retrying"),
            "{bin}: {log}"
        );
        assert!(
            log.contains(&format!("ClickHouse at {nowhere} was not usable within")),
            "{bin}: {log}"
        );
    }
}

#[tokio::test]
async fn the_aggregator_stops_cleanly_on_sigterm() {
    let database = unique_database("startup_term");
    let mut aggregator = Aggregator::start(&database, &[]).await;
    aggregator.process.signal("TERM");
    let status = aggregator.process.wait_exit(Duration::from_secs(15));
    let log = aggregator.process.output();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    for line in ["received SIGTERM", "shutting down", "stopped"] {
        assert!(log.contains(line), "no {line:?} in\n{log}");
    }
}

/// No user-hash key is a start-up error (exit code 2, before anything else), unless
/// plain SHA-256 is asked for by flag or environment; `migrate` needs no key.
#[test]
fn the_collector_refuses_to_run_without_a_user_hash_key() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let spool = std::env::temp_dir().join(format!("growth-e2e-nokey-{}", free_port()));
    let spool = spool.to_string_lossy().into_owned();
    let base = [
        "--clickhouse-url",
        &nowhere,
        "--startup-timeout",
        "1s",
        "--spool-dir",
        &spool,
        "--otlp-grpc-addr=127.0.0.1:0",
        "--otlp-http-addr=127.0.0.1:0",
        "--admin-addr=127.0.0.1:0",
    ];
    let without = run("growth-collector", &base);
    let log = String::from_utf8_lossy(&without.stderr);
    assert_eq!(without.status.code(), Some(2), "{log}");
    for hint in [
        "GROWTH_USER_HASH_KEY",
        "--user-hash-key-file",
        "--allow-unkeyed-hash",
    ] {
        assert!(log.contains(hint), "no {hint:?} in\n{log}");
    }

    // Told so, it starts (and gives up on the missing ClickHouse), with a warning.
    let with_flag = run(
        "growth-collector",
        &[&base[..], &["--allow-unkeyed-hash"]].concat(),
    );
    let with_env = Command::new(binary("growth-collector"))
        .args(base)
        .current_dir(std::env::temp_dir())
        .env_remove("GROWTH_USER_HASH_KEY")
        .env("GROWTH_ALLOW_UNKEYED_HASH", "true")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    for out in [with_flag, with_env] {
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(log.contains("plain SHA-256"), "{log}");
    }
    let _ = std::fs::remove_dir_all(&spool);
}
