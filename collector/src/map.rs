//! OTLP → growth event: the event contract of docs/contract.md, as a pure function.
//!
//! [`map_request`] turns one `ExportLogsServiceRequest` into [`EventRow`]s and says
//! what happened to every record it did not turn into a row. It does no I/O, keeps
//! no state and never logs, so it can be tested row by row against the contract, and
//! a raw user id can go nowhere but into the hasher.
//!
//! Decisions where the contract is silent:
//! * a missing or empty `service.name` becomes `unknown_service`, as OpenTelemetry
//!   SDKs do, rather than losing the event;
//! * an empty `user.hash` or `user.id` means "no user" (anonymous), so that one
//!   logged-out state does not become one giant user; a non-empty invalid one rejects
//!   the record; an integer `user.id` is hashed as its decimal text;
//! * only integer and double attributes go into `numbers`: strings that look like
//!   numbers (zip codes, versions, ids) stay text;
//! * when an attribute key repeats, the first occurrence wins;
//! * resource attributes other than `service.name`, scope attributes and the record
//!   body are not part of the event.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use growth_schema::attributes;
use growth_schema::limits;
use growth_schema::tables::EventRow;
use growth_schema::user_hash::{UserHash, UserHasher};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use crate::auth::AppAccess;
use crate::privacy::{Privacy, Properties, properties_of};
use crate::view::{KeyValue, LogRecord, Value, Visitor};

/// The app of events whose resource has no `service.name` (OpenTelemetry's default).
pub const UNKNOWN_APP: &str = "unknown_service";

/// Why a record that named an event was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The event name is too long, has control characters or is not a string.
    InvalidEventName,
    /// `user.hash` is not 64 lowercase hex characters.
    InvalidUserHash,
    /// `user.id` is too long or neither a string nor an integer.
    InvalidUserId,
    /// `service.name` is too long, has control characters or is not a string.
    InvalidApp,
    /// `source` is too long, has control characters or is not a string.
    InvalidSource,
    /// The timestamp is beyond what can be stored (after the year 2262).
    InvalidTime,
    /// The event happened longer ago than `--max-event-age`.
    TimeTooOld,
    /// The event lies further in the future than `--max-clock-skew`.
    TimeInFuture,
    /// The app would be one more than `--max-apps`.
    TooManyApps,
    /// The event name would be one more than `--max-events-per-app` for its app.
    TooManyEventNames,
    /// The request's bearer token may not write this app (`--auth-tokens-file`).
    AppNotAllowed,
}

impl RejectReason {
    /// Every reason, for pre-creating metric series.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::InvalidEventName,
        RejectReason::InvalidUserHash,
        RejectReason::InvalidUserId,
        RejectReason::InvalidApp,
        RejectReason::InvalidSource,
        RejectReason::InvalidTime,
        RejectReason::TimeTooOld,
        RejectReason::TimeInFuture,
        RejectReason::TooManyApps,
        RejectReason::TooManyEventNames,
        RejectReason::AppNotAllowed,
    ];

    /// The reason as a metric label value and in partial-success messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidEventName => "invalid_event_name",
            RejectReason::InvalidUserHash => "invalid_user_hash",
            RejectReason::InvalidUserId => "invalid_user_id",
            RejectReason::InvalidApp => "invalid_app",
            RejectReason::InvalidSource => "invalid_source",
            RejectReason::InvalidTime => "invalid_time",
            RejectReason::TimeTooOld => "time_too_old",
            RejectReason::TimeInFuture => "time_in_future",
            RejectReason::TooManyApps => "too_many_apps",
            RejectReason::TooManyEventNames => "too_many_event_names",
            RejectReason::AppNotAllowed => "app_not_allowed",
        }
    }
}

/// How far from the receive time an event's own time may lie. Besides keeping a
/// device with a wrong clock from moving a user's cohort to 1970, the window bounds
/// how many monthly partitions (`PARTITION BY toYYYYMM(day)`) one insert can touch:
/// ClickHouse refuses an insert block spanning more than
/// `max_partitions_per_insert_block` (100 by default), and with at most
/// [`TimeWindow::MAX_AGE`] of history a batch spans at most 88 months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Oldest accepted event, counted back from the receive time.
    pub max_age: Duration,
    /// Furthest accepted event into the future.
    pub max_skew: Duration,
}

impl TimeWindow {
    /// The largest `--max-event-age`: 7 years (2,555 days), so that a batch of
    /// accepted rows (plus the clock skew and the batching delay) spans at most
    /// 7 × 12 + 2 = 86 monthly partitions, under ClickHouse's limit of 100.
    pub const MAX_AGE: Duration = Duration::from_secs(2_555 * 86_400);
}

