//! From a peer's payload bytes (or headers) and its certificate to what is
//! stored for it, remembered per VM.
//!
//! A mesh has few distinct workloads and each sends the same payload on
//! every connection under the same certificate, so decoding, normalising,
//! checking the identity ([`crate::identity`]) and re-encoding the peer once
//! per distinct (certificate URI SAN, payload) takes that work off the
//! per-connection path. The key is those bytes themselves, so a peer whose
//! metadata or certificate changes is simply a new entry; the map is bounded.

use filter_common::bounded::BoundedMap;
use std::cell::RefCell;
use std::rc::Rc;

use proto::prost::Message;

use crate::baggage::{self, BaggageError};
use crate::config::Config;
use crate::headers::{decode_metadata_header, max_header_len, HeaderError, PeerHeaders};
use crate::identity::{annotate, certificate_peer, judge, Belief, IdentityCheck, Verification};
use crate::istio_stats::WorkloadLabels;
use crate::metadata::{decode_payload, PayloadError};
use crate::workload::{PeerSource, Workload};

/// A peer as it is stored in filter state.
#[derive(Debug, PartialEq)]
pub struct StoredPeer {
    /// The serialized lowercase Struct (native's schema, `source: exchange`,
    /// the identity check's fields); `None`: nothing is stored, the peer is
    /// not found (`identity_check: enforce` without a certificate).
    pub stored: Option<Vec<u8>>,
    /// The same Struct as JSON text when the decoder is asked for it
    /// (`peer_json`); empty otherwise, and when nothing is stored.
    pub json: String,
    /// The node id the peer sent, unless only its certificate is believed.
    pub id: Option<String>,
    /// What the peer claims, for log lines.
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// What the identity check found (`None`: `identity_check: off`).
    pub verification: Option<Verification>,
    /// The stored peer's fields as Istio's metric labels read them.
    pub labels: Rc<WorkloadLabels>,
}

/// What a payload decodes to: a peer, no peer (a well-formed payload without
/// `x-envoy-peer-metadata`), or an error.
pub type Decoded = Result<Option<Rc<StoredPeer>>, PayloadError>;

/// What a pair of exchange headers decodes to.
pub type DecodedHeaders = Result<Rc<StoredPeer>, HeaderError>;

/// What a `baggage` value decodes to.
pub type DecodedBaggage = Result<Rc<StoredPeer>, BaggageError>;

/// Distinct payloads remembered; past this the map starts over.
const MAX_CACHED: usize = 256;
/// Larger payloads are decoded every time rather than kept.
const MAX_CACHED_PAYLOAD: usize = 4096;

/// Input bytes → what they decoded to; inputs over [`MAX_CACHED_PAYLOAD`]
/// are not kept.
struct Cache<T> {
    entries: BoundedMap<Vec<u8>, T>,
}

impl<T: Clone> Cache<T> {
    fn new() -> Self {
        Cache { entries: BoundedMap::new(MAX_CACHED) }
    }

    fn get_or_decode(&mut self, key: &[u8], decode: impl FnOnce() -> T) -> T {
        if let Some(hit) = self.entries.get(key) {
            return hit.clone();
        }
        let decoded = decode();
        if key.len() <= MAX_CACHED_PAYLOAD {
            self.entries.insert(key.to_vec(), decoded.clone());
        }
        decoded
    }
}

pub struct PeerDecoder {
    additional_labels: Vec<String>,
    identity_check: IdentityCheck,
    /// Also write each stored peer as JSON text (`peer_json`).
    peer_json: bool,
    /// TCP payloads.
    payloads: Cache<Decoded>,
    /// Header pairs.
    headers: Cache<DecodedHeaders>,
    /// `baggage` values.
    baggage: Cache<DecodedBaggage>,
}

impl PeerDecoder {
    pub fn new(additional_labels: Vec<String>, identity_check: IdentityCheck) -> Self {
        PeerDecoder {
            additional_labels,
            identity_check,
            peer_json: false,
            payloads: Cache::new(),
            headers: Cache::new(),
            baggage: Cache::new(),
        }
    }

    /// Also write each stored peer as JSON text ([`StoredPeer::json`]).
    pub fn with_peer_json(self, peer_json: bool) -> Self {
        PeerDecoder { peer_json, ..self }
    }

    /// The decoder a plugin configuration asks for.
    pub fn for_config(config: &Config) -> Self {
        PeerDecoder::new(config.additional_labels.clone(), config.identity_check).with_peer_json(config.peer_json)
    }

    /// Whether decoding needs the peer certificate's URI SAN (callers read
    /// it only then: with `off` it is never asked for).
    pub fn needs_certificate(&self) -> bool {
        self.identity_check != IdentityCheck::Off
    }

