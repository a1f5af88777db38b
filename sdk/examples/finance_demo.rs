//! Sends a realistic month of the finance app's growth events through growth-sdk:
//! a few hundred users signing up over the days, some coming back (a decaying
//! chance each day, a few power users nearly every day), logging, editing and
//! reporting expenses, installing the PWA and starting challenges. Every timestamp
//! lies in the past; the same `--seed` gives the same users and events.
//!
//! ```text
//! cargo run -p growth-sdk --example finance_demo -- --users 300 --days 31 --seed 42
//! cargo run -p growth-sdk --example finance_demo -- --protocol http --endpoint http://127.0.0.1:4318
//! ```
//!
//! Exits non-zero when any event was not delivered.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use growth_sdk::{Event, Protocol, Source, Tracker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAY_SECS: u64 = 86_400;

/// Expense categories with their share of expenses and their amount range.
const CATEGORIES: &[(&str, u32, f64, f64)] = &[
    ("groceries", 35, 4.0, 120.0),
    ("eating_out", 20, 8.0, 80.0),
    ("transport", 20, 2.0, 60.0),
    ("utilities", 8, 20.0, 200.0),
    ("entertainment", 12, 5.0, 100.0),
];
/// Rent: paid about once a month, so a small chance on any active day.
const RENT_CHANCE: f64 = 0.03;
const REPORT_TYPES: &[&str] = &["monthly", "by_category", "weekly"];
const CHALLENGES: &[&str] = &[
    "no-coffee-week",
    "save-10-percent",
    "cook-at-home",
    "no-taxi-month",
];

#[derive(Debug, Parser)]
#[command(about = "Send a month of the finance app's growth events to a growth collector")]
struct Args {
    /// Collector endpoint [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http].
    #[arg(long)]
    endpoint: Option<String>,
    /// OTLP protocol: grpc or http (HTTP/protobuf).
    #[arg(long, default_value = "grpc")]
    protocol: Protocol,
    /// Number of users signing up over the period.
    #[arg(long, default_value_t = 300)]
    users: u32,
    /// Number of days, ending today. 31 by default: the report shows the 31 latest
    /// cohorts (D30 needs them), so the oldest one reaches its day 30 today.
    #[arg(long, default_value_t = 31)]
    days: u32,
    /// Seed of the simulation: the same seed sends the same users and events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// App name (`service.name`).
    #[arg(long, default_value = "finbrain")]
    app: String,
}

/// How often a user comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Habit {
    /// Back nearly every day.
    Power,
    /// Back often at first, less and less.
    Regular,
    /// Tries it, rarely returns.
    Casual,
}

#[derive(Debug)]
struct User {
    id: String,
    signup_day: u32,
    habit: Habit,
    has_pwa: bool,
}