impl Default for TimeWindow {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(31 * 86_400),
            max_skew: Duration::from_secs(3_600),
        }
    }
}

/// Everything mapping needs besides the request: how users are hashed, which
/// times are accepted, what happens to identifying attributes.
#[derive(Debug, Clone)]
pub struct MapRules {
    /// Hashes `user.id` and identifying attributes.
    pub hasher: UserHasher,
    /// Accepted event times around the receive time.
    pub time_window: TimeWindow,
    /// Attributes that identify a person, and what becomes of them.
    pub privacy: Privacy,
}

impl MapRules {
    /// The default rules with `hasher`.
    pub fn new(hasher: UserHasher) -> Self {
        Self {
            hasher,
            time_window: TimeWindow::default(),
            privacy: Privacy::default(),
        }
    }
}

/// What became of the records of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappedRequest {
    /// One row per accepted growth event, in request order, when mapped into rows
    /// ([`map_request`]); empty when mapped straight into RowBinary ([`crate::rowbinary::RowBinarySink`]).
    pub rows: Vec<EventRow>,
    /// Growth events accepted (rows, or rows encoded).
    pub stored: u64,
    /// Log records in the request.
    pub received: u64,
    /// Records without an event name: not growth events, not stored, not an error.
    pub not_growth: u64,
    /// Records that named an event but broke the contract, by reason, in reason order.
    pub rejected: Vec<(RejectReason, u64)>,
    /// Properties dropped because an event had more than the limit (or a key too long).
    pub properties_dropped: u64,
    /// Property values cut to the length limit.
    pub values_truncated: u64,
    /// Identifying attribute values hashed or dropped ([`crate::privacy`]).
    pub identifying_redacted: u64,
}

impl MappedRequest {
    /// Records rejected, all reasons together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// A one-line summary of the rejections for the OTLP partial-success message,
    /// e.g. `2 log record(s) rejected: invalid_user_hash=2`; `None` when none were.
    pub fn rejection_message(&self) -> Option<String> {
        let total = self.rejected_total();
        if total == 0 {
            return None;
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, n)| format!("{}={n}", reason.as_str()))
            .collect();
        Some(format!(
            "{total} log record(s) rejected: {} (see the growth event contract)",
            reasons.join(", ")
        ))
    }

    /// Keeps the rows `admit` accepts; each other row is rejected for the reason it gives.
    pub fn admit_rows(&mut self, mut admit: impl FnMut(&EventRow) -> Result<(), RejectReason>) {
        let mut refused = Vec::new();
        self.rows.retain(|row| match admit(row) {
            Ok(()) => true,
            Err(reason) => {
                refused.push(reason);
                false
            }
        });
        self.stored = self.rows.len() as u64;
        for reason in refused {
            self.reject(reason);
        }
    }

    /// True when records named events and every one was refused because the
    /// sender's token may not write its app.
    pub fn only_forbidden_apps(&self) -> bool {
        self.stored == 0
            && !self.rejected.is_empty()
            && self
                .rejected
                .iter()
                .all(|(reason, _)| *reason == RejectReason::AppNotAllowed)
    }

    fn reject(&mut self, reason: RejectReason) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => {
                self.rejected.push((reason, 1));
                self.rejected.sort_unstable_by_key(|(r, _)| *r);
            }
        }
    }
}

/// Maps every log record of `request` to a growth event; `received_at` is the
/// receive time, also used for records that carry no timestamp.
pub fn map_request(
    request: &ExportLogsServiceRequest,
    rules: &MapRules,
    received_at: DateTime<Utc>,
) -> MappedRequest {
    map_request_as(request, rules, &AppAccess::All, received_at)
}

/// [`map_request`] for a sender that may write only the apps `access` allows: the
/// growth events of other apps are rejected as [`RejectReason::AppNotAllowed`].
pub fn map_request_as(
    request: &ExportLogsServiceRequest,
    rules: &MapRules,
    access: &AppAccess,
    received_at: DateTime<Utc>,
) -> MappedRequest {
    let mut mapper = Mapper::new(rules, access, received_at);
    crate::view::visit_request(request, &mut mapper);
    mapper.finish()
}

/// Maps records as they are read ([`Visitor`]): the receivers feed it straight
/// from a request's protobuf bytes, [`map_request_as`] from a decoded request.
/// Accepted events go to a [`RowSink`]: owned rows by default ([`map_request`]),
/// or straight into RowBinary ([`crate::rowbinary::RowBinarySink`], the intake's hot path).
#[derive(Debug)]
pub struct Mapper<'a, 'r, S = Vec<EventRow>> {
    rules: &'r MapRules,
    access: &'r AppAccess,
    received_at: DateTime<Utc>,
    /// The app of the current `ResourceLogs`.
    app: Result<&'a str, RejectReason>,
    out: MappedRequest,
    sink: S,
}

