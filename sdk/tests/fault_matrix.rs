//! The SDK never breaks the app: runtimes (none, current-thread, multi-thread) ×
//! collector states (up, slow, flaky with Retry-After / RetryInfo, hung, down) ×
//! configurations (gRPC, HTTP, each plain and gzip). In every case: no panic,
//! `track` stays fast, `shutdown` returns in bounded time with an honest report
//! (every event in exactly one counter), and what a healthy or recovering
//! receiver got is exactly what was tracked.
//!
//! The receivers here are small OTLP servers (tonic's generated `LogsService`, a
//! raw HTTP/1.1 loop): the states "hung" and "answers 503 then 200 on cue" cannot
//! be had from the real collector on demand. `tests/tests/sdk_*.rs` cover the
//! real collector.

// A test file: its helpers (not only its #[test] functions) may unwrap; a panic is
// the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use growth_sdk::{Compression, Protocol, Tracker};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const EVENTS: usize = 300;
const SHUTDOWN: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Answers after 300 ms.
    Slow,
    /// Answers the first two requests with "unavailable, retry after 1 s".
    Flaky,
    /// Accepts connections and never answers.
    Hung,
    /// Nothing listens.
    Down,
}

#[derive(Debug, Clone, Copy)]
enum RuntimeKind {
    None,
    CurrentThread,
    MultiThread,
}

/// What a receiver saw.
#[derive(Default)]
struct Received {
    records: AtomicUsize,
    requests: AtomicUsize,
}

impl Received {
    fn count(&self, request: &ExportLogsServiceRequest) {
        let n: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.records.fetch_add(n, Ordering::SeqCst);
    }
}

/// The runtime the receivers live on, for the whole test binary.
fn servers() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

struct GrpcReceiver {
    state: State,
    received: Arc<Received>,
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let seen = self.received.requests.fetch_add(1, Ordering::SeqCst);
        match self.state {
            State::Slow => tokio::time::sleep(Duration::from_millis(300)).await,
            State::Flaky if seen < 2 => {
                return Err(
                    <tonic::Status as tonic_types::StatusExt>::with_error_details(
                        tonic::Code::ResourceExhausted,
                        "busy",
                        tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
                    ),
                );
            }
            State::Hung => std::future::pending::<()>().await,
            _ => {}
        }
        self.received.count(request.get_ref());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Starts a receiver in `state`; returns its endpoint.
fn start(protocol: Protocol, state: State, received: Arc<Received>) -> String {
    if state == State::Down {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        return format!("http://127.0.0.1:{port}");
    }
    servers().block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        match (protocol, state) {
            (_, State::Hung) => {
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((stream, _)) = listener.accept().await {
                        held.push(stream); // accepted, never read, never answered
                    }
                });
            }
            (Protocol::Grpc, _) => {
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let service = LogsServiceServer::new(GrpcReceiver { state, received })
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                tokio::spawn(
                    tonic::transport::Server::builder().serve_with_incoming(service, incoming),
                );
            }
            (Protocol::Http, _) => {
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(serve_http(stream, state, Arc::clone(&received)));
                    }
                });
            }
        }
        endpoint
    })
}

/// A minimal OTLP/HTTP receiver: `Content-Length` bodies, gzip, keep-alive.
async fn serve_http(
    mut stream: TcpStream,
    state: State,
    received: Arc<Received>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let length: usize = header("content-length:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let gzip = header("content-encoding:").as_deref() == Some("gzip");
        while buf.len() < header_end + length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let mut body: Vec<u8> = buf.drain(..header_end + length).skip(header_end).collect();
        if gzip {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
            body = plain;
        }
        let seen = received.requests.fetch_add(1, Ordering::SeqCst);
        if state == State::Slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if state == State::Flaky && seen < 2 {
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 4\r\n\r\nbusy")
                .await?;
            continue;
        }
        let request = ExportLogsServiceRequest::decode(body.as_slice())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        received.count(&request);
        let response = ExportLogsServiceResponse::default().encode_to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            response.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&response).await?;
    }
}

fn tracker(endpoint: &str, protocol: Protocol, compression: Compression) -> Tracker {
    Tracker::builder("fault-matrix")
        .env_vars::<&str, &str>([])
        .endpoint(endpoint)
        .protocol(protocol)
        .compression(compression)
        .user_hash_key(Some(b"matrix".to_vec()))
        .batch_delay(Duration::from_millis(20))
        .batch_size(100)
        .export_timeout(Duration::from_millis(1500))
        .max_retry_backoff(Duration::from_millis(200))
        .shutdown_timeout(SHUTDOWN)
        .build()
        .expect("builds in every state")
}

/// Tracks `EVENTS` events; returns the 90th percentile of one call's time (the
/// maximum on a shared machine measures the scheduler, not the SDK).
fn track_all(tracker: &Tracker) -> Duration {
    let mut took = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let user = format!("user-{}", i % 17);
        let started = Instant::now();
        tracker.track(
            "expense_logged",
            Some(&user),
            &[("amount", (i as f64).into()), ("seq", (i as i64).into())],
        );
        took.push(started.elapsed());
    }
    took.sort();
    took[EVENTS * 9 / 10]
}

