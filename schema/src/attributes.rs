//! OpenTelemetry attribute names of the growth event contract (docs/contract.md, "Event contract").
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

/// Name of the event an app sends when a visitor becomes a known user (signs up):
/// `user.hash` is the new user, [`ANONYMOUS_HASH`] the visitor's earlier id.
pub const IDENTIFY_EVENT: &str = "identify";
/// Attribute of [`IDENTIFY_EVENT`]: the hashed anonymous (pre-sign-up) id.
pub const ANONYMOUS_HASH: &str = "anonymous.hash";
/// Attribute of [`IDENTIFY_EVENT`]: the raw anonymous id; the collector hashes it
/// (with the user-hash key) into [`ANONYMOUS_HASH`] and never stores it raw.
pub const ANONYMOUS_ID: &str = "anonymous.id";
/// Name of the event that merges two known users into one person: `user.hash` is the
/// surviving user, [`MERGED_HASH`] the one merged into it (docs/contract.md, "People").
pub const MERGE_EVENT: &str = "merge";
/// Attribute of [`MERGE_EVENT`]: the hashed known id merged into the event's user.
pub const MERGED_HASH: &str = "merged.hash";
/// Attribute of [`MERGE_EVENT`]: the raw merged id; hashed by the collector into
/// [`MERGED_HASH`], never stored raw.
pub const MERGED_ID: &str = "merged.id";

/// Raw-id attributes the collector hashes into their `*.hash` twin (which wins when
/// both are sent): `(raw, hashed)`.
pub const HASHED_TWINS: [(&str, &str); 2] =
    [(ANONYMOUS_ID, ANONYMOUS_HASH), (MERGED_ID, MERGED_HASH)];

/// Attributes that map to dedicated columns and are therefore not kept as properties.
pub const RESERVED: [&str; 4] = [EVENT_NAME, USER_HASH, USER_ID, SOURCE];

/// Returns true when `key` is one of the contract's own attributes.
pub fn is_reserved(key: &str) -> bool {
    RESERVED.contains(&key)
}

/// Attributes that identify a person (or the device or address they use) by the
/// OpenTelemetry semantic conventions, besides [`USER_ID`]. The collector never
/// stores their values raw: it hashes them like a user id (or drops them, as
/// configured), at the top level of a record and inside nested maps and arrays.
/// Deployments add their own names with `--identifying-attributes`.
///
/// * `enduser.*` — the end user of the service (semconv "enduser" namespace);
/// * `user.*` — the user's email, name, full name and id (semconv "user" namespace);
///   `user.hash` is not here: it is the contract's already-hashed user;
/// * `client.address`, `source.address`, `network.peer.address` and their older
///   names (`net.peer.ip`, `net.sock.peer.addr`, `http.client_ip`) — the IP address
///   a request came from is personal data;
/// * `device.id` — a device's unique identifier.
pub const IDENTIFYING: [&str; 14] = [
    USER_ID,
    "enduser.id",
    "enduser.pseudo.id",
    "user.email",
    "user.name",
    "user.full_name",
    "client.address",
    "client.socket.address",
    "source.address",
    "network.peer.address",
    "net.peer.ip",
    "net.sock.peer.addr",
    "http.client_ip",
    "device.id",
];

/// Returns true when `key` names an attribute of [`IDENTIFYING`] (ASCII case ignored).
pub fn is_identifying(key: &str) -> bool {
    IDENTIFYING
        .iter()
        .any(|name| name.eq_ignore_ascii_case(key))
}
