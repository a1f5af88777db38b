//! Ingest authentication: optional bearer tokens, each bound to the apps it may write.
//!
//! Without `--auth-tokens-file` every sender may write every app (the collector
//! listens on 127.0.0.1 by default). With it, every export must carry
//! `Authorization: Bearer <token>` (OTLP/HTTP header or gRPC metadata; OTel SDKs
//! send it from `OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer <token>"`).
//!
//! The file holds one JSON object per line; blank lines and lines starting with `#`
//! are skipped:
//!
//! ```text
//! # the finance app's servers
//! {"token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "apps": ["finbrain"]}
//! # a forwarding OpenTelemetry Collector may write every app
//! {"token": "a-long-random-secret", "apps": ["*"]}
//! ```
//!
//! `token_sha256` (lowercase hex SHA-256 of the token, e.g. `printf %s "$TOKEN" |
//! sha256sum`) keeps the secret itself off the collector's disk; `token` is accepted
//! for convenience. `"*"` in `apps` allows every app. The file is read at start-up
//! and again on SIGHUP; a reload that fails keeps the tokens already loaded.
//!
//! A presented token is hashed and compared with every entry's digest in constant
//! time (no early exit, so timing says nothing about how close a guess was). Tokens
//! never reach a log line: errors name the file and line, not the value.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Which apps (`service.name`) a sender may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppAccess {
    /// Every app: no authentication configured, or a `"*"` token.
    All,
    /// Only these.
    Only(Arc<HashSet<String>>),
}

impl AppAccess {
    /// True when `app` may be written.
    pub fn allows(&self, app: &str) -> bool {
        match self {
            AppAccess::All => true,
            AppAccess::Only(apps) => apps.contains(app),
        }
    }
}

/// Why a request was not let in; the message goes back to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (or metadata) at all.
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// An `Authorization` header that is not a bearer token.
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    /// A token that is not in the tokens file.
    #[error("unknown bearer token")]
    Unknown,
}

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// The file could not be read.
    #[error("cannot read the auth tokens file {path}: {source}")]
    Read {
        /// The file named by --auth-tokens-file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid entry (the line's content is not repeated: it may hold a token).
    #[error("auth tokens file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// No token in the file: every request would be refused.
    #[error("auth tokens file {0} holds no token")]
    Empty(PathBuf),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_sha256: Option<String>,
    apps: Vec<String>,
}

struct Entry {
    digest: [u8; 32],
    access: AppAccess,
}

/// The loaded tokens.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    // By hand: the digests stay out of logs too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Parses the file format described in the module documentation.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TokensFileError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let fail = |reason: String| TokensFileError::Line {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let line: Line = serde_json::from_str(raw).map_err(|e| {
                // serde's message may quote the value; keep only its category.
                fail(format!(
                    "not a JSON object {{\"token_sha256\"|\"token\", \"apps\"}} ({:?} error at column {})",
                    e.classify(),
                    e.column()
                ))
            })?;
            let digest = match (line.token, line.token_sha256) {
                (Some(token), None) if !token.is_empty() => sha256(token.as_bytes()),
                (None, Some(hex_digest)) => parse_digest(&hex_digest).ok_or_else(|| {
                    fail("token_sha256 must be 64 lowercase hex characters".into())
                })?,
                _ => return Err(fail("give exactly one of token, token_sha256".into())),
            };
            if line.apps.is_empty() {
                return Err(fail("apps is empty: list the apps or \"*\"".into()));
            }
            let access = if line.apps.iter().any(|a| a == "*") {
                AppAccess::All
            } else {
                AppAccess::Only(Arc::new(line.apps.into_iter().collect()))
            };
            entries.push(Entry { digest, access });
        }
        if entries.is_empty() {
            return Err(TokensFileError::Empty(path.to_owned()));
        }
        Ok(Self { entries })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, TokensFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The apps `token` may write, or `None` for an unknown token.
    fn access(&self, token: &str) -> Option<AppAccess> {
        let presented = sha256(token.as_bytes());
        let mut found = None;
        // Every entry is compared, whatever matched before.
        for entry in &self.entries {
            if constant_time_eq(&entry.digest, &presented) && found.is_none() {
                found = Some(entry.access.clone());
            }
        }
        found
    }

    /// Number of tokens loaded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is loaded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The collector's authentication: off, or the tokens of a file (reloadable).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    file: Option<Arc<TokensFile>>,
}

#[derive(Debug)]
struct TokensFile {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

impl Auth {
    /// No authentication: every request may write every app.
    pub fn off() -> Self {
        Self::default()
    }

