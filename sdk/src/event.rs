//! [`Event`]: one growth event as the app describes it, before it is hashed and sent.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use growth_schema::user_hash::UserHash;

/// A property value: every value type an OpenTelemetry attribute (`AnyValue`) may hold.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// Text.
    String(String),
    /// A whole number.
    Int(i64),
    /// A number with a fraction (amounts, durations).
    Float(f64),
    /// A flag.
    Bool(bool),
    /// Raw bytes (stored by the collector as hex).
    Bytes(Vec<u8>),
    /// A list of values (stored by the collector as JSON).
    Array(Vec<AttributeValue>),
    /// Nested key-value pairs (stored by the collector as JSON).
    Map(Vec<(String, AttributeValue)>),
}

macro_rules! from_value {
    ($variant:ident: $($t:ty),+) => {
        $(impl From<$t> for AttributeValue {
            fn from(value: $t) -> Self {
                AttributeValue::$variant(value.into())
            }
        })+
    };
}

from_value!(String: String, &str, &String, Cow<'_, str>);
from_value!(Int: i64, i32, i16, i8, u32, u16, u8);
from_value!(Float: f64, f32);
from_value!(Bool: bool);
from_value!(Bytes: &[u8]);
from_value!(Array: Vec<AttributeValue>);
from_value!(Map: Vec<(String, AttributeValue)>);

/// Any OpenTelemetry log value, so code written against the OTel logs API can
/// hand its attributes over unchanged.
impl From<opentelemetry::logs::AnyValue> for AttributeValue {
    fn from(value: opentelemetry::logs::AnyValue) -> Self {
        use opentelemetry::logs::AnyValue as Any;
        match value {
            Any::String(text) => AttributeValue::String(text.into()),
            Any::Int(n) => AttributeValue::Int(n),
            Any::Double(x) => AttributeValue::Float(x),
            Any::Boolean(b) => AttributeValue::Bool(b),
            Any::Bytes(bytes) => AttributeValue::Bytes(*bytes),
            Any::ListAny(values) => {
                AttributeValue::Array(values.into_iter().map(AttributeValue::from).collect())
            }
            Any::Map(map) => AttributeValue::Map(
                map.into_iter()
                    .map(|(key, value)| (key.to_string(), AttributeValue::from(value)))
                    .collect(),
            ),
            // `AnyValue` is non-exhaustive: a future kind travels as its debug text.
            other => AttributeValue::String(format!("{other:?}")),
        }
    }
}

/// An OpenTelemetry attribute value (`opentelemetry::Value`, as used by spans and metrics).
impl From<opentelemetry::Value> for AttributeValue {
    fn from(value: opentelemetry::Value) -> Self {
        use opentelemetry::{Array, Value};
        fn list<T>(values: Vec<T>, f: impl Fn(T) -> AttributeValue) -> AttributeValue {
            AttributeValue::Array(values.into_iter().map(f).collect())
        }
        match value {
            Value::Bool(b) => AttributeValue::Bool(b),
            Value::I64(n) => AttributeValue::Int(n),
            Value::F64(x) => AttributeValue::Float(x),
            Value::String(text) => AttributeValue::String(text.into()),
            Value::Array(Array::Bool(v)) => list(v, AttributeValue::Bool),
            Value::Array(Array::I64(v)) => list(v, AttributeValue::Int),
            Value::Array(Array::F64(v)) => list(v, AttributeValue::Float),
            Value::Array(Array::String(v)) => list(v, |s| AttributeValue::String(s.into())),
            other => AttributeValue::String(other.to_string()),
        }
    }
}

/// Who did it: a raw id (hashed by the tracker before anything leaves the process)
/// or a hash the app computed itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum User {
    Id(String),
    Hash(UserHash),
}

/// One growth event, built step by step and handed to
/// [`Tracker::track_event`](crate::Tracker::track_event).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use growth_sdk::Event;
///
/// let yesterday = SystemTime::now() - Duration::from_secs(86_400);
/// let event = Event::new("expense_logged")
///     .user("u1")
///     .attr("amount", 12.5)
///     .source("form")
///     .at(yesterday);
/// assert_eq!(event.name(), "expense_logged");
/// ```
#[derive(Clone, PartialEq)]
pub struct Event {
    pub(crate) name: Cow<'static, str>,
    pub(crate) user: Option<User>,
    pub(crate) source: Option<String>,
    pub(crate) attributes: Vec<(String, AttributeValue)>,
    pub(crate) timestamp: Option<SystemTime>,
}

impl Event {
    /// An anonymous event named `name`, happening now unless [`at`](Self::at) says otherwise.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Event {
            name: name.into(),
            user: None,
            source: None,
            attributes: Vec::new(),
            timestamp: None,
        }
    }

    /// The user who did it, by raw id; only its hash leaves the process.
    /// An empty id leaves the event anonymous.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user = Some(User::Id(user_id.into()));
        self
    }

    /// The user who did it, already hashed (e.g. by the app's backend).
    pub fn user_hash(mut self, hash: UserHash) -> Self {
        self.user = Some(User::Hash(hash));
        self
    }

    /// Where it happened (`messenger`, `form`, `pwa`, …).
    pub fn source(mut self, source: impl AsRef<str>) -> Self {
        self.source = Some(source.as_ref().to_owned());
        self
    }

    /// Adds a property. The contract's own names (`event.name`, `user.id`,
    /// `user.hash`) are refused when sent, so a raw id cannot slip out this way.
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// When it happened; needed to send past days (imports, demos, tests).
    pub fn at(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when the event names a user (by id or hash).
    pub fn has_user(&self) -> bool {
        self.user.is_some()
    }
}

/// Never prints the raw user id: events end up in application logs.
impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = match &self.user {
            None => "anonymous",
            Some(User::Id(_)) => "<raw id, redacted>",
            Some(User::Hash(_)) => "<hash>",
        };
        f.debug_struct("Event")
            .field("name", &self.name)
            .field("user", &user)
            .field("source", &self.source)
            .field("attributes", &self.attributes)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_collects_everything() {
        let at = SystemTime::UNIX_EPOCH;
        let event = Event::new(String::from("expense_logged"))
            .user("u1")
            .attr("amount", 12.5)
            .attr("count", 3)
            .attr("category", "groceries")
            .attr("first", true)
            .source("form")
            .at(at);
        assert_eq!(event.name(), "expense_logged");
        assert!(event.has_user());
        assert_eq!(event.source.as_deref(), Some("form"));
        assert_eq!(event.timestamp, Some(at));
        assert_eq!(
            event.attributes,
            vec![
                ("amount".to_owned(), AttributeValue::Float(12.5)),
                ("count".to_owned(), AttributeValue::Int(3)),
                (
                    "category".to_owned(),
                    AttributeValue::String("groceries".into())
                ),
                ("first".to_owned(), AttributeValue::Bool(true)),
            ]
        );
    }

    #[test]
    fn debug_never_shows_the_raw_user_id() {
        let event = Event::new("x").user("alice@example.com");
        assert!(!format!("{event:?}").contains("alice"));
    }
}