impl User {
    /// Chance to be active `age` days after signing up (always on signup day).
    fn returns(&self, age: u32) -> f64 {
        let age = f64::from(age);
        match self.habit {
            Habit::Power => 0.85,
            Habit::Regular => 0.15 + 0.55 * (-age / 7.0).exp(),
            Habit::Casual => 0.45 * (-age / 2.0).exp(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.days == 0 || args.users == 0 {
        eprintln!("--users and --days must be at least 1");
        return ExitCode::FAILURE;
    }
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| args.protocol.default_endpoint().to_owned());
    let tracker = match Tracker::builder(&args.app)
        .endpoint(&endpoint)
        .protocol(args.protocol)
        .user_hash_key_from_env()
        .queue_capacity(65_536)
        .build()
    {
        Ok(tracker) => tracker,
        Err(error) => {
            eprintln!("cannot start the tracker: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "sending {} days of {} for {} users to {endpoint} over {} (seed {}, user hashing: {})",
        args.days,
        args.app,
        args.users,
        args.protocol,
        args.seed,
        if tracker.keyed_hashing() {
            "HMAC-SHA256 with GROWTH_USER_HASH_KEY"
        } else {
            "plain SHA-256, GROWTH_USER_HASH_KEY unset"
        }
    );

    let now = SystemTime::now();
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let today = now_secs / DAY_SECS;
    let first_day = today.saturating_sub(u64::from(args.days) - 1);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut users = make_users(&mut rng, args.users, args.days);
    let mut sent = 0u64;

    for day in 0..args.days {
        let day_start = (first_day + u64::from(day)) * DAY_SECS;
        // Today only up to now, so that no event lies in the future.
        let day_length = if first_day + u64::from(day) == today {
            now_secs - day_start
        } else {
            DAY_SECS
        };
        let mut active = 0;
        let mut events = 0;
        for user in users.iter_mut().filter(|u| u.signup_day <= day) {
            let age = day - user.signup_day;
            if age > 0 && !rng.random_bool(user.returns(age)) {
                continue;
            }
            active += 1;
            for mut event in user_day(&mut rng, user, age) {
                let offset = (rng.random::<f64>() * day_length as f64) as u64;
                event = event.at(UNIX_EPOCH
                    + Duration::from_secs(day_start + offset.min(day_length.saturating_sub(1))));
                tracker.track_event(event);
                events += 1;
            }
        }
        sent += events;
        // Pacing: wait for each day to be delivered, so nothing waits long in the queue.
        let report = tracker.flush();
        let delivered = match &report {
            Ok(report) => report.delivered,
            Err(error) => error.report().map_or(0, |r| r.delivered),
        };
        println!(
            "{}  {active:>4} active users  {events:>5} events  (delivered so far {delivered})",
            civil_date(first_day + u64::from(day))
        );
        if let Err(error) = report {
            eprintln!("delivery failing, stopping early: {error}");
            break;
        }
    }

    let signed_up = users.len();
    match tracker.shutdown() {
        Ok(report) => {
            println!(
                "done: {sent} events for {signed_up} users over {} days; {report}",
                args.days
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("done with losses: {sent} events for {signed_up} users: {error}");
            ExitCode::FAILURE
        }
    }
}

fn make_users(rng: &mut StdRng, count: u32, days: u32) -> Vec<User> {
    let mut users: Vec<User> = (0..count)
        .map(|i| {
            let habit = match rng.random_range(0..100) {
                0..10 => Habit::Power,
                10..55 => Habit::Regular,
                _ => Habit::Casual,
            };
            User {
                id: format!("user-{:05}", i + 1),
                signup_day: rng.random_range(0..days),
                habit,
                has_pwa: false,
            }
        })
        .collect();
    users.sort_by_key(|u| u.signup_day);
    users
}

/// The events of one user on one active day.
fn user_day(rng: &mut StdRng, user: &mut User, age: u32) -> Vec<Event> {
    let mut events = Vec::new();
    let expenses = match user.habit {
        Habit::Power => rng.random_range(3..=8),
        Habit::Regular => rng.random_range(1..=4),
        Habit::Casual => rng.random_range(1..=2),
    };
    for _ in 0..expenses {
        let (category, amount) = pick_expense(rng);
        let source = pick_source(rng, user.has_pwa);
        events.push(Event::expense_logged(&user.id, amount, category, source));
        if rng.random_bool(0.12) {
            // The app's own expense id: never derived from the user id, which must not leave the app.
            let expense_id = format!("exp-{:08x}", rng.random::<u32>());
            events.push(Event::expense_edited(&user.id, &expense_id));
        }
    }
    if rng.random_bool(RENT_CHANCE) {
        let amount = cents(rng.random_range(400.0..1500.0));
        events.push(Event::expense_logged(
            &user.id,
            amount,
            "rent",
            Source::Form,
        ));
    }
    let report_chance = if user.habit == Habit::Power {
        0.5
    } else {
        0.15
    };
    if rng.random_bool(report_chance) {
        let report_type = REPORT_TYPES[rng.random_range(0..REPORT_TYPES.len())];
        events.push(Event::report_requested(&user.id, report_type));
    }
    if !user.has_pwa && rng.random_bool(if age == 0 { 0.05 } else { 0.08 }) {
        user.has_pwa = true;
        events.push(Event::pwa_installed(&user.id));
    }
    if rng.random_bool(0.04) {
        let challenge = CHALLENGES[rng.random_range(0..CHALLENGES.len())];
        events.push(Event::challenge_started(&user.id, challenge));
    }
    events
}

fn pick_expense(rng: &mut StdRng) -> (&'static str, f64) {
    let total: u32 = CATEGORIES.iter().map(|c| c.1).sum();
    let mut roll = rng.random_range(0..total);
    for &(name, weight, low, high) in CATEGORIES {
        if roll < weight {
            return (name, cents(rng.random_range(low..high)));
        }
        roll -= weight;
    }
    ("groceries", 10.0)
}

fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

fn pick_source(rng: &mut StdRng, has_pwa: bool) -> Source {
    let roll = rng.random_range(0..100);
    match (has_pwa, roll) {
        (true, 0..60) => Source::Pwa,
        (true, 60..85) | (false, 0..60) => Source::Messenger,
        _ => Source::Form,
    }
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (H. Hinnant's civil_from_days).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
