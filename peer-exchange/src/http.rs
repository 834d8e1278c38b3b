//! The exchange's HTTP form, decisions only: who gets our headers, which
//! received headers are believed, and what each case counts.
//!
//! **Client** (outbound, before the router):
//! - request: any exchange header the app set is removed (counted
//!   `untrusted_header_removed`); ours are added only when the route's
//!   cluster is a mesh upstream ([`client_verdict`]);
//! - response, when we sent ours: the server's headers are believed only
//!   if the upstream's certificate carries a mesh identity; they are stored
//!   as `upstream_peer`. Sent ours or not, they are always removed before
//!   the app sees them.
//!
//! **Server** (inbound):
//! - request: the client's headers are believed only over a connection
//!   whose peer certificate carries a mesh identity; believed or not, they
//!   are removed before the app sees them;
//! - response: ours are added only when the request carried the metadata
//!   header over such a connection, so a plain client never receives them
//!   (nor any the app set: those are removed).

use std::rc::Rc;

use proto::core::Metadata;
use proto::prost::Message;

use crate::baggage::BaggageError;
use crate::headers::{HeaderError, PeerHeaders};
use crate::identity::Verification;
use crate::participation::{enabled_flag, istio_flag};
use crate::peers::{PeerDecoder, StoredPeer};
use filter_common::bounded::BoundedMap;
use filter_common::istio::{self, key, PEER_EXCHANGE_NAMESPACE};

filter_common::counters! {
    /// The HTTP exchange's counters (`peer_exchange.http_<role>.<name>`).
    pub enum HttpCounter {
        /// Our headers were added (client request, server response).
        MetadataAdded => "metadata_added",
        /// A peer was stored from its headers.
        MetadataReceived => "metadata_received",
        /// A request/response that should carry the peer's headers did not.
        MetadataAbsent => "metadata_absent",
        /// The metadata header was not base64 or not a Struct.
        MetadataInvalid => "metadata_invalid",
        /// The metadata header was over `max_peer_metadata_bytes`.
        MetadataTooLarge => "metadata_too_large",
        /// Exchange headers from someone not entitled to send them (the local
        /// app, a connection without a mesh certificate, an upstream we sent
        /// nothing to) were removed.
        UntrustedHeaderRemoved => "untrusted_header_removed",
        /// Client: the cluster is not marked as a mesh upstream.
        SkippedNotMesh => "skipped_not_mesh",
        /// Client: the cluster opted out (`istio.peer_exchange.enabled: false`
        /// or `istio.disable_mx: true`).
        SkippedOptOut => "skipped_opt_out",
        /// Client: the cluster is external to the mesh (`istio.external: true`).
        SkippedExternal => "skipped_external",
        /// A header could not be added, removed or read.
        HeaderError => "header_error",
        /// The peer's claim agrees with its certificate.
        PeerIdentityVerified => "peer_identity_verified",
        /// The peer's claim disagrees with its certificate.
        PeerIdentityMismatch => "peer_identity_mismatch",
        /// Kept for one vocabulary with the TCP form; never counted here:
        /// headers from a sender without a certificate are not read at all
        /// (`untrusted_header_removed`).
        PeerIdentityNoCertificate => "peer_identity_no_certificate",
        /// Not an outcome: the client read the route cluster's metadata
        /// (once per cluster per `cluster_metadata_refresh_ms`, or per request with 0).
        ClusterMetadataRead => "cluster_metadata_read",
        /// Baggage discovery stored a peer from the request's `baggage`.
        PeerFromBaggage => "peer_from_baggage",
        /// A `baggage` value that names no Istio workload and namespace (or
        /// is not text): no peer from it.
        BaggageInvalid => "baggage_invalid",
        /// A `baggage` value over 8192 bytes: not read.
        BaggageTooLarge => "baggage_too_large",
        /// `baggage` from a sender without a mesh certificate: not read
        /// (it still reaches the app: baggage is the app's too).
        BaggageUntrusted => "baggage_untrusted",
        /// Our workload was written into `baggage` (baggage propagation).
        BaggageAdded => "baggage_added",
        /// Client: stored from the upstream host's `istio.workload` endpoint metadata.
        PeerFromEndpointMetadata => "peer_from_endpoint_metadata",
        /// Client: the endpoint's `istio.workload` was there but unusable.
        EndpointMetadataInvalid => "endpoint_metadata_invalid",
        /// Not an outcome: a cluster's metadata carries a marker the client
        /// reads in a place it does not read (once per distinct metadata).
        MisplacedMetadata => "misplaced_metadata",
        /// `istio_metrics`: a new label set past `max_label_sets` (or one Envoy
        /// refused to define): that request or connection is not in Istio's metrics.
        IstioMetricsOverflow => "istio_metrics_overflow",
        /// Not an outcome: the node's metadata lacks what the exchange
        /// sends about this workload (counted once per configuration).
        NodeMetadataMissing => "node_metadata_missing",
        /// Client: the upstream presents a mesh identity on a cluster not
        /// marked as a mesh upstream (checked once per cluster; warned then).
        MeshUpstreamNotMarked => "mesh_upstream_not_marked",
    }
}

