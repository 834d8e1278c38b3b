//! Istio's standard metrics (`istio_requests_total`, the TCP series, ...),
//! labelled the way native `istio_stats` labels them
//! (`populatePeerInfo` in Envoy's `contrib/istio/filters/http/istio_stats/`),
//! from the peer this module stored, our own node, the route's cluster and
//! what Envoy reports for the request or connection.
//!
//! A wasm module cannot give its metrics tags, so each label set travels in
//! the metric's name in Istio's own layout, `reporter=.=source;.;...;.;istio_requests_total`,
//! and Envoy's tag extraction (`stats_config.stats_tags`, the regexes
//! `(<label>=\.=(.*?);\.;)` that Istio's sidecar bootstrap also has) turns
//! it back into labels; `/stats/prometheus` drops the `wasmcustom.`
//! namespace. Values never contain `;` or `=` ([`push_label_value`]), so a
//! value cannot end its label early or pose as another label.
//!
//! Every distinct label set is a new stat in Envoy, kept for the VM's life,
//! so the sets a VM defines are capped ([`SeriesTable`]): a peer that claims
//! a new workload per request cannot grow memory past the cap.

use std::collections::HashMap;

use proto::core::Metadata;
use proto::prost::Message;
use proto::prost_types::value::Kind;
use proto::prost_types::Struct;

use crate::config::Role;
use filter_common::istio::peer;

/// Native's placeholders.
const UNKNOWN: &str = "unknown";
const LATEST: &str = "latest";

/// A metric of Istio's: its name and whether it is a histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub histogram: bool,
}

const fn counter(name: &'static str) -> Metric {
    Metric { name, histogram: false }
}

const fn histogram(name: &'static str) -> Metric {
    Metric { name, histogram: true }
}

pub const REQUESTS_TOTAL: Metric = counter("istio_requests_total");
pub const REQUEST_DURATION: Metric = histogram("istio_request_duration_milliseconds");
pub const REQUEST_BYTES: Metric = histogram("istio_request_bytes");
pub const RESPONSE_BYTES: Metric = histogram("istio_response_bytes");
pub const REQUEST_MESSAGES: Metric = counter("istio_request_messages_total");
pub const RESPONSE_MESSAGES: Metric = counter("istio_response_messages_total");
pub const TCP_OPENED: Metric = counter("istio_tcp_connections_opened_total");
pub const TCP_CLOSED: Metric = counter("istio_tcp_connections_closed_total");
pub const TCP_SENT_BYTES: Metric = counter("istio_tcp_sent_bytes_total");
pub const TCP_RECEIVED_BYTES: Metric = counter("istio_tcp_received_bytes_total");

/// The ids Envoy gave one HTTP label set's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpSeries {
    pub requests: u32,
    pub duration: u32,
    pub request_bytes: u32,
    pub response_bytes: u32,
    /// gRPC label sets only (request_protocol `grpc`), as native defines them.
    pub messages: Option<GrpcMessages>,
}

/// The ids of a gRPC label set's message counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcMessages {
    pub request: u32,
    pub response: u32,
}

/// The ids Envoy gave one TCP label set's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSeries {
    pub opened: u32,
    pub closed: u32,
    pub sent: u32,
    pub received: u32,
}

impl HttpSeries {
    /// Defines the set's metrics with `define` (metric → id, `None` if
    /// Envoy refused); with gRPC's message counters for a gRPC set.
    pub fn define(grpc: bool, mut define: impl FnMut(Metric) -> Option<u32>) -> Option<HttpSeries> {
        let messages = if grpc {
            Some(GrpcMessages { request: define(REQUEST_MESSAGES)?, response: define(RESPONSE_MESSAGES)? })
        } else {
            None
        };
        Some(HttpSeries {
            requests: define(REQUESTS_TOTAL)?,
            duration: define(REQUEST_DURATION)?,
            request_bytes: define(REQUEST_BYTES)?,
            response_bytes: define(RESPONSE_BYTES)?,
            messages,
        })
    }
}