    /// A TCP exchange payload from a peer whose certificate has `uri_san`.
    pub fn decode(&mut self, payload: &[u8], uri_san: Option<&str>) -> Decoded {
        let (labels, mode, json) = (&self.additional_labels, self.identity_check, self.peer_json);
        let key = cache_key(&[uri_san.map(str::as_bytes)], payload);
        self.payloads.get_or_decode(&key, || {
            let Some(peer) = decode_payload(payload)? else {
                return Ok(None);
            };
            let workload = Workload::read(&peer.metadata, labels, None);
            Ok(Some(stored_peer(workload, PeerSource::Exchange, peer.id, mode, uri_san, json)))
        })
    }

    /// The exchange headers (the metadata header must be there; the id is
    /// optional). `max_payload` bounds the decoded Struct.
    pub fn decode_headers(
        &mut self,
        metadata: &[u8],
        id: Option<&[u8]>,
        max_payload: usize,
        uri_san: Option<&str>,
    ) -> DecodedHeaders {
        let max = max_header_len(max_payload);
        if metadata.len() > max {
            // Before the cache: the limit is not part of its key.
            return Err(HeaderError::TooLarge { len: metadata.len(), max });
        }
        let (labels, mode, json) = (&self.additional_labels, self.identity_check, self.peer_json);
        let id = id.unwrap_or_default();
        let key = cache_key(&[uri_san.map(str::as_bytes), Some(id)], metadata);
        self.headers.get_or_decode(&key, || {
            let wire = decode_metadata_header(metadata, max_payload)?;
            let id = (!id.is_empty()).then(|| String::from_utf8_lossy(id).into_owned());
            Ok(stored_peer(Workload::read(&wire, labels, None), PeerSource::Exchange, id, mode, uri_san, json))
        })
    }

    /// A `baggage` value (no identity in it; its namespace is checked
    /// against the certificate like any claim).
    pub fn decode_baggage(&mut self, value: &[u8], uri_san: Option<&str>) -> DecodedBaggage {
        if value.len() > baggage::MAX_BAGGAGE_BYTES {
            // Before the cache, which keeps only short keys anyway.
            return Err(BaggageError::TooLarge { len: value.len() });
        }
        let (mode, json) = (self.identity_check, self.peer_json);
        let key = cache_key(&[uri_san.map(str::as_bytes)], value);
        self.baggage.get_or_decode(&key, || {
            let workload = baggage::decode(value)?;
            Ok(stored_peer(workload, PeerSource::Baggage, None, mode, uri_san, json))
        })
    }

    /// Convenience for [`PeerHeaders`] that carry the metadata header.
    pub fn decode_peer_headers(
        &mut self,
        headers: &PeerHeaders<'_>,
        max_payload: usize,
        uri_san: Option<&str>,
    ) -> Option<DecodedHeaders> {
        headers.metadata.map(|metadata| self.decode_headers(metadata, headers.id, max_payload, uri_san))
    }
}

/// An unambiguous key: each leading part length-prefixed (absent and empty
/// differ), then the input itself.
fn cache_key(parts: &[Option<&[u8]>], input: &[u8]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| 5 + p.map_or(0, <[u8]>::len)).sum();
    let mut key = Vec::with_capacity(len + input.len());
    for part in parts {
        match part {
            None => key.push(0),
            Some(bytes) => {
                key.push(1);
                key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                key.extend_from_slice(bytes);
            }
        }
    }
    key.extend_from_slice(input);
    key
}

/// Runs `f` with the VM's shared decoder, or, should it already be borrowed
/// (it never is across a hostcall), with a one-off decoder that does the same
/// work without the cache.
pub fn with_decoder<R>(shared: &RefCell<PeerDecoder>, config: &Config, f: impl FnOnce(&mut PeerDecoder) -> R) -> R {
    match shared.try_borrow_mut() {
        Ok(mut peers) => f(&mut peers),
        Err(_) => f(&mut PeerDecoder::for_config(config)),
    }
}

