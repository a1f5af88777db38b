//! What is measured from outside the systems: their CPU time and memory from
//! `/proc/<pid>` (Linux only), and ClickHouse's own counters.
//!
//! chDB 26.9 has no `system.query_log` or `system.part_log`, so insert counts come
//! from the server-wide `InsertQuery` counter in `system.events`: the server must be
//! the benchmark's alone.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); the first after ')' is field 3.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once; 100 on every Linux we know.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `kB` line of `/proc/<pid>/status` (VmHWM: peak resident set; VmRSS: now), in MB.
pub fn status_mb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))?;
    let kib: f64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field}: {line}"))?;
    Ok(kib * 1024.0 / 1e6)
}

/// The ClickHouse server: its process and its HTTP interface.
#[derive(Clone)]
pub struct ClickHouse {
    pub client: clickhouse::Client,
    pub pid: u32,
}

/// Server-wide counters of `system.events`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub inserts: u64,
    pub cpu_seconds: f64,
    /// The [`PROFILE_EVENTS`], in that order.
    profile: Vec<u64>,
}

/// `system.events` counters that say where ClickHouse's time went.
pub const PROFILE_EVENTS: [&str; 6] = [
    // Rows written by inserts into every table: the target and its views' tables.
    "InsertedRows",
    // Rows read by background merges.
    "MergedRows",
    "InsertQueryTimeMicroseconds",
    "MergeTotalMilliseconds",
    // Skip-index (bloom filter) building while writing parts.
    "MergeTreeDataWriterSkipIndicesCalculationMicroseconds",
    // Time ClickHouse threads were runnable but waited for a CPU: the machine's load.
    "OSCPUWaitMicroseconds",
];

impl Counters {
    /// The change of every [`PROFILE_EVENTS`] counter since `before`.
    pub fn profile_since(&self, before: &Counters) -> Vec<u64> {
        self.profile
            .iter()
            .zip(before.profile.iter().chain(std::iter::repeat(&0)))
            .map(|(after, before)| after.saturating_sub(*before))
            .collect()
    }
}

impl ClickHouse {
    pub fn new(url: &str, pid: u32) -> Self {
        Self {
            client: clickhouse::Client::default().with_url(url),
            pid,
        }
    }

    /// Insert queries so far, and the server process's CPU.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let mut names = vec!["InsertQuery"];
        names.extend(PROFILE_EVENTS);
        let rows = self
            .client
            .query("SELECT event, toUInt64(value) FROM system.events WHERE has(?, event)")
            .bind(&names)
            .fetch_all::<(String, u64)>()
            .await
            .context("reading system.events")?;
        let value = |name: &str| {
            rows.iter()
                .find(|(event, _)| event == name)
                .map_or(0, |(_, v)| *v)
        };
        Ok(Counters {
            inserts: value("InsertQuery"),
            cpu_seconds: cpu_seconds(self.pid)?,
            profile: PROFILE_EVENTS.iter().map(|name| value(name)).collect(),
        })
    }

    /// Waits until no merge has run for two polls in a row (at most `limit`), so that
    /// the CPU the inserts cause later is charged to the run that caused it.
    pub async fn wait_for_merges(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < deadline {
            let merging = self
                .client
                .query("SELECT toUInt64(count()) FROM system.merges")
                .fetch_one::<u64>()
                .await?;
            quiet = if merging == 0 { quiet + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Waits until the server has used less than 5 % of a core for two half-second
    /// polls in a row (at most `limit`): the previous system's background work (its
    /// merges, dropping its database) must not be charged to the next run, nor slow it.
    pub async fn wait_idle(&self, limit: Duration) -> anyhow::Result<()> {
        const POLL: Duration = Duration::from_millis(500);
        let deadline = Instant::now() + limit;
        let mut quiet = 0;
        let mut before = cpu_seconds(self.pid)?;
        while quiet < 2 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            let now = cpu_seconds(self.pid)?;
            quiet = if now - before < 0.05 * POLL.as_secs_f64() {
                quiet + 1
            } else {
                0
            };
            before = now;
        }
        Ok(())
    }

    /// Runs a statement (DDL).
    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.client
            .query(sql)
            .execute()
            .await
            .with_context(|| format!("ClickHouse: {sql}"))
    }
}