impl TcpSeries {
    /// Defines the set's metrics with `define` (metric → id, `None` if Envoy refused).
    pub fn define(mut define: impl FnMut(Metric) -> Option<u32>) -> Option<TcpSeries> {
        Some(TcpSeries {
            opened: define(TCP_OPENED)?,
            closed: define(TCP_CLOSED)?,
            sent: define(TCP_SENT_BYTES)?,
            received: define(TCP_RECEIVED_BYTES)?,
        })
    }
}

/// gRPC's message counts as Envoy's `grpc_stats` filter state prints them
/// (`<request>,<response>`).
pub fn grpc_message_counts(text: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let (request, response) = text.split_once(',')?;
    Some((request.trim().parse().ok()?, response.trim().parse().ok()?))
}

/// A workload as the labels see it: our own (node metadata, raw, as native's
/// `Context` reads it) or the peer's (the stored peer's fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadLabels {
    pub workload: String,
    pub namespace: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub app: String,
    pub version: String,
    pub cluster: String,
    /// The peer's claimed (or certified) identity; unused for our own.
    pub identity: String,
}

impl WorkloadLabels {
    /// The peer's labels from its stored Struct (what was believed: a claim,
    /// or only what its certificate proves).
    pub fn from_stored(stored: &Struct) -> WorkloadLabels {
        let get = |key: &str| match stored.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        WorkloadLabels {
            workload: get(peer::WORKLOAD),
            namespace: get(peer::NAMESPACE),
            canonical_service: get(peer::SERVICE),
            canonical_revision: get(peer::REVISION),
            app: get(peer::APP),
            version: get(peer::VERSION),
            cluster: get(peer::CLUSTER),
            identity: get(peer::IDENTITY),
        }
    }
}

/// The destination service, from the route's cluster and the request's
/// `Host` (native: `service_host`, `service_host_name`, `service_namespace`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    pub host: String,
    pub name: String,
    pub namespace: String,
}

/// Cluster names native reports as the service name itself.
const SPECIAL_CLUSTERS: [&str; 5] = [
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
];

/// What a cluster says about its service: native's special names, or the
/// first of istiod's `istio.services` (`{host, name, namespace}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClusterService {
    /// Nothing: the `Host` header alone names the service.
    #[default]
    None,
    Special(String),
    Services(Service),
}

impl ClusterService {
    /// From the cluster's name and its serialized `Metadata`.
    pub fn read(cluster_name: &str, metadata: &[u8]) -> ClusterService {
        if SPECIAL_CLUSTERS.contains(&cluster_name) {
            return ClusterService::Special(cluster_name.to_string());
        }
        let Ok(metadata) = Metadata::decode(metadata) else {
            return ClusterService::None;
        };
        let first = metadata
            .filter_metadata
            .get(filter_common::istio::NAMESPACE)
            .and_then(|istio| istio.fields.get(filter_common::istio::key::SERVICES))
            .and_then(|v| match v.kind.as_ref() {
                Some(Kind::ListValue(list)) => list.values.first(),
                _ => None,
            })
            .and_then(|v| match v.kind.as_ref() {
                Some(Kind::StructValue(s)) => Some(s),
                _ => None,
            });
        let Some(service) = first else { return ClusterService::None };
        let field = |key: &str| match service.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let host = field("host").unwrap_or_default();
        let name = field("name").unwrap_or_else(|| host.split('.').next().unwrap_or_default().to_string());
        ClusterService::Services(Service { host, name, namespace: field("namespace").unwrap_or_default() })
    }

    /// The service, with the request's `Host` where the cluster says nothing.
    pub fn with_host(&self, host: &str) -> Service {
        match self {
            ClusterService::None => {
                Service { host: host.to_string(), name: host.to_string(), namespace: String::new() }
            }
            ClusterService::Special(name) => {
                Service { host: host.to_string(), name: name.clone(), namespace: String::new() }
            }
            ClusterService::Services(service) => service.clone(),
        }
    }
}

/// What Envoy reports for the request or connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// `http`, `grpc` or `tcp`.
    pub protocol: &'static str,
    /// HTTP only: the response code (0 when there was none).
    pub response_code: Option<u64>,
    /// gRPC only: the status.
    pub grpc_status: Option<u64>,
    /// Envoy's `response.flags` bits.
    pub response_flags: u64,
}

