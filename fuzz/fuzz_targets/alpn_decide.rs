//! alpn-filter's per-request decision over arbitrary cluster metadata,
//! cluster names and request protocols. Oracles: an override is always a
//! list Envoy accepts; Istio's `istio.alpn_override: "false"` opt-out wins
//! over anything else in the metadata; the answer remembered by cluster
//! name, the one cached by metadata bytes and the one after a refresh are
//! the same.
#![no_main]

use alpn_decision::config::AlpnConfig;
use alpn_decision::decision::{Decider, Decision, RequestFacts, SkipReason};
use filters_fuzz::{envoy_accepts_alpn_value, Input};
use libfuzzer_sys::fuzz_target;
use proto::core::Metadata;
use proto::prost::Message;
use proto::prost_types::value::Kind;

struct Facts {
    metadata: Option<Vec<u8>>,
    name: Option<String>,
    protocol: Option<String>,
}

impl RequestFacts for Facts {
    fn cluster_metadata(&mut self) -> Option<Vec<u8>> {
        self.metadata.clone()
    }
    fn cluster_name(&mut self) -> Option<String> {
        self.name.clone()
    }
    fn request_protocol(&mut self) -> Option<String> {
        self.protocol.clone()
    }
}

/// Istio's opt-out, read without the filter's code.
fn opted_out(metadata: &[u8]) -> bool {
    let Ok(metadata) = Metadata::decode(metadata) else { return false };
    matches!(
        metadata.filter_metadata.get("istio").and_then(|s| s.fields.get("alpn_override")).and_then(|v| v.kind.as_ref()),
        Some(Kind::StringValue(s)) if s == "false"
    )
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let config = AlpnConfig::parse(input.slice()).unwrap_or_default();
    let flags = input.byte();
    let name = input.string();
    let protocol = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3", ""][usize::from(flags >> 2) % 5];
    let metadata = input.rest();
    // As Envoy: metadata belongs to a route cluster, so only with a name.
    let has_cluster = flags & 2 != 0;
    let mut facts = Facts {
        metadata: (has_cluster && flags & 1 != 0).then(|| metadata.to_vec()),
        name: has_cluster.then_some(name),
        protocol: Some(protocol.to_string()),
    };
    let mut decider = Decider::new(config);
    let first = decider.decide(&mut facts);
    assert_eq!(decider.decide(&mut facts), first, "the remembered decision is the same");
    decider.refresh();
    assert_eq!(decider.decide(&mut facts), first, "the decision after a refresh is the same");
    match &first {
        Decision::Override { alpn, .. } => assert!(envoy_accepts_alpn_value(&alpn.envoy_value()), "{alpn:?}"),
        Decision::Skip(_) => {}
    }
    if facts.metadata.is_some() && opted_out(metadata) {
        assert_eq!(first, Decision::Skip(SkipReason::OptOut), "the opt-out comes first");
    }
});
