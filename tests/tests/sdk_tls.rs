//! TLS served by the collector and the aggregator themselves (`--tls-cert`,
//! `--tls-key`, `--tls-client-ca`), with a CA and certificates made here (rcgen).
//!
//! * The Rust SDK (gRPC and HTTP, gzip on and off), the Python package and the
//!   official OpenTelemetry Python exporter deliver over TLS with
//!   `OTEL_EXPORTER_OTLP_CERTIFICATE` (or the builder's CA), and over mTLS with a
//!   client certificate (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` / `_CLIENT_KEY`,
//!   or the builder's identity); without one, or trusting another CA, nothing is
//!   delivered and the loss is reported: every event failed, no panic, no exception.
//! * The collector's admin port and the aggregator's `/metrics` answer over https.
//! * SIGHUP: every port serves the new certificate to new connections; a broken
//!   file is logged and the old certificate kept.
//! * A peer that connects and never completes the handshake is cut after
//!   `--header-read-timeout`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use growth_e2e::{
    Exposition, Running, binary, clickhouse, clickhouse_url, eventually, free_port, python,
    repo_root, temp_spool_dir, temp_state_dir, unique_database,
};
use growth_sdk::{Compression, Protocol, SdkError, Tracker};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const KEY: &str = "tls-test-key";

/// Environment variables for a sender.
type Envs = Vec<(&'static str, String)>;
const EVENTS: u64 = 200;

/// A CA that signs server and client certificates, all written as PEM files.
struct Pki {
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A certificate (PEM chain: leaf, CA) and its key, as files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    leaf: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str, dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        // What strict verifiers (Python 3.13's default X509_STRICT) require of a CA.
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        std::fs::create_dir_all(dir).expect("temp dir");
        let pki = Pki {
            name: name.to_owned(),
            ca,
            dir: dir.to_owned(),
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).expect("write CA");
        pki
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for 127.0.0.1 and localhost (`client`: a client one),
    /// named `cn`, written to `<cn>.pem` / `<cn>.key`.
    fn issue(&self, cn: &str, client: bool) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca).expect("certificate");
        let issued = Issued {
            cert: self.dir.join(format!("{cn}.pem")),
            key: self.dir.join(format!("{cn}.key")),
            leaf: cert.der().clone(),
        };
        std::fs::write(&issued.cert, format!("{}{}", cert.pem(), self.ca.pem())).expect("write");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write");
        issued
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

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// An https client that trusts `pki`'s CA.
fn https_client(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).expect("CA"))
        .build()
        .expect("client")
}

/// A collector serving TLS on its three ports.
struct TlsCollector {
    process: Running,
    grpc: String,
    http: String,
    admin: String,
    client: reqwest::Client,
}

