//! Test doubles shared by the unit tests.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::DateTime;
use growth_schema::tables::EventRow;
use growth_schema::user_hash::UserHasher;

use crate::clickhouse::{EventStore, SinkError};
use crate::delivery::DeliveryConfig;
use crate::receiver::Intake;
use crate::rowbinary;
use crate::rows::Rows;
use crate::spool::{self, FsyncPolicy, SpoolConfig, SpoolTail, SpoolThread};
use crate::telemetry::Telemetry;

/// Keeps inserted rows in memory, deduplicating by token as ClickHouse does; fails
/// the first `failures` attempts (transiently) and refuses for good any insert
/// holding a row whose `source` is `poison`.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inserts: Arc<Mutex<Vec<Vec<EventRow>>>>,
    tokens: Arc<Mutex<HashSet<String>>>,
    failures: Arc<AtomicU32>,
    attempts: Arc<AtomicUsize>,
}

impl MemoryStore {
    /// A store whose next `n` inserts fail.
    pub fn failing(n: u32) -> Self {
        let store = Self::default();
        store.failures.store(n, Ordering::SeqCst);
        store
    }

    /// The size of each successful insert, in order.
    pub fn insert_sizes(&self) -> Vec<usize> {
        self.lock().iter().map(Vec::len).collect()
    }

    /// Every row stored so far.
    pub fn rows(&self) -> Vec<EventRow> {
        self.lock().iter().flatten().cloned().collect()
    }

    /// Insert attempts, failed ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<EventRow>>> {
        self.inserts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventStore for MemoryStore {
    async fn insert(&self, token: &str, rows: &Rows) -> Result<(), SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let rows: Bytes = rows.read_all().await?;
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(SinkError::ClickHouse(clickhouse::error::Error::Network(
                "injected failure".into(),
            )));
        }
        let decoded: Vec<EventRow> = rowbinary::split_rows(&rows)
            .expect("whole rows")
            .into_iter()
            .map(|r| rowbinary::decode_row(&rows[r]).expect("a row"))
            .collect();
        if decoded.iter().any(|r| r.source == "poison") {
            return Err(SinkError::ClickHouse(clickhouse::error::Error::BadResponse(
                "Code: 469. DB::Exception: Constraint `no_poison` is violated. (VIOLATED_CONSTRAINT)"
                    .into(),
            )));
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.insert(token.to_owned()) {
            self.lock().push(decoded);
        }
        Ok(())
    }
}

/// `n` minimal rows, each with an event time of its own (so no two requests made of
/// them look like a retry of one another).
pub fn rows(n: usize) -> Vec<EventRow> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let t = DateTime::from_timestamp_nanos(0);
    (0..n)
        .map(|_| EventRow {
            app: "a".into(),
            event: "e".into(),
            event_time: DateTime::from_timestamp_millis(NEXT.fetch_add(1, Ordering::SeqCst) as i64)
                .unwrap_or(t),
            user_hash: String::new(),
            source: String::new(),
            properties: vec![],
            numbers: vec![],
            received_at: t,
        })
        .collect()
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "growth-collector-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A spool config in `dir` with a small segment size, so tests cross segments.
pub fn spool_config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_bytes,
        segment_bytes: 4096,
        fsync: FsyncPolicy::Always,
    }
}

/// An intake over a real spool in a temp dir, no writer: what a request put in
/// the spool is read back with [`SpooledIntake::rows`].
pub struct SpooledIntake {
    /// The intake.
    pub intake: Intake,
    /// The spool's directory.
    pub dir: PathBuf,
    /// The spool's other end: nothing drains it here.
    _tail: SpoolTail,
    _thread: SpoolThread,
}

impl SpooledIntake {
    /// A spool of at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let dir = temp_dir("intake");
        let telemetry = Arc::new(Telemetry::new());
        let (spool, tail, thread) =
            spool::open(&spool_config(&dir, max_bytes), telemetry.clone()).expect("spool opens");
        let intake = Intake::new(
            UserHasher::new(None),
            spool,
            &DeliveryConfig::default(),
            telemetry,
        );
        Self {
            intake,
            dir,
            _tail: tail,
            _thread: thread,
        }
    }

    /// Every row in the spool, in order.
    pub fn rows(&self) -> Vec<EventRow> {
        spooled_rows(&self.dir)
    }
}

/// Every row in the segments of `dir`, in order.
pub fn spooled_rows(dir: &Path) -> Vec<EventRow> {
    let mut reader = spool::segment::Reader::new(dir);
    let mut rows = Vec::new();
    for id in spool::segment::list(dir).expect("list") {
        for frame in spool::segment::scan(dir, id, 0).expect("scan").frames {
            let payload = reader.payload(&frame).expect("payload");
            for range in rowbinary::split_rows(&payload).expect("rows") {
                rows.push(rowbinary::decode_row(&payload[range]).expect("row"));
            }
        }
    }
    rows
}
