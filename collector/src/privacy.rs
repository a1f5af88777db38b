//! Event properties, with the attributes that identify a person never kept raw.
//!
//! `user.id` has its own column and is hashed by [`crate::map`]; every other
//! attribute becomes a property. Some of those identify a person too (an email, a
//! client IP address, `enduser.id`: the list is [`attributes::IDENTIFYING`], plus
//! what `--identifying-attributes` adds). Their values are hashed with the user
//! hasher (so the same email always gives the same hash and can still be counted or
//! erased by hash) or dropped, per `--identifying-attribute-action` — wherever they
//! appear: as a top-level attribute, or as a key inside a map (kvlist) value, at any
//! depth, including maps inside arrays. Matching ignores ASCII case.
//!
//! Numbers: integer and finite double attributes are also kept in `numbers`.
//! Non-finite doubles (NaN, ±infinity, which OTLP/JSON may carry as `"NaN"`,
//! `"Infinity"`, `"-Infinity"`) are kept only as text with exactly those spellings,
//! and inside arrays and maps as those JSON strings: a sum over `numbers` is never
//! poisoned by one bad value, and nothing the sender said is lost.

use std::borrow::Cow;

use hashbrown::HashSet;

use crate::view::{KeyValue, Value};
use growth_schema::attributes;
use growth_schema::limits::{self, truncate_to};
use growth_schema::user_hash::UserHasher;

/// What becomes of an identifying attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IdentifyingAction {
    /// Replaced by its hash (the user hash function, keyed when a key is set).
    #[default]
    Hash,
    /// Removed from the event.
    Drop,
}

/// Which attributes identify a person, and what to do with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privacy {
    /// Names added to [`attributes::IDENTIFYING`] by configuration.
    extra: Vec<String>,
    action: IdentifyingAction,
}

impl Privacy {
    /// The built-in list plus `extra` names, handled by `action`.
    pub fn new(extra: impl IntoIterator<Item = String>, action: IdentifyingAction) -> Self {
        Self {
            extra: extra
                .into_iter()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect(),
            action,
        }
    }

    /// True when an attribute (or nested map key) named `key` identifies a person.
    pub fn is_identifying(&self, key: &str) -> bool {
        attributes::is_identifying(key) || self.extra.iter().any(|n| n.eq_ignore_ascii_case(key))
    }

    /// What happens to identifying values.
    pub fn action(&self) -> IdentifyingAction {
        self.action
    }
}

/// An event's properties, and what was cut from them.
#[derive(Debug, Default)]
pub(crate) struct Properties<'a> {
    /// Keys and values as text; a string value is borrowed from the request.
    pub text: Vec<(&'a str, Cow<'a, str>)>,
    pub numbers: Vec<(&'a str, f64)>,
    /// Properties dropped for the count or key-length limit.
    pub dropped: u64,
    /// Values cut to the length limit.
    pub truncated: u64,
    /// Identifying values hashed or dropped (nested ones included).
    pub redacted: u64,
}

/// Up to this many attributes, repeated keys are found without a set.
const SCAN_KEYS_UP_TO: usize = 32;

/// Every non-reserved attribute as text (first occurrence of a key, at most
/// `MAX_PROPERTIES`), the integer and finite double ones again as numbers, and
/// identifying values hashed or dropped.
pub(crate) fn properties_of<'a>(
    attrs: &[KeyValue<'a>],
    privacy: &Privacy,
    hasher: &UserHasher,
) -> Properties<'a> {
    let mut out = Properties::default();
    // Few attributes (the usual case): a repeated key is found by looking back,
    // without a set per record; many: a set, so a hostile record stays linear.
    let mut seen: Option<HashSet<&str>> = (attrs.len() > SCAN_KEYS_UP_TO).then(HashSet::new);
    let redactor = Redactor { privacy, hasher };
    for (i, kv) in attrs.iter().enumerate() {
        let key = kv.key;
        let repeated = match &mut seen {
            Some(seen) => !seen.insert(key),
            None => attrs[..i].iter().any(|earlier| earlier.key == key),
        };
        if attributes::is_reserved(key) || key.is_empty() || repeated {
            continue;
        }
        if out.text.len() >= limits::MAX_PROPERTIES || key.len() > limits::MAX_PROPERTY_KEY_BYTES {
            out.dropped += 1;
            continue;
        }
        let value = kv.value.as_ref();
        // A raw id of the people contract (anonymous.id, merged.id): stored only as
        // its hash, under the `*.hash` twin; a twin sent alongside wins.
        if let Some((_, twin)) = attributes::HASHED_TWINS.iter().find(|(raw, _)| *raw == key) {
            out.redacted += 1;
            if attrs.iter().any(|other| other.key == *twin) {
                continue;
            }
            out.text.push((twin, Cow::Owned(redactor.hash(value))));
            continue;
        }
        let mut text = if privacy.is_identifying(key) {
            out.redacted += 1;
            match privacy.action {
                IdentifyingAction::Drop => continue,
                IdentifyingAction::Hash => Cow::Owned(redactor.hash(value)),
            }
        } else {
            match value {
                Some(Value::IntValue(i)) => out.numbers.push((key, *i as f64)),
                Some(Value::DoubleValue(d)) if d.is_finite() => {
                    out.numbers.push((key, *d));
                }
                _ => {}
            }
            value
                .map(|v| redactor.text(v, limits::MAX_PROPERTY_VALUE_BYTES, &mut out.redacted))
                .unwrap_or_default()
        };
        let kept = truncate_to(&text, limits::MAX_PROPERTY_VALUE_BYTES).len();
        if kept < text.len() {
            out.truncated += 1;
            match &mut text {
                Cow::Borrowed(s) => *s = &s[..kept],
                Cow::Owned(s) => s.truncate(kept),
            }
        }
        out.text.push((key, text));
    }
    out
}

