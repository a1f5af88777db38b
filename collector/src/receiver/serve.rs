//! Serving the two receivers with timeouts, so a stalled sender cannot hold a
//! connection (and its buffers) forever.
//!
//! * Every connection is wrapped in [`IdleTimeout`]: when nothing arrives from the
//!   sender for `--idle-timeout` while the server waits to read and no request of
//!   the connection is being answered ([`Busy`]), the connection is closed. That ends
//!   half an HTTP/2 preface, unfinished headers that stop coming, and idle keep-alive
//!   connections, but never a request that takes long to answer. Only bytes received
//!   count: the server's own HTTP/2 pings do not keep a silent peer alive.
//! * OTLP/HTTP: hyper's `header_read_timeout` (`--header-read-timeout`) ends headers
//!   sent slowly byte by byte; the handler reads the body under
//!   `--request-read-timeout` (408 when it does not arrive in time).
//! * OTLP/gRPC: tonic's per-call timeout (`--request-read-timeout`) covers reading the
//!   message and answering; HTTP/2 keepalive pings close connections to dead peers.
//!
//! * Open connections over both receivers are bounded ([`Connections`],
//!   `--max-connections`): one beyond the bound is closed as soon as it is accepted
//!   and counted as backpressure, so a flood of idle connections cannot exhaust
//!   memory or file descriptors; exporters retry a refused connection with backoff.
//!
//! * TLS (`--tls-cert`, [`ServerTls`]): the handshake runs in the connection's own
//!   task after it was given its slot, bounded by `--header-read-timeout`; then the
//!   decrypted stream is served exactly as a plain one, under the same timeouts.
//!
//! axum's own `serve` sets no timer (so no header timeout) and takes no IO wrapper
//! with connect info for tonic; this loop is the small part of it we need, with a
//! graceful shutdown that lets requests in flight finish.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use growth_schema::service::tls::{ServerTls, TlsStream};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt as _;

use super::grpc::LogsServer;
use crate::telemetry::{Backpressure, Telemetry};

/// How long the receivers wait for a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// HTTP/1 request headers.
    pub header_read: Duration,
    /// A request body (and, over gRPC, the whole call).
    pub request_read: Duration,
    /// No bytes received on a connection.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            request_read: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

/// The bound on open connections, shared by both receivers.
#[derive(Debug, Clone)]
pub struct Connections {
    open: Arc<Semaphore>,
    telemetry: Arc<Telemetry>,
}

impl Connections {
    /// At most `max` connections open at once.
    pub fn new(max: usize, telemetry: Arc<Telemetry>) -> Self {
        Self {
            open: Arc::new(Semaphore::new(max.max(1))),
            telemetry,
        }
    }

    /// A slot for a connection just accepted, held until it closes; `None` (and
    /// counted) when every slot is taken.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.open.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.telemetry.backpressured(Backpressure::Connections, 0);
            tracing::debug!("connection refused: --max-connections reached");
        }
        permit
    }
}

/// Serves OTLP/HTTP on `listener` (over TLS with `tls`) until `stop` completes,
/// then lets requests in flight finish.
pub async fn http(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    connections: Connections,
    tls: Option<ServerTls>,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let (closing, close) = watch::channel(false);
    let mut open = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Over the bound the stream is dropped here: closed at once.
                    if let Some(permit) = connections.admit() {
                        let _ = stream.set_nodelay(true);
                        let (router, close) = (router.clone(), close.clone());
                        match tls.clone() {
                            None => open.spawn(http_connection(stream, permit, router, timeouts, close)),
                            Some(tls) => open.spawn(async move {
                                match tls.accept(stream, timeouts.header_read).await {
                                    Ok(stream) => http_connection(stream, permit, router, timeouts, close).await,
                                    Err(e) => tracing::debug!(error = %e, "OTLP/HTTP TLS handshake failed"),
                                }
                            }),
                        };
                    }
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "OTLP/HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    closing.send_replace(true);
    while open.join_next().await.is_some() {}
    Ok(())
}

async fn http_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    permit: OwnedSemaphorePermit,
    router: Router,
    timeouts: Timeouts,
    mut close: watch::Receiver<bool>,
) {
    let busy = Busy::default();
    let io = TokioIo::new(IdleTimeout::new(stream, timeouts.idle, busy.clone()).holding(permit));
    let service = hyper::service::service_fn(move |request| {
        let answering = busy.enter();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(answering);
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "OTLP/HTTP connection ended");
            }
        }
        () = closing(&mut close) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

async fn closing(close: &mut watch::Receiver<bool>) {
    let _ = close.wait_for(|closing| *closing).await;
}

/// Serves OTLP/gRPC on `listener` (over TLS with `tls`) until `stop` completes.
pub async fn grpc(
    listener: TcpListener,
    service: LogsServer,
    timeouts: Timeouts,
    connections: Connections,
    tls: Option<ServerTls>,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let idle = timeouts.idle;
    if let Some(tls) = tls {
        let (incoming, accepting) = tls_incoming(listener, tls, timeouts, connections);
        let served = serve_grpc(ReceiverStream::new(incoming), service, timeouts, stop).await;
        accepting.abort();
        return served;
    }
    let incoming = TcpListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => {
            // Over the bound the stream is dropped here: closed at once.
            let permit = connections.admit()?;
            let _ = stream.set_nodelay(true);
            Some(Ok(
                IdleTimeout::new(stream, idle, Busy::default()).holding(permit)
            ))
        }
        Err(e) => Some(Err(e)),
    });
    serve_grpc(incoming, service, timeouts, stop).await
}

/// A gRPC connection over TLS.
type TlsConnection = IdleTimeout<TlsStream<TcpStream>>;

