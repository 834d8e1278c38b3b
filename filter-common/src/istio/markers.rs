//! The cluster metadata markers the filters read, and the places users put
//! them by mistake.
//!
//! One scheme: **Istio's own markers are keys in the namespace `istio`**
//! (where istiod writes them: `istio: {alpn_override: "false"}`,
//! `istio: {disable_mx: true}`, `istio: {external: true}`), and **ours are
//! namespaces of their own, named after the filter** (as Envoy recommends
//! for filter metadata): `istio.alpn: {...}`, `istio.peer_exchange:
//! {enabled: true}`. Envoy's metadata namespaces are flat strings, so
//! `istio: {peer_exchange: {enabled: true}}` is a different place from
//! `istio.peer_exchange: {enabled: true}`, and a filter reading one never
//! sees the other. [`misplaced`] finds a marker written in such a near
//! place, so the filter can say so instead of silently ignoring it.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use proto::core::Metadata;
use proto::prost::Message;

use super::{key, ALPN_NAMESPACE, NAMESPACE as ISTIO_NAMESPACE, PEER_EXCHANGE_ENABLED, PEER_EXCHANGE_NAMESPACE};

/// A marker a filter reads from cluster metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Istio's ALPN opt-out: key `alpn_override` in `istio`.
    AlpnOverride,
    /// alpn-filter's own namespace `istio.alpn`.
    Alpn,
    /// The exchange's own namespace `istio.peer_exchange` (key `enabled`).
    PeerExchange,
    /// istiod's exchange opt-out (every instance over HBONE): key `disable_mx` in `istio`.
    DisableMx,
    /// istiod's MESH_EXTERNAL mark: key `external` in `istio`.
    External,
}

impl Marker {
    /// Where the filter reads it, as a user writes it under `filter_metadata`.
    pub fn read_at(self) -> &'static str {
        match self {
            Marker::AlpnOverride => "istio: {alpn_override: \"false\"}",
            Marker::Alpn => "istio.alpn: {...}",
            Marker::PeerExchange => "istio.peer_exchange: {enabled: ...}",
            Marker::DisableMx => "istio: {disable_mx: true}",
            Marker::External => "istio: {external: true}",
        }
    }

    /// An Istio key in the namespace `istio`, or (`None`) a namespace of ours.
    fn istio_key(self) -> Option<&'static str> {
        match self {
            Marker::AlpnOverride => Some(key::ALPN_OVERRIDE),
            Marker::DisableMx => Some(key::DISABLE_MX),
            Marker::External => Some(key::EXTERNAL),
            Marker::Alpn | Marker::PeerExchange => None,
        }
    }

    /// Our namespace's name without the `istio.` prefix (`alpn`, `peer_exchange`).
    fn own_name(self) -> Option<&'static str> {
        let namespace = match self {
            Marker::Alpn => ALPN_NAMESPACE,
            Marker::PeerExchange => PEER_EXCHANGE_NAMESPACE,
            _ => return None,
        };
        namespace.strip_prefix(ISTIO_NAMESPACE)?.strip_prefix('.')
    }
}

/// A marker found where no filter reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misplaced {
    pub marker: Marker,
    /// Where it was found: `filter_metadata.<namespace>[.<key>]`.
    pub found_at: String,
}

impl std::fmt::Display for Misplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not read; write it as filter_metadata: {{{}}}", self.found_at, self.marker.read_at())
    }
}

/// Near places of `markers` in `metadata`:
/// - a namespace of ours written as a key of `istio` (`istio: {peer_exchange: ...}`,
///   also dotted: `istio: {"peer_exchange.enabled": true}`), or without its
///   `istio.` prefix (`peer_exchange: {...}`);
/// - a key `istio.peer_exchange` reads other than `enabled`;
/// - an Istio key written as a namespace of its own (`istio.disable_mx: {...}`).
pub fn misplaced(metadata: &Metadata, markers: &[Marker]) -> Vec<Misplaced> {
    let mut found = Vec::new();
    let istio = metadata.filter_metadata.get(ISTIO_NAMESPACE);
    for &marker in markers {
        let mut at = |place: String| found.push(Misplaced { marker, found_at: format!("filter_metadata.{place}") });
        if let Some(key) = marker.istio_key() {
            let namespace = format!("{ISTIO_NAMESPACE}.{key}");
            if metadata.filter_metadata.contains_key(&namespace) {
                at(namespace);
            }
        }
        if let Some(name) = marker.own_name() {
            for key in istio.into_iter().flat_map(|s| s.fields.keys()) {
                if key == name || key.strip_prefix(name).is_some_and(|rest| rest.starts_with('.')) {
                    at(format!("{ISTIO_NAMESPACE}.{key} (a key of the namespace {ISTIO_NAMESPACE})"));
                }
            }
            if metadata.filter_metadata.contains_key(name) {
                at(name.to_string());
            }
        }
        if marker == Marker::PeerExchange {
            let namespace = PEER_EXCHANGE_NAMESPACE;
            for key in metadata.filter_metadata.get(namespace).into_iter().flat_map(|s| s.fields.keys()) {
                if key != PEER_EXCHANGE_ENABLED {
                    at(format!("{namespace}.{key}"));
                }
            }
        }
    }
    found
}

