//! Workload metadata and the exchange payload: `Any(Struct)` with
//! `x-envoy-peer-metadata` (the workload struct) and `x-envoy-peer-metadata-id`.

use std::collections::BTreeMap;
use std::fmt;

use proto::prost::Message;
use proto::prost_types::{value::Kind, Any, Struct, Value};

/// Key of the workload metadata struct in the payload.
pub const PEER_METADATA_KEY: &str = "x-envoy-peer-metadata";
/// Key of the node id in the payload.
pub const PEER_METADATA_ID_KEY: &str = "x-envoy-peer-metadata-id";

/// The string fields of Istio's workload metadata, in Istio's names.
pub const WORKLOAD_FIELDS: [&str; 8] =
    ["NAME", "NAMESPACE", "WORKLOAD_NAME", "CLUSTER_ID", "IDENTITY", "OWNER", "REGION", "AVAILABILITY_ZONE"];
/// The struct field holding the labels.
pub const LABELS_FIELD: &str = "LABELS";
/// Labels Istio always sends (plus `additional_labels`).
pub const STANDARD_LABELS: [&str; 4] =
    ["service.istio.io/canonical-name", "service.istio.io/canonical-revision", "app", "version"];

/// This proxy's workload metadata: only Istio's named fields, never the rest
/// of the node metadata. Empty values are left out, as Istio does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadMetadata {
    fields: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl WorkloadMetadata {
    /// Sets one of [`WORKLOAD_FIELDS`]; other names and empty values are ignored.
    pub fn set_field(&mut self, name: &str, value: &str) {
        if WORKLOAD_FIELDS.contains(&name) && !value.is_empty() {
            self.fields.insert(name.to_string(), value.to_string());
        }
    }

    pub fn set_label(&mut self, name: &str, value: &str) {
        if !name.is_empty() && !value.is_empty() {
            self.labels.insert(name.to_string(), value.to_string());
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub fn to_struct(&self) -> Struct {
        let mut fields: BTreeMap<String, Value> =
            self.fields.iter().map(|(k, v)| (k.clone(), string_value(v))).collect();
        if !self.labels.is_empty() {
            let labels = self.labels.iter().map(|(k, v)| (k.clone(), string_value(v))).collect();
            fields.insert(LABELS_FIELD.to_string(), Value { kind: Some(Kind::StructValue(Struct { fields: labels })) });
        }
        Struct { fields }
    }
}

fn string_value(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_string())) }
}

/// The serialized `Any(Struct)` payload. Struct fields are a BTreeMap, so the
/// same metadata always gives the same bytes (protobuf's deterministic order).
pub fn encode_payload(metadata: &WorkloadMetadata, node_id: &str) -> Vec<u8> {
    let mut fields = BTreeMap::new();
    fields.insert(PEER_METADATA_KEY.to_string(), Value { kind: Some(Kind::StructValue(metadata.to_struct())) });
    if !node_id.is_empty() {
        fields.insert(PEER_METADATA_ID_KEY.to_string(), string_value(node_id));
    }
    Any { type_url: proto::STRUCT_TYPE_URL.to_string(), value: Struct { fields }.encode_to_vec() }.encode_to_vec()
}

/// What the peer told us.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerMetadata {
    /// The peer's workload struct (empty when it sent none).
    pub metadata: Struct,
    pub id: Option<String>,
}

impl PeerMetadata {
    /// The peer's struct, serialized for filter state.
    pub fn metadata_bytes(&self) -> Vec<u8> {
        self.metadata.encode_to_vec()
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        match self.metadata.fields.get(name).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => Some(s),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadError {
    NotAny(String),
    WrongType(String),
    NotStruct(String),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::NotAny(e) => write!(f, "payload is not a protobuf Any: {e}"),
            PayloadError::WrongType(t) => write!(f, "payload type is {t:?}, not {}", proto::STRUCT_TYPE_URL),
            PayloadError::NotStruct(e) => write!(f, "payload is not a protobuf Struct: {e}"),
        }
    }
}

/// Parses a peer's payload. A struct without our keys is a valid (empty) peer.
pub fn decode_payload(payload: &[u8]) -> Result<PeerMetadata, PayloadError> {
    let any = Any::decode(payload).map_err(|e| PayloadError::NotAny(e.to_string()))?;
    if any.type_url != proto::STRUCT_TYPE_URL {
        return Err(PayloadError::WrongType(any.type_url));
    }
    let mut data = Struct::decode(any.value.as_slice()).map_err(|e| PayloadError::NotStruct(e.to_string()))?;
    let metadata = match data.fields.remove(PEER_METADATA_KEY).and_then(|v| v.kind) {
        Some(Kind::StructValue(s)) => s,
        _ => Struct::default(),
    };
    let id = match data.fields.remove(PEER_METADATA_ID_KEY).and_then(|v| v.kind) {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    };
    Ok(PeerMetadata { metadata, id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> WorkloadMetadata {
        let mut m = WorkloadMetadata::default();
        m.set_field("NAME", "productpage-v1-123");
        m.set_field("NAMESPACE", "default");
        m.set_field("CLUSTER_ID", "");
        m.set_field("PLATFORM_METADATA", "leak");
        m.set_label("app", "productpage");
        m.set_label("version", "");
        m
    }

    #[test]
    fn only_named_non_empty_fields_are_kept() {
        let s = sample().to_struct();
        let keys: Vec<_> = s.fields.keys().cloned().collect();
        assert_eq!(keys, ["LABELS", "NAME", "NAMESPACE"]);
    }

    #[test]
    fn payload_round_trips() {
        let bytes = encode_payload(&sample(), "sidecar~10.0.0.1~pp.default~default.svc.cluster.local");
        let peer = decode_payload(&bytes).unwrap();
        assert_eq!(peer.id.as_deref(), Some("sidecar~10.0.0.1~pp.default~default.svc.cluster.local"));
        assert_eq!(peer.metadata, sample().to_struct());
        assert_eq!(peer.field("NAME"), Some("productpage-v1-123"));
    }

    #[test]
    fn payload_bytes_are_deterministic_whatever_the_insertion_order() {
        let mut a = WorkloadMetadata::default();
        a.set_field("NAMESPACE", "ns");
        a.set_field("NAME", "n");
        a.set_label("version", "v1");
        a.set_label("app", "x");
        let mut b = WorkloadMetadata::default();
        b.set_label("app", "x");
        b.set_label("version", "v1");
        b.set_field("NAME", "n");
        b.set_field("NAMESPACE", "ns");
        assert_eq!(encode_payload(&a, "id"), encode_payload(&b, "id"));
    }

    #[test]
    fn wrong_type_or_garbage_is_an_error() {
        let any = Any { type_url: "type.googleapis.com/google.protobuf.Empty".into(), value: vec![] };
        assert!(matches!(decode_payload(&any.encode_to_vec()), Err(PayloadError::WrongType(_))));
        assert!(matches!(decode_payload(&[0xff, 0xff]), Err(PayloadError::NotAny(_))));
        let any = Any { type_url: proto::STRUCT_TYPE_URL.into(), value: vec![0x0a, 0x05, 0x01] };
        assert!(matches!(decode_payload(&any.encode_to_vec()), Err(PayloadError::NotStruct(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_payload_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_payload(&bytes);
        }
    }
}
