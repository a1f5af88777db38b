//! The writer against an in-memory store, over a real spool in a temp dir.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::rowbinary::encode_request;
use crate::spool::{self, Spool, SpoolThread};
use crate::testing::{MemoryStore, rows, spool_config, temp_dir};

fn config(max_rows: usize, max_delay_ms: u64) -> BatchConfig {
    BatchConfig {
        max_rows,
        max_bytes: 1 << 30,
        max_delay: Duration::from_millis(max_delay_ms),
        quiet_rows: 0,
        quiet: Duration::from_millis(100),
    }
}

struct Pipeline {
    spool: Spool,
    thread: SpoolThread,
    writer: WriterHandle,
    telemetry: Arc<Telemetry>,
}

fn start(dir: &Path, store: &MemoryStore, batch: BatchConfig) -> Pipeline {
    let telemetry = Arc::new(Telemetry::new());
    let (spool, tail, thread) =
        spool::open(&spool_config(dir, 1 << 30), telemetry.clone()).expect("spool opens");
    let writer = spawn(
        store.clone(),
        tail,
        batch,
        telemetry.clone(),
        Arc::new(WriterHealth::default()),
    );
    Pipeline {
        spool,
        thread,
        writer,
        telemetry,
    }
}

impl Pipeline {
    async fn append(&self, rows: &[growth_schema::tables::EventRow]) {
        self.spool
            .append(rows.len() as u32, encode_request(rows))
            .await
            .expect("spooled");
    }

    /// Closes the spool and waits until the writer has stored everything.
    async fn finish(self) -> Arc<Telemetry> {
        self.writer.start_draining();
        drop(self.spool);
        self.thread.join().await;
        self.writer.join(Duration::from_secs(60)).await;
        self.telemetry
    }
}