/// Distinct metadata remembered as reported; past it the set starts over.
const MAX_REPORTED: usize = 512;

/// Reports each distinct cluster metadata once: a cluster's metadata is
/// read again every refresh period (or every request), but a misplaced
/// marker is worth one log line and one count, not one per read.
#[derive(Debug, Default)]
pub struct Reports {
    seen: HashSet<u64>,
}

impl Reports {
    /// The misplaced `markers` in serialized `metadata`, the first time
    /// these bytes are seen; empty afterwards (and for unreadable bytes).
    pub fn first_time(&mut self, metadata: &[u8], markers: &[Marker]) -> Vec<Misplaced> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        metadata.hash(&mut hasher);
        if self.seen.len() >= MAX_REPORTED {
            self.seen.clear();
        }
        if !self.seen.insert(hasher.finish()) {
            return Vec::new();
        }
        Metadata::decode(metadata).map(|m| misplaced(&m, markers)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::prost_types::{value::Kind, Struct, Value};

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn strukt(fields: &[(&str, Value)]) -> Struct {
        Struct { fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    fn metadata(namespaces: &[(&str, Struct)]) -> Metadata {
        let mut m = Metadata::default();
        for (ns, s) in namespaces {
            m.filter_metadata.insert(ns.to_string(), s.clone());
        }
        m
    }

    const ALL: [Marker; 5] =
        [Marker::AlpnOverride, Marker::Alpn, Marker::PeerExchange, Marker::DisableMx, Marker::External];

    #[test]
    fn markers_in_their_places_are_not_reported() {
        let enabled = strukt(&[("enabled", value(Kind::BoolValue(true)))]);
        let istio = strukt(&[
            ("alpn_override", value(Kind::StringValue("false".into()))),
            ("disable_mx", value(Kind::BoolValue(true))),
            ("external", value(Kind::BoolValue(true))),
            ("services", value(Kind::StringValue("x".into()))),
        ]);
        let alpn = strukt(&[("upstream_protocol", value(Kind::StringValue("HTTP2".into())))]);
        let m = metadata(&[("istio", istio), ("istio.peer_exchange", enabled), ("istio.alpn", alpn)]);
        assert_eq!(misplaced(&m, &ALL), vec![]);
    }

    #[test]
    fn near_places_are_reported_with_where_to_write_them() {
        let nested = strukt(&[("enabled", value(Kind::BoolValue(true)))]);
        let istio = strukt(&[
            ("peer_exchange", value(Kind::StructValue(nested.clone()))),
            ("alpn.upstream_protocol", value(Kind::StringValue("HTTP2".into()))),
        ]);
        let m = metadata(&[
            ("istio", istio),
            ("istio.disable_mx", strukt(&[])),
            ("istio.alpn_override", strukt(&[])),
            ("peer_exchange", nested),
            ("istio.peer_exchange", strukt(&[("enable", value(Kind::BoolValue(true)))])),
        ]);
        let found: Vec<String> = misplaced(&m, &ALL).iter().map(|m| m.to_string()).collect();
        assert_eq!(
            found,
            [
                "filter_metadata.istio.alpn_override is not read; write it as filter_metadata: {istio: {alpn_override: \"false\"}}",
                "filter_metadata.istio.alpn.upstream_protocol (a key of the namespace istio) is not read; write it as filter_metadata: {istio.alpn: {...}}",
                "filter_metadata.istio.peer_exchange (a key of the namespace istio) is not read; write it as filter_metadata: {istio.peer_exchange: {enabled: ...}}",
                "filter_metadata.peer_exchange is not read; write it as filter_metadata: {istio.peer_exchange: {enabled: ...}}",
                "filter_metadata.istio.peer_exchange.enable is not read; write it as filter_metadata: {istio.peer_exchange: {enabled: ...}}",
                "filter_metadata.istio.disable_mx is not read; write it as filter_metadata: {istio: {disable_mx: true}}",
            ]
        );
        // A filter hears only about the markers it reads.
        let alpn_only = misplaced(&m, &[Marker::AlpnOverride, Marker::Alpn]);
        assert_eq!(alpn_only.len(), 2);
    }

    #[test]
    fn each_distinct_metadata_is_reported_once_and_the_memory_is_bounded() {
        let mut reports = Reports::default();
        let wrong = metadata(&[("istio", strukt(&[("peer_exchange", value(Kind::BoolValue(true)))]))]).encode_to_vec();
        assert_eq!(reports.first_time(&wrong, &[Marker::PeerExchange]).len(), 1);
        assert!(reports.first_time(&wrong, &[Marker::PeerExchange]).is_empty());
        assert!(reports.first_time(b"\xff\xff not metadata", &[Marker::PeerExchange]).is_empty());
        for i in 0..MAX_REPORTED * 2 {
            let m = metadata(&[("x", strukt(&[(&i.to_string(), value(Kind::BoolValue(true)))]))]).encode_to_vec();
            reports.first_time(&m, &[Marker::PeerExchange]);
            assert!(reports.seen.len() <= MAX_REPORTED);
        }
    }
}
