//! HTTPS to the real collector: a CA and a server certificate made here (rcgen),
//! and a TLS-terminating proxy (rustls) in front of the collector's OTLP ports,
//! as a load balancer or an ingress would stand in front of it in production.
//!
//! The Rust SDK (CA from the builder on gRPC, from `OTEL_EXPORTER_OTLP_CERTIFICATE`
//! on HTTP) and the Python package (`OTEL_EXPORTER_OTLP_CERTIFICATE`) deliver over
//! both protocols, gzip on and off; the proxy counts the decrypted bytes it
//! forwards, so gzip is seen to shrink the requests. With a CA that did not sign
//! the server's certificate nothing is sent, and the loss is reported: every
//! event counted as failed, no panic, no exception.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use growth_e2e::{Collector, clickhouse, python, repo_root, unique_database};
use growth_sdk::{Compression, Protocol, SdkError, Tracker};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const KEY: &str = "tls-test-key";
const EVENTS: u64 = 200;

/// A CA and a certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

fn make_pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    // What strict verifiers (Python 3.13's default X509_STRICT) require of a CA.
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
    server_params.use_authority_key_identifier_extension = true;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    Pki {
        ca_pem: ca.pem(),
        server_chain: vec![server.der().clone(), ca.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    }
}

/// Bytes the proxy passed from clients to the collector, after decryption.
#[derive(Default)]
struct Forwarded(AtomicU64);

impl Forwarded {
    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::SeqCst)
    }
}

