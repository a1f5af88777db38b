//! # growth-e2e
//!
//! The harness of the end-to-end tests in `tests/tests/`: it starts the real
//! `growth-collector` and `growth-aggregator` binaries (built by `scripts/test`
//! before the tests run) against the real ClickHouse named by
//! `GROWTH_TEST_CLICKHOUSE_URL` (the embedded one `scripts/test` starts), each test
//! in a database of its own, and stops them when dropped.
//!
//! What it is not for: it is no mock. Nothing here stands in for a part that can run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ClickHouse the tests use; panics with directions when it is not set.
pub fn clickhouse_url() -> String {
    std::env::var("GROWTH_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
        panic!("GROWTH_TEST_CLICKHOUSE_URL is not set: run the tests with scripts/test, which starts the embedded ClickHouse")
    })
}

/// The Python interpreter that has the official OpenTelemetry SDK installed.
pub fn python() -> String {
    std::env::var("GROWTH_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("GROWTH_TEST_PYTHON is not set: run the tests with scripts/test, which prepares the Python venv")
    })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A database name of its own for one test.
pub fn unique_database(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("e2e_{test}_{}_{nanos}", std::process::id())
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A client for the test's database.
pub fn clickhouse(database: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_database(database)
}

/// The path of a workspace binary built by `scripts/test` (e.g. `growth-aggregator`).
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests with scripts/test (it builds the binaries first)",
        path.display()
    );
    path
}

/// A running binary, killed when dropped; its output goes to a log file.
pub struct Running {
    child: Child,
    pub log: PathBuf,
    name: String,
}

