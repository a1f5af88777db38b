//! A batch of encoded records → the bytes of one `ExportLogsServiceRequest`.
//!
//! The resource (`service.name` and the other resource attributes) and the
//! instrumentation scope are encoded once, when the tracker is built; a request
//! is their frames followed by the records' own framed bytes, copied once.
//! Copying a record in is where its user is hashed ([`EncodedRecord::seal`]):
//! on the delivery thread, off `track`'s path.

use growth_schema::user_hash::UserHasher;

use crate::record::EncodedRecord;
use crate::wire;

/// `ExportLogsServiceRequest.resource_logs`.
const RESOURCE_LOGS: u32 = 1;
/// `ResourceLogs.resource`, `ResourceLogs.scope_logs`.
const RESOURCE: u32 = 1;
const SCOPE_LOGS: u32 = 2;
/// `Resource.attributes`; `ScopeLogs.scope`.
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE: u32 = 1;
/// `InstrumentationScope.name`, `.version`.
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;

/// The parts every request of one tracker shares.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    /// `ResourceLogs.resource`, framed.
    resource: Vec<u8>,
    /// `ScopeLogs.scope`, framed.
    scope: Vec<u8>,
    /// Hashes the users of the records as they are copied in.
    hasher: UserHasher,
    /// During a key rotation's overlap, the previous key (`user.hash.previous`).
    previous: Option<UserHasher>,
}

impl RequestTemplate {
    /// `resource` holds `service.name` and any other resource attributes.
    pub(crate) fn new(resource: &[(String, String)], hasher: UserHasher) -> Self {
        Self::with_previous(resource, hasher, None)
    }

    /// [`new`](Self::new) with a key rotation's previous key.
    pub(crate) fn with_previous(
        resource: &[(String, String)],
        hasher: UserHasher,
        previous: Option<UserHasher>,
    ) -> Self {
        let mut attributes = Vec::new();
        for (key, value) in resource {
            let any_value = wire::len_field(1, value.len());
            wire::put_len_prefix(
                &mut attributes,
                RESOURCE_ATTRIBUTES,
                wire::len_field(1, key.len()) + wire::len_field(2, any_value),
            );
            wire::put_bytes(&mut attributes, 1, key.as_bytes());
            wire::put_len_prefix(&mut attributes, 2, any_value);
            wire::put_bytes(&mut attributes, 1, value.as_bytes());
        }
        let mut resource = Vec::new();
        wire::put_bytes(&mut resource, RESOURCE, &attributes);

        let mut scope_fields = Vec::new();
        wire::put_bytes(
            &mut scope_fields,
            SCOPE_NAME,
            env!("CARGO_PKG_NAME").as_bytes(),
        );
        wire::put_bytes(
            &mut scope_fields,
            SCOPE_VERSION,
            env!("CARGO_PKG_VERSION").as_bytes(),
        );
        let mut scope = Vec::new();
        wire::put_bytes(&mut scope, SCOPE, &scope_fields);
        RequestTemplate {
            resource,
            scope,
            hasher,
            previous,
        }
    }

    /// Bytes a request adds around its records (for batch sizing).
    pub(crate) fn overhead(&self) -> usize {
        self.resource.len() + self.scope.len() + 16
    }

    /// The request carrying `records` (sealed on the way), whose framed sizes
    /// add up to `records_len`.
    pub(crate) fn encode(&self, records: &mut [EncodedRecord], records_len: usize) -> Vec<u8> {
        let scope_logs = self.scope.len() + records_len;
        let resource_logs = self.resource.len() + wire::len_field(SCOPE_LOGS, scope_logs);
        let mut body = Vec::with_capacity(wire::len_field(RESOURCE_LOGS, resource_logs));
        wire::put_len_prefix(&mut body, RESOURCE_LOGS, resource_logs);
        body.extend_from_slice(&self.resource);
        wire::put_len_prefix(&mut body, SCOPE_LOGS, scope_logs);
        body.extend_from_slice(&self.scope);
        for record in records {
            body.extend_from_slice(record.seal_with(&self.hasher, self.previous.as_ref()));
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use growth_schema::user_hash::UserHasher;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    use super::*;
    use crate::event::AttributeValue;
    use crate::record::{EventParts, UserRef, encode};

    #[test]
    fn decodes_as_one_resource_one_scope_and_every_record() {
        let hasher = UserHasher::new(Some(b"k".to_vec()));
        let template = RequestTemplate::new(
            &[
                ("service.name".into(), "finbrain".into()),
                ("deployment.environment".into(), "test".into()),
            ],
            hasher.clone(),
        );
        let no_attributes: [(&str, AttributeValue); 0] = [];
        let mut records: Vec<EncodedRecord> = (0..300)
            .map(|i| {
                let name = format!("event_{i}");
                let parts = EventParts {
                    name: &name,
                    user: UserRef::Id("u1"),
                    source: None,
                    attributes: &no_attributes,
                    timestamp: None,
                };
                encode(&parts, SystemTime::now()).unwrap().record
            })
            .collect();
        let len = records.iter().map(EncodedRecord::len).sum();
        let body = template.encode(&mut records, len);
        let request = ExportLogsServiceRequest::decode(&body[..]).expect("valid request");
        assert_eq!(request.resource_logs.len(), 1);
        let resource_logs = &request.resource_logs[0];
        let resource = resource_logs.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        assert_eq!(
            resource.attributes[0].value.as_ref().unwrap().value,
            Some(Value::StringValue("finbrain".into()))
        );
        assert_eq!(resource.attributes.len(), 2);
        let scope_logs = &resource_logs.scope_logs[0];
        assert_eq!(scope_logs.scope.as_ref().unwrap().name, "growth-sdk");
        assert_eq!(scope_logs.log_records.len(), 300);
        assert_eq!(scope_logs.log_records[299].event_name, "event_299");
        // Every record's user was hashed on the way in (by the template's hasher).
        let hash = hasher.hash("u1");
        for record in &scope_logs.log_records {
            let user = record.attributes.iter().find(|kv| kv.key == "user.hash");
            let value = user
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref());
            assert_eq!(value, Some(&Value::StringValue(hash.as_str().into())));
        }
    }
}
