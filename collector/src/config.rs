//! Command line and environment, parsed once into [`Config`] at the edge.
//!
//! Every flag has an environment variable beside it. The user-hash key is the one
//! exception to "everything is a flag": it is a secret, so it comes from the
//! environment (`GROWTH_USER_HASH_KEY`) or a file (`--user-hash-key-file`), never
//! from a flag's value that `ps` would show.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use growth_schema::connection::ClickHouseArgs;
use growth_schema::service::duration::{parse_duration, parse_positive_duration};
use growth_schema::service::tls::{TlsArgs, TlsFiles};
use growth_schema::user_hash::{
    DEFAULT_KEY_ID, KEY_ENV, KEY_ID_ENV, KeySet, KeySetError, PREVIOUS_KEY_ENV,
    PREVIOUS_KEY_ID_ENV, UserHasher,
};

pub use crate::delivery::DeliveryConfig;
use crate::intake_config::{IntakeArgs, IntakeConfig};
use crate::spool::{FsyncPolicy, SpoolConfig};

/// growth-collector: receives OpenTelemetry log records over OTLP (gRPC and HTTP),
/// keeps those that name a growth event, hashes raw user ids, and writes the events
/// to ClickHouse in batches. A sender's request is answered with success once its
/// events are in the on-disk spool (--spool-dir); background writers insert them into
/// ClickHouse, exactly once. When the spool is full or memory is short, senders get
/// RESOURCE_EXHAUSTED / UNAVAILABLE (HTTP 429 / 503) with a retry delay.
///
/// The user-hash key is read from the environment variable GROWTH_USER_HASH_KEY or
/// from --user-hash-key-file, never from a flag's value. Without a key the collector
/// refuses to start, unless --allow-unkeyed-hash says to hash user ids with plain
/// SHA-256 (a warning is logged at start-up). `migrate` needs no key.
///
/// Rotating the key (docs/contract.md, "Rotating the key"): give the collector the new
/// key and the previous one, each with an id: --user-hash-keys-file with lines
/// `ID:KEY` (current first), or GROWTH_USER_HASH_KEY + GROWTH_USER_HASH_KEY_ID and
/// GROWTH_USER_HASH_PREVIOUS_KEY + GROWTH_USER_HASH_PREVIOUS_KEY_ID. During this
/// overlap every user is hashed with both and the pairs are recorded; then run with
/// the new key alone and `growth-collector rotate-keys finish`.
///
/// Logging is controlled by RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "growth-collector", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What to do; `run` when omitted.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Receive OTLP and store growth events (the default).
    Run,
    /// Wait for ClickHouse, apply the schema migrations to the database, and exit.
    Migrate,
    /// Erase people: reads user ids (or, with --hashes, user hashes) one a line from
    /// stdin or --input, never from the command line, and asks the running collector
    /// at --admin-addr to remove them from ClickHouse (events and every derived
    /// table), the spool and the dead-letter file; waits and prints the rows removed
    /// per table. Needs the admin token (--token-file or GROWTH_ADMIN_TOKEN) whose
    /// SHA-256 is in the collector's --admin-token-file. Example:
    /// `growth-collector erase --token-file admin.token < ids.txt`
    Erase(EraseArgs),
    /// Key rotation jobs. `rotate-keys finish`: after the overlap (the collector
    /// restarted with the new key alone and its spool drained), rewrites every stored
    /// previous hash that the overlap paired with a current one, in events and every
    /// user table (partition by partition, resumable: run it again after a crash),
    /// then forgets the pairs; afterwards the previous key can be destroyed. Needs
    /// no key. Prints progress on stderr.
    #[command(subcommand)]
    RotateKeys(RotateKeysCommand),
}

/// `growth-collector rotate-keys …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum RotateKeysCommand {
    /// Rewrite the previous hashes paired during the overlap into the current ones,
    /// in every user table; drop the pairs. Idempotent and resumable.
    Finish,
    /// Print how many pairs the overlap recorded so far, per app (no change).
    Status,
}

/// Flags of `growth-collector erase`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EraseArgs {
    /// Read the ids from FILE instead of stdin (one a line; blank lines skipped).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// The lines are user hashes (64 lowercase hex, as stored in events.user_hash),
    /// not raw user ids.
    #[arg(long)]
    pub hashes: bool,

    /// File holding the admin token (whose SHA-256 is in the collector's
    /// --admin-token-file). Without it the token is read from GROWTH_ADMIN_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Return once the erasure is queued, printing its id, without waiting for it.
    #[arg(long)]
    pub no_wait: bool,

    /// Longest wait for the erasure to finish.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = duration)]
    pub wait_timeout: Duration,
}