impl TlsCollector {
    async fn start(database: &str, pki: &Pki, server: &Issued, extra: &[&str]) -> Self {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let mut cmd = Command::new(binary("growth-collector"));
        cmd.args(["--clickhouse-url", &clickhouse_url()])
            .args(["--clickhouse-database", database])
            .args(["--spool-dir", &s(&temp_spool_dir(database))])
            .args(["--otlp-grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-addr", &format!("127.0.0.1:{http}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--batch-max-delay", "100ms"])
            .args(["--tls-cert", &s(&server.cert), "--tls-key", &s(&server.key)])
            .args(extra)
            .env("GROWTH_USER_HASH_KEY", KEY)
            .env("RUST_LOG", "info");
        let mut process = Running::spawn("growth-collector", cmd);
        let client = https_client(pki);
        let admin = format!("https://127.0.0.1:{admin}");
        wait_ready(&mut process, &client, &format!("{admin}/readyz")).await;
        Self {
            process,
            grpc: format!("https://127.0.0.1:{grpc}"),
            http: format!("https://127.0.0.1:{http}"),
            admin,
            client,
        }
    }

    async fn metrics(&self) -> Exposition {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("admin answers over https")
            .text()
            .await
            .expect("body");
        Exposition::parse(&text)
    }

    /// Everything acknowledged is in ClickHouse.
    async fn settled(&self) {
        eventually("the spool to drain", Duration::from_secs(60), || async {
            let m = self.metrics().await;
            let stored = m.value("growth_collector_events_stored_total");
            let taken = m.value("growth_collector_events_spooled_total");
            (m.value("growth_collector_spool_rows") == 0.0 && stored >= taken).then_some(())
        })
        .await;
    }
}

async fn wait_ready(process: &mut Running, client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(process.is_running(), "exited:\n{}", process.output());
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready at {url}:\n{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tracks `EVENTS` events and shuts down; blocking, for `spawn_blocking`.
fn send_rust(tracker: Tracker) -> Result<growth_sdk::DeliveryReport, SdkError> {
    for seq in 0..EVENTS {
        tracker.track(
            "expense_logged",
            Some(&format!("user-{}", seq % 20)),
            &[("seq", (seq as i64).into()), ("amount", 12.5.into())],
        );
    }
    tracker.shutdown()
}

async fn send_rust_async(tracker: Tracker) -> Result<growth_sdk::DeliveryReport, SdkError> {
    tokio::task::spawn_blocking(move || send_rust(tracker))
        .await
        .expect("sender: no panic")
}

fn rust_tracker(app: &str, protocol: Protocol, endpoint: &str) -> growth_sdk::TrackerBuilder {
    Tracker::builder(app)
        .env_vars::<&str, &str>([])
        .endpoint(endpoint)
        .protocol(protocol)
        .user_hash_key(Some(KEY.as_bytes().to_vec()))
        .batch_delay(Duration::from_millis(20))
}

/// Every event failed, and the error names the cause.
fn assert_undelivered(app: &str, outcome: Result<growth_sdk::DeliveryReport, SdkError>) {
    let report = match outcome {
        Err(SdkError::Undelivered(report)) => report,
        other => panic!("{app}: expected an undelivered report, got {other:?}"),
    };
    assert_eq!(
        (report.tracked, report.delivered, report.failed),
        (EVENTS, 0, EVENTS),
        "{app}: {report:?}"
    );
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
async fn the_rust_sdk_delivers_over_tls_and_mtls() {
    let database = unique_database("sdk_tls");
    let dir = TempDir::new(&database);
    let pki = Pki::new("growth", &dir.0);
    let stranger = Pki::new("stranger", &dir.0);
    let server = pki.issue("collector", false);
    let client = pki.issue("app", true);
    let stranger_client = stranger.issue("stranger-app", true);
    let tls = TlsCollector::start(&database, &pki, &server, &[]).await;
    let mtls = TlsCollector::start(
        &database,
        &pki,
        &server,
        &["--tls-client-ca", &s(&pki.ca_file())],
    )
    .await;
    let read = |p: &Path| std::fs::read(p).expect("read PEM");

    let mut apps = Vec::new();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let (grpc_or_http_tls, grpc_or_http_mtls) = match protocol {
            Protocol::Grpc => (&tls.grpc, &mtls.grpc),
            Protocol::Http => (&tls.http, &mtls.http),
        };
        // TLS: gRPC takes the CA from the builder, HTTP from the standard variable.
        for compression in [Compression::None, Compression::Gzip] {
            let app = format!("tls-{protocol}-{compression:?}").to_lowercase();
            let builder = match protocol {
                Protocol::Grpc => rust_tracker(&app, protocol, grpc_or_http_tls)
                    .ca_certificate_pem(pki.ca_pem())
                    .compression(compression),
                Protocol::Http => Tracker::builder(&app)
                    .env_vars([
                        ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_or_http_tls.as_str()),
                        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                        (
                            "OTEL_EXPORTER_OTLP_COMPRESSION",
                            match compression {
                                Compression::Gzip => "gzip",
                                Compression::None => "none",
                            },
                        ),
                        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &s(&pki.ca_file())),
                        ("GROWTH_USER_HASH_KEY", KEY),
                    ])
                    .batch_delay(Duration::from_millis(20)),
            };
            let report = send_rust_async(builder.build().expect("SDK builds"))
                .await
                .unwrap_or_else(|error| panic!("{app}: {error}"));
            assert_eq!((report.delivered, report.failed), (EVENTS, 0), "{app}");
            apps.push(app);
        }
        // mTLS: the identity from the builder, and from the standard variables.
        let app = format!("mtls-{protocol}-builder");
        let tracker = rust_tracker(&app, protocol, grpc_or_http_mtls)
            .ca_certificate_pem(pki.ca_pem())
            .client_identity_pem(read(&client.cert), read(&client.key))
            .build()
            .expect("SDK builds");
        let report = send_rust_async(tracker).await.expect(&app);
        assert_eq!((report.delivered, report.failed), (EVENTS, 0), "{app}");
        apps.push(app);
        let app = format!("mtls-{protocol}-env");
        let tracker = Tracker::builder(&app)
            .env_vars([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_or_http_mtls.as_str()),
                (
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    if protocol == Protocol::Grpc {
                        "grpc"
                    } else {
                        "http/protobuf"
                    },
                ),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &s(&pki.ca_file())),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &s(&client.cert)),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &s(&client.key)),
                ("GROWTH_USER_HASH_KEY", KEY),
            ])
            .batch_delay(Duration::from_millis(20))
            .build()
            .expect("SDK builds");
        let report = send_rust_async(tracker).await.expect(&app);
        assert_eq!((report.delivered, report.failed), (EVENTS, 0), "{app}");
        apps.push(app);

        // Refused: no client certificate, or one another CA signed.
        for (case, identity) in [("none", None), ("stranger", Some(&stranger_client))] {
            let app = format!("mtls-{protocol}-{case}");
            let mut builder = rust_tracker(&app, protocol, grpc_or_http_mtls)
                .ca_certificate_pem(pki.ca_pem())
                .shutdown_timeout(Duration::from_secs(1));
            if let Some(identity) = identity {
                builder = builder.client_identity_pem(read(&identity.cert), read(&identity.key));
            }
            assert_undelivered(&app, send_rust_async(builder.build().unwrap()).await);
        }
        // Trusting another CA: the SDK refuses the collector.
        let app = format!("tls-{protocol}-wrong-ca");
        let tracker = rust_tracker(&app, protocol, grpc_or_http_tls)
            .ca_certificate_pem(stranger.ca_pem())
            .shutdown_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_undelivered(&app, send_rust_async(tracker).await);
    }

    tls.settled().await;
    mtls.settled().await;
    for app in &apps {
        assert_eq!(stored(&database, app).await, EVENTS, "{app}");
    }
    for protocol in ["grpc", "http"] {
        for refused in ["mtls-{}-none", "mtls-{}-stranger", "tls-{}-wrong-ca"] {
            let app = refused.replace("{}", protocol);
            assert_eq!(stored(&database, &app).await, 0, "{app}");
        }
    }
}

