//! Access control for the admin page and the JSON API (`--admin-auth-file`).
//!
//! The file holds one credential a line, `#` comments and blank lines skipped:
//!
//! ```text
//! alice:$argon2id$v=19$m=19456,t=2,p=1$...     # HTTP Basic user, argon2 PHC hash
//! bob:$2y$10$...                               # HTTP Basic user, bcrypt (htpasswd -B)
//! bearer:sha256:<64 hex>                       # a bearer token, stored as its SHA-256
//! ```
//!
//! Passwords are stored as slow hashes (argon2, bcrypt) because people choose them;
//! bearer tokens are long random strings, so their SHA-256 is enough and checks in
//! microseconds. A slow hash costs tens of milliseconds per check and a page load
//! makes several requests, so credentials that verified once are remembered by the
//! SHA-256 of the `Authorization` header (in memory, bounded), never by the password.
//!
//! So that wrong passwords cannot burn the CPU, the slow checks are throttled per
//! client address and per user name (`--admin-login-attempts` a minute each, in bursts
//! of as many; [`LoginThrottle`]): past that the answer is 429 with `Retry-After`
//! without hashing anything. Only checks that would run the slow hash count: bearer
//! tokens, unknown users and remembered credentials cost microseconds and are not
//! throttled.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::{Argon2, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

/// How many verified `Authorization` values are remembered before the memory is reset.
const REMEMBERED: usize = 256;

/// Addresses and user names the throttle tracks before it forgets the idle ones.
const THROTTLE_KEYS: usize = 10_000;

/// The default of `--admin-login-attempts`.
const DEFAULT_LOGIN_ATTEMPTS: u32 = 10;

/// Counts slow password checks per client address and per user name.
#[derive(Debug)]
pub struct LoginThrottle {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_user: DefaultKeyedRateLimiter<String>,
}

impl LoginThrottle {
    /// `per_minute` checks a minute per address and per user, in bursts of as many.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(per_minute);
        Self {
            by_address: RateLimiter::keyed(quota),
            by_user: RateLimiter::keyed(quota),
        }
    }

    /// Takes one check from the address's and the user's allowance; how long to wait
    /// when either is spent.
    fn admit(&self, address: Option<IpAddr>, user: &str) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        for (len, retain) in [
            (
                self.by_address.len(),
                &(|| self.by_address.retain_recent()) as &dyn Fn(),
            ),
            (self.by_user.len(), &|| self.by_user.retain_recent()),
        ] {
            if len > THROTTLE_KEYS {
                retain();
            }
        }
        if let Some(address) = address {
            self.by_address
                .check_key(&address)
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        self.by_user
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

/// What a presented `Authorization` header gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It carries accepted credentials.
    Allowed,
    /// It does not.
    Refused,
    /// Too many password checks for its address or user: try again after this long.
    Throttled(Duration),
}

/// Why `hash-password` printed no credential line.
#[derive(Debug, thiserror::Error)]
pub enum HashPasswordError {
    /// The user name cannot stand in the auth file.
    #[error("the user name must be non-empty, without ':', and not 'bearer'")]
    BadUser,
    /// Standard input could not be read.
    #[error("cannot read the password from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// Standard input held no password.
    #[error("no password on standard input")]
    NoPassword,
    /// The hash function failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Why the credentials file could not be used (the aggregator refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read the admin auth file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("the admin auth file {path} holds no credentials")]
    Empty { path: String },
}

#[derive(Debug, Clone)]
enum PasswordHash {
    /// A PHC string (`$argon2id$...`).
    Argon2(String),
    /// `$2a$` / `$2b$` / `$2y$`, as `htpasswd -B` writes.
    Bcrypt(String),
}

impl PasswordHash {
    fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("$argon2") {
            argon2::PasswordHash::new(text)
                .map_err(|e| format!("not a valid argon2 PHC hash: {e}"))?;
            Ok(Self::Argon2(text.to_owned()))
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            Ok(Self::Bcrypt(text.to_owned()))
        } else {
            Err("the password must be an argon2 ($argon2id$...) or bcrypt ($2y$...) hash, never plain text".into())
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Argon2(phc) => Argon2::default()
                .verify_password(password, phc.as_str())
                .is_ok(),
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }
}

