//! Istio's vocabulary, spelled once: the metadata namespaces and keys istiod
//! writes and the filters read, the filter-state keys and fields of a stored
//! peer (contrib's `metadata_object.h` names), and ([`markers`]) where users
//! misplace the markers.
//!
//! One scheme: **Istio's own markers are keys in the namespace `istio`**
//! (where istiod writes them), and **ours are namespaces of their own,
//! named after the filter** (as Envoy recommends for filter metadata).

pub mod markers;

pub use markers::{misplaced, Marker, Misplaced, Reports};

/// Istio's metadata namespace, on clusters and endpoints: istiod's markers
/// and the endpoint's workload are its keys ([`key`]).
pub const NAMESPACE: &str = "istio";

/// Keys of [`NAMESPACE`] as istiod writes them.
pub mod key {
    /// Cluster: `"false"` opts the cluster out of the ALPN override.
    pub const ALPN_OVERRIDE: &str = "alpn_override";
    /// Cluster: every instance is reached over HBONE; no exchange.
    pub const DISABLE_MX: &str = "disable_mx";
    /// Cluster: a MESH_EXTERNAL service entry.
    pub const EXTERNAL: &str = "external";
    /// Cluster: the services behind it (istiod writes it on every service cluster).
    pub const SERVICES: &str = "services";
    /// Endpoint: the workload behind it, `name;namespace;service;revision;cluster`.
    pub const WORKLOAD: &str = "workload";
}

/// alpn-filter's own cluster namespace.
pub const ALPN_NAMESPACE: &str = "istio.alpn";
/// The exchange's own cluster namespace, and its one key.
pub const PEER_EXCHANGE_NAMESPACE: &str = "istio.peer_exchange";
pub const PEER_EXCHANGE_ENABLED: &str = "enabled";

/// Envoy's namespace for transport socket matches, where istiod marks an
/// endpoint that speaks Istio mTLS (`tlsMode: istio`).
pub const TRANSPORT_SOCKET_MATCH_NAMESPACE: &str = "envoy.transport_socket_match";
pub const TLS_MODE: &str = "tlsMode";
pub const TLS_MODE_ISTIO: &str = "istio";

/// The stored peer: where it is kept in filter state and its fields
/// (`WorkloadMetadataObject::serializeAsProto` in Envoy's contrib
/// `metadata_object.h`, lowercase), plus ours (`source`, and the
/// certificate's facts).
pub mod peer {
    /// Filter-state key of the peer the server learned.
    pub const DOWNSTREAM: &str = "downstream_peer";
    /// Filter-state key of the peer the client learned.
    pub const UPSTREAM: &str = "upstream_peer";

    pub const TYPE: &str = "type";
    pub const WORKLOAD: &str = "workload";
    pub const NAME: &str = "name";
    pub const CLUSTER: &str = "cluster";
    pub const NAMESPACE: &str = "namespace";
    pub const SERVICE: &str = "service";
    pub const REVISION: &str = "revision";
    pub const APP: &str = "app";
    pub const VERSION: &str = "version";
    pub const IDENTITY: &str = "identity";
    pub const REGION: &str = "region";
    pub const ZONE: &str = "availability_zone";
    pub const LABELS: &str = "labels";
    /// Ours: where the stored facts came from (`exchange`, `certificate`, ...).
    pub const SOURCE: &str = "source";
    /// Ours: the certificate's service account and whether the claim matched it.
    pub const SERVICE_ACCOUNT: &str = "service_account";
    pub const VERIFIED: &str = "verified";
    /// Ours: why `verified` is false.
    pub const UNVERIFIED_REASON: &str = "unverified_reason";
}