/// One cell of the matrix: track, shut down, check.
fn run_case(state: State, runtime: RuntimeKind, protocol: Protocol, compression: Compression) {
    let case = format!("{state:?} × {runtime:?} × {protocol} {compression:?}");
    let received = Arc::new(Received::default());
    let endpoint = start(protocol, state, Arc::clone(&received));
    let work = move || {
        let tracker = tracker(&endpoint, protocol, compression);
        let p90 = track_all(&tracker);
        let started = Instant::now();
        let result = tracker.shutdown();
        (p90, started.elapsed(), result)
    };
    let (p90, shutdown_took, result) = match runtime {
        RuntimeKind::None => work(),
        RuntimeKind::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move { work() }),
        RuntimeKind::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move { tokio::spawn(async move { work() }).await.unwrap() }),
    };
    // Generous bounds: a debug build on a shared 2-core machine. The benchmark
    // (examples/sdk_bench.rs) measures the real figures.
    assert!(p90 < Duration::from_millis(5), "{case}: track p90 {p90:?}");
    assert!(
        shutdown_took < SHUTDOWN + Duration::from_millis(1500),
        "{case}: shutdown took {shutdown_took:?}"
    );
    let report = match &result {
        Ok(report) => report.clone(),
        Err(error) => error.report().cloned().expect("a delivery error"),
    };
    assert_eq!(report.tracked, EVENTS as u64, "{case}");
    assert_eq!(report.pending, 0, "{case}: {report}");
    assert_eq!(
        report.delivered + report.failed + report.dropped + report.invalid,
        report.tracked,
        "{case}: {report}"
    );
    let got = received.records.load(Ordering::SeqCst) as u64;
    match state {
        State::Up | State::Slow | State::Flaky => {
            assert!(result.is_ok(), "{case}: {report}");
            assert_eq!(
                got, EVENTS as u64,
                "{case}: the receiver got every event once"
            );
        }
        State::Hung | State::Down => {
            assert!(result.is_err(), "{case}");
            assert_eq!(report.failed, EVENTS as u64, "{case}: {report}");
            assert!(report.last_error.is_some(), "{case}");
            assert_eq!(got, 0, "{case}");
        }
    }
    if state == State::Flaky {
        assert!(report.retries >= 1, "{case}: {report}");
    }
}

fn run_state(state: State) {
    let mut cases = Vec::new();
    for runtime in [
        RuntimeKind::None,
        RuntimeKind::CurrentThread,
        RuntimeKind::MultiThread,
    ] {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            for compression in [Compression::None, Compression::Gzip] {
                cases.push(std::thread::spawn(move || {
                    run_case(state, runtime, protocol, compression)
                }));
            }
        }
    }
    let panics = cases
        .into_iter()
        .filter_map(|case| case.join().err())
        .count();
    assert_eq!(panics, 0, "{state:?}: {panics} cases failed (see above)");
}

#[test]
fn collector_up() {
    run_state(State::Up);
}

#[test]
fn collector_slow() {
    run_state(State::Slow);
}

#[test]
fn collector_flaky_retry_after_is_honoured() {
    let started = Instant::now();
    run_state(State::Flaky);
    // Two refusals asking for 1 s each: nothing was delivered before they passed.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn collector_hung() {
    run_state(State::Hung);
}

#[test]
fn collector_down() {
    run_state(State::Down);
}

/// Dropping a tracker on a runtime's thread never blocks it, even with events
/// stuck on a hung collector.
#[test]
fn drop_inside_a_runtime_does_not_block() {
    let endpoint = start(Protocol::Grpc, State::Hung, Arc::default());
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        runtime.block_on(async {
            let tracker = tracker(&endpoint, Protocol::Grpc, Compression::None);
            track_all(&tracker);
            let started = Instant::now();
            drop(tracker);
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "{:?}",
                started.elapsed()
            );
        });
    }
}

/// A collector that comes back: the events tracked while it was down arrive,
/// none twice, and a loss reported once does not fail every later flush.
#[test]
fn events_survive_an_outage_and_flush_reports_each_loss_once() {
    let received = Arc::new(Received::default());
    // Reserve a port, keep it closed for a while, then serve on it.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = format!("http://{addr}");
    let tracker = Tracker::builder("outage")
        .env_vars::<&str, &str>([])
        .endpoint(&endpoint)
        .protocol(Protocol::Http)
        .batch_delay(Duration::from_millis(20))
        .max_retry_backoff(Duration::from_millis(300))
        .queue_capacity(EVENTS)
        .build()
        .unwrap();
    track_all(&tracker);
    // Over the event bound while the collector is down: dropped, counted.
    tracker.track("one_too_many", None, &[]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(tracker.report().retries >= 1);
    let served = Arc::clone(&received);
    servers().block_on(async move {
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_http(stream, State::Up, Arc::clone(&served)));
            }
        });
    });
    let first = tracker.flush().unwrap_err().report().cloned().unwrap();
    assert_eq!(
        (first.delivered, first.dropped),
        (EVENTS as u64, 1),
        "{first}"
    );
    assert_eq!(received.records.load(Ordering::SeqCst), EVENTS);
    tracker.track("later", None, &[]);
    let second = tracker.flush().expect("the old loss is not reported again");
    assert_eq!(second.delivered, EVENTS as u64 + 1);
}
