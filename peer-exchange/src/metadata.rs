//! The exchange payload: `Any(Struct)` with `x-envoy-peer-metadata` (the
//! wire workload struct, see [`crate::workload`]) and
//! `x-envoy-peer-metadata-id` (the node id).

use std::collections::BTreeMap;
use std::fmt;

use proto::prost::Message;
use proto::prost_types::{value::Kind, Any, Struct, Value};

/// Key of the workload metadata struct in the payload.
pub const PEER_METADATA_KEY: &str = "x-envoy-peer-metadata";
/// Key of the node id in the payload.
pub const PEER_METADATA_ID_KEY: &str = "x-envoy-peer-metadata-id";
/// The message name an `Any`'s type URL must end with (after its last `/`).
const STRUCT_TYPE_NAME: &str = "google.protobuf.Struct";

/// The serialized `Any(Struct)` payload. Struct fields are a BTreeMap, so the
/// same metadata always gives the same bytes (protobuf's deterministic order).
pub fn encode_payload(wire: &Struct, node_id: &str) -> Vec<u8> {
    let mut fields = BTreeMap::new();
    fields.insert(PEER_METADATA_KEY.to_string(), Value { kind: Some(Kind::StructValue(wire.clone())) });
    if !node_id.is_empty() {
        fields.insert(PEER_METADATA_ID_KEY.to_string(), Value { kind: Some(Kind::StringValue(node_id.to_string())) });
    }
    Any { type_url: proto::STRUCT_TYPE_URL.to_string(), value: Struct { fields }.encode_to_vec() }.encode_to_vec()
}

/// What the peer's payload carried.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerMetadata {
    /// The peer's wire workload struct.
    pub metadata: Struct,
    pub id: Option<String>,
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
            PayloadError::WrongType(t) => write!(f, "payload type is \"{t}\", not .../{STRUCT_TYPE_NAME}"),
            PayloadError::NotStruct(e) => write!(f, "payload is not a protobuf Struct: {e}"),
        }
    }
}

/// Whether an `Any`'s type URL names `google.protobuf.Struct`, whatever its
/// host part (protobuf's own rule: the name after the last `/`).
fn is_struct_type_url(type_url: &str) -> bool {
    type_url.rsplit_once('/').is_some_and(|(_, name)| name == STRUCT_TYPE_NAME)
}

/// Parses a peer's payload. `Ok(None)`: a well-formed payload without an
/// `x-envoy-peer-metadata` struct, which native treats as no peer.
pub fn decode_payload(payload: &[u8]) -> Result<Option<PeerMetadata>, PayloadError> {
    let any = Any::decode(payload).map_err(|e| PayloadError::NotAny(e.to_string()))?;
    if !is_struct_type_url(&any.type_url) {
        return Err(PayloadError::WrongType(any.type_url));
    }
    let mut data = Struct::decode(any.value.as_slice()).map_err(|e| PayloadError::NotStruct(e.to_string()))?;
    let Some(Kind::StructValue(metadata)) = data.fields.remove(PEER_METADATA_KEY).and_then(|v| v.kind) else {
        return Ok(None);
    };
    let id = match data.fields.remove(PEER_METADATA_ID_KEY).and_then(|v| v.kind) {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    };
    Ok(Some(PeerMetadata { metadata, id }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;
    use proptest::prelude::*;

    fn sample() -> Struct {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), Value { kind: Some(Kind::StringValue("productpage".into())) });
        let mut fields = BTreeMap::new();
        fields.insert("NAME".to_string(), Value { kind: Some(Kind::StringValue("productpage-v1-123".into())) });
        fields.insert("LABELS".to_string(), Value { kind: Some(Kind::StructValue(Struct { fields: labels })) });
        Struct { fields }
    }

    #[test]
    fn payload_round_trips() {
        let bytes = encode_payload(&sample(), "sidecar~10.0.0.1~pp.default~default.svc.cluster.local");
        let peer = decode_payload(&bytes).unwrap().unwrap();
        assert_eq!(peer.id.as_deref(), Some("sidecar~10.0.0.1~pp.default~default.svc.cluster.local"));
        assert_eq!(peer.metadata, sample());
    }

    #[test]
    fn payload_bytes_are_deterministic() {
        let w = Workload::read(&sample(), &[], None);
        assert_eq!(encode_payload(&w.to_wire(), "id"), encode_payload(&w.clone().to_wire(), "id"));
        assert_eq!(encode_payload(&sample(), "id"), encode_payload(&sample(), "id"));
    }

    #[test]
    fn a_struct_without_peer_metadata_is_a_payload_without_a_peer() {
        let any = Any { type_url: proto::STRUCT_TYPE_URL.into(), value: Struct::default().encode_to_vec() };
        assert_eq!(decode_payload(&any.encode_to_vec()), Ok(None));
        let mut fields = BTreeMap::new();
        fields.insert(PEER_METADATA_KEY.to_string(), Value { kind: Some(Kind::StringValue("not a struct".into())) });
        let any = Any { type_url: proto::STRUCT_TYPE_URL.into(), value: Struct { fields }.encode_to_vec() };
        assert_eq!(decode_payload(&any.encode_to_vec()), Ok(None));
    }

    #[test]
    fn any_host_part_of_the_type_url_is_accepted() {
        for url in ["example.com/google.protobuf.Struct", "/google.protobuf.Struct", proto::STRUCT_TYPE_URL] {
            let any = Any { type_url: url.into(), value: Struct::default().encode_to_vec() };
            assert!(decode_payload(&any.encode_to_vec()).is_ok(), "{url}");
        }
        for url in
            ["google.protobuf.Struct", "type.googleapis.com/google.protobuf.Empty", "x/google.protobuf.Structs", ""]
        {
            let any = Any { type_url: url.into(), value: vec![] };
            assert!(matches!(decode_payload(&any.encode_to_vec()), Err(PayloadError::WrongType(_))), "{url}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
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