impl HttpCounter {
    /// What the identity check found.
    pub fn for_verification(verification: Verification) -> HttpCounter {
        match verification {
            Verification::Verified => HttpCounter::PeerIdentityVerified,
            Verification::Mismatch(_) => HttpCounter::PeerIdentityMismatch,
            Verification::NoCertificate => HttpCounter::PeerIdentityNoCertificate,
        }
    }
}

/// Whether the client sends our headers on a request to this cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    Send,
    NotMarkedAsMesh,
    OptedOut,
    External,
}

impl std::fmt::Display for ClientVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientVerdict::Send => "a mesh upstream",
            ClientVerdict::NotMarkedAsMesh => "the cluster is not marked as a mesh upstream",
            ClientVerdict::OptedOut => "the cluster opted out",
            ClientVerdict::External => "the cluster is an external service",
        })
    }
}

impl ClientVerdict {
    pub fn counter(self) -> Option<HttpCounter> {
        match self {
            ClientVerdict::Send => None,
            ClientVerdict::NotMarkedAsMesh => Some(HttpCounter::SkippedNotMesh),
            ClientVerdict::OptedOut => Some(HttpCounter::SkippedOptOut),
            ClientVerdict::External => Some(HttpCounter::SkippedExternal),
        }
    }
}

/// The client's rule, from the route's cluster metadata (the upstream host
/// and its certificate are not known before the router runs):
/// 1. `istio.disable_mx: true` (native's own opt-out) or
///    `istio.peer_exchange.enabled` other than true: opted out;
/// 2. `istio.external: true` (istiod's mark of a MESH_EXTERNAL service): external;
/// 3. `istio.peer_exchange.enabled: true`: send;
/// 4. with `istio_service_clusters`, istiod's `istio.services` mark of a
///    service cluster: send;
/// 5. otherwise not a mesh upstream. Unreadable metadata never sends.
pub fn http_client_verdict(cluster_metadata: &[u8], istio_service_clusters: bool) -> ClientVerdict {
    let Ok(metadata) = Metadata::decode(cluster_metadata) else {
        return ClientVerdict::NotMarkedAsMesh;
    };
    let enabled = metadata.filter_metadata.get(PEER_EXCHANGE_NAMESPACE).map(enabled_flag);
    if istio_flag(&metadata, key::DISABLE_MX) || matches!(enabled, Some(Some(false))) {
        return ClientVerdict::OptedOut;
    }
    if istio_flag(&metadata, key::EXTERNAL) {
        return ClientVerdict::External;
    }
    if matches!(enabled, Some(Some(true))) {
        return ClientVerdict::Send;
    }
    let istio = metadata.filter_metadata.get(istio::NAMESPACE);
    if istio_service_clusters && istio.is_some_and(|s| s.fields.contains_key(key::SERVICES)) {
        return ClientVerdict::Send;
    }
    ClientVerdict::NotMarkedAsMesh
}

/// Distinct cluster metadata remembered; past this the map starts over.
const MAX_CACHED_VERDICTS: usize = 512;

/// [`http_client_verdict`] once per distinct cluster metadata. The key is the
/// metadata bytes Envoy hands over on each request, so an xDS update is a
/// new key, never a stale answer.
pub struct ClientVerdicts {
    istio_service_clusters: bool,
    cache: BoundedMap<Vec<u8>, ClientVerdict>,
}

impl ClientVerdicts {
    pub fn new(istio_service_clusters: bool) -> Self {
        ClientVerdicts { istio_service_clusters, cache: BoundedMap::new(MAX_CACHED_VERDICTS) }
    }

    pub fn verdict(&mut self, cluster_metadata: &[u8]) -> ClientVerdict {
        if let Some(verdict) = self.cache.get(cluster_metadata) {
            return *verdict;
        }
        let verdict = http_client_verdict(cluster_metadata, self.istio_service_clusters);
        self.cache.insert(cluster_metadata.to_vec(), verdict);
        verdict
    }
}

