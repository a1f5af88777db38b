//! Test doubles shared by the unit tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chrono::DateTime;
use growth_schema::tables::EventRow;

use crate::clickhouse::{EventStore, SinkError};

/// Keeps inserted rows in memory; fails the first `failures` attempts.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inserts: Arc<Mutex<Vec<Vec<EventRow>>>>,
    failures: Arc<AtomicU32>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<EventRow>>> {
        self.inserts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventStore for MemoryStore {
    async fn insert(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(SinkError::ClickHouse(clickhouse::error::Error::Custom(
                "injected failure".into(),
            )));
        }
        self.lock().push(rows.to_vec());
        Ok(())
    }
}

/// `n` minimal rows.
pub fn rows(n: usize) -> Vec<EventRow> {
    let t = DateTime::from_timestamp_nanos(0);
    (0..n)
        .map(|_| EventRow {
            app: "a".into(),
            event: "e".into(),
            event_time: t,
            user_hash: String::new(),
            source: String::new(),
            properties: vec![],
            numbers: vec![],
            received_at: t,
        })
        .collect()
}