/// Envoy's response flags by bit, in its `CoreResponseFlag` order (the
/// short names `%RESPONSE_FLAGS%` and native's label print).
const FLAGS: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
];

/// The flags as native's label prints them: short names joined by `,`, or `-`.
pub fn response_flags(bits: u64) -> String {
    let mut out = String::new();
    for (bit, name) in FLAGS.iter().enumerate() {
        if bits & (1 << bit) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// The namespace in a SPIFFE-style principal (`.../ns/<namespace>/...`).
fn principal_namespace(principal: &str) -> Option<&str> {
    let start = principal.find("/ns/")? + 4;
    let rest = principal.get(start..)?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The longest label value kept, in characters: Kubernetes names are at
/// most 253, label values 63; a peer claiming more would only make each
/// label set (and Envoy's stat names) bigger.
pub const MAX_LABEL_VALUE_CHARS: usize = 256;

/// Appends a label value as it can travel in a stat name and come out as a
/// label: `;` and `=` (which delimit labels there) and control characters
/// (Envoy's tag regexes `(.*?)` do not cross a newline, so one would leave
/// the label unextracted and the name a new metric family) become `_`;
/// past [`MAX_LABEL_VALUE_CHARS`] it is cut.
pub fn push_label_value(out: &mut String, value: &str) {
    out.extend(value.chars().take(MAX_LABEL_VALUE_CHARS).map(|c| {
        if c == ';' || c == '=' || c.is_control() {
            '_'
        } else {
            c
        }
    }));
}

fn or<'a>(value: &'a str, fallback: &'a str) -> &'a str {
    if value.is_empty() {
        fallback
    } else {
        value
    }
}

/// Everything one label set is made of.
pub struct LabelInputs<'a> {
    pub role: Role,
    pub local: &'a WorkloadLabels,
    /// The stored peer, if any (native: the peer object, or on the client the
    /// endpoint's `istio.workload`).
    pub peer: Option<&'a WorkloadLabels>,
    /// The peer certificate's URI SAN and ours (empty: none).
    pub peer_principal: &'a str,
    pub local_principal: &'a str,
    pub service: &'a Service,
    pub traffic: &'a Traffic,
}

/// Istio's 25 metric labels, in native's order: the tag names a scraping
/// Envoy's `stats_tags` (Istio: `extraStatTags`) must extract.
pub const LABEL_NAMES: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// The label set, as the stat name's prefix (`label=.=value;.;` each), in
/// native's order.
pub fn label_set(i: &LabelInputs<'_>) -> String {
    let empty = WorkloadLabels::default();
    let peer = i.peer.unwrap_or(&empty);
    // Native prefers the certificate's namespace to the peer's claim; the
    // client falls back to the peer's claimed identity.
    let peer_principal = match (i.role, i.peer_principal) {
        (Role::Client, "") => peer.identity.as_str(),
        (_, san) => san,
    };
    let peer_namespace = principal_namespace(peer_principal).filter(|ns| !ns.is_empty()).unwrap_or(&peer.namespace);
    let local = i.local;
    let service = i.service;
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(25);
    match i.role {
        Role::Server => {
            labels.extend([
                ("reporter", "destination"),
                ("source_workload", or(&peer.workload, UNKNOWN)),
                ("source_canonical_service", or(&peer.canonical_service, UNKNOWN)),
                ("source_canonical_revision", or(&peer.canonical_revision, LATEST)),
                ("source_workload_namespace", or(peer_namespace, UNKNOWN)),
                ("source_principal", or(peer_principal, UNKNOWN)),
                ("source_app", or(&peer.app, UNKNOWN)),
                ("source_version", or(&peer.version, UNKNOWN)),
                ("source_cluster", or(&peer.cluster, UNKNOWN)),
                ("destination_workload", or(&local.workload, UNKNOWN)),
                ("destination_workload_namespace", or(&local.namespace, UNKNOWN)),
                ("destination_principal", or(i.local_principal, UNKNOWN)),
                ("destination_app", or(&local.app, UNKNOWN)),
                ("destination_version", or(&local.version, UNKNOWN)),
                ("destination_service", or(&service.host, or(&local.canonical_service, UNKNOWN))),
                ("destination_canonical_service", or(&local.canonical_service, UNKNOWN)),
                ("destination_canonical_revision", or(&local.canonical_revision, LATEST)),
                ("destination_service_name", or(&service.name, or(&local.canonical_service, UNKNOWN))),
                ("destination_service_namespace", or(&local.namespace, UNKNOWN)),
                ("destination_cluster", or(&local.cluster, UNKNOWN)),
            ]);
        }
        Role::Client => {
            let service_namespace = or(&service.namespace, or(peer_namespace, UNKNOWN));
            labels.extend([
                ("reporter", "source"),
                ("source_workload", or(&local.workload, UNKNOWN)),
                ("source_canonical_service", or(&local.canonical_service, UNKNOWN)),
                ("source_canonical_revision", or(&local.canonical_revision, LATEST)),
                ("source_workload_namespace", or(&local.namespace, UNKNOWN)),
                ("source_principal", or(i.local_principal, UNKNOWN)),
                ("source_app", or(&local.app, UNKNOWN)),
                ("source_version", or(&local.version, UNKNOWN)),
                ("source_cluster", or(&local.cluster, UNKNOWN)),
                ("destination_workload", or(&peer.workload, UNKNOWN)),
                ("destination_workload_namespace", or(peer_namespace, UNKNOWN)),
                ("destination_principal", or(peer_principal, UNKNOWN)),
                ("destination_app", or(&peer.app, UNKNOWN)),
                ("destination_version", or(&peer.version, UNKNOWN)),
                ("destination_service", or(&service.host, UNKNOWN)),
                ("destination_canonical_service", or(&peer.canonical_service, UNKNOWN)),
                ("destination_canonical_revision", or(&peer.canonical_revision, LATEST)),
                ("destination_service_name", or(&service.name, UNKNOWN)),
                ("destination_service_namespace", service_namespace),
                ("destination_cluster", or(&peer.cluster, UNKNOWN)),
            ]);
        }
    }
    let traffic = i.traffic;
    let code = traffic.response_code.map(|c| c.to_string());
    let grpc = traffic.grpc_status.map(|s| s.to_string());
    let flags = response_flags(traffic.response_flags);
    labels.push(("request_protocol", traffic.protocol));
    if let Some(code) = &code {
        labels.push(("response_code", code));
        labels.push(("grpc_response_status", grpc.as_deref().unwrap_or("")));
    }
    labels.push(("response_flags", &flags));
    // Native knows the policy on the server only (both certificates present).
    let policy = match i.role {
        Role::Server if !i.peer_principal.is_empty() && !i.local_principal.is_empty() => "mutual_tls",
        Role::Server => "none",
        Role::Client => UNKNOWN,
    };
    labels.push(("connection_security_policy", policy));
    let mut out = String::with_capacity(1024);
    for (name, value) in labels {
        out.push_str(name);
        out.push_str("=.=");
        push_label_value(&mut out, value);
        out.push_str(";.;");
    }
    out
}

/// Where a label set stands in a VM's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series<T> {
    /// Defined: the ids of its metrics.
    Ids(T),
    /// Past the cap (or Envoy refused it): not recorded, counted.
    Overflow,
}

/// The label sets a VM has defined, capped: a set past the cap is never
/// defined (Envoy would keep it for the VM's life), only counted. One
/// table per VM and form, whatever the plugin configurations: Envoy's
/// `defineMetric` adds an entry on every call, even for a name it has, so
/// a configuration replaced by xDS must reuse the ids, not define again.
pub struct SeriesTable<T> {
    defined: HashMap<String, T>,
}

impl<T> Default for SeriesTable<T> {
    fn default() -> Self {
        SeriesTable { defined: HashMap::new() }
    }
}

impl<T: Copy> SeriesTable<T> {
    /// The set's ids, defining its metrics (`define`: the set's prefix →
    /// the ids, `None` if Envoy refused) the first time, while fewer than
    /// `max` sets are defined.
    pub fn series(&mut self, labels: &str, max: u32, define: impl FnOnce(&str) -> Option<T>) -> Series<T> {
        if let Some(ids) = self.defined.get(labels) {
            return Series::Ids(*ids);
        }
        if self.defined.len() >= max as usize {
            return Series::Overflow;
        }
        match define(labels) {
            Some(ids) => {
                self.defined.insert(labels.to_string(), ids);
                Series::Ids(ids)
            }
            None => Series::Overflow,
        }
    }

    pub fn len(&self) -> usize {
        self.defined.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defined.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::prost_types::{ListValue, Value};
    use std::collections::BTreeMap;

    fn labels_of(set: &str) -> BTreeMap<&str, &str> {
        set.split(";.;").filter(|s| !s.is_empty()).filter_map(|pair| pair.split_once("=.=")).collect()
    }

    fn local() -> WorkloadLabels {
        WorkloadLabels {
            workload: "frontend".into(),
            namespace: "shop".into(),
            canonical_service: "frontend".into(),
            canonical_revision: "v1".into(),
            app: "frontend".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
            identity: String::new(),
        }
    }

    fn backend() -> WorkloadLabels {
        WorkloadLabels {
            workload: "backend".into(),
            namespace: "shop".into(),
            canonical_service: "backend".into(),
            canonical_revision: "v2".into(),
            app: "backend".into(),
            version: "v2".into(),
            cluster: "Kubernetes".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/backend".into(),
        }
    }

    fn http(code: u64) -> Traffic {
        Traffic { protocol: "http", response_code: Some(code), grpc_status: None, response_flags: 0 }
    }

    #[test]
    fn client_labels_follow_native() {
        let (local, peer) = (local(), backend());
        let service = ClusterService::None.with_host("backend.shop:8080");
        let set = label_set(&LabelInputs {
            role: Role::Client,
            local: &local,
            peer: Some(&peer),
            peer_principal: "spiffe://cluster.local/ns/prod/sa/backend",
            local_principal: "spiffe://cluster.local/ns/shop/sa/frontend",
            service: &service,
            traffic: &http(200),
        });
        let l = labels_of(&set);
        assert!(set.starts_with("reporter=.=source;.;source_workload=.=frontend;.;"));
        assert_eq!(l["destination_workload"], "backend");
        // The certificate's namespace wins over the claim.
        assert_eq!(l["destination_workload_namespace"], "prod");
        assert_eq!(l["destination_service_namespace"], "prod");
        assert_eq!(l["destination_service"], "backend.shop:8080");
        assert_eq!(l["destination_service_name"], "backend.shop:8080");
        assert_eq!(l["destination_canonical_revision"], "v2");
        assert_eq!(l["source_principal"], "spiffe://cluster.local/ns/shop/sa/frontend");
        assert_eq!(l["request_protocol"], "http");
        assert_eq!(l["response_code"], "200");
        assert_eq!(l["grpc_response_status"], "");
        assert_eq!(l["response_flags"], "-");
        assert_eq!(l["connection_security_policy"], "unknown");
        assert_eq!(l.len(), 25);
        let names: Vec<&str> = set.split(";.;").filter_map(|p| p.split_once("=.=")).map(|(k, _)| k).collect();
        assert_eq!(names, LABEL_NAMES, "LABEL_NAMES is the set's names, in order");
    }

    #[test]
    fn server_without_a_peer_reports_unknown_and_latest() {
        let local = local();
        let service = ClusterService::None.with_host("");
        let set = label_set(&LabelInputs {
            role: Role::Server,
            local: &local,
            peer: None,
            peer_principal: "",
            local_principal: "spiffe://cluster.local/ns/shop/sa/frontend",
            service: &service,
            traffic: &http(503),
        });
        let l = labels_of(&set);
        assert_eq!(l["reporter"], "destination");
        assert_eq!(l["source_workload"], "unknown");
        assert_eq!(l["source_canonical_revision"], "latest");
        assert_eq!(l["source_principal"], "unknown");
        assert_eq!(l["destination_service"], "frontend");
        assert_eq!(l["destination_service_name"], "frontend");
        assert_eq!(l["destination_principal"], "spiffe://cluster.local/ns/shop/sa/frontend");
        assert_eq!(l["connection_security_policy"], "none");
    }

    #[test]
    fn no_label_is_ever_empty_where_istio_writes_unknown_even_without_node_metadata() {
        let nothing = WorkloadLabels::default();
        let service = ClusterService::None.with_host("");
        for role in [Role::Client, Role::Server] {
            let set = label_set(&LabelInputs {
                role,
                local: &nothing,
                peer: None,
                peer_principal: "",
                local_principal: "",
                service: &service,
                traffic: &http(200),
            });
            for (name, value) in labels_of(&set) {
                if name == "grpc_response_status" {
                    continue; // empty for non-gRPC, as native
                }
                let want = if name.ends_with("canonical_revision") { "latest" } else { "unknown" };
                if name.starts_with("source_") || name.starts_with("destination_") {
                    assert_eq!(value, want, "{role:?} {name}");
                } else {
                    assert!(!value.is_empty(), "{role:?} {name}");
                }
            }
        }
    }

    #[test]
    fn client_without_certificate_uses_the_claimed_identity_and_tcp_has_no_code() {
        let (local, peer) = (local(), backend());
        let service = ClusterService::None.with_host("");
        let tcp = Traffic { protocol: "tcp", response_code: None, grpc_status: None, response_flags: 1 << 5 };
        let set = label_set(&LabelInputs {
            role: Role::Client,
            local: &local,
            peer: Some(&peer),
            peer_principal: "",
            local_principal: "",
            service: &service,
            traffic: &tcp,
        });
        let l = labels_of(&set);
        assert_eq!(l["destination_principal"], "spiffe://cluster.local/ns/shop/sa/backend");
        assert_eq!(l["destination_service"], "unknown");
        assert_eq!(l["source_principal"], "unknown");
        assert_eq!(l["response_flags"], "UF");
        assert!(!l.contains_key("response_code") && !l.contains_key("grpc_response_status"));
        assert_eq!(l.len(), 23);
    }

    #[test]
    fn a_value_cannot_end_its_label_or_pose_as_another() {
        let mut peer = backend();
        peer.workload = "x;.;reporter=.=source".into();
        let local = local();
        let service = Service::default();
        let set = label_set(&LabelInputs {
            role: Role::Server,
            local: &local,
            peer: Some(&peer),
            peer_principal: "",
            local_principal: "",
            service: &service,
            traffic: &http(200),
        });
        assert_eq!(labels_of(&set)["source_workload"], "x_._reporter_._source");
        assert_eq!(set.matches("reporter=.=").count(), 1);
    }

    proptest::proptest! {
        /// Whatever a peer claims, every label comes out as one label:
        /// Envoy's tag regex `(<name>=\.=(.*?);\.;)` (no newline crossed)
        /// finds each of the 25 names once, in order, and nothing is left.
        #[test]
        fn no_claimed_value_can_break_a_label_out(workload in "(?s).{0,300}", app in "\\PC{0,40}", raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut peer = backend();
            peer.workload = workload;
            peer.app = app;
            peer.version = String::from_utf8_lossy(&raw).into_owned();
            let local = local();
            let service = Service::default();
            let set = label_set(&LabelInputs {
                role: Role::Server,
                local: &local,
                peer: Some(&peer),
                peer_principal: "",
                local_principal: "",
                service: &service,
                traffic: &http(200),
            });
            let mut rest = set.as_str();
            for name in LABEL_NAMES {
                let start = format!("{name}=.=");
                proptest::prop_assert!(rest.starts_with(&start), "{name} at {rest:?}");
                let value_end = rest.find(";.;").expect("terminated");
                let value = &rest[start.len()..value_end];
                proptest::prop_assert!(!value.chars().any(|c| c.is_control() || c == ';' || c == '='), "{value:?}");
                proptest::prop_assert!(value.chars().count() <= MAX_LABEL_VALUE_CHARS);
                rest = &rest[value_end + 3..];
            }
            proptest::prop_assert_eq!(rest, "");
        }
    }

    #[test]
    fn flags_print_as_envoy_short_names() {
        assert_eq!(response_flags(0), "-");
        assert_eq!(response_flags(1 << 5), "UF");
        assert_eq!(response_flags((1 << 1) | (1 << 15)), "UH,URX");
        assert_eq!(response_flags(1 << 29), "UDO");
        assert_eq!(response_flags(1 << 40), "-");
    }

    fn metadata_with_services(services: Vec<Struct>) -> Vec<u8> {
        let list = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: services.into_iter().map(|s| Value { kind: Some(Kind::StructValue(s)) }).collect(),
            })),
        };
        let istio = Struct { fields: [("services".to_string(), list)].into_iter().collect() };
        Metadata { filter_metadata: [("istio".to_string(), istio)].into_iter().collect() }.encode_to_vec()
    }

    fn service_struct(fields: &[(&str, &str)]) -> Struct {
        Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value { kind: Some(Kind::StringValue(v.to_string())) }))
                .collect(),
        }
    }

    #[test]
    fn the_cluster_names_the_service_before_the_host_header() {
        let metadata = metadata_with_services(vec![
            service_struct(&[("host", "backend.shop.svc.cluster.local"), ("namespace", "shop")]),
            service_struct(&[("host", "other.shop.svc.cluster.local"), ("name", "other")]),
        ]);
        let service = ClusterService::read("outbound|80||backend", &metadata).with_host("backend:80");
        assert_eq!(
            service,
            Service { host: "backend.shop.svc.cluster.local".into(), name: "backend".into(), namespace: "shop".into() }
        );
        let named = metadata_with_services(vec![service_struct(&[("host", "b.x"), ("name", "bee")])]);
        assert_eq!(ClusterService::read("c", &named).with_host("h").name, "bee");
        let special = ClusterService::read("PassthroughCluster", &metadata).with_host("example.com");
        assert_eq!((special.host.as_str(), special.name.as_str()), ("example.com", "PassthroughCluster"));
        assert_eq!(ClusterService::read("c", b"\xff\xff").with_host("h").name, "h");
        assert_eq!(ClusterService::read("c", &[]).with_host("h").host, "h");
    }

    #[test]
    fn the_table_stops_defining_at_its_cap() {
        let mut table = SeriesTable::default();
        let mut defined = 0;
        let mut define = |_: &str| {
            defined += 1;
            Some(defined)
        };
        assert_eq!(table.series("a", 2, &mut define), Series::Ids(1));
        assert_eq!(table.series("b", 2, &mut define), Series::Ids(2));
        assert_eq!(table.series("a", 2, &mut define), Series::Ids(1));
        assert_eq!(table.series("c", 2, &mut define), Series::Overflow);
        // A configuration with a larger cap goes on where the other stopped.
        assert_eq!(table.series("c", 3, &mut define), Series::Ids(3));
        assert_eq!(defined, 3);
        assert_eq!(table.len(), 3);
        assert_eq!(SeriesTable::<u32>::default().series("x", 5, |_| None), Series::Overflow);
    }

    #[test]
    fn a_grpc_set_has_message_counters_and_any_refusal_is_none() {
        let mut next = 0;
        let mut names = Vec::new();
        let grpc = HttpSeries::define(true, |m| {
            names.push(m.name);
            next += 1;
            Some(next)
        })
        .expect("defined");
        assert_eq!(grpc.messages, Some(GrpcMessages { request: 1, response: 2 }));
        assert_eq!(names[..2], ["istio_request_messages_total", "istio_response_messages_total"]);
        assert_eq!(HttpSeries::define(false, |_| Some(9)).expect("defined").messages, None);
        assert_eq!(TcpSeries::define(|m| (m != TCP_CLOSED).then_some(1)), None);
        assert_eq!(grpc_message_counts(b"3,17"), Some((3, 17)));
        assert_eq!(grpc_message_counts(b"3"), None);
        assert_eq!(grpc_message_counts(b"x,1"), None);
    }

    #[test]
    fn peer_labels_come_from_what_was_stored() {
        let stored = service_struct(&[
            ("workload", "backend"),
            ("namespace", "shop"),
            ("service", "backend"),
            ("revision", "v2"),
            ("identity", "spiffe://x/ns/shop/sa/b"),
        ]);
        let labels = WorkloadLabels::from_stored(&stored);
        assert_eq!(labels.canonical_service, "backend");
        assert_eq!(labels.canonical_revision, "v2");
        assert_eq!(labels.app, "");
        assert_eq!(labels.identity, "spiffe://x/ns/shop/sa/b");
    }
}
