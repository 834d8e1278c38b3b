//! From a peer's payload bytes to what is stored for it, remembered per VM.
//!
//! A mesh has few distinct workloads and each sends the same payload on
//! every connection, so decoding, normalising and re-encoding the peer once
//! per distinct payload (not once per connection) takes that work off the
//! per-connection path. The key is the payload itself, so a peer whose
//! metadata changes is simply a new entry; the map is bounded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proto::prost::Message;

use proto::prost_types::Struct;

use crate::headers::{decode_metadata_header, max_header_len, HeaderError, PeerHeaders};
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

/// What a pair of exchange headers decodes to.
pub type DecodedHeaders = Result<Rc<StoredPeer>, HeaderError>;

/// Distinct payloads remembered; past this the map starts over.
const MAX_CACHED: usize = 256;
/// Larger payloads are decoded every time rather than kept.
const MAX_CACHED_PAYLOAD: usize = 4096;

/// A bounded map from input bytes to what they decoded to.
struct Cache<T> {
    entries: HashMap<Vec<u8>, T>,
}

impl<T: Clone> Cache<T> {
    fn new() -> Self {
        Cache { entries: HashMap::new() }
    }

    fn get_or_decode(&mut self, key: &[u8], decode: impl FnOnce() -> T) -> T {
        if let Some(hit) = self.entries.get(key) {
            return hit.clone();
        }
        let decoded = decode();
        if key.len() <= MAX_CACHED_PAYLOAD {
            if self.entries.len() >= MAX_CACHED {
                self.entries.clear();
            }
            self.entries.insert(key.to_vec(), decoded.clone());
        }
        decoded
    }
}

pub struct PeerDecoder {
    additional_labels: Vec<String>,
    /// TCP payloads.
    payloads: Cache<Decoded>,
    /// Header pairs, keyed by id, NUL, metadata value (header values hold no NUL).
    headers: Cache<DecodedHeaders>,
}

impl PeerDecoder {
    pub fn new(additional_labels: Vec<String>) -> Self {
        PeerDecoder { additional_labels, payloads: Cache::new(), headers: Cache::new() }
    }

    /// A TCP exchange payload.
    pub fn decode(&mut self, payload: &[u8]) -> Decoded {
        let labels = &self.additional_labels;
        self.payloads.get_or_decode(payload, || {
            let Some(peer) = decode_payload(payload)? else {
                return Ok(None);
            };
            Ok(Some(stored_peer(&peer.metadata, peer.id, labels)))
        })
    }

    /// The exchange headers (the metadata header must be there; the id is
    /// optional). `max_payload` bounds the decoded Struct.
    pub fn decode_headers(&mut self, metadata: &[u8], id: Option<&[u8]>, max_payload: usize) -> DecodedHeaders {
        let max = max_header_len(max_payload);
        if metadata.len() > max {
            // Before the cache: the limit is not part of its key.
            return Err(HeaderError::TooLarge { len: metadata.len(), max });
        }
        let labels = &self.additional_labels;
        let id = id.unwrap_or_default();
        let mut key = Vec::with_capacity(id.len() + 1 + metadata.len());
        key.extend_from_slice(id);
        key.push(0);
        key.extend_from_slice(metadata);
        self.headers.get_or_decode(&key, || {
            let wire = decode_metadata_header(metadata, max_payload)?;
            let id = (!id.is_empty()).then(|| String::from_utf8_lossy(id).into_owned());
            Ok(stored_peer(&wire, id, labels))
        })
    }

    /// Convenience for [`PeerHeaders`] that carry the metadata header.
    pub fn decode_peer_headers(&mut self, headers: &PeerHeaders<'_>, max_payload: usize) -> Option<DecodedHeaders> {
        headers.metadata.map(|metadata| self.decode_headers(metadata, headers.id, max_payload))
    }
}

/// Runs `f` with the VM's shared decoder, or, should it already be borrowed
/// (it never is across a hostcall), with a one-off decoder that does the same
/// work without the cache.
pub fn with_decoder<R>(
    shared: &RefCell<PeerDecoder>,
    additional_labels: &[String],
    f: impl FnOnce(&mut PeerDecoder) -> R,
) -> R {
    match shared.try_borrow_mut() {
        Ok(mut peers) => f(&mut peers),
        Err(_) => f(&mut PeerDecoder::new(additional_labels.to_vec())),
    }
}

fn stored_peer(wire: &Struct, id: Option<String>, additional_labels: &[String]) -> Rc<StoredPeer> {
    let workload = Workload::read(wire, additional_labels, None);
    Rc::new(StoredPeer {
        stored: workload.to_peer_struct(PeerSource::Exchange).encode_to_vec(),
        id,
        namespace: workload.namespace,
        name: workload.name,
    })
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
            assert!(d.payloads.entries.len() <= MAX_CACHED);
        }
    }

    #[test]
    fn headers_decode_to_the_same_stored_peer_as_the_payload() {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let wire = Struct { fields: [("NAME".to_string(), s("a")), ("NAMESPACE".to_string(), s("ns"))].into() };
        let value = crate::headers::encode_metadata_header(&wire);
        let mut d = PeerDecoder::new(vec![]);
        let from_headers = d.decode_headers(value.as_bytes(), Some(b"id-1"), 4096).unwrap();
        let from_payload = d.decode(&payload("a")).unwrap().unwrap();
        assert_eq!(from_headers, from_payload);
        let again = d.decode_headers(value.as_bytes(), Some(b"id-1"), 4096).unwrap();
        assert!(Rc::ptr_eq(&from_headers, &again));
        let other_id = d.decode_headers(value.as_bytes(), Some(b"id-2"), 4096).unwrap();
        assert_eq!(other_id.id.as_deref(), Some("id-2"), "a new id under the same metadata is not ignored");
        assert_eq!(d.decode_headers(value.as_bytes(), Some(b""), 4096).unwrap().id, None);
        assert!(d.decode_headers(b"not base64!", None, 4096).is_err());
    }
}
