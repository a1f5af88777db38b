//! The one load generator every system gets: C concurrent OTLP/gRPC senders, each on
//! its own connection with one request in flight (as an OTLP exporter sends), taking
//! request numbers from a shared counter until the count or the deadline is reached.
//! A retryable answer is retried with backoff, with the same records (as an exporter
//! would), so a system that stores a request and then fails it shows duplicates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use growth_testkit::otlp::RawCodec;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::records::Templates;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// Retries of one request before the run is declared failed.
const MAX_ATTEMPTS: u32 = 50;

/// When the senders stop.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many requests.
    Requests(u64),
    /// No new request once this instant has passed.
    Deadline(Instant),
}

/// What the senders saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The first send.
    pub started: Instant,
    /// Requests answered with success.
    pub acked_requests: u64,
    /// Records the answers reported rejected (`partial_success`).
    pub rejected: u64,
    /// Retried attempts (retryable errors).
    pub retries: u64,
    /// First send to last answer.
    pub elapsed: Duration,
}

/// Progress counters a caller may read while the load runs.
#[derive(Debug, Default)]
pub struct Progress {
    next_request: AtomicU64,
    acked_requests: AtomicU64,
}

impl Progress {
    /// Requests acknowledged so far.
    pub fn acked_requests(&self) -> u64 {
        self.acked_requests.load(Ordering::Relaxed)
    }
}

/// Sends the load to `addr`; fails on the first non-retryable answer.
pub async fn run(
    addr: SocketAddr,
    templates: Arc<Templates>,
    concurrency: usize,
    until: Until,
    progress: Arc<Progress>,
) -> anyhow::Result<LoadReport> {
    let mut channels = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        // One connection per sender, as separate exporters have.
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        channels.push(channel);
    }
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for channel in channels {
        senders.spawn(sender(
            channel,
            Arc::clone(&templates),
            until,
            Arc::clone(&progress),
        ));
    }
    let mut report = LoadReport {
        started,
        acked_requests: 0,
        rejected: 0,
        retries: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = senders.join_next().await {
        let (rejected, retries) = joined.context("a sender panicked")??;
        report.rejected += rejected;
        report.retries += retries;
    }
    report.elapsed = started.elapsed();
    report.acked_requests = progress.acked_requests();
    Ok(report)
}

/// One sender; returns (records rejected, retries).
async fn sender(
    channel: Channel,
    templates: Arc<Templates>,
    until: Until,
    progress: Arc<Progress>,
) -> anyhow::Result<(u64, u64)> {
    let mut grpc = tonic::client::Grpc::new(channel);
    let (mut rejected, mut retries) = (0, 0);
    loop {
        if let Until::Deadline(deadline) = until
            && Instant::now() >= deadline
        {
            break;
        }
        let index = progress.next_request.fetch_add(1, Ordering::Relaxed);
        if let Until::Requests(total) = until
            && index >= total
        {
            break;
        }
        let body = templates.body(index);
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            grpc.ready().await.map_err(|e| anyhow!("channel: {e}"))?;
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
            match grpc
                .unary(tonic::Request::new(body.clone()), path, RawCodec)
                .await
            {
                Ok(response) => break response.into_inner(),
                Err(status) if retryable(&status) && attempt < MAX_ATTEMPTS => {
                    retries += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(status) => {
                    return Err(anyhow!(
                        "request {index} failed after {attempt} attempts: {:?} {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        };
        if let Some(partial) = response.partial_success {
            rejected += partial.rejected_log_records.max(0) as u64;
        }
        progress.acked_requests.fetch_add(1, Ordering::Relaxed);
    }
    Ok((rejected, retries))
}

/// The codes the OTLP specification says a client retries.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::OutOfRange
            | Code::DataLoss
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(7)).min(2_000))
}