/// Terminates TLS on a free port and forwards the plain stream to `backend`.
/// Offers ALPN h2 (gRPC clients insist on it) and http/1.1.
async fn tls_proxy(pki: &Pki, backend: &str, forwarded: Arc<Forwarded>) -> String {
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(
        pki.server_chain.clone(),
        PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
    )
    .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let backend: SocketAddr = backend
        .trim_start_matches("http://")
        .parse()
        .expect("collector address");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let forwarded = Arc::clone(&forwarded);
            tokio::spawn(async move {
                // A client that distrusts the certificate ends here: nothing is forwarded.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(upstream) = TcpStream::connect(backend).await else {
                    return;
                };
                let (client_read, client_write) = tokio::io::split(tls);
                let (upstream_read, upstream_write) = upstream.into_split();
                let _ = tokio::join!(
                    pump(client_read, upstream_write, Some(forwarded)),
                    pump(upstream_read, client_write, None),
                );
            });
        }
    });
    format!("https://{addr}")
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counted: Option<Arc<Forwarded>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        if let Some(counted) = &counted {
            counted.0.fetch_add(n as u64, Ordering::SeqCst);
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// A temp directory removed when dropped, also when an assertion fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        TempDir(std::env::temp_dir().join(format!("growth-e2e-tls-{name}")))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

/// Tracks `EVENTS` expense events (a long, repetitive category, so gzip has
/// something to shrink) and shuts down; blocking, for `spawn_blocking`.
fn send_rust(tracker: Tracker) -> Result<growth_sdk::DeliveryReport, SdkError> {
    for seq in 0..EVENTS {
        tracker.track(
            "expense_logged",
            Some(&format!("user-{}", seq % 20)),
            &[
                ("seq", (seq as i64).into()),
                ("amount", 12.5.into()),
                (
                    "category",
                    "groceries and household supplies".repeat(4).into(),
                ),
            ],
        );
    }
    tracker.shutdown()
}

fn rust_tracker(app: &str, protocol: Protocol, endpoint: &str) -> growth_sdk::TrackerBuilder {
    Tracker::builder(app)
        .env_vars::<&str, &str>([])
        .endpoint(endpoint)
        .protocol(protocol)
        .user_hash_key(Some(KEY.as_bytes().to_vec()))
        .batch_delay(Duration::from_millis(20))
}

async fn stored(database: &str, app: &str) -> u64 {
    clickhouse(database)
        .query("SELECT uniqExact(properties['seq']) FROM events WHERE app = ?")
        .bind(app)
        .fetch_one()
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_sdk_delivers_over_https_with_a_private_ca() {
    let database = unique_database("sdk_tls");
    let collector = Collector::start(&database, Some(KEY)).await;
    let pki = make_pki("growth");
    let dir = TempDir::new(&database);
    let ca_file = write_pem(&dir.0, "ca.pem", &pki.ca_pem);
    let forwarded = Arc::new(Forwarded::default());
    let grpc = tls_proxy(&pki, &collector.grpc_endpoint, Arc::clone(&forwarded)).await;
    let http = tls_proxy(&pki, &collector.http_endpoint, Arc::clone(&forwarded)).await;

    let mut apps = Vec::new();
    for (protocol, endpoint) in [(Protocol::Grpc, &grpc), (Protocol::Http, &http)] {
        let mut sent_bytes = Vec::new();
        for compression in [Compression::None, Compression::Gzip] {
            let app = format!("tls-{protocol}-{compression:?}").to_lowercase();
            // gRPC takes the CA from the builder, HTTP from the standard variable.
            let builder = match protocol {
                Protocol::Grpc => rust_tracker(&app, protocol, endpoint)
                    .ca_certificate_pem(pki.ca_pem.clone())
                    .compression(compression),
                Protocol::Http => Tracker::builder(&app)
                    .env_vars([
                        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                        (
                            "OTEL_EXPORTER_OTLP_COMPRESSION",
                            match compression {
                                Compression::Gzip => "gzip",
                                Compression::None => "none",
                            },
                        ),
                        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file.to_string_lossy()),
                        ("GROWTH_USER_HASH_KEY", KEY),
                    ])
                    .batch_delay(Duration::from_millis(20)),
            };
            let tracker = builder.build().expect("SDK builds");
            forwarded.take();
            let report = tokio::task::spawn_blocking(move || send_rust(tracker))
                .await
                .expect("sender")
                .unwrap_or_else(|error| panic!("{app}: {error}"));
            assert_eq!(
                (report.delivered, report.failed, report.dropped),
                (EVENTS, 0, 0),
                "{app}"
            );
            sent_bytes.push(forwarded.take());
            apps.push(app);
        }
        let (plain, gzip) = (sent_bytes[0], sent_bytes[1]);
        assert!(
            plain > 0 && gzip * 2 < plain,
            "{protocol}: gzip should shrink what crosses the proxy: {gzip} vs {plain} bytes"
        );
    }

    collector.settled().await;
    for app in &apps {
        assert_eq!(stored(&database, app).await, EVENTS, "{app}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_the_sdk_does_not_trust_is_an_honest_failure() {
    let database = unique_database("sdk_tls_wrong_ca");
    let collector = Collector::start(&database, Some(KEY)).await;
    let pki = make_pki("growth");
    let stranger = make_pki("stranger");
    let forwarded = Arc::new(Forwarded::default());
    let grpc = tls_proxy(&pki, &collector.grpc_endpoint, Arc::clone(&forwarded)).await;
    let http = tls_proxy(&pki, &collector.http_endpoint, Arc::clone(&forwarded)).await;

    for (protocol, endpoint) in [(Protocol::Grpc, &grpc), (Protocol::Http, &http)] {
        let app = format!("tls-wrong-ca-{protocol}");
        let tracker = rust_tracker(&app, protocol, endpoint)
            .ca_certificate_pem(stranger.ca_pem.clone())
            .compression(Compression::Gzip)
            .shutdown_timeout(Duration::from_secs(1))
            .build()
            .expect("SDK builds");
        let outcome = tokio::task::spawn_blocking(move || send_rust(tracker))
            .await
            .expect("sender: no panic");
        let report = match outcome {
            Err(SdkError::Undelivered(report)) => report,
            other => panic!("{app}: expected an undelivered report, got {other:?}"),
        };
        assert_eq!(
            (
                report.tracked,
                report.delivered,
                report.failed,
                report.pending
            ),
            (EVENTS, 0, EVENTS, 0),
            "{app}: {report:?}"
        );
        assert!(report.retries >= 1, "{app}: {report:?}");
        let error = report.last_error.unwrap_or_default().to_lowercase();
        assert!(
            error.contains("certificate") || error.contains("issuer"),
            "{app}: the error says why: {error}"
        );
    }
    assert_eq!(forwarded.take(), 0, "nothing got past the handshake");
    collector.settled().await;
    for protocol in ["grpc", "http"] {
        assert_eq!(
            stored(&database, &format!("tls-wrong-ca-{protocol}")).await,
            0
        );
    }
}

/// The Python package's sender with `envs`; returns (exit success, JSON report).
fn send_python(app: &str, envs: &[(&str, String)]) -> (bool, serde_json::Value) {
    let root = repo_root();
    let mut command = Command::new(python());
    command
        .arg(root.join("sdk/python/examples/send_events.py"))
        .args(["--app", app, "--count", "100", "--rate", "0"])
        .args(["--shutdown-timeout", "2"])
        .env("PYTHONPATH", root.join("sdk/python"))
        .env("GROWTH_USER_HASH_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let output = command.output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{app}: no JSON report (an exception?):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_package_delivers_over_https_with_a_private_ca() {
    let database = unique_database("python_tls");
    let collector = Collector::start(&database, Some(KEY)).await;
    let pki = make_pki("growth");
    let stranger = make_pki("stranger");
    let dir = TempDir::new(&database);
    let ca_file = write_pem(&dir.0, "ca.pem", &pki.ca_pem);
    let stranger_file = write_pem(&dir.0, "stranger.pem", &stranger.ca_pem);
    let forwarded = Arc::new(Forwarded::default());
    let grpc = tls_proxy(&pki, &collector.grpc_endpoint, Arc::clone(&forwarded)).await;
    let http = tls_proxy(&pki, &collector.http_endpoint, Arc::clone(&forwarded)).await;

    for (protocol, endpoint) in [("grpc", &grpc), ("http/protobuf", &http)] {
        for (ca, trusted) in [(&ca_file, true), (&stranger_file, false)] {
            let app = format!(
                "py-tls-{}-{}",
                &protocol[..4],
                if trusted { "ok" } else { "wrong-ca" }
            );
            let envs = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()),
                (
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                    ca.to_string_lossy().into_owned(),
                ),
            ];
            let sent_app = app.clone();
            let (success, report) =
                tokio::task::spawn_blocking(move || send_python(&sent_app, &envs))
                    .await
                    .expect("sender");
            let counts = (
                report["tracked"].as_u64(),
                report["delivered"].as_u64(),
                report["failed"].as_u64(),
            );
            if trusted {
                assert!(success, "{app}: {report}");
                assert_eq!(counts, (Some(100), Some(100), Some(0)), "{app}: {report}");
            } else {
                assert!(!success, "{app}: a loss is an error exit: {report}");
                assert_eq!(counts, (Some(100), Some(0), Some(100)), "{app}: {report}");
            }
        }
    }
    collector.settled().await;
    for (app, expected) in [
        ("py-tls-grpc-ok", 100),
        ("py-tls-http-ok", 100),
        ("py-tls-grpc-wrong-ca", 0),
        ("py-tls-http-wrong-ca", 0),
    ] {
        assert_eq!(stored(&database, app).await, expected, "{app}");
    }
}
