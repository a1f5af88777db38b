//! The state every handler shares ([`AppState`]): the latest snapshot, the settings,
//! the metrics source, the cache of on-demand answers and the refresh's health. The
//! handlers ([`crate::http`], [`crate::api`], [`crate::dashboard`]) import it; it
//! imports nothing from them.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::exposition::Format;
use crate::on_demand::AnswerCache;
use crate::refresh::RefreshHealth;
use crate::snapshot::SnapshotCache;
use crate::source::MetricsSource;

/// What every handler may use: the latest snapshot, the settings, a way to ask
/// ClickHouse (with the query timeout) and the cache of on-demand answers.
#[derive(Clone)]
pub struct AppState {
    pub cache: SnapshotCache,
    pub config: Arc<Config>,
    pub source: MetricsSource,
    pub answers: AnswerCache,
    pub health: RefreshHealth,
    /// The last rendered `/metrics` body per format and encoding: rendered (and
    /// gzipped) once per snapshot, so a crowd of scrapers costs a copy of bytes each.
    pub(crate) exposition_cache: Arc<Mutex<Vec<(ExpositionKey, Bytes)>>>,
}

/// What a rendered `/metrics` body depends on.
#[derive(Clone, Copy, PartialEq)]
pub(crate) struct ExpositionKey {
    pub(crate) generated_at: DateTime<Utc>,
    pub(crate) errors_total: u64,
    pub(crate) format: Format,
    pub(crate) gzip: bool,
}

impl AppState {
    /// State for `config`, reading through `source`.
    pub fn new(config: Config, source: MetricsSource) -> Self {
        Self {
            cache: SnapshotCache::default(),
            config: Arc::new(config),
            source,
            answers: AnswerCache::default(),
            health: RefreshHealth::default(),
            exposition_cache: Arc::default(),
        }
    }
}