/// The Python package's sender with `envs`; returns (exit success, JSON report).
fn send_python_package(app: &str, envs: &[(&str, String)]) -> (bool, serde_json::Value) {
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

/// The official OpenTelemetry Python exporter (tests/python/otel_send.py) sending
/// 10 growth events; true when its flush succeeded.
fn send_official_python(
    app: &str,
    endpoint: &str,
    protocol: &str,
    envs: &[(&str, String)],
) -> bool {
    let records: Vec<serde_json::Value> = (0..10)
        .map(|seq| {
            serde_json::json!({"attributes": {"event.name": "expense_logged", "user.id": "u", "seq": seq}})
        })
        .collect();
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/python/otel_send.py"))
        .args(["--endpoint", endpoint, "--protocol", protocol])
        .args(["--service-name", app])
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
        // The exporter sets the CA on its requests session, and requests lets these
        // variables override a session's (not a request's) CA: unset, or the
        // exporter never trusts OTEL_EXPORTER_OTLP_CERTIFICATE.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("python starts");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::Value::from(records).to_string().as_bytes())
        .expect("write records");
    child
        .wait_with_output()
        .expect("python ends")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_clients_deliver_over_tls_and_mtls() {
    let database = unique_database("python_tls");
    let dir = TempDir::new(&database);
    let pki = Pki::new("growth", &dir.0);
    let stranger = Pki::new("stranger", &dir.0);
    let server = pki.issue("collector", false);
    let client = pki.issue("app", true);
    let tls = TlsCollector::start(&database, &pki, &server, &[]).await;
    let mtls = TlsCollector::start(
        &database,
        &pki,
        &server,
        &["--tls-client-ca", &s(&pki.ca_file())],
    )
    .await;
    let ca = ("OTEL_EXPORTER_OTLP_CERTIFICATE", s(&pki.ca_file()));
    let identity = [
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", s(&client.cert)),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", s(&client.key)),
    ];

    let mut expected = Vec::new();
    for (protocol, short) in [("grpc", "grpc"), ("http/protobuf", "http")] {
        let endpoint = |c: &TlsCollector| {
            if short == "grpc" {
                c.grpc.clone()
            } else {
                c.http.clone()
            }
        };
        // (case, collector, extra variables, delivered?)
        let cases: Vec<(&str, &TlsCollector, Envs, bool)> = vec![
            ("tls", &tls, vec![ca.clone()], true),
            (
                "wrong-ca",
                &tls,
                vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", s(&stranger.ca_file()))],
                false,
            ),
            (
                "mtls",
                &mtls,
                [vec![ca.clone()], identity.to_vec()].concat(),
                true,
            ),
            ("mtls-no-cert", &mtls, vec![ca.clone()], false),
        ];
        for (case, collector, extra, delivered) in cases {
            // The Python package.
            let app = format!("py-{short}-{case}");
            let mut envs = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint(collector)),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()),
            ];
            envs.extend(extra.iter().cloned());
            let sent_app = app.clone();
            let (success, report) =
                tokio::task::spawn_blocking(move || send_python_package(&sent_app, &envs))
                    .await
                    .expect("sender");
            let counts = (report["delivered"].as_u64(), report["failed"].as_u64());
            if delivered {
                assert!(success, "{app}: {report}");
                assert_eq!(counts, (Some(100), Some(0)), "{app}: {report}");
            } else {
                assert!(!success, "{app}: a loss is an error exit: {report}");
                assert_eq!(counts, (Some(0), Some(100)), "{app}: {report}");
            }
            expected.push((app, if delivered { 100 } else { 0 }));

            // The official OpenTelemetry exporter.
            let app = format!("otel-{short}-{case}");
            let (sent_app, endpoint, extra) = (app.clone(), endpoint(collector), extra.clone());
            let flushed = tokio::task::spawn_blocking(move || {
                send_official_python(&sent_app, &endpoint, short, &extra)
            })
            .await
            .expect("sender");
            // Its flush reports completion, not delivery: what was stored is checked below.
            if delivered {
                assert!(flushed, "{app}: flushed");
            }
            expected.push((app, if delivered { 10 } else { 0 }));
        }
    }
    tls.settled().await;
    mtls.settled().await;
    for (app, count) in expected {
        assert_eq!(stored(&database, &app).await, count, "{app}");
    }
}

