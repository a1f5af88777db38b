//! [`GrowthLayer`] (feature `tracing-layer`): a `tracing` layer that turns log
//! events carrying an `event.name` field into growth events, so an app that
//! already logs what users do needs no second call:
//!
//! ```
//! # #[cfg(feature = "tracing-layer")] {
//! use std::sync::Arc;
//! use growth_sdk::{GrowthLayer, Tracker};
//! use tracing_subscriber::layer::SubscriberExt as _;
//!
//! let tracker = Arc::new(Tracker::builder("finbrain").disabled(true).build().unwrap());
//! let subscriber = tracing_subscriber::registry().with(GrowthLayer::new(Arc::clone(&tracker)));
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info!(event.name = "expense_logged", user.id = "u1", amount = 12.5, source = "form");
//! });
//! # }
//! ```
//!
//! Fields: `event.name` (required, else the event is ignored), `user.id` (hashed
//! by the tracker) or `user.hash`, `source`, and every other field as a
//! property; the `message` is left out. Events without `event.name` cost one
//! field lookup.

use std::sync::Arc;

use growth_schema::attributes::{EVENT_NAME, SOURCE, USER_HASH, USER_ID};
use growth_schema::user_hash::UserHash;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

use crate::event::{AttributeValue, Event};
use crate::tracker::Tracker;

/// Sends `tracing` events that have an `event.name` field through a [`Tracker`].
#[derive(Debug, Clone)]
pub struct GrowthLayer {
    tracker: Arc<Tracker>,
}

impl GrowthLayer {
    /// A layer sending through `tracker` (kept for `flush`/`report` by the app).
    pub fn new(tracker: Arc<Tracker>) -> Self {
        GrowthLayer { tracker }
    }
}

impl<S: tracing::Subscriber> Layer<S> for GrowthLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        if event.metadata().fields().field(EVENT_NAME).is_none() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(name) = fields.name else {
            return;
        };
        let mut growth = Event::new(name);
        match (fields.user_id, fields.user_hash) {
            (Some(id), _) => growth = growth.user(id),
            (None, Some(hash)) => {
                if let Ok(hash) = UserHash::parse(&hash) {
                    growth = growth.user_hash(hash);
                }
            }
            (None, None) => {}
        }
        if let Some(source) = fields.source {
            growth = growth.source(source);
        }
        growth.attributes = fields.properties;
        self.tracker.track_event(growth);
    }
}

/// What one `tracing` event carried.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    user_id: Option<String>,
    user_hash: Option<String>,
    source: Option<String>,
    properties: Vec<(String, AttributeValue)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: AttributeValue) {
        let text = |value: AttributeValue| match value {
            AttributeValue::String(text) => Some(text),
            _ => None,
        };
        match field.name() {
            EVENT_NAME => self.name = text(value),
            USER_ID => self.user_id = text(value),
            USER_HASH => self.user_hash = text(value),
            SOURCE => self.source = text(value),
            "message" => {}
            name => self.properties.push((name.to_owned(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = i64::try_from(value)
            .map(AttributeValue::Int)
            .unwrap_or_else(|_| AttributeValue::String(value.to_string()));
        self.put(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn events_with_a_name_are_tracked_others_ignored() {
        let tracker = Arc::new(
            Tracker::builder("app")
                .env_vars::<&str, &str>([])
                .endpoint("http://127.0.0.1:9")
                .build()
                .unwrap(),
        );
        let subscriber =
            tracing_subscriber::registry().with(GrowthLayer::new(Arc::clone(&tracker)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                event.name = "expense_logged",
                user.id = "u1",
                amount = 12.5,
                "logged"
            );
            tracing::info!(user.id = "u1", "an ordinary log line");
            tracing::warn!(event.name = "report_requested", count = 3u64);
        });
        assert_eq!(tracker.report().tracked, 2);
    }
}
