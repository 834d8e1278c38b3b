//! From a peer's payload bytes to what is stored for it, remembered per VM.
//!
//! A mesh has few distinct workloads and each sends the same payload on
//! every connection, so decoding, normalising and re-encoding the peer once
//! per distinct payload (not once per connection) takes that work off the
//! per-connection path. The key is the payload itself, so a peer whose
//! metadata changes is simply a new entry; the map is bounded.

use std::collections::HashMap;
use std::rc::Rc;

use proto::prost::Message;

use crate::metadata::{decode_payload, PayloadError};
use crate::workload::{PeerSource, Workload};

/// A peer as it is stored in filter state.
#[derive(Debug, PartialEq)]
pub struct StoredPeer {
    /// The serialized lowercase Struct (native's schema, `source: exchange`).
    pub stored: Vec<u8>,
    /// The node id, if the peer sent one.
    pub id: Option<String>,
    /// For log lines.
    pub namespace: String,
    pub name: String,
}

/// What a payload decodes to: a peer, no peer (a well-formed payload without
/// `x-envoy-peer-metadata`), or an error.
pub type Decoded = Result<Option<Rc<StoredPeer>>, PayloadError>;

/// Distinct payloads remembered; past this the map starts over.
const MAX_CACHED: usize = 256;
/// Larger payloads are decoded every time rather than kept.
const MAX_CACHED_PAYLOAD: usize = 4096;

pub struct PeerDecoder {
    additional_labels: Vec<String>,
    cache: HashMap<Vec<u8>, Decoded>,
}

impl PeerDecoder {
    pub fn new(additional_labels: Vec<String>) -> Self {
        PeerDecoder { additional_labels, cache: HashMap::new() }
    }

    pub fn decode(&mut self, payload: &[u8]) -> Decoded {
        if let Some(hit) = self.cache.get(payload) {
            return hit.clone();
        }
        let decoded = self.decode_uncached(payload);
        if payload.len() <= MAX_CACHED_PAYLOAD {
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            self.cache.insert(payload.to_vec(), decoded.clone());
        }
        decoded
    }

    fn decode_uncached(&self, payload: &[u8]) -> Decoded {
        let Some(peer) = decode_payload(payload)? else {
            return Ok(None);
        };
        let workload = Workload::read(&peer.metadata, &self.additional_labels, None);
        Ok(Some(Rc::new(StoredPeer {
            stored: workload.to_peer_struct(PeerSource::Exchange).encode_to_vec(),
            id: peer.id,
            namespace: workload.namespace,
            name: workload.name,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::encode_payload;
    use proto::prost_types::{value::Kind, Struct, Value};

    fn payload(name: &str) -> Vec<u8> {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let wire = Struct { fields: [("NAME".to_string(), s(name)), ("NAMESPACE".to_string(), s("ns"))].into() };
        encode_payload(&wire, "id-1")
    }

    #[test]
    fn the_same_payload_decodes_once_and_gives_the_same_peer() {
        let mut d = PeerDecoder::new(vec![]);
        let a = d.decode(&payload("a")).unwrap().unwrap();
        let again = d.decode(&payload("a")).unwrap().unwrap();
        assert!(Rc::ptr_eq(&a, &again));
        assert_eq!((a.name.as_str(), a.namespace.as_str(), a.id.as_deref()), ("a", "ns", Some("id-1")));
        let b = d.decode(&payload("b")).unwrap().unwrap();
        assert_eq!(b.name, "b");
        assert!(d.decode(&[0xff]).is_err());
        assert!(d.decode(&[0xff]).is_err(), "errors are remembered too");
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut d = PeerDecoder::new(vec![]);
        for i in 0..(MAX_CACHED * 3) {
            d.decode(&payload(&i.to_string())).unwrap();
            assert!(d.cache.len() <= MAX_CACHED);
        }
    }
}