/// The leaf certificate served at `addr` to a client that trusts `pki`.
async fn served_leaf(pki: &Pki, addr: &str) -> CertificateDer<'static> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).expect("root");
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = addr.trim_start_matches("https://");
    let tcp = TcpStream::connect(host).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].clone()
}

/// SIGHUP swaps the certificate on all three ports of the collector and on the
/// aggregator's; a broken file keeps the old one.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_and_a_broken_one_is_kept_out() {
    let database = unique_database("tls_reload");
    let dir = TempDir::new(&database);
    let pki = Pki::new("growth", &dir.0);
    let first = pki.issue("first", false);
    // The files the services read; rewritten in place below.
    let (cert, key) = (dir.0.join("served.pem"), dir.0.join("served.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let served = Issued {
        cert: cert.clone(),
        key: key.clone(),
        leaf: first.leaf.clone(),
    };
    let collector = TlsCollector::start(&database, &pki, &served, &[]).await;

    let port = free_port();
    let mut cmd = Command::new(binary("growth-aggregator"));
    cmd.args(["--clickhouse-url", &clickhouse_url()])
        .args(["--clickhouse-database", &database])
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .args(["--refresh-interval", "1s"])
        .args(["--state-dir", &s(&temp_state_dir(&database))])
        .args(["--tls-cert", &s(&cert), "--tls-key", &s(&key)])
        .env("RUST_LOG", "info");
    let mut aggregator = Running::spawn("growth-aggregator", cmd);
    let aggregator_url = format!("https://127.0.0.1:{port}");
    wait_ready(
        &mut aggregator,
        &collector.client,
        &format!("{aggregator_url}/healthz"),
    )
    .await;
    // /metrics over https.
    let metrics = collector
        .client
        .get(format!("{aggregator_url}/metrics"))
        .send()
        .await
        .expect("aggregator answers over https");
    assert!(metrics.status().is_success());
    assert!(metrics.text().await.unwrap().contains("growth_"));
    // Plain HTTP is not spoken on a TLS port.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );

    let ports = [
        collector.grpc.clone(),
        collector.http.clone(),
        collector.admin.clone(),
        aggregator_url.clone(),
    ];
    for addr in &ports {
        assert_eq!(served_leaf(&pki, addr).await, first.leaf, "{addr}");
    }

    // A new certificate: served to new connections after SIGHUP.
    let second = pki.issue("second", false);
    assert_ne!(second.leaf, first.leaf);
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    collector.process.signal("HUP");
    aggregator.signal("HUP");
    for addr in &ports {
        eventually(
            &format!("{addr} serves the new certificate"),
            Duration::from_secs(10),
            || async { (served_leaf(&pki, addr).await == second.leaf).then_some(()) },
        )
        .await;
    }

    // A broken key: logged, and the second certificate stays.
    std::fs::write(&key, "not a key\n").unwrap();
    collector.process.signal("HUP");
    aggregator.signal("HUP");
    for process in [&collector.process, &aggregator] {
        eventually(
            "the failed reload is logged",
            Duration::from_secs(10),
            || async {
                process
                    .output()
                    .contains("TLS certificate not reloaded; the old one stays")
                    .then_some(())
            },
        )
        .await;
    }
    for addr in &ports {
        assert_eq!(served_leaf(&pki, addr).await, second.leaf, "{addr}");
    }
    let mut process = collector.process;
    assert!(process.is_running());
    assert!(aggregator.is_running());
}

/// A peer that opens a connection and never says hello is cut once
/// --header-read-timeout has passed, on both receivers.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_handshake_is_cut() {
    let database = unique_database("tls_silent");
    let dir = TempDir::new(&database);
    let pki = Pki::new("growth", &dir.0);
    let server = pki.issue("collector", false);
    let collector = TlsCollector::start(
        &database,
        &pki,
        &server,
        &["--header-read-timeout", "1s", "--idle-timeout", "60s"],
    )
    .await;
    for addr in [&collector.grpc, &collector.http] {
        let mut tcp = TcpStream::connect(addr.trim_start_matches("https://"))
            .await
            .expect("connect");
        let started = Instant::now();
        let mut buf = [0_u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{addr}: {read:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{addr}: closed after {waited:?}"
        );
    }
    // The collector still serves.
    assert!(served_leaf(&pki, &collector.http).await == server.leaf);
}
