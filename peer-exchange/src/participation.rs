//! Does this connection take part in the exchange?
//!
//! Stock Envoy exposes no negotiated ALPN to wasm, and a wasm filter cannot
//! sit on the cluster, so each role decides from what it can see, at the
//! first byte in either direction (when TLS and the upstream connection are
//! up).
//!
//! **Server** (inbound, on the chain that `application_protocols:
//! [istio-peer-exchange]` selects): takes part when the downstream connection
//! is TLS. That chain is only reachable by a client that offered
//! `istio-peer-exchange`; a plaintext connection cannot have.
//!
//! **Client** (outbound, in front of `tcp_proxy`): takes part only when all hold:
//! 1. the upstream connection is TLS;
//! 2. the upstream's certificate carries a URI SAN starting with
//!    `upstream.peer_identity_prefix` (default `spiffe://`: a mesh workload
//!    identity; `""` turns this check off);
//! 3. the upstream says it is a mesh proxy: the cluster's metadata has
//!    `istio.peer_exchange: {enabled: true}`, or the endpoint's metadata has
//!    Istio's own marker `envoy.transport_socket_match: {tlsMode: istio}`;
//! 4. the cluster has not opted out with `istio.peer_exchange: {enabled: false}`
//!    or with istiod's `istio: {disable_mx: true}` (set on a service whose
//!    every instance is reached over HBONE, where native runs no exchange);
//!    either wins over the endpoint marker.
//!
//! The HTTP form's client decides per request before routing, from the
//! route cluster's metadata alone ([`crate::http::http_client_verdict`]):
//! it also honours `istio.external`, and cannot see the endpoint or the
//! certificate yet (it checks the certificate on the response instead).
//!
//! So an upstream that is plaintext, TLS without a mesh identity, or not
//! marked as a mesh proxy never receives our magic bytes, and its traffic is
//! untouched.
//!
//! **Neither role** takes part on a connection that has no upstream
//! connection of its own: the filter then sits in front of an HTTP
//! connection manager (or another terminal filter with its own upstreams),
//! where Istio puts network plugins too. Those bytes are HTTP, and the HTTP
//! form, if configured, records the peer per request; the TCP form records
//! nothing there, so it does not mark the connection's peer "not found"
//! under a peer the HTTP form found. The client learns it only on the
//! non-TLS path (an upstream TLS version implies an upstream), the server
//! with one read per TLS connection.

use filter_common::istio::{
    self, key, PEER_EXCHANGE_ENABLED, PEER_EXCHANGE_NAMESPACE, TLS_MODE, TLS_MODE_ISTIO,
    TRANSPORT_SOCKET_MATCH_NAMESPACE,
};
use proto::core::Metadata;
use proto::prost::Message;
use proto::prost_types::value::Kind;
use proto::prost_types::Struct;

/// What the client role can see of its upstream. Asked lazily, in the
/// order of the rule, so a decided connection costs no further hostcalls.
pub trait UpstreamFacts {
    /// `upstream.tls_version` (absent: plaintext).
    fn tls_version(&mut self) -> Option<String>;
    /// `upstream.uri_san_peer_certificate`.
    fn peer_uri_san(&mut self) -> Option<String>;
    /// What the cluster's metadata (`xds.cluster_metadata`) says:
    /// [`cluster_marks`] of it. The filter remembers it by cluster name
    /// for `upstream.cluster_metadata_refresh_ms`.
    fn cluster_marks(&mut self) -> ClusterMarks;
    /// `xds.upstream_host_metadata` (serialized `Metadata`; empty when none).
    fn host_metadata(&mut self) -> Vec<u8>;
    /// Whether the connection has an upstream connection (`upstream.address`).
    fn connected(&mut self) -> bool;
}

/// Why the client role did or did not take part (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Participate,
    /// No upstream connection of the connection's own (see the module docs).
    NoUpstream,
    UpstreamNotTls,
    DownstreamNotTls,
    PeerIdentityMismatch,
    ClusterOptedOut,
    NotMarkedAsMesh,
    /// One of istiod's service clusters whose endpoint carries no Istio
    /// marker (a headless service's ORIGINAL_DST cluster): by design not
    /// exchanged, silently.
    IstioServiceWithoutEndpointMarker,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Participate => "takes part",
            Verdict::NoUpstream => {
                "no upstream connection of its own (a terminal filter such as an HTTP connection manager follows)"
            }
            Verdict::UpstreamNotTls => "the upstream connection is not TLS",
            Verdict::DownstreamNotTls => "the downstream connection is not TLS",
            Verdict::PeerIdentityMismatch => "the upstream certificate has no mesh identity",
            Verdict::ClusterOptedOut => "the cluster opted out",
            Verdict::NotMarkedAsMesh => "the upstream is not marked as a mesh proxy",
            Verdict::IstioServiceWithoutEndpointMarker => {
                "istiod's service cluster has no endpoint marker (a headless service): not exchanged"
            }
        })
    }
}

