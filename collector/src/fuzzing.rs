//! Entry points for the fuzz targets (`fuzz/`, run by `scripts/fuzz`) that are not
//! public API otherwise. Hidden from the docs; nothing in the collector uses it.

use crate::receiver::http::{self, BodyError};

/// The HTTP receiver's gzip decoding of a request body (`Content-Encoding: gzip`),
/// refusing more than `limit` bytes of output: the body, or why it was refused.
pub fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    http::gunzip(raw, limit).map_err(|e| match e {
        BodyError::TooLarge => format!("larger than {limit} bytes"),
        BodyError::Unreadable(reason) => reason,
    })
}