/// Flags of the collector.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// Address of the OTLP/gRPC receiver (LogsService/Export).
    #[arg(
        long,
        value_name = "ADDR",
        env = "GROWTH_OTLP_GRPC_ADDR",
        default_value = "127.0.0.1:4317"
    )]
    pub otlp_grpc_addr: SocketAddr,

    /// Address of the OTLP/HTTP receiver (POST /v1/logs, protobuf or JSON, optionally gzip).
    #[arg(
        long,
        value_name = "ADDR",
        env = "GROWTH_OTLP_HTTP_ADDR",
        default_value = "127.0.0.1:4318"
    )]
    pub otlp_http_addr: SocketAddr,

    /// Address of /healthz, /readyz, /metrics (the collector's own Prometheus metrics)
    /// and /admin/erasures; `erase` connects here.
    #[arg(
        long,
        value_name = "ADDR",
        env = "GROWTH_ADMIN_ADDR",
        default_value = "127.0.0.1:8888"
    )]
    pub admin_addr: SocketAddr,

    /// Admin tokens allowed to erase people (POST /admin/erasures): one line
    /// `sha256:<hex of the token's SHA-256>` each (`printf %s TOKEN | sha256sum`).
    /// Without it erasure is off (403).
    #[arg(long, value_name = "FILE", env = "GROWTH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// File holding the user-hash key (HMAC-SHA256); a trailing newline is ignored.
    /// Without it the key is read from the environment variable GROWTH_USER_HASH_KEY
    /// (its id from GROWTH_USER_HASH_KEY_ID, default 1; during a rotation the previous
    /// key from GROWTH_USER_HASH_PREVIOUS_KEY with GROWTH_USER_HASH_PREVIOUS_KEY_ID).
    #[arg(long, value_name = "FILE", env = "GROWTH_USER_HASH_KEY_FILE")]
    pub user_hash_key_file: Option<PathBuf>,

    /// File holding the user-hash keys with their ids, one `ID:KEY` a line: the
    /// current key first, then during a rotation's overlap the previous one (ids:
    /// 1-32 of A-Z a-z 0-9 . _ -). Excludes the other key settings.
    #[arg(long, value_name = "FILE", env = "GROWTH_USER_HASH_KEYS_FILE")]
    pub user_hash_keys_file: Option<PathBuf>,

    /// Without a user-hash key, hash raw user ids with plain SHA-256 instead of refusing
    /// to start. Only for migrating from a system that stored unkeyed SHA-256 hashes:
    /// anyone can reverse those for guessable ids (emails, phone numbers, small integers).
    #[arg(long, env = "GROWTH_ALLOW_UNKEYED_HASH")]
    pub allow_unkeyed_hash: bool,

    /// Largest accepted request, after decompression (bytes, or with a unit: 512KiB, 16MiB).
    #[arg(long, value_name = "BYTES", env = "GROWTH_MAX_REQUEST_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub max_request_bytes: usize,

    /// How long to wait for ClickHouse at start-up (and for `migrate`) before giving up.
    #[arg(long, value_name = "DURATION", env = "GROWTH_STARTUP_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub startup_timeout: Duration,

    #[command(flatten)]
    pub intake: IntakeArgs,

    // ---- TLS (growth_schema::service::tls); README "TLS" ----
    // --tls-cert, --tls-key: TLS on the OTLP/gRPC, OTLP/HTTP and admin ports.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// With --tls-cert: OTLP senders must present a client certificate signed by a CA
    /// in this PEM file (mTLS); a connection without one is refused during the
    /// handshake. The admin port never asks for one. Re-read on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        env = "GROWTH_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    // ---- Delivery: spool, batches, backpressure, shutdown (collector/src/{spool,writer}.rs) ----
    /// Directory of the write-ahead spool (created if missing). A request is
    /// acknowledged once its events are written (and synced) here.
    #[arg(
        long,
        value_name = "DIR",
        env = "GROWTH_SPOOL_DIR",
        default_value = "growth-spool"
    )]
    pub spool_dir: PathBuf,

    /// Most bytes the spool may hold; beyond it requests get RESOURCE_EXHAUSTED / 429
    /// with a retry delay until ClickHouse catches up (e.g. 1GiB).
    #[arg(long, value_name = "BYTES", env = "GROWTH_SPOOL_MAX_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub spool_max_bytes: usize,

    /// /readyz turns false while the spool holds more than this (default: 80% of
    /// --spool-max-bytes).
    #[arg(long, value_name = "BYTES", env = "GROWTH_SPOOL_HIGH_WATER_BYTES", value_parser = parse_size)]
    pub spool_high_water_bytes: Option<usize>,

    /// When the spool syncs: `always` (fdatasync before acknowledging, one sync for
    /// every request that arrived meanwhile; survives power loss) or `never`
    /// (acknowledge once the OS has the bytes; survives a crash of the collector only).
    #[arg(
        long,
        value_name = "POLICY",
        env = "GROWTH_SPOOL_FSYNC",
        default_value = "always"
    )]
    pub spool_fsync: FsyncPolicy,

    /// Size at which a spool segment file is closed and a new one started (at most
    /// an eighth of --spool-max-bytes).
    #[arg(long, value_name = "BYTES", env = "GROWTH_SPOOL_SEGMENT_BYTES", default_value = "32MiB", value_parser = parse_size)]
    pub spool_segment_bytes: usize,

    /// Rows that make a batch: an insert starts as soon as this many rows are spooled.
    /// Under load --batch-max-delay sets the size (one insert a second); this and
    /// --batch-max-bytes only cap it, e.g. while a backlog drains.
    #[arg(long, value_name = "ROWS", env = "GROWTH_BATCH_MAX_ROWS", default_value_t = 400_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub batch_max_rows: u32,

    /// Bytes (RowBinary) that make a batch, whichever of rows and bytes comes first.
    #[arg(long, value_name = "BYTES", env = "GROWTH_BATCH_MAX_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub batch_max_bytes: usize,

    /// Longest a spooled row waits for its batch to fill before it is inserted anyway
    /// (e.g. 1s, 200ms): under light load, one insert per this interval.
    #[arg(long, value_name = "DURATION", env = "GROWTH_BATCH_MAX_DELAY", default_value = "1s", value_parser = delay)]
    pub batch_max_delay: Duration,

    /// Rows that are inserted without waiting out --batch-max-delay once no request
    /// has arrived for --batch-quiet: a burst is stored as soon as it ends. Under
    /// steady load this never applies (one insert a second stays the rule); 0 turns
    /// it off.
    #[arg(
        long,
        value_name = "ROWS",
        env = "GROWTH_BATCH_QUIET_ROWS",
        default_value_t = 50_000
    )]
    pub batch_quiet_rows: u32,

    /// How long the senders must be silent before --batch-quiet-rows applies.
    #[arg(long, value_name = "DURATION", env = "GROWTH_BATCH_QUIET", default_value = "100ms", value_parser = delay)]
    pub batch_quiet: Duration,

    /// Most bytes of requests being mapped and spooled at once; beyond it requests
    /// get UNAVAILABLE / 503 with a retry delay (memory stays bounded).
    #[arg(long, value_name = "BYTES", env = "GROWTH_MAX_INFLIGHT_BYTES", default_value = "128MiB", value_parser = parse_size)]
    pub max_inflight_bytes: usize,

    /// Most export requests handled at once, over both receivers; beyond it requests
    /// get UNAVAILABLE / 503 with a retry delay.
    #[arg(long, value_name = "N", env = "GROWTH_MAX_CONCURRENT_REQUESTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_requests: u32,

    /// Most open connections, over both receivers; a connection beyond it is closed
    /// as soon as it is accepted (senders retry with backoff).
    #[arg(long, value_name = "N", env = "GROWTH_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// /readyz turns false when rows wait and no insert has succeeded for this long.
    #[arg(long, value_name = "DURATION", env = "GROWTH_WRITE_STALL_TIMEOUT", default_value = "30s", value_parser = delay)]
    pub write_stall_timeout: Duration,

    /// On SIGTERM: stop accepting, answer what was accepted, keep inserting for at most
    /// this long, then exit; what is not in ClickHouse by then stays in the spool.
    #[arg(long, value_name = "DURATION", env = "GROWTH_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,
}