impl Verdict {
    pub fn participates(self) -> bool {
        self == Verdict::Participate
    }
}

/// The TCP client role's rule (see the module docs).
pub fn tcp_client_verdict(upstream: &mut dyn UpstreamFacts, peer_identity_prefix: &str) -> Verdict {
    if upstream.tls_version().is_none_or(|v| v.is_empty()) {
        return if upstream.connected() { Verdict::UpstreamNotTls } else { Verdict::NoUpstream };
    }
    if !peer_identity_prefix.is_empty()
        && !upstream.peer_uri_san().is_some_and(|san| san.starts_with(peer_identity_prefix))
    {
        return Verdict::PeerIdentityMismatch;
    }
    let marks = upstream.cluster_marks();
    match marks.enabled {
        Some(false) => Verdict::ClusterOptedOut,
        Some(true) => Verdict::Participate,
        None if endpoint_is_istio_mtls(&upstream.host_metadata()) => Verdict::Participate,
        None if marks.istio_service => Verdict::IstioServiceWithoutEndpointMarker,
        None => Verdict::NotMarkedAsMesh,
    }
}

/// What a cluster's metadata says to the TCP client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterMarks {
    /// [`cluster_enabled`].
    pub enabled: Option<bool>,
    /// istiod built it for a registry service (`istio.services`).
    pub istio_service: bool,
}

/// [`ClusterMarks`] of a cluster's serialized `Metadata` (unreadable: none).
pub fn cluster_marks(metadata: &[u8]) -> ClusterMarks {
    let Ok(decoded) = Metadata::decode(metadata) else { return ClusterMarks::default() };
    let istio_service =
        decoded.filter_metadata.get(istio::NAMESPACE).is_some_and(|s| s.fields.contains_key(key::SERVICES));
    ClusterMarks { enabled: cluster_enabled(metadata), istio_service }
}

/// The TCP server role's rule: the downstream connection is TLS, and the
/// connection has an upstream connection (asked only for TLS connections).
pub fn tcp_server_verdict(downstream_tls_version: Option<&str>, connected: impl FnOnce() -> bool) -> Verdict {
    if downstream_tls_version.is_none_or(str::is_empty) {
        Verdict::DownstreamNotTls
    } else if !connected() {
        Verdict::NoUpstream
    } else {
        Verdict::Participate
    }
}

/// What a cluster's serialized `Metadata` says of the TCP exchange:
/// `Some(false)` when it opted out (`istio.disable_mx: true`, or
/// `istio.peer_exchange.enabled` other than true), else that flag; `None`
/// if neither is there or the metadata is unreadable (unreadable metadata
/// never opts a cluster in).
pub fn cluster_enabled(metadata: &[u8]) -> Option<bool> {
    let metadata = Metadata::decode(metadata).ok()?;
    if istio_flag(&metadata, key::DISABLE_MX) {
        return Some(false);
    }
    enabled_flag(metadata.filter_metadata.get(PEER_EXCHANGE_NAMESPACE)?)
}

/// Whether istiod's `istio` namespace has `key: true` (a bool, as istiod
/// writes it; native reads the bool only).
pub fn istio_flag(metadata: &Metadata, key: &str) -> bool {
    matches!(
        metadata.filter_metadata.get(istio::NAMESPACE).and_then(|s| s.fields.get(key)).and_then(|v| v.kind.as_ref()),
        Some(Kind::BoolValue(true))
    )
}

/// The `enabled` flag of an `istio.peer_exchange` metadata struct: a bool or
/// "true"; anything else present counts as an opt-out (unclear metadata must
/// not send our metadata); `None` when absent.
pub fn enabled_flag(namespace: &Struct) -> Option<bool> {
    match namespace.fields.get(PEER_EXCHANGE_ENABLED)?.kind.as_ref()? {
        Kind::BoolValue(b) => Some(*b),
        Kind::StringValue(s) if s == "true" => Some(true),
        _ => Some(false),
    }
}