struct Redactor<'a> {
    privacy: &'a Privacy,
    hasher: &'a UserHasher,
}

impl Redactor<'_> {
    /// The hash of a value's whole text; empty stays empty (nobody to identify).
    fn hash(&self, value: Option<&Value<'_>>) -> String {
        let mut ignored = 0;
        let text = value
            .map(|v| self.text(v, usize::MAX, &mut ignored))
            .unwrap_or_default();
        if text.is_empty() {
            return String::new();
        }
        self.hasher.hash(&text).into_string()
    }

    /// A value as text: scalars as themselves, arrays and maps as JSON. JSON stops
    /// growing once past `limit` bytes (the caller cuts it there anyway), so a map of
    /// a million elements costs no million-element string.
    fn text<'a>(&self, value: &Value<'a>, limit: usize, redacted: &mut u64) -> Cow<'a, str> {
        match value {
            Value::StringValue(s) => Cow::Borrowed(s),
            Value::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::IntValue(i) => Cow::Owned(i.to_string()),
            Value::DoubleValue(d) => Cow::Owned(double_text(*d)),
            Value::BytesValue(b) => Cow::Owned(hex::encode(b)),
            Value::ArrayValue(_) | Value::KvlistValue(_) => {
                let mut out = String::new();
                self.write_json(Some(value), &mut out, limit, redacted);
                Cow::Owned(out)
            }
            Value::StringValueStrindex(_) => Cow::Borrowed(""),
        }
    }

    fn write_json(
        &self,
        value: Option<&Value<'_>>,
        out: &mut String,
        limit: usize,
        redacted: &mut u64,
    ) {
        let Some(value) = value else {
            out.push_str("null");
            return;
        };
        match value {
            Value::StringValue(s) => push_json_string(out, s),
            Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::IntValue(i) => out.push_str(&i.to_string()),
            Value::DoubleValue(d) if d.is_finite() => out.push_str(&d.to_string()),
            Value::DoubleValue(d) => push_json_string(out, &double_text(*d)),
            Value::BytesValue(b) => push_json_string(out, &hex::encode(b)),
            Value::ArrayValue(array) => {
                out.push('[');
                for (i, element) in array.iter().enumerate() {
                    if out.len() > limit {
                        return;
                    }
                    if i > 0 {
                        out.push(',');
                    }
                    self.write_json(element.as_ref(), out, limit, redacted);
                }
                out.push(']');
            }
            Value::KvlistValue(list) => {
                out.push('{');
                let mut first = true;
                for kv in list {
                    if out.len() > limit {
                        return;
                    }
                    let value = kv.value.as_ref();
                    let identifying = self.privacy.is_identifying(kv.key);
                    if identifying {
                        *redacted += 1;
                        if self.privacy.action == IdentifyingAction::Drop {
                            continue;
                        }
                    }
                    if !std::mem::take(&mut first) {
                        out.push(',');
                    }
                    push_json_string(out, kv.key);
                    out.push(':');
                    if identifying {
                        push_json_string(out, &self.hash(value));
                    } else {
                        self.write_json(value, out, limit, redacted);
                    }
                }
                out.push('}');
            }
            Value::StringValueStrindex(_) => out.push_str("null"),
        }
    }
}

