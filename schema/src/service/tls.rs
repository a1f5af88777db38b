//! TLS for the services' listeners: a certificate chain and key read from PEM
//! files (rustls, `ring` provider), optionally client certificates required and
//! verified against a CA file (mTLS), re-read on SIGHUP.
//!
//! * [`TlsArgs`] — `--tls-cert` / `--tls-key` (with `GROWTH_TLS_CERT` /
//!   `GROWTH_TLS_KEY`), shared by both binaries; without them a service speaks
//!   plain text, as before.
//! * [`ServerTls`] — the loaded configuration of one listener. [`ServerTls::reload`]
//!   reads the files again: connections accepted afterwards get the new certificate,
//!   open ones keep theirs; files that do not load leave the old configuration in
//!   place (the caller logs why). [`reload_on_hangup`] does that on every SIGHUP.
//! * [`ServerTls::accept`] — the handshake, bounded by a timeout: a peer that
//!   connects and then sends nothing (or trickles a ClientHello) cannot hold the
//!   connection, and whatever slot it was given, for longer.
//! * [`TlsListener`] — an `axum::serve` listener whose handshakes run concurrently,
//!   each in a task of its own, so one slow peer never delays the next connection.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

pub use tokio_rustls::server::TlsStream;

/// How long a handshake may take on listeners without a timeout of their own (the
/// collector's admin port, the aggregator).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN for a listener that speaks HTTP/1.1 only.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN for a gRPC listener (HTTP/2 only).
pub const ALPN_H2: &[&[u8]] = &[b"h2"];

/// The certificate flags of a service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM: the server's certificate first,
    /// then any intermediates). Re-read on SIGHUP. Without it the ports speak plain text.
    #[arg(
        long,
        value_name = "FILE",
        env = "GROWTH_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        env = "GROWTH_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when TLS was asked for.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            }),
            _ => None,
        }
    }
}

/// The PEM files a listener's TLS is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA (or these CAs) signed.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The same files without client certificates (for a port that must not ask
    /// for them, such as the health checks of the collector's admin port).
    pub fn without_client_auth(&self) -> Self {
        Self {
            client_ca: None,
            ..self.clone()
        }
    }
}

/// Why TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM section.
    #[error("{what} {path}: {reason}")]
    File {
        /// "certificate file", "key file", "client CA file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration from {cert} and {key}: {reason}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// The TLS configuration of one listener, swapped whole on reload.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `files`; `alpn` lists the protocols offered (see [`ALPN_HTTP1`], [`ALPN_H2`]).
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(&files, &alpn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                alpn,
                current: RwLock::new(Arc::new(config)),
            }),
        })
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.inner.files.client_ca.is_some()
    }

    /// Reads the files again; on success, connections accepted from now on get the
    /// new configuration. On failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.inner.files, &self.inner.alpn)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// The server side of the handshake on `stream`, given at most `timeout`.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> io::Result<TlsStream<TcpStream>> {
        match tokio::time::timeout(timeout, self.acceptor().accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake took too long",
            )),
        }
    }

    /// An `axum::serve` listener on `listener` that hands out connections whose
    /// handshake completed within `timeout`.
    pub fn listener(&self, listener: TcpListener, timeout: Duration) -> TlsListener {
        TlsListener::new(listener, self.clone(), timeout)
    }
}

/// Reloads every configuration in `tls` on each SIGHUP; a failure is logged and the
/// old certificate kept. `name` says which service's ports these are.
pub fn reload_on_hangup(name: &'static str, tls: Vec<ServerTls>) {
    if tls.is_empty() {
        return;
    }
    super::on_hangup("TLS certificates will not be reloaded", move || {
        for config in &tls {
            let files = config.files();
            match config.reload() {
                Ok(()) => tracing::info!(
                    service = name,
                    cert = %files.cert.display(),
                    "TLS certificate reloaded"
                ),
                Err(e) => tracing::error!(
                    service = name,
                    error = %e,
                    "TLS certificate not reloaded; the old one stays"
                ),
            }
        }
    });
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn server_config(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let chain = read_certs(&files.cert, "certificate file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        what: "key file",
        path: files.key.clone(),
        reason: pem_reason(e, "no PRIVATE KEY section"),
    })?;
    let config_error = |reason: String| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "client CA file")? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "client CA file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| TlsError::File {
                    what: "client CA file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(pem_reason(e, "")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(pem_reason(e, "")))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn pem_reason(e: tokio_rustls::rustls::pki_types::pem::Error, none: &str) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound if !none.is_empty() => none.to_owned(),
        Error::Io(e) => e.to_string(),
        other => format!("not PEM: {other:?}"),
    }
}

/// Accepts TCP connections, runs each handshake in a task of its own (bounded by
/// the timeout) and hands out the connections whose handshake succeeded. The
/// accepting task stops when the listener is dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: io::Result<SocketAddr>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: ServerTls, timeout: Duration) -> Self {
        let local_addr = listener.local_addr();
        let (done, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: wait instead of spinning.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (tls, done) = (tls.clone(), done.clone());
                tokio::spawn(async move {
                    match tls.accept(stream, timeout).await {
                        Ok(stream) => {
                            let _ = done.send((stream, peer)).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    }
                });
            }
        });
        Self {
            ready,
            local_addr,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task never ends on its own.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.local_addr {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}