pub fn endpoint_is_istio_mtls(metadata: &[u8]) -> bool {
    let Ok(metadata) = Metadata::decode(metadata) else {
        return false;
    };
    matches!(
        metadata
            .filter_metadata
            .get(TRANSPORT_SOCKET_MATCH_NAMESPACE)
            .and_then(|s| s.fields.get(TLS_MODE))
            .and_then(|v| v.kind.as_ref()),
        Some(Kind::StringValue(mode)) if mode == TLS_MODE_ISTIO
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use filter_common::istio::{NAMESPACE as ISTIO_NAMESPACE, PEER_EXCHANGE_NAMESPACE as CLUSTER_NAMESPACE};

    pub(crate) use proto::metadata_bytes as md;

    #[derive(Clone, Default)]
    struct View {
        tls_version: Option<&'static str>,
        peer_uri_san: Option<&'static str>,
        cluster_metadata: Vec<u8>,
        host_metadata: Vec<u8>,
        no_upstream: bool,
        asked: Vec<&'static str>,
    }

    impl UpstreamFacts for View {
        fn tls_version(&mut self) -> Option<String> {
            self.asked.push("tls_version");
            self.tls_version.map(str::to_string)
        }
        fn peer_uri_san(&mut self) -> Option<String> {
            self.asked.push("peer_uri_san");
            self.peer_uri_san.map(str::to_string)
        }
        fn cluster_marks(&mut self) -> ClusterMarks {
            self.asked.push("cluster_metadata");
            cluster_marks(&self.cluster_metadata)
        }
        fn host_metadata(&mut self) -> Vec<u8> {
            self.asked.push("host_metadata");
            self.host_metadata.clone()
        }
        fn connected(&mut self) -> bool {
            self.asked.push("connected");
            !self.no_upstream
        }
    }

    fn mesh_upstream(cluster: &[u8], host: &[u8]) -> View {
        View {
            tls_version: Some("TLSv1.3"),
            peer_uri_san: Some("spiffe://cluster.local/ns/default/sa/server"),
            cluster_metadata: cluster.to_vec(),
            host_metadata: host.to_vec(),
            no_upstream: false,
            asked: Vec::new(),
        }
    }

    #[test]
    fn cluster_opt_in_or_istio_endpoint_marker_makes_a_mesh_upstream() {
        let opt_in = md(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))]);
        let mut view = mesh_upstream(&opt_in, &[]);
        assert_eq!(tcp_client_verdict(&mut view, "spiffe://"), Verdict::Participate);
        assert_eq!(view.asked, ["tls_version", "peer_uri_san", "cluster_metadata"], "host metadata not needed");
        let opt_in_str = md(&[(CLUSTER_NAMESPACE, "enabled", Kind::StringValue("true".into()))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&opt_in_str, &[]), "spiffe://"), Verdict::Participate);
        let istio = md(&[(TRANSPORT_SOCKET_MATCH_NAMESPACE, "tlsMode", Kind::StringValue("istio".into()))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&[], &istio), "spiffe://"), Verdict::Participate);
    }

    #[test]
    fn unmarked_plaintext_or_non_mesh_upstreams_never_participate() {
        let opt_in = md(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&[], &[]), "spiffe://"), Verdict::NotMarkedAsMesh);
        let disabled = md(&[(TRANSPORT_SOCKET_MATCH_NAMESPACE, "tlsMode", Kind::StringValue("disabled".into()))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&[], &disabled), "spiffe://"), Verdict::NotMarkedAsMesh);

        let mut plaintext = View { tls_version: None, ..mesh_upstream(&opt_in, &[]) };
        assert_eq!(tcp_client_verdict(&mut plaintext, "spiffe://"), Verdict::UpstreamNotTls);
        assert_eq!(plaintext.asked, ["tls_version", "connected"]);
        let dns_only = View { peer_uri_san: None, ..mesh_upstream(&opt_in, &[]) };
        assert_eq!(tcp_client_verdict(&mut dns_only.clone(), "spiffe://"), Verdict::PeerIdentityMismatch);
        let mut other = View { peer_uri_san: Some("https://example.com"), ..mesh_upstream(&opt_in, &[]) };
        assert_eq!(tcp_client_verdict(&mut other, "spiffe://"), Verdict::PeerIdentityMismatch);
        // The identity check can be turned off.
        assert_eq!(tcp_client_verdict(&mut dns_only.clone(), ""), Verdict::Participate);
    }

    #[test]
    fn cluster_opt_out_wins_over_the_endpoint_marker() {
        let istio = md(&[(TRANSPORT_SOCKET_MATCH_NAMESPACE, "tlsMode", Kind::StringValue("istio".into()))]);
        for off in [Kind::BoolValue(false), Kind::StringValue("false".into()), Kind::StringValue("yes".into())] {
            let opt_out = md(&[(CLUSTER_NAMESPACE, "enabled", off)]);
            assert_eq!(tcp_client_verdict(&mut mesh_upstream(&opt_out, &istio), "spiffe://"), Verdict::ClusterOptedOut);
        }
    }

    /// istiod's `disable_mx` (every instance over HBONE) opts a cluster out
    /// of the TCP form as of the HTTP form, over an opt-in and the endpoint
    /// marker; `istio.external` is the HTTP form's alone (a MESH_EXTERNAL
    /// upstream with a mesh certificate and a marker is taken at its word).
    #[test]
    fn istiods_disable_mx_opts_out_and_external_does_not() {
        let istio = md(&[(TRANSPORT_SOCKET_MATCH_NAMESPACE, "tlsMode", Kind::StringValue("istio".into()))]);
        let opt_in_hbone = md(&[
            (CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true)),
            (ISTIO_NAMESPACE, "disable_mx", Kind::BoolValue(true)),
        ]);
        assert_eq!(
            tcp_client_verdict(&mut mesh_upstream(&opt_in_hbone, &istio), "spiffe://"),
            Verdict::ClusterOptedOut
        );
        let hbone = md(&[(ISTIO_NAMESPACE, "disable_mx", Kind::BoolValue(true))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&hbone, &istio), "spiffe://"), Verdict::ClusterOptedOut);
        let not_bool = md(&[(ISTIO_NAMESPACE, "disable_mx", Kind::StringValue("true".into()))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&not_bool, &istio), "spiffe://"), Verdict::Participate);
        let external = md(&[
            (CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true)),
            (ISTIO_NAMESPACE, "external", Kind::BoolValue(true)),
        ]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&external, &[]), "spiffe://"), Verdict::Participate);
    }

    #[test]
    fn istiods_service_clusters_without_an_endpoint_marker_are_told_apart() {
        let services = md(&[(ISTIO_NAMESPACE, "services", Kind::StringValue("x".into()))]);
        assert_eq!(
            tcp_client_verdict(&mut mesh_upstream(&services, &[]), "spiffe://"),
            Verdict::IstioServiceWithoutEndpointMarker
        );
        let istio = md(&[(TRANSPORT_SOCKET_MATCH_NAMESPACE, "tlsMode", Kind::StringValue("istio".into()))]);
        assert_eq!(tcp_client_verdict(&mut mesh_upstream(&services, &istio), "spiffe://"), Verdict::Participate);
    }

    #[test]
    fn garbage_metadata_never_opts_in() {
        assert_eq!(
            tcp_client_verdict(&mut mesh_upstream(&[0xff, 0x01], &[0xff]), "spiffe://"),
            Verdict::NotMarkedAsMesh
        );
    }

    #[test]
    fn server_takes_part_on_proxied_tls_only() {
        assert_eq!(tcp_server_verdict(Some("TLSv1.3"), || true), Verdict::Participate);
        assert_eq!(tcp_server_verdict(None, || panic!("not asked without TLS")), Verdict::DownstreamNotTls);
        assert_eq!(tcp_server_verdict(Some(""), || true), Verdict::DownstreamNotTls);
        // In front of an HTTP connection manager (Istio's inbound HTTP chains).
        assert_eq!(tcp_server_verdict(Some("TLSv1.3"), || false), Verdict::NoUpstream);
    }

    #[test]
    fn a_client_without_an_upstream_connection_is_told_apart_only_off_the_tls_path() {
        let opt_in = md(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))]);
        let mut in_front_of_an_hcm = View { tls_version: None, no_upstream: true, ..mesh_upstream(&opt_in, &[]) };
        assert_eq!(tcp_client_verdict(&mut in_front_of_an_hcm, "spiffe://"), Verdict::NoUpstream);
        let mut mesh = mesh_upstream(&opt_in, &[]);
        assert_eq!(tcp_client_verdict(&mut mesh, "spiffe://"), Verdict::Participate);
        assert!(!mesh.asked.contains(&"connected"), "{:?}", mesh.asked);
    }
}