impl<'a, 'r> Mapper<'a, 'r> {
    /// A mapper for one request received at `received_at` from a sender that may
    /// write the apps `access` allows, collecting owned rows.
    pub fn new(rules: &'r MapRules, access: &'r AppAccess, received_at: DateTime<Utc>) -> Self {
        Self::with_sink(rules, access, received_at, Vec::new())
    }

    /// What became of the records seen, with the rows in `rows`.
    pub fn finish(self) -> MappedRequest {
        let (mut out, rows) = self.finish_with_sink();
        out.rows = rows;
        out
    }
}

impl<'a, 'r, S: RowSink<'a>> Mapper<'a, 'r, S> {
    /// A mapper that hands accepted events to `sink`.
    pub fn with_sink(
        rules: &'r MapRules,
        access: &'r AppAccess,
        received_at: DateTime<Utc>,
        sink: S,
    ) -> Self {
        Self {
            rules,
            access,
            received_at,
            app: Ok(UNKNOWN_APP),
            out: MappedRequest::default(),
            sink,
        }
    }

    /// What became of the records seen, and the sink.
    pub fn finish_with_sink(self) -> (MappedRequest, S) {
        (self.out, self.sink)
    }
}

impl<'a, S: RowSink<'a>> Visitor<'a> for Mapper<'a, '_, S> {
    fn resource(&mut self, attributes: &[KeyValue<'a>]) {
        self.app = app_of(attributes).and_then(|app| {
            if self.access.allows(app) {
                Ok(app)
            } else {
                Err(RejectReason::AppNotAllowed)
            }
        });
    }

    fn record(&mut self, record: &LogRecord<'a, '_>) {
        let out = &mut self.out;
        out.received += 1;
        // Without an event name a record is some other log line: not ours to judge.
        let event = match event_name(record) {
            None => {
                out.not_growth += 1;
                return;
            }
            Some(Err(reason)) => return out.reject(reason),
            Some(Ok(event)) => event,
        };
        let event = match build_event(record, event, self.app, self.rules, self.received_at) {
            Ok(event) => event,
            Err(reason) => return out.reject(reason),
        };
        out.properties_dropped += event.properties.dropped;
        out.values_truncated += event.properties.truncated;
        out.identifying_redacted += event.properties.redacted;
        match self.sink.admit(event.app, event.event) {
            Ok(()) => {
                out.stored += 1;
                self.sink.push(&event);
            }
            Err(reason) => out.reject(reason),
        }
    }
}

/// A growth event as mapped, borrowing from the request.
#[derive(Debug)]
pub struct Event<'a> {
    /// `service.name`.
    pub app: &'a str,
    /// The event name.
    pub event: &'a str,
    /// When it happened.
    pub event_time: DateTime<Utc>,
    /// The user, hashed; `None` for an anonymous event.
    pub user_hash: Option<UserHash>,
    /// The `source` attribute, or empty.
    pub source: &'a str,
    /// Every other attribute (identifying ones hashed or dropped).
    pub(crate) properties: Properties<'a>,
    /// When the collector received it.
    pub received_at: DateTime<Utc>,
}

impl Event<'_> {
    /// The event as an owned row.
    pub fn to_row(&self) -> EventRow {
        EventRow {
            app: self.app.to_owned(),
            event: self.event.to_owned(),
            event_time: self.event_time,
            user_hash: self
                .user_hash
                .as_ref()
                .map(|h| h.as_str().to_owned())
                .unwrap_or_default(),
            source: self.source.to_owned(),
            properties: self
                .properties
                .text
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_string()))
                .collect(),
            numbers: self
                .properties
                .numbers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            received_at: self.received_at,
        }
    }
}

/// Where a [`Mapper`] puts the events it accepts.
pub trait RowSink<'a> {
    /// Whether an event of `app` named `event` may be stored (e.g. the catalog's
    /// bounds); an error rejects the record for that reason.
    fn admit(&mut self, app: &'a str, event: &'a str) -> Result<(), RejectReason>;
    /// Takes an admitted event.
    fn push(&mut self, event: &Event<'a>);
}

/// Owned rows, every event admitted.
impl<'a> RowSink<'a> for Vec<EventRow> {
    fn admit(&mut self, _app: &'a str, _event: &'a str) -> Result<(), RejectReason> {
        Ok(())
    }

    fn push(&mut self, event: &Event<'a>) {
        self.push(event.to_row());
    }
}

