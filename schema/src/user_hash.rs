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

#[cfg(test)]
mod tests {
    use super::*;

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
