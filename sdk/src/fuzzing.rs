//! Entry points for the fuzz targets (`fuzz/`, run by `scripts/fuzz`) that are not
//! public API otherwise. Hidden from the docs; nothing in the SDK uses it.

use std::time::SystemTime;

use growth_schema::user_hash::UserHasher;

use crate::event::{Event, User};
use crate::record::{self, EventParts, UserRef};
use crate::request::RequestTemplate;

/// Encodes `events` into the bytes of one `ExportLogsServiceRequest` the way
/// `track_event` and the delivery thread do between them (hand-written protobuf,
/// users hashed with `hasher`), observed at `now`. Also returns, per event, the
/// attributes it dropped, or `None` when its name was refused and it was left out.
pub fn encode_request(
    resource: &[(String, String)],
    hasher: UserHasher,
    events: &[Event],
    now: SystemTime,
) -> (Vec<u8>, Vec<Option<u64>>) {
    let mut records = Vec::new();
    let mut dropped = Vec::with_capacity(events.len());
    for event in events {
        let parts = EventParts {
            name: &event.name,
            user: match &event.user {
                None => UserRef::Anonymous,
                Some(User::Id(id)) => UserRef::Id(id),
                Some(User::Hash(hash)) => UserRef::Hash(hash),
            },
            source: event.source.as_deref(),
            attributes: &event.attributes,
            timestamp: event.timestamp,
        };
        match record::encode(&parts, now) {
            Ok(encoded) => {
                dropped.push(Some(encoded.attributes_dropped));
                records.push(encoded.record);
            }
            Err(record::InvalidEventName) => dropped.push(None),
        }
    }
    let len = records.iter().map(|r| r.len()).sum();
    let body = RequestTemplate::new(resource, hasher).encode(&mut records, len);
    (body, dropped)
}
