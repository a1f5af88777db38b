//! The Markdown the benchmark prints: one row per system and concurrency, then
//! growth-collector's ratios to Rotel against the targets of issue #5.

use std::time::Duration;

use crate::systems::{Stored, System};

/// What the whole run shares.
pub struct Header {
    /// Events a run (a soak: `None`, it sends for a time).
    pub events: Option<u64>,
    pub events_per_request: u64,
    pub request_bytes: usize,
    pub spool: bool,
    pub collector_args: Vec<String>,
}

/// One system at one concurrency.
pub struct Outcome {
    pub system: System,
    pub concurrency: usize,
    /// Records in acknowledged requests.
    pub sent: u64,
    pub rejected: u64,
    pub retries: u64,
    pub acked_after: Duration,
    pub visible_after: Duration,
    pub collector_cpu: f64,
    pub clickhouse_cpu: f64,
    pub inserts: u64,
    /// Changes of [`crate::probe::PROFILE_EVENTS`].
    pub profile: Vec<u64>,
    pub peak_rss_mb: f64,
    pub stored: Option<Stored>,
    /// Records the sink decoded.
    pub received: Option<u64>,
}

impl Outcome {
    fn events_per_s(&self) -> f64 {
        self.sent as f64 / self.visible_after.as_secs_f64()
    }

    fn per_million(&self, cpu: f64) -> f64 {
        cpu / self.sent as f64 * 1e6
    }

    fn collector_cpu_per_m(&self) -> f64 {
        self.per_million(self.collector_cpu)
    }

    fn clickhouse_cpu_per_m(&self) -> Option<f64> {
        self.stored.map(|_| self.per_million(self.clickhouse_cpu))
    }

    /// Acknowledged records that are not stored (the sink: not decoded).
    fn lost(&self) -> i64 {
        let kept = match (self.stored, self.received) {
            (Some(s), _) => s.unique,
            (None, Some(received)) => received,
            (None, None) => 0,
        };
        (self.sent - self.rejected) as i64 - kept as i64
    }

    fn duplicates(&self) -> u64 {
        self.stored.map_or(0, |s| s.rows - s.unique)
    }

    fn rows_per_insert(&self) -> String {
        match self.stored {
            Some(s) if self.inserts > 0 => format!("{:.0}", s.rows as f64 / self.inserts as f64),
            _ => "–".into(),
        }
    }
}

/// Progress line for stderr.
pub fn one_line(o: &Outcome) -> String {
    format!(
        "{:.0} events/s (acked in {:.1} s, visible in {:.1} s), collector {:.2} CPU-s/M, ClickHouse {} CPU-s/M, {} inserts, peak RSS {:.0} MB, lost {}, duplicates {}",
        o.events_per_s(),
        o.acked_after.as_secs_f64(),
        o.visible_after.as_secs_f64(),
        o.collector_cpu_per_m(),
        o.clickhouse_cpu_per_m()
            .map_or("–".into(), |c| format!("{c:.2}")),
        o.inserts,
        o.peak_rss_mb,
        o.lost(),
        o.duplicates(),
    )
}

fn print_header(header: &Header, load_before: &str, load_after: &str) {
    println!(
        "{}, {} a request ({} protobuf bytes), OTLP/gRPC. growth-collector spool: {}{}. Load average (1/5/15 min) before: {load_before}, after: {load_after}.\n",
        header
            .events
            .map_or("Soak".to_string(), |n| format!("{n} events a run")),
        header.events_per_request,
        header.request_bytes,
        if header.spool {
            "on"
        } else {
            "none (this build has no --spool-dir)"
        },
        if header.collector_args.is_empty() {
            String::new()
        } else {
            format!(", flags {}", header.collector_args.join(" "))
        },
    );
}

/// The main table and the targets.
pub fn print_table(header: &Header, outcomes: &[Outcome], load_before: &str, load_after: &str) {
    print_header(header, load_before, load_after);
    println!(
        "| system | concurrency | events/s end to end | acked / visible after (s) | collector CPU-s per M | ClickHouse CPU-s per M | peak RSS (MB) | inserts | rows per insert | lost | duplicates | retries |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        println!(
            "| {} | {} | {:.0} | {:.1} / {:.1} | {:.2} | {} | {:.0} | {} | {} | {} | {} | {} |",
            o.system.label(),
            o.concurrency,
            o.events_per_s(),
            o.acked_after.as_secs_f64(),
            o.visible_after.as_secs_f64(),
            o.collector_cpu_per_m(),
            o.clickhouse_cpu_per_m()
                .map_or("–".into(), |c| format!("{c:.2}")),
            o.peak_rss_mb,
            if o.stored.is_some() {
                o.inserts.to_string()
            } else {
                "–".into()
            },
            o.rows_per_insert(),
            o.lost(),
            o.duplicates(),
            o.retries,
        );
    }
    print_targets(outcomes);
    print_profile(outcomes);
}