impl Running {
    fn start(name: &str, args: &[String], envs: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(binary(name));
        cmd.args(args)
            .env_remove("GROWTH_USER_HASH_KEY")
            .env_remove("GROWTH_ALLOW_UNKEYED_HASH")
            .env("RUST_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn(name, cmd)
    }

    /// Spawns `cmd` (set up by the caller: program, arguments, environment, working
    /// directory) with its output going to a log file; `name` names it in panics.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let dir = std::env::temp_dir().join("growth-e2e");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join(format!("{name}-{}-{}.log", std::process::id(), free_port()));
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            log,
            name: name.to_owned(),
        }
    }

    /// The process id (for /proc/<pid>/status and signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200, or panics with the process's output.
    pub async fn wait_ready(&mut self, url: &str, timeout: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.output()
                );
            }
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready at {url} after {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Running {
    /// Sends `signal` (e.g. "KILL", "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Running {
    /// Kills the process (SIGKILL) and reaps it; a no-op once it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A collector on free ports writing to `database`.
pub struct Collector {
    pub process: Running,
    pub grpc_endpoint: String,
    pub http_endpoint: String,
    pub admin: String,
    /// Its `--spool-dir`.
    pub spool_dir: PathBuf,
    /// How it was started, to start it again on the same ports.
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
}

/// A fresh spool directory for one collector (removed first if it exists).
pub fn temp_spool_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("growth-e2e").join(format!(
        "spool-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Collector {
    /// Starts the collector; `hash_key` becomes `GROWTH_USER_HASH_KEY` (without one,
    /// `GROWTH_ALLOW_UNKEYED_HASH=true`: plain SHA-256).
    pub async fn start(database: &str, hash_key: Option<&str>) -> Self {
        Self::start_with(database, hash_key, &[]).await
    }

    /// Starts the collector with extra flags.
    pub async fn start_with(database: &str, hash_key: Option<&str>, extra: &[&str]) -> Self {
        Self::start_in(database, hash_key, extra, temp_spool_dir(database)).await
    }

    /// Starts the collector with extra flags and the given spool directory (reuse one
    /// to restart a collector on what a previous one left).
    pub async fn start_in(
        database: &str,
        hash_key: Option<&str>,
        extra: &[&str],
        spool_dir: PathBuf,
    ) -> Self {
        Self::start_on(&clickhouse_url(), database, hash_key, extra, spool_dir).await
    }

    /// [`Collector::start_in`] against the ClickHouse at `clickhouse_url`.
    pub async fn start_on(
        clickhouse_url: &str,
        database: &str,
        hash_key: Option<&str>,
        extra: &[&str],
        spool_dir: PathBuf,
    ) -> Self {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let mut args: Vec<String> = [
            "--clickhouse-url",
            clickhouse_url,
            "--clickhouse-database",
            database,
            "--spool-dir",
            &spool_dir.to_string_lossy(),
            "--otlp-grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-addr",
            &format!("127.0.0.1:{http}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Short batches keep tests quick, unless the test chooses its own.
        if !extra.contains(&"--batch-max-delay") {
            args.extend(["--batch-max-delay".to_owned(), "100ms".to_owned()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // Without a key the collector refuses to start unless told to hash with plain
        // SHA-256 (what tests without a key compare against).
        let envs: Vec<(&'static str, String)> = match hash_key {
            Some(k) => vec![("GROWTH_USER_HASH_KEY", k.to_owned())],
            None => vec![("GROWTH_ALLOW_UNKEYED_HASH", "true".to_owned())],
        };
        let mut process = Running::start("growth-collector", &args, &envs);
        let admin = format!("http://127.0.0.1:{admin}");
        process
            .wait_ready(&format!("{admin}/readyz"), Duration::from_secs(60))
            .await;
        Self {
            process,
            grpc_endpoint: format!("http://127.0.0.1:{grpc}"),
            http_endpoint: format!("http://127.0.0.1:{http}"),
            admin,
            spool_dir,
            args,
            envs,
        }
    }

    /// Kills the collector with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the collector again with the same flags, ports, spool and database,
    /// and waits until it is ready.
    pub async fn start_again(&mut self) {
        self.process.kill();
        self.process = Running::start("growth-collector", &self.args, &self.envs);
        self.process
            .wait_ready(&format!("{}/readyz", self.admin), Duration::from_secs(60))
            .await;
    }

    /// [`Collector::start_again`], for a collector whose process already exited.
    pub async fn restart(&mut self) {
        self.start_again().await;
    }

    /// The collector's own `/metrics`, parsed.
    pub async fn metrics(&self) -> Exposition {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("collector admin answers")
            .text()
            .await
            .expect("metrics body");
        Exposition::parse(&text)
    }

    /// Waits until everything the collector acknowledged is in ClickHouse (its spool
    /// holds no rows), up to 60 s. Acknowledged means spooled, not yet stored.
    pub async fn settled(&self) {
        eventually(
            "the collector's spool to drain",
            Duration::from_secs(60),
            || async {
                let m = self.metrics().await;
                let stored = m.value("growth_collector_events_stored_total")
                    + m.value("growth_collector_rows_dead_lettered_total");
                let taken = m.value("growth_collector_events_spooled_total")
                    + m.value("growth_collector_spool_recovered_rows_total");
                (m.value("growth_collector_spool_rows") == 0.0 && stored >= taken).then_some(())
            },
        )
        .await;
    }
}

/// An aggregator on a free port reading `database`.
pub struct Aggregator {
    pub process: Running,
    pub url: String,
    /// Its `--state-dir` (where it keeps its day cache across restarts).
    pub state_dir: PathBuf,
    /// How it was started, to start it again on the same port and state.
    args: Vec<String>,
}

/// A fresh `--state-dir` for one aggregator (removed first if it exists).
pub fn temp_state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("growth-e2e").join(format!(
        "state-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Aggregator {
    /// Starts the aggregator with a 1s refresh, its own `--state-dir` (unless the
    /// extra flags name one) and the given extra flags.
    pub async fn start(database: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = [
            "--clickhouse-url",
            &clickhouse_url(),
            "--clickhouse-database",
            database,
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
            "--refresh-interval",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let state_dir = match extra.iter().position(|a| *a == "--state-dir") {
            Some(i) => PathBuf::from(extra.get(i + 1).copied().unwrap_or_default()),
            None => {
                let dir = temp_state_dir(database);
                args.extend(["--state-dir".to_owned(), dir.to_string_lossy().into_owned()]);
                dir
            }
        };
        args.extend(extra.iter().map(|s| s.to_string()));
        let url = format!("http://127.0.0.1:{port}");
        let process = Self::launch(&args, &url).await;
        Self {
            process,
            url,
            state_dir,
            args,
        }
    }

    async fn launch(args: &[String], url: &str) -> Running {
        let mut process = Running::start("growth-aggregator", args, &[]);
        process
            .wait_ready(&format!("{url}/healthz"), Duration::from_secs(60))
            .await;
        process
    }

    /// Stops it with SIGTERM and waits for the exit (up to 20 s).
    pub fn stop(&mut self) {
        self.process.signal("TERM");
        if self.process.wait_exit(Duration::from_secs(20)).is_none() {
            self.process.kill();
        }
    }

    /// Starts it again with the same flags, port and state directory (after
    /// [`Aggregator::stop`]); the new process logs to a new file.
    pub async fn start_again(&mut self) {
        self.process.kill();
        self.process = Self::launch(&self.args, &self.url).await;
    }

    /// The body of `/metrics` once it is served, parsed.
    pub async fn metrics(&self) -> Exposition {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/metrics", self.url)).send().await
                && r.status().is_success()
            {
                return Exposition::parse(&r.text().await.expect("metrics body"));
            }
            assert!(
                Instant::now() < deadline,
                "no /metrics after 30s:\n{}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GETs a path and returns the body, asserting success.
    pub async fn get(&self, path: &str) -> String {
        let r = reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("aggregator answers");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().await.expect("body")
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A series' labels as [`Exposition`] keys them: owned pairs, sorted by name.
pub fn labels(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    v.sort();
    v
}

/// A parsed Prometheus text exposition (the subset the aggregator writes).
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses `name{k="v",...} value` lines; comments are skipped.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Self { samples }
    }

    /// The sum of a metric's samples (0 when it has none).
    pub fn value(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// The samples of one metric for one app, as (labels without `app`) → value.
    pub fn series(
        &self,
        name: &str,
        app: &str,
    ) -> std::collections::BTreeMap<Vec<(String, String)>, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.labels.iter().any(|(k, v)| k == "app" && v == app))
            .map(|s| {
                (
                    s.labels
                        .iter()
                        .filter(|(k, _)| k != "app")
                        .cloned()
                        .collect(),
                    s.value,
                )
            })
            .collect()
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    labels.sort();
    labels
}

/// Polls `check` every 200ms until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_lines() {
        let e = Exposition::parse(
            "# HELP x y\ngrowth_retention_ratio{app=\"a\\\"b\",cohort=\"2026-11-20\",day=\"1\"} 0.5\nup 1\n",
        );
        assert_eq!(e.samples.len(), 2);
        assert_eq!(
            e.samples[0].labels[0],
            ("app".to_owned(), "a\"b".to_owned())
        );
        assert_eq!(
            e.series("growth_retention_ratio", "a\"b")
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![0.5]
        );
    }
}