/// Accepts on `listener` and hands out connections whose TLS handshake succeeded;
/// each handshake runs in a task of its own (holding its connection slot), so a
/// slow one delays no other connection, and is given `--header-read-timeout`.
fn tls_incoming(
    listener: TcpListener,
    tls: ServerTls,
    timeouts: Timeouts,
    connections: Connections,
) -> (
    tokio::sync::mpsc::Receiver<io::Result<TlsConnection>>,
    tokio::task::JoinHandle<()>,
) {
    let (done, incoming) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "OTLP/gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over the bound the stream is dropped here: closed at once.
            let Some(permit) = connections.admit() else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tls, done) = (tls.clone(), done.clone());
            tokio::spawn(async move {
                match tls.accept(stream, timeouts.header_read).await {
                    Ok(stream) => {
                        let connection = IdleTimeout::new(stream, timeouts.idle, Busy::default())
                            .holding(permit);
                        let _ = done.send(Ok(connection)).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "OTLP/gRPC TLS handshake failed"),
                }
            });
        }
    });
    (incoming, accepting)
}

async fn serve_grpc<S, IO>(
    incoming: S,
    service: LogsServer,
    timeouts: Timeouts,
    stop: impl Future<Output = ()>,
) -> Result<(), String>
where
    S: tokio_stream::Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let idle = timeouts.idle;
    tonic::transport::Server::builder()
        .timeout(timeouts.request_read)
        .http2_keepalive_interval(Some(idle))
        .http2_keepalive_timeout(Some(idle.min(Duration::from_secs(20))))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(|e| e.to_string())
}

/// Requests of one connection being answered; shared by the connection's IO (which
/// does not time out meanwhile) and its service (which enters it per request).
#[derive(Debug, Clone, Default)]
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// Marks a request as being answered until the guard is dropped.
    pub fn enter(&self) -> Answering {
        self.0.fetch_add(1, Ordering::SeqCst);
        Answering(self.0.clone())
    }

    fn is_busy(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// See [`Busy::enter`].
#[derive(Debug)]
pub struct Answering(Arc<AtomicUsize>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the gRPC service finds in a request's extensions: the TCP details tonic
/// expects, and the connection's [`Busy`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Addresses, as tonic's own `TcpConnectInfo`.
    pub tcp: TcpConnectInfo,
    /// Entered while a request of the connection is answered.
    pub busy: Busy,
}

/// A connection closed with `TimedOut` when the peer sends nothing for `idle`
/// while the server is waiting to read and answering none of its requests.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    busy: Busy,
    was_busy: bool,
    /// The connection's slot under `--max-connections`, freed when it closes.
    permit: Option<OwnedSemaphorePermit>,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: S, idle: Duration, busy: Busy) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            busy,
            was_busy: false,
            permit: None,
        }
    }

    /// Keeps `permit` for as long as the connection lives.
    pub fn holding(mut self, permit: OwnedSemaphorePermit) -> Self {
        self.permit = Some(permit);
        self
    }

    fn restart(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.restart();
                }
                Poll::Ready(result)
            }
            // Answering takes as long as it takes (the request timeout bounds it).
            Poll::Pending if self.busy.is_busy() => {
                self.was_busy = true;
                Poll::Pending
            }
            Poll::Pending => {
                if std::mem::take(&mut self.was_busy) {
                    self.restart();
                }
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for longer than --idle-timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for IdleTimeout<TcpStream> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.inner.connect_info(),
            busy: self.busy.clone(),
        }
    }
}

impl Connected for IdleTimeout<TlsStream<TcpStream>> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.inner.get_ref().0.connect_info(),
            busy: self.busy.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_silent_peer_is_cut_and_a_talking_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let busy = Busy::default();
            let mut conn = IdleTimeout::new(stream, Duration::from_millis(300), busy.clone());
            // Answering a request: no timeout however long it takes.
            let answering = busy.enter();
            let mut first = [0_u8; 1];
            let _ = conn.read(&mut first).await;
            let quiet =
                tokio::time::timeout(Duration::from_millis(600), conn.read(&mut first)).await;
            assert!(quiet.is_err(), "timed out while busy: {quiet:?}");
            drop(answering);
            let mut received = Vec::new();
            let mut buf = [0_u8; 16];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => return (received, None),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) => return (received, Some(e.kind())),
                }
            }
        });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"x").await.expect("write");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let started = std::time::Instant::now();
        // Talking every 100 ms keeps it open past the 300 ms idle limit.
        for byte in b"PRI *" {
            client.write_all(&[*byte]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (received, error) = server.await.expect("join");
        assert_eq!(received, b"PRI *");
        assert_eq!(error, Some(io::ErrorKind::TimedOut));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(700) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_are_closed_and_counted() {
        let telemetry = Arc::new(Telemetry::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http(
            listener,
            Router::new().route("/", axum::routing::get(|| async { "ok" })),
            Timeouts::default(),
            Connections::new(2, telemetry.clone()),
            None,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            client.write_all(request).await.expect("write");
            let mut buf = [0_u8; 256];
            let n = client.read(&mut buf).await.expect("read");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
            kept.push(client);
        }
        // The third is closed without an answer while two stay open.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third.write_all(request).await;
        let mut buf = [0_u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        let metrics = telemetry.render();
        assert!(
            metrics.contains(r#"backpressure_total{reason="connections"} 1"#),
            "{metrics}"
        );
        // A slot frees when a connection closes.
        drop(kept.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fourth = TcpStream::connect(addr).await.expect("connect");
        fourth.write_all(request).await.expect("write");
        let n = fourth.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        let _ = stop_tx.send(());
        drop((kept, fourth));
        server.await.expect("join").expect("serve");
    }
}