/// The accepted credentials.
#[derive(Debug)]
pub struct Credentials {
    users: HashMap<String, PasswordHash>,
    token_digests: HashSet<[u8; 32]>,
    verified: Mutex<HashSet<[u8; 32]>>,
    throttle: LoginThrottle,
}

impl Credentials {
    /// Reads and validates the credentials file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| {
            if line == 0 {
                AuthFileError::Empty { path: shown }
            } else {
                AuthFileError::Line {
                    path: shown,
                    line,
                    message,
                }
            }
        })
    }

    /// Parses the file's text; the error is (line number, message), line 0 for an empty file.
    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        let mut token_digests = HashSet::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message: &str| (number, message.to_owned());
            let (name, secret) = line
                .split_once(':')
                .ok_or_else(|| fail("expected user:hash or bearer:sha256:<hex>"))?;
            if name == "bearer" {
                let hex_digest = secret.strip_prefix("sha256:").ok_or_else(|| {
                    fail("a bearer token is written bearer:sha256:<hex of its SHA-256>")
                })?;
                let digest: [u8; 32] = hex::decode(hex_digest)
                    .ok()
                    .and_then(|d| d.try_into().ok())
                    .ok_or_else(|| fail("the token's SHA-256 must be 64 hex digits"))?;
                token_digests.insert(digest);
            } else {
                if name.is_empty() {
                    return Err(fail("empty user name"));
                }
                let hash = PasswordHash::parse(secret).map_err(|m| (number, m))?;
                users.insert(name.to_owned(), hash);
            }
        }
        if users.is_empty() && token_digests.is_empty() {
            return Err((0, String::new()));
        }
        Ok(Self {
            users,
            token_digests,
            verified: Mutex::new(HashSet::new()),
            throttle: LoginThrottle::new(DEFAULT_LOGIN_ATTEMPTS),
        })
    }

    /// The same credentials with `per_minute` slow checks a minute per client address
    /// and per user (`--admin-login-attempts`).
    pub fn with_login_attempts(mut self, per_minute: u32) -> Self {
        self.throttle = LoginThrottle::new(per_minute);
        self
    }

    /// Whether the `Authorization` header carries an accepted credential, for a
    /// client at an unknown address.
    pub fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        self.check(authorization, None) == Verdict::Allowed
    }

    /// What the `Authorization` header of a client at `address` gets. May take tens
    /// of milliseconds of CPU the first time a password is seen: call it off the runtime.
    pub fn check(&self, authorization: Option<&HeaderValue>, address: Option<IpAddr>) -> Verdict {
        let Some(value) = authorization.map(HeaderValue::as_bytes) else {
            return Verdict::Refused;
        };
        let seen: [u8; 32] = Sha256::digest(value).into();
        if self.remembered().contains(&seen) {
            return Verdict::Allowed;
        }
        let ok = match parse_authorization(value) {
            Some(Presented::Bearer(token)) => {
                let digest: [u8; 32] = Sha256::digest(token).into();
                self.token_digests.contains(&digest)
            }
            Some(Presented::Basic { user, password }) => match self.users.get(&user) {
                Some(hash) => {
                    if let Err(wait) = self.throttle.admit(address, &user) {
                        return Verdict::Throttled(wait);
                    }
                    hash.verify(password.as_bytes())
                }
                None => false,
            },
            None => false,
        };
        if ok {
            let mut remembered = self.remembered();
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
            remembered.insert(seen);
        }
        if ok {
            Verdict::Allowed
        } else {
            Verdict::Refused
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

enum Presented {
    Bearer(Vec<u8>),
    Basic { user: String, password: String },
}

fn parse_authorization(value: &[u8]) -> Option<Presented> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Presented::Bearer(rest.as_bytes().to_vec()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Presented::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Which paths need credentials, and which credentials.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    credentials: Option<Arc<Credentials>>,
    protect_all: bool,
}

impl AccessPolicy {
    /// No credentials: everything is open (the default bind is 127.0.0.1).
    pub fn open() -> Self {
        Self {
            credentials: None,
            protect_all: false,
        }
    }

    /// `/admin/*` and `/api/*` need `credentials`; with `protect_all` every path does.
    pub fn new(credentials: Credentials, protect_all: bool) -> Self {
        Self {
            credentials: Some(Arc::new(credentials)),
            protect_all,
        }
    }

    fn protects(&self, path: &str) -> bool {
        self.credentials.is_some()
            && (self.protect_all
                || path == "/admin"
                || path.starts_with("/admin/")
                || path == "/api"
                || path.starts_with("/api/"))
    }
}

/// The middleware: 401 with `WWW-Authenticate` unless the request may pass.
pub async fn require_credentials(
    State(policy): State<AccessPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let (Some(credentials), true) = (
        policy.credentials.clone(),
        policy.protects(request.uri().path()),
    ) else {
        return next.run(request).await;
    };
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let verdict =
        tokio::task::spawn_blocking(move || credentials.check(authorization.as_ref(), address))
            .await
            .unwrap_or(Verdict::Refused);
    match verdict {
        Verdict::Allowed => next.run(request).await,
        Verdict::Refused => unauthorized(),
        Verdict::Throttled(wait) => throttled(wait),
    }
}

/// 429: too many password checks; `Retry-After` in whole seconds, at least 1.
fn throttled(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::RETRY_AFTER, seconds.max(1).to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        "too many password checks from this address or for this user; retry later\n",
    )
        .into_response()
}

fn unauthorized() -> Response {
    let mut headers = HeaderMap::new();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"growth admin\", charset=\"UTF-8\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"growth admin\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (
        StatusCode::UNAUTHORIZED,
        headers,
        "credentials required: see --admin-auth-file in the README\n",
    )
        .into_response()
}

/// An argon2id PHC hash of `password` with the library's recommended parameters, for
/// the `hash-password` subcommand.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The auth-file line `USER:<argon2 hash>` that `hash-password` prints, the
/// password being the first line of `input` (read only once the user name is valid).
pub fn credential_line(
    user: &str,
    mut input: impl std::io::BufRead,
) -> Result<String, HashPasswordError> {
    if user.is_empty() || user.contains(':') || user == "bearer" {
        return Err(HashPasswordError::BadUser);
    }
    let mut password = String::new();
    input
        .read_line(&mut password)
        .map_err(HashPasswordError::Stdin)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(HashPasswordError::NoPassword);
    }
    let hash = hash_password(password).map_err(HashPasswordError::Hash)?;
    Ok(format!("{user}:{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
    }

    fn credentials() -> Credentials {
        // Small argon2 parameters keep the unit test fast; the PHC string carries them.
        let argon = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).expect("params"),
        );
        let phc = {
            use argon2::PasswordHasher;
            argon.hash_password(b"s3cret").expect("hash").to_string()
        };
        let bcrypt = bcrypt::hash("hunter2", 4).expect("bcrypt");
        let token = hex::encode(Sha256::digest(b"tok-123"));
        Credentials::parse(&format!(
            "# admins\nalice:{phc}\n\nbob:{bcrypt}\nbearer:sha256:{token}\n"
        ))
        .expect("valid file")
    }

    #[test]
    fn hash_password_prints_a_line_the_file_accepts() {
        for user in ["", "a:b", "bearer"] {
            assert!(matches!(
                credential_line(user, &b"pw\n"[..]),
                Err(HashPasswordError::BadUser)
            ));
        }
        assert!(matches!(
            credential_line("alice", &b"\r\n"[..]),
            Err(HashPasswordError::NoPassword)
        ));
        let line = credential_line("alice", &b"s3cret\r\nmore\n"[..]).expect("line");
        assert!(line.starts_with("alice:$argon2id$"), "{line}");
        let c = Credentials::parse(&line).expect("valid file");
        assert!(c.allows(Some(&basic("alice", "s3cret"))));
        assert!(!c.allows(Some(&basic("alice", "s3cret\n"))));
    }

    #[test]
    fn accepts_basic_users_and_bearer_tokens() {
        let c = credentials();
        assert!(c.allows(Some(&basic("alice", "s3cret"))));
        assert!(c.allows(Some(&basic("alice", "s3cret"))), "remembered");
        assert!(c.allows(Some(&basic("bob", "hunter2"))));
        assert!(c.allows(Some(&HeaderValue::from_static("Bearer tok-123"))));
    }

    #[test]
    fn password_checks_are_throttled_per_address_and_per_user() {
        let c = credentials().with_login_attempts(3);
        let here = Some(IpAddr::from([192, 0, 2, 1]));
        let there = Some(IpAddr::from([192, 0, 2, 2]));
        for _ in 0..3 {
            assert_eq!(
                c.check(Some(&basic("alice", "wrong")), here),
                Verdict::Refused
            );
        }
        // The address's allowance is spent, for every user it tries…
        assert!(matches!(
            c.check(Some(&basic("bob", "wrong")), here),
            Verdict::Throttled(wait) if wait > Duration::ZERO && wait <= Duration::from_secs(20)
        ));
        // …and alice's, from every address: even her right password waits.
        assert!(matches!(
            c.check(Some(&basic("alice", "s3cret")), there),
            Verdict::Throttled(_)
        ));
        // Another user from another address is not held up, and what verified once
        // is remembered, not checked (nor counted) again.
        assert_eq!(
            c.check(Some(&basic("bob", "hunter2")), there),
            Verdict::Allowed
        );
        for _ in 0..10 {
            assert_eq!(
                c.check(Some(&basic("bob", "hunter2")), there),
                Verdict::Allowed
            );
        }
        // Bearer tokens and unknown users cost no slow hash: never throttled.
        for _ in 0..10 {
            assert_eq!(
                c.check(Some(&HeaderValue::from_static("Bearer nope")), here),
                Verdict::Refused
            );
            assert_eq!(
                c.check(Some(&basic("mallory", "x")), here),
                Verdict::Refused
            );
        }
    }

    #[test]
    fn refuses_everything_else() {
        let c = credentials();
        for bad in [
            basic("alice", "wrong"),
            basic("mallory", "s3cret"),
            basic("bob", "s3cret"),
            HeaderValue::from_static("Bearer tok-124"),
            HeaderValue::from_static("Basic !!!"),
            HeaderValue::from_static("Digest x"),
        ] {
            assert!(!c.allows(Some(&bad)), "{bad:?} accepted");
        }
        assert!(!c.allows(None));
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, line) in [
            ("alice:plaintext\n", 1),
            ("# c\nbearer:abc\n", 2),
            ("bearer:sha256:abcd\n", 1),
            ("nocolon\n", 1),
            ("alice:$argon2id$garbage\n", 1),
        ] {
            match Credentials::parse(text) {
                Err((l, _)) => assert_eq!(l, line, "{text}"),
                Ok(_) => panic!("{text} accepted"),
            }
        }
        assert!(matches!(Credentials::parse("# nothing\n"), Err((0, _))));
    }

    #[test]
    fn policy_covers_admin_and_api_only_unless_all() {
        let some = AccessPolicy::new(credentials(), false);
        assert!(some.protects("/admin/metrics"));
        assert!(some.protects("/admin/metrics.txt"));
        assert!(some.protects("/api/v1/summary"));
        assert!(!some.protects("/metrics"));
        assert!(!some.protects("/healthz"));
        assert!(!some.protects("/administrator"));
        let all = AccessPolicy::new(credentials(), true);
        assert!(all.protects("/metrics") && all.protects("/healthz"));
        assert!(!AccessPolicy::open().protects("/admin/metrics"));
    }
}