fn metric(telemetry: &Telemetry, line_start: &str) -> String {
    let text = telemetry.render();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn many_requests_become_one_insert_after_the_delay() {
    let dir = temp_dir("writer-delay");
    let store = MemoryStore::default();
    // The delay is long enough that 20 fsynced appends fit in it even on a loaded
    // machine; "not before the delay" is checked only while the delay is surely running.
    let delay = Duration::from_millis(1_500);
    let p = start(&dir, &store, config(1_000_000, delay.as_millis() as u64));
    let first = std::time::Instant::now();
    for _ in 0..20 {
        p.append(&rows(7)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if first.elapsed() < delay.mul_f32(0.8) {
        assert!(store.insert_sizes().is_empty(), "inserted before the delay");
    }
    tokio::time::sleep(delay.saturating_sub(first.elapsed()) + Duration::from_millis(700)).await;
    assert_eq!(store.insert_sizes(), vec![140]);
    let telemetry = p.finish().await;
    assert_eq!(
        metric(&telemetry, "growth_collector_events_stored_total"),
        "growth_collector_events_stored_total 140"
    );
    assert_eq!(
        metric(&telemetry, "growth_collector_spool_rows "),
        "growth_collector_spool_rows 0"
    );
    // Every stored segment but the open one is deleted.
    assert!(spool::segment::list(&dir).expect("list").len() <= 1);
}

#[tokio::test]
async fn a_full_batch_goes_at_once() {
    let dir = temp_dir("writer-full");
    let store = MemoryStore::default();
    let p = start(&dir, &store, config(12, 60_000));
    p.append(&rows(6)).await;
    p.append(&rows(6)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.insert_sizes(), vec![12]);
    p.finish().await;
}

#[tokio::test]
async fn a_burst_goes_in_once_the_senders_are_quiet_and_a_trickle_waits() {
    let dir = temp_dir("writer-quiet");
    let store = MemoryStore::default();
    let batch = BatchConfig {
        quiet_rows: 100,
        quiet: Duration::from_millis(50),
        ..config(1_000_000, 60_000)
    };
    let p = start(&dir, &store, batch);
    // Below the quiet threshold: waits for the (long) delay.
    p.append(&rows(60)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.insert_sizes().is_empty(),
        "a trickle was inserted early"
    );
    // Past it: one insert of everything once nothing arrives for 50 ms.
    p.append(&rows(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.insert_sizes().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.insert_sizes(), vec![120]);
    p.finish().await;
}

#[tokio::test]
async fn transient_failures_are_retried_until_stored() {
    let dir = temp_dir("writer-retry");
    let store = MemoryStore::failing(2);
    let p = start(&dir, &store, config(1, 10));
    p.append(&rows(3)).await;
    let telemetry = p.finish().await;
    assert_eq!(store.insert_sizes(), vec![3]);
    assert_eq!(store.attempts(), 3);
    assert_eq!(
        metric(
            &telemetry,
            "growth_collector_insert_errors_total{class=\"transient\"}"
        ),
        "growth_collector_insert_errors_total{class=\"transient\"} 2"
    );
    assert_eq!(
        metric(&telemetry, "growth_collector_insert_retries_total"),
        "growth_collector_insert_retries_total 2"
    );
}

#[tokio::test]
async fn a_poison_row_is_dead_lettered_and_the_rest_stored() {
    let dir = temp_dir("writer-poison");
    let store = MemoryStore::default();
    let p = start(&dir, &store, config(1_000, 50));
    let mut batch = rows(9);
    batch[5].source = "poison".into();
    p.append(&batch[..4]).await;
    p.append(&batch[4..]).await;
    let telemetry = p.finish().await;
    assert_eq!(store.rows().len(), 8);
    assert!(store.rows().iter().all(|r| r.source != "poison"));
    let dead = std::fs::read_to_string(dir.join(crate::deadletter::FILE)).expect("dead letters");
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(
        dead.contains("VIOLATED_CONSTRAINT") && dead.contains("\"source\":\"poison\""),
        "{dead}"
    );
    assert_eq!(
        metric(&telemetry, "growth_collector_rows_dead_lettered_total"),
        "growth_collector_rows_dead_lettered_total 1"
    );
    assert_eq!(
        metric(&telemetry, "growth_collector_events_stored_total"),
        "growth_collector_events_stored_total 8"
    );
}

#[tokio::test]
async fn a_batch_replayed_after_a_crash_has_the_same_token() {
    let dir = temp_dir("writer-replay");
    let store = MemoryStore::default();
    let p = start(&dir, &store, config(1_000, 20));
    for n in [3, 4, 5] {
        p.append(&rows(n)).await;
    }
    let before = spool::cursor::load(&dir).expect("cursor");
    p.finish().await;
    assert_eq!(store.insert_sizes(), vec![12]);
    // As if the process died after ClickHouse took the insert but before the cursor
    // moved: the cursor still says the batch is in flight, the frames are still there.
    let after = spool::cursor::load(&dir)
        .expect("cursor")
        .expect("a cursor");
    let frames_start = before.map_or(
        spool::Position {
            segment: 1,
            offset: spool::segment::HEADER_LEN,
        },
        |c| c.committed,
    );
    spool::cursor::store(
        &dir,
        &Cursor {
            committed: frames_start,
            inflight: Some(after.committed),
        },
        true,
    )
    .expect("rewind");
    let p = start(&dir, &store, config(1_000, 20));
    let telemetry = p.finish().await;
    assert_eq!(store.attempts(), 2, "replayed once");
    assert_eq!(store.insert_sizes(), vec![12], "stored once");
    assert_eq!(
        metric(&telemetry, "growth_collector_spool_recovered_rows_total"),
        "growth_collector_spool_recovered_rows_total 12"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_good_frames_replayed() {
    let dir = temp_dir("writer-torn");
    let store = MemoryStore::default();
    let p = start(&dir, &store, config(1_000, 60_000));
    p.append(&rows(2)).await;
    p.append(&rows(3)).await;
    // Stop without draining: the writer is aborted, the rows stay in the spool.
    p.writer.join(Duration::from_millis(1)).await;
    drop(p.spool);
    p.thread.join().await;
    assert!(store.insert_sizes().is_empty());
    let last = *spool::segment::list(&dir)
        .expect("list")
        .iter()
        .find(|id| {
            spool::segment::scan(&dir, **id, 0)
                .map(|s| !s.frames.is_empty())
                .unwrap_or(false)
        })
        .expect("a segment with frames");
    let path = spool::segment::path(&dir, last);
    let len = std::fs::metadata(&path).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 5).expect("tear the last frame");
    let p = start(&dir, &store, config(1_000, 10));
    let telemetry = p.finish().await;
    assert_eq!(
        store.insert_sizes(),
        vec![2],
        "the good frame before the tear"
    );
    assert_eq!(
        metric(&telemetry, "growth_collector_spool_tail_cuts_total"),
        "growth_collector_spool_tail_cuts_total 1"
    );
}

#[tokio::test]
async fn a_resent_request_is_spooled_once_even_after_a_restart() {
    let dir = temp_dir("writer-resent");
    let store = MemoryStore::default();
    let request = rows(4);
    let p = start(&dir, &store, config(1_000, 60_000));
    let first = p
        .spool
        .append(4, encode_request(&request))
        .await
        .expect("spooled");
    let again = p
        .spool
        .append(4, encode_request(&request))
        .await
        .expect("spooled");
    assert_eq!(
        (first, again),
        (spool::Appended::Written, spool::Appended::Duplicate)
    );
    // Killed before anything reached the store: the retry comes to the next process.
    p.writer.join(Duration::from_millis(1)).await;
    drop(p.spool);
    p.thread.join().await;
    let p = start(&dir, &store, config(1_000, 10));
    let resent = p
        .spool
        .append(4, encode_request(&request))
        .await
        .expect("spooled");
    assert_eq!(resent, spool::Appended::Duplicate);
    let telemetry = p.finish().await;
    assert_eq!(store.insert_sizes(), vec![4]);
    assert_eq!(
        metric(&telemetry, "growth_collector_requests_deduplicated_total"),
        "growth_collector_requests_deduplicated_total 1"
    );
}

#[tokio::test]
async fn a_batch_refused_as_a_whole_is_set_aside_without_one_insert_per_row() {
    let dir = temp_dir("writer-all-refused");
    let store = MemoryStore::default();
    let p = start(&dir, &store, config(1_000, 20));
    let mut batch = rows(200);
    for row in &mut batch {
        row.source = "poison".into();
    }
    p.append(&batch).await;
    let telemetry = p.finish().await;
    assert!(store.rows().is_empty());
    assert!(
        store.attempts() < 100,
        "{} inserts for 200 rows",
        store.attempts()
    );
    assert_eq!(
        metric(&telemetry, "growth_collector_rows_dead_lettered_total"),
        "growth_collector_rows_dead_lettered_total 200"
    );
    let dead = std::fs::read_to_string(dir.join(crate::deadletter::FILE)).expect("dead letters");
    assert_eq!(dead.lines().count(), 200);
}
