//! What the intake enforces before anything is stored, and how it says no.

use std::sync::Arc;

use growth_schema::user_hash::UserHasher;

use super::DeliveryError;
use super::decode::DecodeLimits;
use crate::auth::Auth;
use crate::catalog::Catalog;
use crate::map::MapRules;

/// The rules of the edge: mapping (hashing, time window, privacy), how far a request
/// may expand, who may write which app, and how many apps and event names exist.
#[derive(Debug, Clone)]
pub struct EdgeRules {
    /// How records become rows.
    pub map: MapRules,
    /// Bounds on a decoded request.
    pub decode: DecodeLimits,
    /// Bearer tokens, or none.
    pub auth: Auth,
    /// Known apps and event names, bounded.
    pub catalog: Arc<Catalog>,
}

impl EdgeRules {
    /// The defaults around `hasher`: no authentication, default bounds.
    pub fn new(hasher: UserHasher) -> Self {
        Self {
            map: MapRules::new(hasher),
            decode: DecodeLimits::default(),
            auth: Auth::off(),
            catalog: Arc::new(Catalog::new(
                crate::intake_config::DEFAULT_MAX_APPS,
                crate::intake_config::DEFAULT_MAX_EVENTS_PER_APP,
            )),
        }
    }
}

/// Why an export was not accepted as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The events could not be stored; the sender should retry.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The sender's token may write none of the request's apps.
    #[error("{0}")]
    Forbidden(String),
    /// The body is not a request, or expands past the limits: do not retry it.
    #[error(transparent)]
    Invalid(#[from] super::decode::DecodeError),
}

/// Why a request was refused as a whole (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// No token, or an unknown one.
    Unauthenticated,
    /// A token that may write none of the request's apps.
    Forbidden,
    /// A body that does not decode, or over the decoding limits.
    Undecodable,
    /// A body over `--max-request-bytes`.
    TooLarge,
    /// A content type or encoding OTLP/HTTP does not define.
    UnsupportedMedia,
    /// A body that did not arrive within `--request-read-timeout`.
    ReadTimeout,
}

impl Refusal {
    /// Every refusal, for pre-creating metric series.
    pub const ALL: [Refusal; 6] = [
        Refusal::Unauthenticated,
        Refusal::Forbidden,
        Refusal::Undecodable,
        Refusal::TooLarge,
        Refusal::UnsupportedMedia,
        Refusal::ReadTimeout,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::Undecodable => "undecodable",
            Refusal::TooLarge => "too_large",
            Refusal::UnsupportedMedia => "unsupported_media",
            Refusal::ReadTimeout => "read_timeout",
        }
    }
}
