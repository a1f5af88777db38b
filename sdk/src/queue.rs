//! The queue between `track` (any thread, any runtime or none) and the delivery
//! thread, bounded by a byte budget and an event count rather than a small fixed
//! number of slots.
//!
//! `push` is lock-free: a `SegQueue` (crossbeam) plus two atomic counters, no
//! waiting, no syscall in the common case. The budget covers everything the SDK
//! holds — records waiting here *and* batches the delivery thread has taken
//! (being sent, or waiting for a retry) — so a collector outage fills the budget
//! and only then are new events dropped (and counted). The delivery thread is
//! woken only when the queue turns non-empty or another batch's worth of bytes
//! has arrived, so a busy app does not pay a wake-up per event.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::record::EncodedRecord;

/// Why a record was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The byte budget or the event bound is used up.
    Full,
    /// The tracker is shutting down.
    Closed,
}

/// Bounds of the queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Bytes held at most, queued and taken together.
    pub(crate) max_bytes: usize,
    /// Events held at most, queued and taken together.
    pub(crate) max_events: usize,
    /// Bytes that make a batch worth waking the delivery thread for.
    pub(crate) wake_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Queue {
    records: SegQueue<EncodedRecord>,
    /// Bytes and events in `records` (counted before the push, so never under).
    queued_bytes: CachePadded<AtomicUsize>,
    queued_events: CachePadded<AtomicUsize>,
    /// Bytes and events the delivery thread took and has not resolved yet.
    /// Written only by that thread, read by `push`.
    taken_bytes: CachePadded<AtomicUsize>,
    taken_events: CachePadded<AtomicUsize>,
    closed: AtomicBool,
    limits: QueueLimits,
    /// Wakes the delivery thread.
    pub(crate) wake: Notify,
}

impl Queue {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Queue {
            records: SegQueue::new(),
            queued_bytes: CachePadded::new(AtomicUsize::new(0)),
            queued_events: CachePadded::new(AtomicUsize::new(0)),
            taken_bytes: CachePadded::new(AtomicUsize::new(0)),
            taken_events: CachePadded::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            limits,
            wake: Notify::new(),
        }
    }

    /// Queues a record unless the budget is used up or the queue is closed.
    pub(crate) fn push(&self, record: EncodedRecord) -> Result<(), Refused> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        let size = record.footprint();
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        let events_before = self.queued_events.fetch_add(1, Ordering::AcqRel);
        let held_bytes = before + size + self.taken_bytes.load(Ordering::Relaxed);
        let held_events = events_before + 1 + self.taken_events.load(Ordering::Relaxed);
        if held_bytes > self.limits.max_bytes || held_events > self.limits.max_events {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.queued_events.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        self.records.push(record);
        let wake = self.limits.wake_bytes.max(1);
        if before == 0 || before / wake != (before + size) / wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Takes the next record for a batch; its bytes stay counted as taken until
    /// [`release`](Self::release).
    pub(crate) fn pop(&self) -> Option<EncodedRecord> {
        let record = self.records.pop()?;
        let size = record.footprint();
        self.taken_bytes.fetch_add(size, Ordering::AcqRel);
        self.taken_events.fetch_add(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        self.queued_events.fetch_sub(1, Ordering::AcqRel);
        Some(record)
    }

    /// Gives back the budget of taken records once they are delivered or lost.
    pub(crate) fn release(&self, bytes: usize, events: usize) {
        self.taken_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.taken_events.fetch_sub(events, Ordering::AcqRel);
    }

    /// Bytes waiting in the queue (not yet taken).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Events waiting in the queue (not yet taken).
    pub(crate) fn queued_events(&self) -> usize {
        self.queued_events.load(Ordering::Acquire)
    }

    /// Bytes held: queued and taken.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.queued_bytes() + self.taken_bytes.load(Ordering::Acquire)
    }

    /// Refuses every later push.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::event::AttributeValue;
    use crate::record::{EventParts, UserRef, encode};

    fn record() -> EncodedRecord {
        let none: [(&str, AttributeValue); 0] = [];
        let parts = EventParts {
            name: "x",
            user: UserRef::Id("u"),
            source: None,
            attributes: &none,
            timestamp: None,
        };
        encode(&parts, SystemTime::now()).unwrap().record
    }

    #[test]
    fn the_budget_counts_queued_and_taken_bytes() {
        let size = record().footprint();
        let queue = Queue::new(QueueLimits {
            max_bytes: size * 3,
            max_events: 100,
            wake_bytes: size,
        });
        for _ in 0..3 {
            queue.push(record()).unwrap();
        }
        assert_eq!(queue.push(record()), Err(Refused::Full));
        let taken = queue.pop().unwrap();
        // Taken but not released: still held.
        assert_eq!(queue.push(record()), Err(Refused::Full));
        queue.release(taken.footprint(), 1);
        queue.push(record()).unwrap();
        assert_eq!(queue.held_bytes(), size * 3);
        assert_eq!(queue.queued_events(), 3);
        queue.close();
        assert_eq!(queue.push(record()), Err(Refused::Closed));
    }

    #[test]
    fn the_event_bound_applies_too() {
        let queue = Queue::new(QueueLimits {
            max_bytes: usize::MAX / 2,
            max_events: 2,
            wake_bytes: 1 << 20,
        });
        queue.push(record()).unwrap();
        queue.push(record()).unwrap();
        assert_eq!(queue.push(record()), Err(Refused::Full));
        assert_eq!(queue.queued_events(), 2);
    }
}
