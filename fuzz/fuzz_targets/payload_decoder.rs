//! The payload decoder and what is stored for a payload. Oracles: an
//! accepted payload re-encodes to canonical bytes that decode to the same
//! thing; normalisation is idempotent; under `enforce` a stored claim is
//! consistent with the certificate.
#![no_main]

use filters_fuzz::{spiffe_namespace, Input};
use libfuzzer_sys::fuzz_target;
use peer_exchange::identity::{IdentityCheck, Verification};
use peer_exchange::metadata::{decode_payload, encode_payload};
use peer_exchange::peers::PeerDecoder;
use peer_exchange::workload::Workload;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let san = input.string();
    let label = input.string();
    let labels: Vec<String> = if label.is_empty() { Vec::new() } else { vec![label] };
    let payload = input.rest();

    if let Ok(Some(peer)) = decode_payload(payload) {
        let id = peer.id.as_deref().unwrap_or("");
        let canonical = encode_payload(&peer.metadata, id);
        let again = decode_payload(&canonical).ok().flatten().expect("our encoding decodes");
        assert_eq!(encode_payload(&again.metadata, again.id.as_deref().unwrap_or("")), canonical);
        let workload = Workload::read(&peer.metadata, &labels, None);
        let reread = Workload::read(&workload.to_wire(), &labels, None);
        assert_eq!(reread.to_wire(), workload.to_wire(), "normalisation is idempotent");
    }

    for mode in [IdentityCheck::Enforce, IdentityCheck::Annotate, IdentityCheck::Off] {
        let mut peers = PeerDecoder::new(labels.clone(), mode).with_peer_json(true);
        let first = peers.decode(payload, Some(&san));
        let cached = peers.decode(payload, Some(&san));
        assert_eq!(format!("{first:?}"), format!("{cached:?}"), "the cache answers as the decoder");
        let Ok(Some(peer)) = first else { continue };
        // The JSON text for access logs reads back as JSON, whatever the peer sent.
        assert_eq!(peer.json.is_empty(), peer.stored.is_none(), "text exactly when a Struct is stored");
        assert!(filter_common::schema::parse(peer.json.as_bytes()).is_ok() || peer.json.is_empty(), "{}", peer.json);
        if mode == IdentityCheck::Enforce && peer.id.is_some() && peer.stored.is_some() {
            // The claim itself was stored: it must agree with the certificate.
            assert_eq!(peer.verification, Some(Verification::Verified));
            assert_eq!(spiffe_namespace(&san), Some(peer.namespace.as_str()));
            assert!(peer.identity.is_empty() || peer.identity == san);
        }
        if mode == IdentityCheck::Off {
            assert_eq!(peer.verification, None);
        }
    }
});
