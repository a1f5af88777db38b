//! User hashing: the only way a user id is ever represented outside the app.
//!
//! HMAC-SHA256 keyed with `GROWTH_USER_HASH_KEY` when a key is configured; plain
//! SHA-256 of the id otherwise (compatible with apps that hash themselves). Output
//! is always 64 lowercase hex characters. The SDK and the collector both call
//! [`UserHasher::hash`], so a user gets the same hash whichever side hashed.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Environment variable that holds the user-hash key (never a flag's value).
pub const KEY_ENV: &str = "GROWTH_USER_HASH_KEY";
/// Environment variable naming the current key ([`KEY_ENV`]); `1` when unset.
pub const KEY_ID_ENV: &str = "GROWTH_USER_HASH_KEY_ID";
/// Environment variable that holds the previous key during a rotation's overlap.
pub const PREVIOUS_KEY_ENV: &str = "GROWTH_USER_HASH_PREVIOUS_KEY";
/// Environment variable naming the previous key; required with [`PREVIOUS_KEY_ENV`].
pub const PREVIOUS_KEY_ID_ENV: &str = "GROWTH_USER_HASH_PREVIOUS_KEY_ID";
/// The id of a key configured without one (`GROWTH_USER_HASH_KEY` alone).
pub const DEFAULT_KEY_ID: &str = "1";

/// A hashed user id: exactly 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserHash(String);

/// Why a string is not a [`UserHash`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user.hash must be 64 lowercase hex characters (SHA-256/HMAC-SHA256 in hex)")]
pub struct InvalidUserHash;

impl UserHash {
    /// Validates an already hashed id, e.g. the `user.hash` attribute of a record.
    pub fn parse(hex: &str) -> Result<Self, InvalidUserHash> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Self(hex.to_owned()))
        } else {
            Err(InvalidUserHash)
        }
    }

    /// The 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the hash into its hex string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for UserHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserHash({})", &self.0)
    }
}

/// Hashes raw user ids. Cheap to clone; the key never appears in `Debug` output.
#[derive(Clone, Default)]
pub struct UserHasher {
    /// The HMAC state with the key already absorbed: cloned per id, so the key is
    /// not re-processed for every hash.
    keyed: Option<Hmac<Sha256>>,
}

impl fmt::Debug for UserHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserHasher")
            .field("keyed", &self.keyed.is_some())
            .finish()
    }
}

impl UserHasher {
    /// A hasher with an HMAC key, or plain SHA-256 when `key` is `None` or empty.
    pub fn new(key: Option<Vec<u8>>) -> Self {
        let keyed = key.filter(|k| !k.is_empty()).map(|key| {
            // HMAC accepts keys of any length, so this cannot fail.
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
        });
        Self { keyed }
    }

    /// Reads the key from a file (trailing newline ignored).
    pub fn from_key_file(path: &std::path::Path) -> std::io::Result<Self> {
        let mut key = std::fs::read(path)?;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        Ok(Self::new(Some(key)))
    }

    /// True when an HMAC key is configured (production); false means plain SHA-256.
    pub fn is_keyed(&self) -> bool {
        self.keyed.is_some()
    }

    /// Hashes a raw user id.
    pub fn hash(&self, user_id: &str) -> UserHash {
        // hex::encode goes char by char through an iterator; the table-driven
        // encode_to_slice is several times faster (this runs once per event).
        let mut text = [0u8; 64];
        hex::encode_to_slice(self.digest(user_id), &mut text)
            .unwrap_or_else(|_| unreachable!("32 bytes fill 64 hex digits"));
        // Hex digits are ASCII: the check cannot fail (and is cheaper than a lossy copy).
        let text =
            std::str::from_utf8(&text).unwrap_or_else(|_| unreachable!("hex digits are ASCII"));
        UserHash(text.to_owned())
    }

    /// The 32 bytes behind [`hash`](Self::hash), without allocating: for callers
    /// that write the hex themselves (the SDK's hot path).
    pub fn digest(&self, user_id: &str) -> [u8; 32] {
        self.digest_bytes(user_id.as_bytes())
    }

    /// [`digest`](Self::digest) of an id's UTF-8 bytes (the SDK keeps ids as
    /// bytes between `track` and the delivery thread).
    pub fn digest_bytes(&self, user_id: &[u8]) -> [u8; 32] {
        match &self.keyed {
            Some(keyed) => {
                let mut mac = keyed.clone();
                mac.update(user_id);
                mac.finalize().into_bytes().into()
            }
            None => Sha256::digest(user_id).into(),
        }
    }
}

/// The keys of a deployment: the current one, and during a rotation's overlap the
/// previous one (docs/contract.md, "Rotating the key"). Every id is hashed with the
/// current key; with a previous key it is hashed with both, and the pair (previous
/// hash, current hash) tells the collector that both name one user.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    /// Id of the current key (`[A-Za-z0-9._-]`, at most 32 characters).
    pub current_id: String,
    /// Hashes with the current key.
    pub current: UserHasher,
    /// The previous key during an overlap: its id and hasher.
    pub previous: Option<(String, UserHasher)>,
}

/// Why keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// A line of a keys file is not `ID:KEY`.
    #[error("line {0} of the keys file is not ID:KEY (the key itself is not shown)")]
    Line(usize),
    /// A key id has characters other than letters, digits, `.`, `_`, `-`, or is too long.
    #[error("key id {0:?} must be 1 to 32 characters of A-Z a-z 0-9 . _ -")]
    BadId(String),
    /// The keys file holds no key.
    #[error("no key in the keys file")]
    Empty,
    /// More than a current and a previous key.
    #[error("at most two keys: the current one (first line) and the previous one")]
    TooMany,
    /// Two keys share an id, or the previous key equals the current one.
    #[error("the previous key must differ from the current one, by id and by value")]
    Same,
    /// A previous key without an id (or an id without a key).
    #[error("{PREVIOUS_KEY_ENV} and {PREVIOUS_KEY_ID_ENV} go together")]
    PreviousIncomplete,
}