/// Everything the collector needs, resolved: addresses, limits and the user hasher.
#[derive(Clone)]
pub struct Config {
    /// Where the growth tables live.
    pub clickhouse: ClickHouseArgs,
    /// OTLP/gRPC listen address.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: SocketAddr,
    /// Admin (health, readiness, metrics) listen address.
    pub admin_addr: SocketAddr,
    /// Hashes raw user ids; keyed (HMAC) when a key was configured: `keys.current`.
    pub hasher: UserHasher,
    /// The current key's id, and during a rotation's overlap the previous key.
    pub keys: KeySet,
    /// `--admin-token-file`: who may erase people (off without it).
    pub admin_token_file: Option<PathBuf>,
    /// When the batcher inserts.
    pub batch: BatchConfig,
    /// Largest accepted request body or gRPC message, decompressed.
    pub max_request_bytes: usize,
    /// How long start-up waits for ClickHouse.
    pub startup_timeout: Duration,
    /// Input bounds, privacy, authentication and timeouts of the receivers.
    pub intake: IntakeConfig,
    /// The write-ahead spool.
    pub spool: SpoolConfig,
    /// Limits, readiness and shutdown of the delivery path.
    pub delivery: DeliveryConfig,
    /// TLS files of the OTLP ports (the admin port uses them without `client_ca`);
    /// `None`: plain text.
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for Config {
    // By hand, so that the ClickHouse password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("clickhouse_url", &self.clickhouse.url)
            .field("clickhouse_database", &self.clickhouse.database)
            .field("clickhouse_user", &self.clickhouse.user)
            .field("otlp_grpc_addr", &self.otlp_grpc_addr)
            .field("otlp_http_addr", &self.otlp_http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("hasher", &self.hasher)
            .field("batch", &self.batch)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("startup_timeout", &self.startup_timeout)
            .field("intake", &self.intake)
            .field("spool", &self.spool)
            .field("delivery", &self.delivery)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// When spooled rows are inserted into ClickHouse: whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Insert once this many rows wait.
    pub max_rows: usize,
    /// Insert once this many bytes (RowBinary) wait.
    pub max_bytes: usize,
    /// Insert once the oldest waiting row has waited this long.
    pub max_delay: Duration,
    /// Insert early once at least this many rows wait and nothing new arrived for
    /// `quiet` (0: never).
    pub quiet_rows: usize,
    /// See `quiet_rows`.
    pub quiet: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 400_000,
            max_bytes: 64 << 20,
            max_delay: Duration::from_secs(1),
            quiet_rows: 50_000,
            quiet: Duration::from_millis(100),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The key file could not be read.
    #[error("cannot read the user-hash key file {path}: {source}")]
    KeyFile {
        /// The file named by --user-hash-key-file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no key.
    #[error("the user-hash key file {0} is empty")]
    EmptyKeyFile(PathBuf),
    /// Two keys were given; hashing with the wrong one would split every user in two.
    #[error("both --user-hash-key-file and {KEY_ENV} are set: configure the user-hash key once")]
    TwoKeys,
    /// The keys file excludes the other ways of setting a key.
    #[error(
        "--user-hash-keys-file excludes --user-hash-key-file, {KEY_ENV} and {PREVIOUS_KEY_ENV}: configure the keys once"
    )]
    KeysFileAndKey,
    /// The keys (file or ids) are malformed.
    #[error("user-hash keys: {0}")]
    Keys(#[from] KeySetError),
    /// No key, and plain SHA-256 was not asked for.
    #[error(
        "no user-hash key: set {KEY_ENV} or --user-hash-key-file to a secret (e.g. `openssl rand -hex 32`); \
         --allow-unkeyed-hash (GROWTH_ALLOW_UNKEYED_HASH=true) hashes user ids with plain SHA-256 instead, \
         only for data migrated from a system that used it"
    )]
    NoKey,
}