/// Whether a certificate URI SAN is a mesh identity (`prefix` empty: any
/// certificate will do, but there must be one).
pub fn is_mesh_identity(uri_san: Option<&str>, prefix: &str) -> bool {
    uri_san.is_some_and(|san| !san.is_empty() && san.starts_with(prefix))
}

/// What the peer's headers gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    Found(Rc<StoredPeer>),
    /// No metadata header (an `-id` alone says nothing about the workload).
    Absent,
    /// Headers from a sender without a mesh identity: removed, not read.
    Untrusted,
    Invalid(HeaderError),
}

impl std::fmt::Display for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Received::Found(peer) => write!(f, "found {}/{}", peer.namespace, peer.name),
            Received::Absent => f.write_str("no metadata header"),
            Received::Untrusted => f.write_str("headers from a sender without a mesh identity, removed"),
            Received::Invalid(e) => write!(f, "invalid metadata header: {e}"),
        }
    }
}

impl Received {
    /// What receiving counts: the outcome, and for a checked peer what the
    /// identity check found.
    pub fn counters(&self) -> impl Iterator<Item = HttpCounter> {
        let (outcome, identity) = match self {
            Received::Found(peer) => {
                (HttpCounter::MetadataReceived, peer.verification.map(HttpCounter::for_verification))
            }
            Received::Absent => (HttpCounter::MetadataAbsent, None),
            Received::Untrusted => (HttpCounter::UntrustedHeaderRemoved, None),
            Received::Invalid(HeaderError::TooLarge { .. }) => (HttpCounter::MetadataTooLarge, None),
            Received::Invalid(_) => (HttpCounter::MetadataInvalid, None),
        };
        std::iter::once(outcome).chain(identity)
    }
}

/// What a peer's `baggage` gave (baggage discovery).
#[derive(Clone, Debug, PartialEq)]
pub enum BaggageReceived {
    Found(Rc<StoredPeer>),
    Absent,
    /// From a sender without a mesh identity: not read.
    Untrusted,
    Invalid(BaggageError),
}

impl std::fmt::Display for BaggageReceived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaggageReceived::Found(peer) => write!(f, "found {}/{}", peer.namespace, peer.name),
            BaggageReceived::Absent => f.write_str("no baggage"),
            BaggageReceived::Untrusted => f.write_str("baggage from a sender without a mesh identity, not read"),
            BaggageReceived::Invalid(e) => write!(f, "invalid baggage: {e}"),
        }
    }
}

impl BaggageReceived {
    pub fn counters(&self) -> impl Iterator<Item = HttpCounter> {
        let (outcome, identity) = match self {
            BaggageReceived::Found(peer) => {
                (Some(HttpCounter::PeerFromBaggage), peer.verification.map(HttpCounter::for_verification))
            }
            BaggageReceived::Absent => (None, None),
            BaggageReceived::Untrusted => (Some(HttpCounter::BaggageUntrusted), None),
            BaggageReceived::Invalid(BaggageError::TooLarge { .. }) => (Some(HttpCounter::BaggageTooLarge), None),
            BaggageReceived::Invalid(_) => (Some(HttpCounter::BaggageInvalid), None),
        };
        outcome.into_iter().chain(identity)
    }
}

/// Reads a request's `baggage` (its first value, as native): believed only
/// from a sender whose certificate URI SAN is a mesh identity, then checked
/// against it like any claim.
pub fn receive_baggage(
    value: Option<&[u8]>,
    certificate: impl FnOnce() -> Option<String>,
    peer_identity_prefix: &str,
    peers: &mut PeerDecoder,
) -> BaggageReceived {
    let Some(value) = value else {
        return BaggageReceived::Absent;
    };
    let uri_san = certificate();
    if !is_mesh_identity(uri_san.as_deref(), peer_identity_prefix) {
        return BaggageReceived::Untrusted;
    }
    let uri_san = uri_san.as_deref().filter(|_| peers.needs_certificate());
    match peers.decode_baggage(value, uri_san) {
        Ok(peer) => BaggageReceived::Found(peer),
        Err(e) => BaggageReceived::Invalid(e),
    }
}

