//! What the intake enforces before anything is stored, and how it says no.

use std::sync::Arc;

use growth_schema::user_hash::UserHasher;

use super::DeliveryError;
use super::decode::DecodeLimits;
use crate::auth::Auth;
use crate::catalog::{Catalog, DEFAULT_MAX_APPS, DEFAULT_MAX_EVENTS_PER_APP};
use crate::map::MapRules;
pub use crate::telemetry::Refusal;

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
            catalog: Arc::new(Catalog::new(DEFAULT_MAX_APPS, DEFAULT_MAX_EVENTS_PER_APP)),
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