/// The key settings that come from the environment (passed in so that tests need
/// not touch the process environment).
#[derive(Default, Clone)]
pub struct EnvKeys {
    /// `GROWTH_USER_HASH_KEY`.
    pub key: Option<String>,
    /// `GROWTH_USER_HASH_KEY_ID`.
    pub key_id: Option<String>,
    /// `GROWTH_USER_HASH_PREVIOUS_KEY`.
    pub previous: Option<String>,
    /// `GROWTH_USER_HASH_PREVIOUS_KEY_ID`.
    pub previous_id: Option<String>,
}

impl EnvKeys {
    /// Reads the four variables (empty counts as unset).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            key: var(KEY_ENV),
            key_id: var(KEY_ID_ENV),
            previous: var(PREVIOUS_KEY_ENV),
            previous_id: var(PREVIOUS_KEY_ID_ENV),
        }
    }
}

impl RunArgs {
    /// Resolves the flags into a [`Config`]; `key_from_env` is the value of
    /// `GROWTH_USER_HASH_KEY` (passed in so that tests need not touch the environment).
    pub fn into_config(self, key_from_env: Option<String>) -> Result<Config, ConfigError> {
        self.into_config_with(EnvKeys {
            key: key_from_env,
            ..EnvKeys::default()
        })
    }