/// Where ClickHouse's time went, from its own counters (wall-clock times of its
/// threads, inflated when they wait for a CPU: the last column says how much).
fn print_profile(outcomes: &[Outcome]) {
    println!(
        "\nClickHouse's own counters (`system.events`) during each run, per million events sent:\n"
    );
    println!(
        "| system | concurrency | rows written (all tables) | rows merged | insert queries (s) | merges (s) | skip-index building (s) | waiting for a CPU (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes.iter().filter(|o| o.stored.is_some()) {
        let per_m = |i: usize, unit: f64| {
            o.profile
                .get(i)
                .map_or(f64::NAN, |v| *v as f64 / unit / o.sent as f64 * 1e6)
        };
        println!(
            "| {} | {} | {:.2} M | {:.2} M | {:.1} | {:.1} | {:.1} | {:.1} |",
            o.system.label(),
            o.concurrency,
            per_m(0, 1e6),
            per_m(1, 1e6),
            per_m(2, 1e6),
            per_m(3, 1e3),
            per_m(4, 1e6),
            per_m(5, 1e6),
        );
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

/// growth-collector against Rotel, at every concurrency both ran.
fn print_targets(outcomes: &[Outcome]) {
    let find = |system, c| {
        outcomes
            .iter()
            .find(|o| o.system == system && o.concurrency == c)
    };
    let mut rows = Vec::new();
    for ours in outcomes.iter().filter(|o| o.system == System::Growth) {
        let Some(rotel) = find(System::Rotel, ours.concurrency) else {
            continue;
        };
        let c = ours.concurrency;
        let speed = ours.events_per_s() / rotel.events_per_s();
        let speed_target = if c == 1 { 4.0 } else { 2.0 };
        let ch = match (ours.clickhouse_cpu_per_m(), rotel.clickhouse_cpu_per_m()) {
            (Some(a), Some(b)) if b > 0.0 => a / b,
            _ => f64::NAN,
        };
        let cpu = ours.collector_cpu_per_m() / rotel.collector_cpu_per_m();
        let rss = if c >= 32 {
            format!(
                "{:.0} MB (≤ 100) {}",
                ours.peak_rss_mb,
                mark(ours.peak_rss_mb <= 100.0)
            )
        } else {
            format!("{:.0} MB", ours.peak_rss_mb)
        };
        let exact = ours.lost() == 0 && ours.duplicates() == 0;
        rows.push(format!(
            "| {c} | {speed:.2}× (≥ {speed_target}×) {} | {ch:.2}× (≤ 0.2×) {} | {cpu:.2}× (≤ 1×) {} | {rss} | {} {} |",
            mark(speed >= speed_target),
            mark(ch <= 0.2),
            mark(cpu <= 1.0),
            if exact { "0 / 0" } else { "LOSS OR DUPLICATES" },
            mark(exact),
        ));
    }
    if rows.is_empty() {
        return;
    }
    println!("\ngrowth-collector ÷ Rotel (targets of issue #5):\n");
    println!(
        "| concurrency | events/s | ClickHouse CPU per M | collector CPU per M | peak RSS | lost / duplicates |"
    );
    println!("|---:|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

/// One RSS sample of a soak.
pub struct Sample {
    pub at: Duration,
    pub rss_mb: f64,
    pub acked_events: u64,
    pub cpu_seconds: f64,
}

/// The soak: RSS over time (a row every minute or so), and whether it stayed flat.
pub fn print_soak(
    header: &Header,
    system: System,
    samples: &[Sample],
    outcome: &Outcome,
    load_before: &str,
    load_after: &str,
) {
    print_header(header, load_before, load_after);
    println!(
        "Soak, {} at concurrency {}: {}\n",
        system.label(),
        outcome.concurrency,
        one_line(outcome)
    );
    println!("| minute | RSS (MB) | events acked | events/s since last row | CPU-s |");
    println!("|---:|---:|---:|---:|---:|");
    let step = (samples.len() / 20).max(1);
    let mut last: Option<&Sample> = None;
    for s in samples.iter().step_by(step).chain(samples.last()) {
        if last.is_some_and(|l| std::ptr::eq(l, s)) {
            continue;
        }
        let rate = last.map_or(s.acked_events as f64 / s.at.as_secs_f64(), |l| {
            (s.acked_events - l.acked_events) as f64 / (s.at - l.at).as_secs_f64()
        });
        println!(
            "| {:.1} | {:.1} | {} | {:.0} | {:.1} |",
            s.at.as_secs_f64() / 60.0,
            s.rss_mb,
            s.acked_events,
            rate,
            s.cpu_seconds
        );
        last = Some(s);
    }
    let half = samples.len() / 2;
    let peak = |part: &[Sample]| part.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
    let (first, second) = (peak(&samples[..half]), peak(&samples[half..]));
    let flat = second <= first * 1.10;
    println!(
        "\nPeak RSS: first half {first:.1} MB, second half {second:.1} MB ({}), whole run (VmHWM) {:.1} MB.",
        if flat {
            "flat: second half within 10 % of the first"
        } else {
            "GROWING"
        },
        outcome.peak_rss_mb
    );
}