/// A decoded claim, checked against the certificate, as it is stored.
fn stored_peer(
    workload: Workload,
    source: PeerSource,
    id: Option<String>,
    mode: IdentityCheck,
    uri_san: Option<&str>,
    json: bool,
) -> Rc<StoredPeer> {
    let belief = judge(mode, &workload.identity, &workload.namespace, uri_san);
    let (stored, id) = match belief {
        Belief::Unchecked => (Some(workload.to_peer_struct(source)), id),
        Belief::Claim(verification) => {
            let mut claim = workload.to_peer_struct(source);
            annotate(&mut claim, verification, uri_san);
            (Some(claim), id)
        }
        Belief::Certificate(_) => (uri_san.map(certificate_peer), None),
        Belief::Nothing => (None, None),
    };
    Rc::new(StoredPeer {
        labels: Rc::new(stored.as_ref().map(WorkloadLabels::from_stored).unwrap_or_default()),
        json: stored.as_ref().filter(|_| json).map(filter_common::schema::struct_text).unwrap_or_default(),
        stored: stored.map(|s| s.encode_to_vec()),
        id,
        namespace: workload.namespace,
        name: workload.name,
        identity: workload.identity,
        verification: belief.verification(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Mismatch;
    use crate::metadata::encode_payload;
    use proto::prost_types::{value::Kind, Struct, Value};

    const SAN: &str = "spiffe://cluster.local/ns/ns/sa/a";

    fn wire(name: &str, namespace: &str) -> Struct {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        Struct { fields: [("NAME".to_string(), s(name)), ("NAMESPACE".to_string(), s(namespace))].into() }
    }

    fn payload(name: &str) -> Vec<u8> {
        encode_payload(&wire(name, "ns"), "id-1")
    }

    fn stored(peer: &StoredPeer) -> Struct {
        Struct::decode(peer.stored.as_deref().unwrap_or_default()).unwrap()
    }

    fn field<'a>(s: &'a Struct, key: &str) -> Option<&'a Kind> {
        s.fields.get(key).and_then(|v| v.kind.as_ref())
    }

    #[test]
    fn the_same_payload_decodes_once_and_gives_the_same_peer() {
        let mut d = PeerDecoder::new(vec![], IdentityCheck::Off);
        let a = d.decode(&payload("a"), None).unwrap().unwrap();
        let again = d.decode(&payload("a"), None).unwrap().unwrap();
        assert!(Rc::ptr_eq(&a, &again));
        assert_eq!((a.name.as_str(), a.namespace.as_str(), a.id.as_deref()), ("a", "ns", Some("id-1")));
        let b = d.decode(&payload("b"), None).unwrap().unwrap();
        assert_eq!(b.name, "b");
        assert!(d.decode(&[0xff], None).is_err());
        assert!(d.decode(&[0xff], None).is_err(), "errors are remembered too");
    }

    #[test]
    fn the_json_text_is_the_stored_struct() {
        for mode in [IdentityCheck::Off, IdentityCheck::Annotate, IdentityCheck::Enforce] {
            let mut d = PeerDecoder::new(vec![], mode).with_peer_json(true);
            let peer = d.decode(&payload("a"), Some(SAN)).unwrap().unwrap();
            assert_eq!(peer.json, filter_common::schema::struct_text(&stored(&peer)), "{mode:?}");
            assert!(peer.json.contains(r#""namespace":"ns""#), "{}", peer.json);
            let without = PeerDecoder::new(vec![], mode).decode(&payload("a"), Some(SAN)).unwrap().unwrap();
            assert_eq!(without.json, "", "only asked for with peer_json");
        }
        // Nothing stored (enforce, no certificate): no text either.
        let nothing = PeerDecoder::new(vec![], IdentityCheck::Enforce).with_peer_json(true).decode(&payload("a"), None);
        assert_eq!(nothing.unwrap().unwrap().json, "");
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut d = PeerDecoder::new(vec![], IdentityCheck::Enforce);
        for i in 0..(MAX_CACHED * 3) {
            d.decode(&payload(&i.to_string()), Some(SAN)).unwrap();
            assert!(d.payloads.entries.len() <= MAX_CACHED);
        }
    }

    #[test]
    fn headers_decode_to_the_same_stored_peer_as_the_payload() {
        let value = crate::headers::encode_metadata_header(&wire("a", "ns"));
        let mut d = PeerDecoder::new(vec![], IdentityCheck::Enforce);
        let from_headers = d.decode_headers(value.as_bytes(), Some(b"id-1"), 4096, Some(SAN)).unwrap();
        let from_payload = d.decode(&payload("a"), Some(SAN)).unwrap().unwrap();
        assert_eq!(from_headers, from_payload);
        let again = d.decode_headers(value.as_bytes(), Some(b"id-1"), 4096, Some(SAN)).unwrap();
        assert!(Rc::ptr_eq(&from_headers, &again));
        let other_id = d.decode_headers(value.as_bytes(), Some(b"id-2"), 4096, Some(SAN)).unwrap();
        assert_eq!(other_id.id.as_deref(), Some("id-2"), "a new id under the same metadata is not ignored");
        assert_eq!(d.decode_headers(value.as_bytes(), Some(b""), 4096, Some(SAN)).unwrap().id, None);
        assert!(d.decode_headers(b"not base64!", None, 4096, Some(SAN)).is_err());
    }

    #[test]
    fn the_certificate_is_part_of_what_is_remembered() {
        let mut d = PeerDecoder::new(vec![], IdentityCheck::Enforce);
        let honest = d.decode(&payload("a"), Some(SAN)).unwrap().unwrap();
        assert_eq!(honest.verification, Some(Verification::Verified));
        assert_eq!(field(&stored(&honest), "verified"), Some(&Kind::BoolValue(true)));
        assert_eq!(field(&stored(&honest), "name"), Some(&Kind::StringValue("a".into())));
        // The same payload under another certificate is checked again.
        let other = "spiffe://cluster.local/ns/other/sa/a";
        let liar = d.decode(&payload("a"), Some(other)).unwrap().unwrap();
        assert_eq!(liar.verification, Some(Verification::Mismatch(Mismatch::Namespace)));
        assert_eq!(stored(&liar), crate::identity::certificate_peer(other));
        assert_eq!(liar.id, None);
        let anonymous = d.decode(&payload("a"), None).unwrap().unwrap();
        assert_eq!((anonymous.stored.as_ref(), anonymous.verification), (None, Some(Verification::NoCertificate)));
        // An empty SAN and no SAN are different keys, with the same answer.
        let empty = d.decode(&payload("a"), Some("")).unwrap().unwrap();
        assert_eq!(empty.verification, Some(Verification::NoCertificate));
        assert_eq!(d.payloads.entries.len(), 4);
    }

    #[test]
    fn annotate_keeps_the_claim_and_says_why_and_off_stores_natives_schema() {
        let mut annotate = PeerDecoder::new(vec![], IdentityCheck::Annotate);
        let liar = annotate.decode(&payload("a"), Some("spiffe://td/ns/other/sa/x")).unwrap().unwrap();
        let s = stored(&liar);
        assert_eq!(field(&s, "namespace"), Some(&Kind::StringValue("ns".into())), "the claim");
        assert_eq!(field(&s, "verified"), Some(&Kind::BoolValue(false)));
        assert_eq!(field(&s, "unverified_reason"), Some(&Kind::StringValue("namespace_mismatch".into())));
        assert_eq!(liar.id.as_deref(), Some("id-1"));
        let anonymous = annotate.decode(&payload("a"), None).unwrap().unwrap();
        assert_eq!(field(&stored(&anonymous), "unverified_reason"), Some(&Kind::StringValue("no_certificate".into())));

        let mut off = PeerDecoder::new(vec![], IdentityCheck::Off);
        let unchecked = off.decode(&payload("a"), None).unwrap().unwrap();
        let keys: Vec<_> = stored(&unchecked).fields.into_keys().collect();
        assert_eq!(keys, ["name", "namespace", "source"]);
        assert_eq!(unchecked.verification, None);
    }

    #[test]
    fn cache_keys_are_unambiguous() {
        assert_ne!(cache_key(&[None], b"x"), cache_key(&[Some(b"")], b"x"));
        assert_ne!(cache_key(&[Some(b"a"), Some(b"b")], b"c"), cache_key(&[Some(b"ab"), Some(b"")], b"c"));
        assert_ne!(cache_key(&[Some(b"a")], b"bc"), cache_key(&[Some(b"ab")], b"c"));
    }

    #[test]
    fn baggage_peers_are_checked_against_the_certificate_and_remembered() {
        let mut d = PeerDecoder::new(vec![], IdentityCheck::Enforce);
        let honest = b"k8s.deployment.name=a,k8s.namespace.name=ns,service.name=a";
        let peer = d.decode_baggage(honest, Some(SAN)).unwrap();
        assert!(Rc::ptr_eq(&peer, &d.decode_baggage(honest, Some(SAN)).unwrap()), "decoded once");
        let s = stored(&peer);
        assert_eq!(field(&s, "source"), Some(&Kind::StringValue("baggage".into())));
        assert_eq!(field(&s, "workload"), Some(&Kind::StringValue("a".into())));
        assert_eq!(field(&s, "verified"), Some(&Kind::BoolValue(true)));
        assert_eq!(peer.id, None, "baggage carries no node id");
        // A namespace the certificate does not prove: only the certificate's facts.
        let lying = d.decode_baggage(b"k8s.deployment.name=a,k8s.namespace.name=payments", Some(SAN)).unwrap();
        assert_eq!(field(&stored(&lying), "source"), Some(&Kind::StringValue("certificate".into())));
        assert_eq!(d.decode_baggage(b"userid=42", Some(SAN)), Err(BaggageError::NoWorkload));
        let long = vec![b'x'; baggage::MAX_BAGGAGE_BYTES + 1];
        assert!(matches!(d.decode_baggage(&long, Some(SAN)), Err(BaggageError::TooLarge { .. })));
    }
}