fn build_event<'a>(
    record: &LogRecord<'a, '_>,
    event: &'a str,
    app: Result<&'a str, RejectReason>,
    rules: &MapRules,
    received_at: DateTime<Utc>,
) -> Result<Event<'a>, RejectReason> {
    let attrs = record.attributes;
    let app = app?;
    let user_hash = user_of(attrs, &rules.hasher)?;
    let source = source_of(attrs)?;
    let event_time = time_of(record, received_at)?;
    check_time(event_time, received_at, rules.time_window)?;
    let properties = properties_of(attrs, &rules.privacy, &rules.hasher);
    Ok(Event {
        app,
        event,
        event_time,
        user_hash,
        source,
        properties,
        received_at,
    })
}

/// The first attribute named `key`.
fn attribute<'s, 'a>(attrs: &'s [KeyValue<'a>], key: &str) -> Option<&'s Value<'a>> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// `LogRecord.event_name`, else the `event.name` attribute; `None` when neither names one.
fn event_name<'a>(record: &LogRecord<'a, '_>) -> Option<Result<&'a str, RejectReason>> {
    let name = if record.event_name.is_empty() {
        match attribute(record.attributes, attributes::EVENT_NAME)? {
            Value::StringValue("") => return None,
            Value::StringValue(s) => *s,
            _ => return Some(Err(RejectReason::InvalidEventName)),
        }
    } else {
        record.event_name
    };
    Some(
        if limits::is_valid_name(name, limits::MAX_EVENT_NAME_BYTES) {
            Ok(name)
        } else {
            Err(RejectReason::InvalidEventName)
        },
    )
}

/// The resource's `service.name`, [`UNKNOWN_APP`] when it has none.
fn app_of<'a>(resource_attributes: &[KeyValue<'a>]) -> Result<&'a str, RejectReason> {
    match attribute(resource_attributes, attributes::SERVICE_NAME) {
        None => Ok(UNKNOWN_APP),
        Some(Value::StringValue("")) => Ok(UNKNOWN_APP),
        Some(Value::StringValue(s)) if limits::is_valid_name(s, limits::MAX_APP_BYTES) => Ok(*s),
        Some(_) => Err(RejectReason::InvalidApp),
    }
}

/// `user.hash` if present, else `user.id` hashed, else anonymous (`None`).
fn user_of(attrs: &[KeyValue<'_>], hasher: &UserHasher) -> Result<Option<UserHash>, RejectReason> {
    match attribute(attrs, attributes::USER_HASH) {
        Some(Value::StringValue("")) => {}
        Some(Value::StringValue(s)) => {
            return UserHash::parse(s)
                .map(Some)
                .map_err(|_| RejectReason::InvalidUserHash);
        }
        Some(_) => return Err(RejectReason::InvalidUserHash),
        None => {}
    }
    match attribute(attrs, attributes::USER_ID) {
        None => Ok(None),
        Some(Value::StringValue("")) => Ok(None),
        Some(Value::StringValue(id)) if id.len() <= limits::MAX_USER_ID_BYTES => {
            Ok(Some(hasher.hash(id)))
        }
        Some(Value::IntValue(id)) => Ok(Some(hasher.hash(&id.to_string()))),
        Some(_) => Err(RejectReason::InvalidUserId),
    }
}

/// The `source` attribute, empty when absent.
fn source_of<'a>(attrs: &[KeyValue<'a>]) -> Result<&'a str, RejectReason> {
    match attribute(attrs, attributes::SOURCE) {
        None => Ok(""),
        Some(Value::StringValue("")) => Ok(""),
        Some(Value::StringValue(s)) if limits::is_valid_name(s, limits::MAX_SOURCE_BYTES) => Ok(*s),
        Some(_) => Err(RejectReason::InvalidSource),
    }
}

/// `time_unix_nano`, else `observed_time_unix_nano`, else the receive time.
fn time_of(
    record: &LogRecord<'_, '_>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, RejectReason> {
    let nanos = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|n| *n != 0);
    match nanos {
        None => Ok(received_at),
        Some(n) => i64::try_from(n)
            .map(DateTime::from_timestamp_nanos)
            .map_err(|_| RejectReason::InvalidTime),
    }
}

/// Rejects an event time outside `window` around the receive time.
fn check_time(
    event_time: DateTime<Utc>,
    received_at: DateTime<Utc>,
    window: TimeWindow,
) -> Result<(), RejectReason> {
    let delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    let oldest = received_at.checked_sub_signed(delta(window.max_age));
    let newest = received_at.checked_add_signed(delta(window.max_skew));
    if oldest.is_some_and(|oldest| event_time < oldest) {
        return Err(RejectReason::TimeTooOld);
    }
    if newest.is_some_and(|newest| event_time > newest) {
        return Err(RejectReason::TimeInFuture);
    }
    Ok(())
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