/// Reads the peer's headers: believed only from a sender whose certificate
/// URI SAN is a mesh identity, then checked against it. `certificate` is
/// asked only when there are headers (it costs a property read).
pub fn receive(
    headers: &PeerHeaders<'_>,
    certificate: impl FnOnce() -> Option<String>,
    peer_identity_prefix: &str,
    peers: &mut PeerDecoder,
    max_payload: usize,
) -> Received {
    if !headers.any() {
        return Received::Absent;
    }
    let uri_san = certificate();
    if !is_mesh_identity(uri_san.as_deref(), peer_identity_prefix) {
        return Received::Untrusted;
    }
    let uri_san = uri_san.as_deref().filter(|_| peers.needs_certificate());
    match peers.decode_peer_headers(headers, max_payload, uri_san) {
        None => Received::Absent,
        Some(Ok(peer)) => Received::Found(peer),
        Some(Err(e)) => Received::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::encode_metadata_header;
    use crate::identity::IdentityCheck;
    use crate::participation::tests::md;
    use filter_common::istio::{NAMESPACE as ISTIO_NAMESPACE, PEER_EXCHANGE_NAMESPACE as CLUSTER_NAMESPACE};
    use proto::prost_types::value::Kind;
    use proto::prost_types::{ListValue, Struct, Value};

    const SAN: &str = "spiffe://cluster.local/ns/client-ns/sa/client";

    #[test]
    fn only_marked_mesh_clusters_get_our_headers() {
        let on = (CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true));
        let off = (CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(false));
        let external = (ISTIO_NAMESPACE, "external", Kind::BoolValue(true));
        let disable_mx = (ISTIO_NAMESPACE, "disable_mx", Kind::BoolValue(true));
        let services = (ISTIO_NAMESPACE, "services", Kind::ListValue(ListValue::default()));
        assert_eq!(http_client_verdict(&md(std::slice::from_ref(&on)), false), ClientVerdict::Send);
        assert_eq!(http_client_verdict(&[], false), ClientVerdict::NotMarkedAsMesh);
        assert_eq!(http_client_verdict(&[0xff, 0x01], true), ClientVerdict::NotMarkedAsMesh);
        assert_eq!(http_client_verdict(&md(&[off]), true), ClientVerdict::OptedOut);
        assert_eq!(http_client_verdict(&md(&[on.clone(), disable_mx]), false), ClientVerdict::OptedOut);
        assert_eq!(http_client_verdict(&md(&[on.clone(), external.clone()]), false), ClientVerdict::External);
        // istiod's service mark counts only when asked for, and never for external services.
        assert_eq!(http_client_verdict(&md(std::slice::from_ref(&services)), false), ClientVerdict::NotMarkedAsMesh);
        assert_eq!(http_client_verdict(&md(std::slice::from_ref(&services)), true), ClientVerdict::Send);
        assert_eq!(http_client_verdict(&md(&[services, external]), true), ClientVerdict::External);
        // A string "true" is not native's bool flag.
        let string_external = (ISTIO_NAMESPACE, "external", Kind::StringValue("true".into()));
        assert_eq!(http_client_verdict(&md(&[on, string_external]), false), ClientVerdict::Send);
    }

    #[test]
    fn verdicts_are_remembered_per_metadata_and_bounded() {
        let on = md(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))]);
        let mut verdicts = ClientVerdicts::new(false);
        assert_eq!(verdicts.verdict(&on), ClientVerdict::Send);
        assert_eq!(verdicts.verdict(&on), ClientVerdict::Send);
        assert_eq!(verdicts.verdict(&[]), ClientVerdict::NotMarkedAsMesh);
        for i in 0..(MAX_CACHED_VERDICTS * 2) {
            let metadata = md(&[(CLUSTER_NAMESPACE, &i.to_string(), Kind::BoolValue(true))]);
            assert_eq!(verdicts.verdict(&metadata), ClientVerdict::NotMarkedAsMesh);
            assert!(verdicts.cache.len() <= MAX_CACHED_VERDICTS);
        }
    }

    #[test]
    fn mesh_identity_needs_a_certificate() {
        assert!(is_mesh_identity(Some("spiffe://cluster.local/ns/a/sa/b"), "spiffe://"));
        assert!(!is_mesh_identity(Some("https://example.com"), "spiffe://"));
        assert!(!is_mesh_identity(None, ""));
        assert!(!is_mesh_identity(Some(""), ""));
        assert!(is_mesh_identity(Some("dns-only"), ""));
    }

    #[test]
    fn received_baggage_is_read_only_from_trusted_senders_and_counted_by_outcome() {
        let mut peers = PeerDecoder::new(vec![], IdentityCheck::Enforce);
        let prefix = "spiffe://";
        let honest = b"k8s.pod.name=a,k8s.namespace.name=client-ns";
        let counted = |r: BaggageReceived| r.counters().collect::<Vec<_>>();
        let mut asked = false;
        let none = receive_baggage(
            None,
            || {
                asked = true;
                None
            },
            prefix,
            &mut peers,
        );
        assert_eq!(none, BaggageReceived::Absent);
        assert!(!asked, "no baggage, no certificate read");
        assert_eq!(counted(none), []);
        let untrusted = receive_baggage(Some(honest), || Some("https://x".into()), prefix, &mut peers);
        assert_eq!(counted(untrusted), [HttpCounter::BaggageUntrusted]);
        let found = receive_baggage(Some(honest), || Some(SAN.into()), prefix, &mut peers);
        assert_eq!(counted(found), [HttpCounter::PeerFromBaggage, HttpCounter::PeerIdentityVerified]);
        let unrelated = receive_baggage(Some(b"userid=1"), || Some(SAN.into()), prefix, &mut peers);
        assert_eq!(counted(unrelated), [HttpCounter::BaggageInvalid]);
        let long = vec![b'a'; 9000];
        assert_eq!(
            counted(receive_baggage(Some(&long), || Some(SAN.into()), prefix, &mut peers)),
            [HttpCounter::BaggageTooLarge]
        );
    }

    #[test]
    fn received_headers_are_read_only_from_trusted_senders() {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let wire = Struct { fields: [("NAMESPACE".to_string(), s("ns"))].into() };
        let value = encode_metadata_header(&wire);
        let mut peers = PeerDecoder::new(vec![], IdentityCheck::Off);
        let headers = PeerHeaders { metadata: Some(value.as_bytes()), id: Some(b"id") };
        let mesh = || Some(SAN.to_string());
        let prefix = "spiffe://";

        let mut asked = false;
        let certificate = || {
            asked = true;
            mesh()
        };
        let none = receive(&PeerHeaders::default(), certificate, prefix, &mut peers, 4096);
        assert_eq!(none, Received::Absent);
        assert!(!asked, "no headers, no certificate read");

        for not_mesh in [None, Some(String::new()), Some("https://example.com".to_string())] {
            assert_eq!(receive(&headers, || not_mesh.clone(), prefix, &mut peers, 4096), Received::Untrusted);
        }
        let Received::Found(peer) = receive(&headers, mesh, prefix, &mut peers, 4096) else { panic!("not found") };
        assert_eq!((peer.namespace.as_str(), peer.id.as_deref()), ("ns", Some("id")));
        assert_eq!(peer.verification, None, "identity_check off");
        let id_only = PeerHeaders { metadata: None, id: Some(b"id") };
        assert_eq!(receive(&id_only, mesh, prefix, &mut peers, 4096), Received::Absent);
        assert_eq!(receive(&id_only, || None, prefix, &mut peers, 4096), Received::Untrusted);

        let bad = PeerHeaders { metadata: Some(b"%%%"), id: None };
        let counters = |r: Received| r.counters().collect::<Vec<_>>();
        assert_eq!(counters(receive(&bad, mesh, prefix, &mut peers, 4096)), [HttpCounter::MetadataInvalid]);
        assert_eq!(counters(receive(&headers, mesh, prefix, &mut peers, 2)), [HttpCounter::MetadataTooLarge]);
        assert_eq!(counters(receive(&headers, mesh, prefix, &mut peers, 4096)), [HttpCounter::MetadataReceived]);
    }

    #[test]
    fn received_claims_are_checked_against_the_senders_certificate() {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let claim = |ns: &str| encode_metadata_header(&Struct { fields: [("NAMESPACE".to_string(), s(ns))].into() });
        let (honest, liar) = (claim("client-ns"), claim("payments"));
        let mut peers = PeerDecoder::new(vec![], IdentityCheck::Enforce);
        let certificate = || Some(SAN.to_string());
        let found = |value: &str, peers: &mut PeerDecoder| {
            let headers = PeerHeaders { metadata: Some(value.as_bytes()), id: Some(b"id") };
            match receive(&headers, certificate, "spiffe://", peers, 4096) {
                Received::Found(peer) => peer,
                other => panic!("{other:?}"),
            }
        };
        let peer = found(&honest, &mut peers);
        assert_eq!(peer.verification, Some(Verification::Verified));
        assert_eq!(HttpCounter::for_verification(Verification::Verified), HttpCounter::PeerIdentityVerified);
        let peer = found(&liar, &mut peers);
        let mismatch = Verification::Mismatch(crate::identity::Mismatch::Namespace);
        assert_eq!(peer.verification, Some(mismatch));
        assert_eq!(peer.id, None, "enforce: the claimed node id is not kept");
        assert_eq!(HttpCounter::for_verification(mismatch), HttpCounter::PeerIdentityMismatch);
    }

    #[test]
    fn counter_names_are_unique() {
        let mut names: Vec<_> = HttpCounter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), HttpCounter::ALL.len());
    }
}