fn push_json_string(out: &mut String, text: &str) {
    // Serializing a str into JSON cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// A double as text; the non-finite ones spelled as the protobuf JSON mapping does.
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use growth_testkit::otlp::{kv, s};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};

    use super::*;

    /// [`properties_of`] on decoded attributes.
    /// The properties, owned (the views borrow from `attrs`).
    struct Owned {
        text: Vec<(String, String)>,
        numbers: Vec<(String, f64)>,
        truncated: u64,
        redacted: u64,
    }

    fn properties_of(attrs: &[KeyValue], privacy: &Privacy, hasher: &UserHasher) -> Owned {
        let props = super::properties_of(&crate::view::key_values(attrs), privacy, hasher);
        Owned {
            text: props
                .text
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_owned()))
                .collect(),
            numbers: props
                .numbers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            truncated: props.truncated,
            redacted: props.redacted,
        }
    }

    fn kvlist(entries: Vec<KeyValue>) -> Value {
        Value::KvlistValue(KeyValueList { values: entries })
    }

    fn array(values: Vec<Value>) -> Value {
        Value::ArrayValue(ArrayValue {
            values: values
                .into_iter()
                .map(|v| AnyValue { value: Some(v) })
                .collect(),
        })
    }

    fn hostile_attributes() -> Vec<KeyValue> {
        vec![
            kv("enduser.id", s("alice-raw")),
            kv("User.Email", s("alice@example.org")),
            kv("client.address", s("203.0.113.7")),
            kv(
                "ctx",
                kvlist(vec![
                    kv("user.id", s("nested-raw")),
                    kv("plan", s("pro")),
                    kv(
                        "deeper",
                        array(vec![kvlist(vec![kv("user.name", s("Alice Raw"))])]),
                    ),
                ]),
            ),
            kv("my.secret", s("custom-raw")),
            kv("amount", Value::DoubleValue(2.5)),
        ]
    }

    fn raw_values() -> [&'static str; 6] {
        [
            "alice-raw",
            "alice@example.org",
            "203.0.113.7",
            "nested-raw",
            "Alice Raw",
            "custom-raw",
        ]
    }

    #[test]
    fn identifying_values_are_hashed_at_any_depth() {
        let hasher = UserHasher::new(Some(b"k".to_vec()));
        let privacy = Privacy::new(["my.secret".to_owned()], IdentifyingAction::Hash);
        let props = properties_of(&hostile_attributes(), &privacy, &hasher);
        let text = format!("{:?}", props.text);
        for raw in raw_values() {
            assert!(!text.contains(raw), "{raw} stored raw: {text}");
        }
        let value = |k: &str| props.text.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        assert_eq!(
            value("User.Email"),
            Some(&hasher.hash("alice@example.org").into_string())
        );
        let ctx: serde_json::Value =
            serde_json::from_str(value("ctx").expect("ctx kept")).expect("json");
        assert_eq!(ctx["user.id"], hasher.hash("nested-raw").as_str());
        assert_eq!(ctx["plan"], "pro");
        assert_eq!(
            ctx["deeper"][0]["user.name"],
            hasher.hash("Alice Raw").as_str()
        );
        assert_eq!(props.redacted, 6);
        assert_eq!(props.numbers, vec![("amount".to_owned(), 2.5)]);
    }

    #[test]
    fn identifying_values_can_be_dropped() {
        let hasher = UserHasher::new(None);
        let privacy = Privacy::new(["my.secret".to_owned()], IdentifyingAction::Drop);
        let props = properties_of(&hostile_attributes(), &privacy, &hasher);
        let keys: Vec<&str> = props.text.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ctx", "amount"]);
        let text = format!("{:?}", props.text);
        for raw in raw_values() {
            assert!(!text.contains(raw), "{raw} stored: {text}");
        }
        assert!(!text.contains("user.id") && text.contains("plan"), "{text}");
        assert_eq!(props.redacted, 6);
    }

    #[test]
    fn huge_maps_are_cut_without_being_written_whole() {
        let many = array(vec![s("0123456789"); 100_000]);
        let props = properties_of(
            &[kv("many", many)],
            &Privacy::default(),
            &UserHasher::new(None),
        );
        assert_eq!(props.text[0].1.len(), limits::MAX_PROPERTY_VALUE_BYTES);
        assert!(props.text[0].1.starts_with(r#"["0123456789","#));
        assert_eq!(props.truncated, 1);
    }

    #[test]
    fn non_finite_numbers_are_text_only() {
        let props = properties_of(
            &[
                kv("nan", Value::DoubleValue(f64::NAN)),
                kv("inf", Value::DoubleValue(f64::INFINITY)),
                kv("ninf", Value::DoubleValue(f64::NEG_INFINITY)),
                kv("list", array(vec![Value::DoubleValue(f64::NAN)])),
            ],
            &Privacy::default(),
            &UserHasher::new(None),
        );
        assert!(props.numbers.is_empty());
        let text: Vec<(&str, &str)> = props
            .text
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            text,
            [
                ("nan", "NaN"),
                ("inf", "Infinity"),
                ("ninf", "-Infinity"),
                ("list", r#"["NaN"]"#)
            ]
        );
    }
}
