//! OpenTelemetry attribute names of the growth event contract (DESIGN.md, "Event contract").
//!
//! Any OpenTelemetry SDK produces a growth event with stock APIs by emitting a log
//! record that carries these attributes; nothing else is needed.

/// Attribute holding the event name when `LogRecord.event_name` is empty.
pub const EVENT_NAME: &str = "event.name";
/// Attribute holding an already hashed user: 64 lowercase hex characters.
pub const USER_HASH: &str = "user.hash";
/// Attribute holding a raw user id; hashed by the collector and never stored.
pub const USER_ID: &str = "user.id";
/// Attribute naming where the event came from (e.g. `messenger`, `form`, `pwa`).
pub const SOURCE: &str = "source";
/// Resource attribute naming the application.
pub const SERVICE_NAME: &str = "service.name";

/// Attributes that map to dedicated columns and are therefore not kept as properties.
pub const RESERVED: [&str; 4] = [EVENT_NAME, USER_HASH, USER_ID, SOURCE];

/// Returns true when `key` is one of the contract's own attributes.
pub fn is_reserved(key: &str) -> bool {
    RESERVED.contains(&key)
}