    /// [`into_config`](Self::into_config) with every key variable of the environment.
    pub fn into_config_with(self, env: EnvKeys) -> Result<Config, ConfigError> {
        let key_from_env = env.key.filter(|k| !k.is_empty());
        let previous = match (env.previous.filter(|k| !k.is_empty()), env.previous_id) {
            (Some(key), Some(id)) => Some((id, key.into_bytes())),
            (None, None) => None,
            _ => return Err(KeySetError::PreviousIncomplete.into()),
        };
        let key_id = env.key_id.unwrap_or_else(|| DEFAULT_KEY_ID.to_owned());
        let env_key_set = key_from_env.is_some();
        let current = match (&self.user_hash_key_file, key_from_env) {
            _ if self.user_hash_keys_file.is_some() => None,
            (Some(_), Some(_)) => return Err(ConfigError::TwoKeys),
            (Some(path), None) => Some(read_key_file(path)?),
            (None, Some(key)) => Some(key.into_bytes()),
            (None, None) => None,
        };
        let keys = match (&self.user_hash_keys_file, current) {
            (Some(path), _) => {
                if self.user_hash_key_file.is_some() || previous.is_some() || env_key_set {
                    return Err(ConfigError::KeysFileAndKey);
                }
                let text = std::fs::read(path).map_err(|source| ConfigError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                KeySet::parse_keys_file(&text)?
            }
            (None, Some(key)) => KeySet::new(
                (&key_id, key),
                previous.as_ref().map(|(id, k)| (id.as_str(), k.clone())),
            )?,
            (None, None) if self.allow_unkeyed_hash && previous.is_none() => {
                KeySet::single(DEFAULT_KEY_ID, UserHasher::new(None))
            }
            (None, None) => return Err(ConfigError::NoKey),
        };
        Ok(Config {
            clickhouse: self.clickhouse,
            otlp_grpc_addr: self.otlp_grpc_addr,
            otlp_http_addr: self.otlp_http_addr,
            admin_addr: self.admin_addr,
            hasher: keys.current.clone(),
            keys,
            admin_token_file: self.admin_token_file,
            batch: BatchConfig {
                max_rows: self.batch_max_rows as usize,
                max_bytes: self.batch_max_bytes,
                max_delay: self.batch_max_delay,
                quiet_rows: self.batch_quiet_rows as usize,
                quiet: self.batch_quiet,
            },
            max_request_bytes: self.max_request_bytes,
            startup_timeout: self.startup_timeout,
            intake: self.intake.into_config(),
            spool: SpoolConfig {
                dir: self.spool_dir,
                max_bytes: self.spool_max_bytes as u64,
                segment_bytes: (self.spool_segment_bytes as u64)
                    .min(self.spool_max_bytes as u64 / 8)
                    .max(64 << 10),
                fsync: self.spool_fsync,
            },
            delivery: DeliveryConfig {
                max_inflight_bytes: self.max_inflight_bytes,
                max_concurrent_requests: self.max_concurrent_requests as usize,
                max_connections: self.max_connections as usize,
                spool_high_water_bytes: self
                    .spool_high_water_bytes
                    .map_or(self.spool_max_bytes as u64 / 10 * 8, |b| b as u64),
                write_stall_timeout: self.write_stall_timeout,
                shutdown_timeout: self.shutdown_timeout,
            },
            tls: self.tls.files().map(|files| TlsFiles {
                client_ca: self.tls_client_ca,
                ..files
            }),
        })
    }
}

impl Cli {
    /// Reads `GROWTH_USER_HASH_KEY` from the process environment and resolves the flags.
    pub fn into_config(self) -> Result<(Command, Config), ConfigError> {
        let command = self.command.unwrap_or(Command::Run);
        let mut run = self.run;
        // `migrate` hashes nothing, so it needs no key.
        run.allow_unkeyed_hash |= command == Command::Migrate;
        // `rotate-keys` reads and rewrites stored hashes only: no key either.
        run.allow_unkeyed_hash |= matches!(command, Command::RotateKeys(_));
        let mut env = EnvKeys::from_env();
        if matches!(command, Command::Migrate | Command::RotateKeys(_)) {
            env = EnvKeys::default();
            run.user_hash_key_file = None;
            run.user_hash_keys_file = None;
        }
        let config = run.into_config_with(env)?;
        Ok((command, config))
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut key = std::fs::read(path).map_err(|source| ConfigError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.is_empty() {
        Err(ConfigError::EmptyKeyFile(path.to_owned()))
    } else {
        Ok(key)
    }
}

/// A duration flag; zero allowed.
fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text, "60s, 500ms or 2m")
}

/// A duration flag where zero would stop the collector working.
fn delay(text: &str) -> Result<Duration, String> {
    parse_positive_duration(text, "1s or 200ms")
}

/// Parses a byte size: a plain number, or a number with KiB/MiB/GiB (or KB/MB/GB) after it.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try 16777216, 512KiB or 16MiB)"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?} (use KiB, MiB or GiB)")),
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes < 1024 {
        return Err("must be at least 1KiB".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use growth_schema::service::ServiceCli;

    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["growth-collector"];
        argv.extend_from_slice(extra);
        Cli::try_parse_args(argv).expect("valid flags").run
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = args(&["--allow-unkeyed-hash"])
            .into_config(None)
            .expect("config");
        assert_eq!(config.otlp_grpc_addr.to_string(), "127.0.0.1:4317");
        assert_eq!(config.otlp_http_addr.to_string(), "127.0.0.1:4318");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:8888");
        assert_eq!(config.batch, BatchConfig::default());
        assert_eq!(config.max_request_bytes, 16 << 20);
        assert_eq!(config.startup_timeout, Duration::from_secs(60));
        assert!(!config.hasher.is_keyed());
        assert_eq!(config.spool.dir, PathBuf::from("growth-spool"));
        assert_eq!(config.spool.fsync, FsyncPolicy::Always);
        assert_eq!(config.spool.max_bytes, 1 << 30);
        assert_eq!(config.delivery, DeliveryConfig::default());
    }

    #[test]
    fn a_key_set_comes_from_a_keys_file_or_the_environment() {
        let env = |key: &str, id: Option<&str>, previous: Option<(&str, &str)>| EnvKeys {
            key: Some(key.into()),
            key_id: id.map(Into::into),
            previous: previous.map(|p| p.1.into()),
            previous_id: previous.map(|p| p.0.into()),
        };
        // One key: id 1, no previous.
        let one = args(&[])
            .into_config_with(env("k", None, None))
            .expect("config");
        assert_eq!(one.keys.current_id, "1");
        assert!(one.keys.previous.is_none());
        // An overlap from the environment.
        let both = args(&[])
            .into_config_with(env("new", Some("2"), Some(("1", "old"))))
            .expect("config");
        assert_eq!(both.keys.current_id, "2");
        assert_eq!(both.keys.previous_id(), Some("1"));
        assert_eq!(
            both.hasher.hash("u"),
            UserHasher::new(Some(b"new".to_vec())).hash("u")
        );
        assert_eq!(
            both.keys.previous_hasher().map(|h| h.hash("u")),
            Some(UserHasher::new(Some(b"old".to_vec())).hash("u"))
        );
        // A previous key needs its id, a different id and a different key.
        for bad in [
            EnvKeys {
                previous: Some("old".into()),
                ..env("new", None, None)
            },
            env("new", Some("1"), Some(("1", "old"))),
            env("same", Some("2"), Some(("1", "same"))),
        ] {
            let err = args(&[]).into_config_with(bad).expect_err("refused");
            assert!(matches!(err, ConfigError::Keys(_)), "{err}");
            assert!(!err.to_string().contains("old") && !err.to_string().contains("same\""));
        }
        // The keys file.
        let dir =
            std::env::temp_dir().join(format!("growth-collector-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("keys");
        std::fs::write(&file, "b:new-secret\na:old-secret\n").expect("write keys");
        let path = file.to_string_lossy().into_owned();
        let from_file = args(&["--user-hash-keys-file", &path])
            .into_config(None)
            .expect("config");
        assert_eq!(from_file.keys.current_id, "b");
        assert_eq!(from_file.keys.previous_id(), Some("a"));
        assert!(!format!("{from_file:?}").contains("secret"));
        assert!(matches!(
            args(&["--user-hash-keys-file", &path]).into_config(Some("k".into())),
            Err(ConfigError::KeysFileAndKey)
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn key_comes_from_env_or_file_but_not_both() {
        assert!(
            args(&[])
                .into_config(Some("k".into()))
                .expect("config")
                .hasher
                .is_keyed()
        );
        assert!(matches!(
            args(&[]).into_config(Some(String::new())),
            Err(ConfigError::NoKey)
        ));

        let dir = std::env::temp_dir().join(format!("growth-collector-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("key");
        std::fs::write(&file, "secret\n").expect("write key");
        let path = file.to_string_lossy().into_owned();
        let from_file = args(&["--user-hash-key-file", &path])
            .into_config(None)
            .expect("config");
        assert_eq!(
            from_file.hasher.hash("u").as_str(),
            UserHasher::new(Some(b"secret".to_vec())).hash("u").as_str()
        );
        assert!(matches!(
            args(&["--user-hash-key-file", &path]).into_config(Some("other".into())),
            Err(ConfigError::TwoKeys)
        ));
        std::fs::write(&file, "\n").expect("write key");
        assert!(matches!(
            args(&["--user-hash-key-file", &path]).into_config(None),
            Err(ConfigError::EmptyKeyFile(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_key_is_an_error_unless_plain_sha256_is_asked_for() {
        let refused = args(&[]).into_config(None).map(drop);
        assert!(matches!(refused, Err(ConfigError::NoKey)), "{refused:?}");
        let message = ConfigError::NoKey.to_string();
        for hint in [KEY_ENV, "--user-hash-key-file", "--allow-unkeyed-hash"] {
            assert!(message.contains(hint), "{message}");
        }
        let unkeyed = args(&["--allow-unkeyed-hash"])
            .into_config(None)
            .expect("config");
        assert!(!unkeyed.hasher.is_keyed());
        assert_eq!(
            unkeyed.hasher.hash("u").as_str(),
            UserHasher::new(None).hash("u").as_str()
        );
        // A key, when there is one, is used even with the flag.
        assert!(
            args(&["--allow-unkeyed-hash"])
                .into_config(Some("k".into()))
                .expect("config")
                .hasher
                .is_keyed()
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("12").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(delay("0s").is_err());
        assert_eq!(delay("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        let config = args(&["--batch-max-rows", "10", "--batch-max-delay", "50ms"])
            .into_config(Some("k".into()))
            .expect("config");
        assert_eq!(config.batch.max_rows, 10);
        assert_eq!(config.batch.max_delay, Duration::from_millis(50));
        assert!(Cli::try_parse_args(["growth-collector", "--batch-max-rows", "0"]).is_err());
    }

    #[test]
    fn debug_shows_no_secrets() {
        let config = args(&["--clickhouse-password", "pw-secret"])
            .into_config(Some("key-secret".into()))
            .expect("config");
        let text = format!("{config:?}");
        assert!(
            !text.contains("pw-secret") && !text.contains("key-secret"),
            "{text}"
        );
    }

    #[test]
    fn definition_is_consistent() {
        Cli::definition().debug_assert();
    }

    #[test]
    fn migrate_is_a_subcommand() {
        let cli = Cli::try_parse_args(["growth-collector", "migrate"]).expect("parses");
        assert_eq!(cli.command, Some(Command::Migrate));
        let cli = Cli::try_parse_args(["growth-collector"]).expect("parses");
        assert_eq!(cli.command, None);
        for argv in [
            [
                "growth-collector",
                "--clickhouse-database",
                "other",
                "migrate",
            ],
            [
                "growth-collector",
                "migrate",
                "--clickhouse-database",
                "other",
            ],
        ] {
            let cli = Cli::try_parse_args(argv).expect("parses");
            assert_eq!(cli.command, Some(Command::Migrate));
            assert_eq!(cli.run.clickhouse.database, "other");
        }
        let cli = Cli::try_parse_args(["growth-collector", "run", "--batch-max-rows", "7"])
            .expect("parses");
        assert_eq!(
            (cli.command, cli.run.batch_max_rows),
            (Some(Command::Run), 7)
        );
    }
}