fn check_id(id: &str) -> Result<(), KeySetError> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeySetError::BadId(id.to_owned()))
    }
}

impl KeySet {
    /// One key and no previous one.
    pub fn single(id: &str, hasher: UserHasher) -> Self {
        Self {
            current_id: id.to_owned(),
            current: hasher,
            previous: None,
        }
    }

    /// A current key and optionally a previous one, as raw secrets with their ids.
    pub fn new(
        current: (&str, Vec<u8>),
        previous: Option<(&str, Vec<u8>)>,
    ) -> Result<Self, KeySetError> {
        check_id(current.0)?;
        if let Some((id, key)) = &previous {
            check_id(id)?;
            if *id == current.0 || *key == current.1 {
                return Err(KeySetError::Same);
            }
        }
        Ok(Self {
            current_id: current.0.to_owned(),
            current: UserHasher::new(Some(current.1)),
            previous: previous.map(|(id, key)| (id.to_owned(), UserHasher::new(Some(key)))),
        })
    }

    /// Parses a keys file: one `ID:KEY` a line, the current key first, then at most
    /// the previous one; blank lines and lines starting with `#` are skipped; `\r`
    /// and trailing newlines are ignored. Errors never quote a key.
    pub fn parse_keys_file(text: &[u8]) -> Result<Self, KeySetError> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or(KeySetError::Line(n + 1))?;
            let id = std::str::from_utf8(&line[..colon]).map_err(|_| KeySetError::Line(n + 1))?;
            let key = &line[colon + 1..];
            if key.is_empty() {
                return Err(KeySetError::Line(n + 1));
            }
            keys.push((id.trim().to_owned(), key.to_vec()));
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or(KeySetError::Empty)?;
        let previous = keys.next();
        if keys.next().is_some() {
            return Err(KeySetError::TooMany);
        }
        Self::new(
            (&current.0, current.1),
            previous.as_ref().map(|(id, k)| (id.as_str(), k.clone())),
        )
    }

    /// The id of the previous key, during an overlap.
    pub fn previous_id(&self) -> Option<&str> {
        self.previous.as_ref().map(|(id, _)| id.as_str())
    }

    /// The previous key's hasher, during an overlap.
    pub fn previous_hasher(&self) -> Option<&UserHasher> {
        self.previous.as_ref().map(|(_, h)| h)
    }

    /// `id` hashed with the current key, and with the previous one during an overlap.
    pub fn hash_both(&self, user_id: &str) -> (UserHash, Option<UserHash>) {
        (
            self.current.hash(user_id),
            self.previous_hasher().map(|h| h.hash(user_id)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_current_first_then_previous() {
        let set =
            KeySet::parse_keys_file(b"# rotation 2026\n2026-12:new-secret\r\n\n2025:old-secret\n")
                .unwrap();
        assert_eq!(set.current_id, "2026-12");
        assert_eq!(set.previous_id(), Some("2025"));
        let (now, before) = set.hash_both("u1");
        assert_eq!(
            now,
            UserHasher::new(Some(b"new-secret".to_vec())).hash("u1")
        );
        assert_eq!(
            before,
            Some(UserHasher::new(Some(b"old-secret".to_vec())).hash("u1"))
        );
        // A colon inside the key is part of the key.
        let set = KeySet::parse_keys_file(b"a:b:c").unwrap();
        assert_eq!(
            set.current.hash("x"),
            UserHasher::new(Some(b"b:c".to_vec())).hash("x")
        );
        assert!(set.previous.is_none());
    }

    #[test]
    fn keys_file_errors_never_show_the_key() {
        for (text, want) in [
            (&b""[..], KeySetError::Empty),
            (b"nocolon-secret", KeySetError::Line(1)),
            (b"1:a\n2:b\n3:c", KeySetError::TooMany),
            (b"1:a\n1:b", KeySetError::Same),
            (b"1:a\n2:a", KeySetError::Same),
            (b"bad id:a", KeySetError::BadId("bad id".into())),
            (b"1:", KeySetError::Line(1)),
        ] {
            let err = KeySet::parse_keys_file(text).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn unkeyed_is_plain_sha256() {
        // sha256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            UserHasher::new(None).hash("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keyed_is_hmac_sha256() {
        // RFC 4231, test case 2.
        let hasher = UserHasher::new(Some(b"Jefe".to_vec()));
        assert_eq!(
            hasher.hash("what do ya want for nothing?").as_str(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn empty_key_means_unkeyed() {
        assert!(!UserHasher::new(Some(Vec::new())).is_keyed());
        assert_eq!(
            UserHasher::new(Some(Vec::new())).hash("x"),
            UserHasher::new(None).hash("x")
        );
    }

    #[test]
    fn parse_accepts_only_lowercase_hex_of_64() {
        let good = UserHasher::new(None).hash("u1");
        assert_eq!(UserHash::parse(good.as_str()), Ok(good.clone()));
        assert!(UserHash::parse(&good.as_str().to_uppercase()).is_err());
        assert!(UserHash::parse(&good.as_str()[..63]).is_err());
        assert!(UserHash::parse("g".repeat(64).as_str()).is_err());
        assert!(UserHash::parse("").is_err());
    }

    #[test]
    fn debug_does_not_leak_key() {
        let hasher = UserHasher::new(Some(b"topsecret".to_vec()));
        assert!(!format!("{hasher:?}").contains("topsecret"));
    }
}