    /// Tokens from `path`, loaded now.
    pub fn from_file(path: &Path) -> Result<Self, TokensFileError> {
        let tokens = Tokens::load(path)?;
        Ok(Self {
            file: Some(Arc::new(TokensFile {
                path: path.to_owned(),
                tokens: RwLock::new(Arc::new(tokens)),
            })),
        })
    }

    /// True when requests must carry a token.
    pub fn is_on(&self) -> bool {
        self.file.is_some()
    }

    /// Reads the file again; on failure the tokens already loaded stay in force.
    /// Returns the number of tokens now loaded (`Ok(0)` when authentication is off).
    pub fn reload(&self) -> Result<usize, TokensFileError> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let tokens = Tokens::load(&file.path)?;
        let count = tokens.len();
        match file.tokens.write() {
            Ok(mut current) => *current = Arc::new(tokens),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(tokens),
        }
        Ok(count)
    }

    /// Checks an `Authorization` header value (`None` when absent).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<AppAccess, AuthError> {
        let Some(file) = &self.file else {
            return Ok(AppAccess::All);
        };
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let token = bearer_token(value).ok_or(AuthError::Malformed)?;
        let tokens = match file.tokens.read() {
            Ok(tokens) => tokens.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokens.access(token).ok_or(AuthError::Unknown)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, as RFC 6750 allows).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut digest = [0_u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
# comment
{"token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "apps": ["finbrain", "other"]}

{"token": "all-apps-secret", "apps": ["*"]}
"#;

    fn auth(text: &str) -> Auth {
        let path = Path::new("tokens.jsonl");
        Auth {
            file: Some(Arc::new(TokensFile {
                path: path.to_owned(),
                tokens: RwLock::new(Arc::new(Tokens::parse(path, text).expect("parses"))),
            })),
        }
    }

    #[test]
    fn tokens_grant_their_apps() {
        let auth = auth(FILE);
        // sha256("test") is the digest above.
        let access = auth.check(Some(b"Bearer test")).expect("known token");
        assert!(access.allows("finbrain") && access.allows("other") && !access.allows("x"));
        let all = auth
            .check(Some(b"bearer   all-apps-secret "))
            .expect("known token");
        assert_eq!(all, AppAccess::All);
        assert_eq!(auth.check(None), Err(AuthError::Missing));
        assert_eq!(
            auth.check(Some(b"Basic dGVzdA==")),
            Err(AuthError::Malformed)
        );
        assert_eq!(auth.check(Some(b"Bearer ")), Err(AuthError::Malformed));
        assert_eq!(auth.check(Some(b"Bearer tesT")), Err(AuthError::Unknown));
        assert_eq!(Auth::off().check(None), Ok(AppAccess::All));
    }

    #[test]
    fn bad_files_are_refused_without_echoing_tokens() {
        let path = Path::new("t");
        for (text, needle) in [
            ("", "holds no token"),
            (r#"{"token": "s3cret-value", "apps": []}"#, "apps is empty"),
            (
                r#"{"token_sha256": "ABC", "apps": ["a"]}"#,
                "64 lowercase hex",
            ),
            (
                r#"{"token": "s3cret-value", "token_sha256": "x", "apps": ["a"]}"#,
                "exactly one",
            ),
            (r#"{"token": "s3cret-value" "apps"}"#, "line 1"),
        ] {
            let error = Tokens::parse(path, text).expect_err(text).to_string();
            assert!(error.contains(needle), "{error}");
            assert!(!error.contains("s3cret-value"), "{error}");
        }
    }

    #[test]
    fn reload_replaces_tokens_and_keeps_them_on_failure() {
        let dir = std::env::temp_dir().join(format!("growth-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tokens.jsonl");
        std::fs::write(&path, r#"{"token": "one", "apps": ["a"]}"#).expect("write");
        let auth = Auth::from_file(&path).expect("loads");
        assert!(auth.check(Some(b"Bearer one")).is_ok());
        std::fs::write(&path, r#"{"token": "two", "apps": ["a"]}"#).expect("write");
        assert_eq!(auth.reload().expect("reloads"), 1);
        assert!(auth.check(Some(b"Bearer one")).is_err());
        assert!(auth.check(Some(b"Bearer two")).is_ok());
        std::fs::write(&path, "not json").expect("write");
        assert!(auth.reload().is_err());
        assert!(auth.check(Some(b"Bearer two")).is_ok(), "old tokens stay");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
