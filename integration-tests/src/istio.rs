//! What istiod builds for a sidecar of a mesh that runs our WasmPlugins
//! (`deploy/istio/`) instead of Istio's own exchange and ALPN filters (the
//! one Istio deployment we support: istiod with
//! `PILOT_ENABLE_METADATA_EXCHANGE=false` and `PILOT_ENABLE_ALPN_FILTER=false`),
//! written as a stock Envoy configuration of the same shape. Every rule here
//! is read from istiod's sources (istio/istio, `pilot/pkg/networking/core/`
//! and `pilot/pkg/model/extensions.go`), not copied:
//!
//! - which plugins reach a chain: the plugin's `type` (HTTP filters or
//!   network filters), `match.mode` (CLIENT: sidecar outbound and gateways;
//!   SERVER: sidecar inbound) and `match.ports` (`matchTrafficSelectorCommon`);
//! - where: istiod appends them phase by phase between its own filters,
//!   each phase's plugins by priority, highest first:
//!   - HTTP (`buildHTTPConnectionManager`): [native exchange] [CUSTOM
//!     ext_authz] AUTHN [jwt_authn, istio_authn] AUTHZ [RBAC] STATS
//!     UNSPECIFIED [grpc_stats] [istio.alpn, outbound only] [fault] [cors]
//!     [stats] router;
//!   - network, TCP chains (`buildCompleteNetworkFilters`): [native exchange,
//!     inbound only] [CUSTOM ext_authz] AUTHN AUTHZ [RBAC] STATS UNSPECIFIED
//!     [stats] tcp_proxy; in front of an HTTP connection manager
//!     (`buildInboundNetworkFiltersForHTTP`, and outbound listeners): the
//!     same phases, then the HCM;
//! - the inbound chains of a PERMISSIVE sidecar (`filterchain_options.go`):
//!   an HTTP port matches `istio, istio-peer-exchange, istio-http/1.0,
//!   istio-http/1.1, istio-h2`; a TCP port the same on a TCP chain; a port
//!   of unknown protocol an HTTP chain on the three HTTP tokens and a TCP
//!   chain on `istio-peer-exchange, istio`. With the exchange off, the TLS
//!   contexts negotiate `h2, http/1.1` (`BuildInboundTLS`);
//! - the outbound clusters (`cluster_builder.go`, `cluster_tls.go`): named
//!   `outbound|<port>||<host>`, HTTP/2 for grpc/http2 ports, the
//!   downstream's protocol for ports of unknown protocol, HTTP/1.1
//!   otherwise; mTLS through a `tlsMode-istio` transport socket match
//!   offering `istio` (`istio, h2` for HTTP/2 clusters) with the exchange
//!   off; `istio.services` metadata; endpoints with `tlsMode: istio` and
//!   `istio.workload`.
//!
//! Istio's filters that stock Envoy has (RBAC, grpc_stats, fault, cors,
//! the router) are in their places; Istio's own (`istio_authn`,
//! `istio.stats`) are left out, and the exchange and `istio.alpn` are off,
//! as the supported deployment says. The RBAC filters carry a policy that
//! needs the peer our exchange stored, so a plugin placed after them fails
//! the traffic. What differs from a real sidecar, and why: plugins are
//! inlined rather than delivered by ECDS (same filter, same place); each
//! inbound port is a listener of its own (no iptables on loopback, so no
//! `original_dst` and no `destination_port` to tell ports apart); listeners
//! and clusters are static, not from xDS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::paths;
use crate::pki::Pki;

/// A WasmPlugin's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginType {
    Http,
    Network,
}

/// Where a chain sits (istiod's listener class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    SidecarInbound,
    SidecarOutbound,
}

/// A WasmPlugin's `phase`, in the order istiod appends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Authn,
    Authz,
    Stats,
    Unspecified,
}

/// One WasmPlugin of `deploy/istio/`, as istiod reads it.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// `<namespace>.<name>`: the filter's name in Envoy.
    pub name: String,
    pub kind: PluginType,
    /// `match[].mode` (None: any), `match[].ports`.
    pub modes: Vec<(Option<Class>, Vec<u16>)>,
    pub phase: Phase,
    pub priority: i64,
    /// `pluginName`: the Envoy root id.
    pub root_id: String,
    /// `pluginConfig`, as the JSON text istiod hands the plugin.
    pub configuration: String,
    /// Envoy's `failure_policy` for the plugin's `failStrategy`.
    pub failure_policy: &'static str,
    /// The OCI image (`url`), to tell which of our modules it is.
    pub url: String,
    /// Whether `selector` or `targetRefs` narrow which proxies get it.
    pub scoped: bool,
}

impl Plugin {
    /// Which module the plugin's image carries (by its image name).
    pub fn module(&self) -> std::path::PathBuf {
        if self.url.contains("alpn-filter") {
            paths::alpn_filter_wasm()
        } else if self.url.contains("peer-exchange-filter") {
            paths::peer_exchange_filter_wasm()
        } else {
            panic!("{}: no module of ours is in {}", self.name, self.url)
        }
    }

    fn applies(&self, kind: PluginType, class: Class, port: u16) -> bool {
        self.kind == kind
            && (self.modes.is_empty()
                || self.modes.iter().any(|(mode, ports)| {
                    mode.is_none_or(|m| m == class) && (ports.is_empty() || ports.contains(&port))
                }))
    }

    /// The Envoy filter istiod builds for it (inlined: Istio hands it over by ECDS).
    fn filter(&self) -> Value {
        let type_url = match self.kind {
            PluginType::Http => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            PluginType::Network => "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        };
        json!({
            "name": self.name,
            "typed_config": {
                "@type": type_url,
                "config": {
                    "name": self.name,
                    "root_id": self.root_id,
                    "failure_policy": self.failure_policy,
                    "vm_config": {
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": self.module().display().to_string() } },
                        "environment_variables": { "key_values": { "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1" } },
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.configuration,
                    },
                },
            },
        })
    }
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ManifestMetadata,
    spec: serde_yaml::Value,
}

#[derive(Deserialize)]
struct ManifestMetadata {
    name: String,
    namespace: String,
}

/// The files of `deploy/istio/`, in the order a user applies them.
pub const MANIFESTS: [&str; 3] =
    ["deploy/istio/peer-exchange-servers.yaml", "deploy/istio/peer-exchange-clients.yaml", "deploy/istio/alpn.yaml"];

/// Every WasmPlugin of [`MANIFESTS`], in file order (istiod orders plugins
/// of equal priority by creation time: the order they are applied).
pub fn manifests() -> Vec<Plugin> {
    MANIFESTS.iter().flat_map(|file| parse(&paths::workspace_root().join(file))).collect()
}

fn parse(file: &Path) -> Vec<Plugin> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let m = Manifest::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!((m.api_version.as_str(), m.kind.as_str()), ("extensions.istio.io/v1alpha1", "WasmPlugin"));
            plugin(m)
        })
        .collect()
}

fn plugin(m: Manifest) -> Plugin {
    let spec = &m.spec;
    let name = format!("{}.{}", m.metadata.namespace, m.metadata.name);
    let text = |key: &str| spec[key].as_str().unwrap_or_default().to_string();
    let kind = match text("type").as_str() {
        "NETWORK" => PluginType::Network,
        // UNSPECIFIED_PLUGIN_TYPE is HTTP (filterChainTypeFromPluginType).
        _ => PluginType::Http,
    };
    let modes = spec["match"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|selector| {
            let mode = match selector["mode"].as_str() {
                Some("CLIENT") => Some(Class::SidecarOutbound),
                Some("SERVER") => Some(Class::SidecarInbound),
                _ => None,
            };
            let ports = selector["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["number"].as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect();
            (mode, ports)
        })
        .collect();
    let phase = match text("phase").as_str() {
        "AUTHN" => Phase::Authn,
        "AUTHZ" => Phase::Authz,
        "STATS" => Phase::Stats,
        _ => Phase::Unspecified,
    };
    let failure_policy = match text("failStrategy").as_str() {
        "FAIL_OPEN" => "FAIL_OPEN",
        "FAIL_RELOAD" => "FAIL_RELOAD",
        // FAIL_CLOSE, and Envoy's default when istiod sets nothing.
        _ => "FAIL_CLOSED",
    };
    // istiod: protomarshal.ToJSON of the pluginConfig Struct.
    let configuration = serde_json::to_value(&spec["pluginConfig"]).expect("pluginConfig as JSON");
    Plugin {
        name,
        kind,
        modes,
        phase,
        priority: spec["priority"].as_i64().unwrap_or(0),
        root_id: text("pluginName"),
        configuration: if configuration.is_null() { String::new() } else { configuration.to_string() },
        failure_policy,
        url: text("url"),
        scoped: !spec["selector"].is_null() || !spec["targetRefs"].is_null() || !spec["targetRef"].is_null(),
    }
}

/// The plugins of `phase` istiod puts on a chain, highest priority first
/// (ties keep manifest order: istiod's sort is stable over creation time).
pub fn placed(plugins: &[Plugin], kind: PluginType, class: Class, port: u16, phase: Phase) -> Vec<&Plugin> {
    let mut found: Vec<&Plugin> = plugins.iter().filter(|p| p.phase == phase && p.applies(kind, class, port)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.priority));
    found
}

/// What a service port speaks (istiod: the port's name or appProtocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `http-*`: HTTP/1.1 upstream.
    Http,
    /// `grpc-*` / `http2-*`: HTTP/2 upstream.
    Grpc,
    /// Unnamed: sniffed; the downstream's protocol upstream.
    Auto,
    /// `tcp-*`.
    Tcp,
}

/// A port of the service the client calls and the server runs.
#[derive(Clone, Copy, Debug)]
pub struct ServicePort {
    pub number: u16,
    pub protocol: Protocol,
}

pub const PORTS: [ServicePort; 4] = [
    ServicePort { number: 8080, protocol: Protocol::Http },
    ServicePort { number: 9090, protocol: Protocol::Grpc },
    ServicePort { number: 8000, protocol: Protocol::Auto },
    ServicePort { number: 5432, protocol: Protocol::Tcp },
];

/// The service's host name, and its namespace (the server workload's).
pub const SERVICE_HOST: &str = "server.server-ns.svc.cluster.local";

/// Istio's HTTP tokens, and all of them with `istio` and the exchange's.
const MTLS_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const ALL_ISTIO_MTLS_ALPNS: [&str; 5] =
    ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"];
const MTLS_TCP_ALPNS: [&str; 2] = ["istio-peer-exchange", "istio"];

/// A node as pilot-agent writes it for a sidecar.
fn node(id: &str, fields: &[(&str, &str)], labels: &[(&str, &str)]) -> Value {
    let mut metadata: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    metadata.insert("LABELS".into(), labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
    metadata.insert("ISTIO_VERSION".into(), json!("1.30.0"));
    json!({ "id": id, "cluster": "istio-proxy", "metadata": metadata })
}

fn file_log(path: &Path, fields: Value) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
            "log_format": { "json_format": fields },
        },
    }])
}

fn router() -> Value {
    json!({ "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } })
}

fn typed(name: &str, type_url: &str) -> Value {
    json!({ "name": name, "typed_config": { "@type": type_url } })
}

/// Istio's RBAC, as an AuthorizationPolicy makes it, here with a rule that
/// needs the peer the exchange stored (its id in filter state): traffic
/// reaching RBAC before the exchange ran is denied.
fn rbac(kind: PluginType) -> Value {
    let policy = json!({
        "rules": { "action": "ALLOW", "policies": { "peer-learned": {
            "permissions": [{ "any": true }],
            "principals": [{ "filter_state": {
                "key": "wasm.downstream_peer_id",
                "string_match": { "prefix": "sidecar~" },
            } }],
        } } },
    });
    match kind {
        PluginType::Http => json!({ "name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": policy["rules"] } }),
        PluginType::Network => json!({ "name": "envoy.filters.network.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "tcp.", "rules": policy["rules"] } }),
    }
}

/// `filters` with each phase's plugins appended where istiod appends them:
/// `before[phase]` are Istio's filters that precede that phase.
fn with_plugins(
    plugins: &[Plugin],
    kind: PluginType,
    class: Class,
    port: u16,
    mut istio: BTreeMap<Phase, Vec<Value>>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for phase in [Phase::Authn, Phase::Authz, Phase::Stats, Phase::Unspecified] {
        out.extend(istio.remove(&phase).unwrap_or_default());
        out.extend(placed(plugins, kind, class, port, phase).into_iter().map(Plugin::filter));
    }
    out
}

/// The HTTP filters of a sidecar's HTTP connection manager.
fn http_filters(plugins: &[Plugin], class: Class, port: u16) -> Vec<Value> {
    // Istio's authn filters (jwt_authn, istio_authn) come before AUTHZ
    // plugins; none here (no RequestAuthentication; istio_authn is Istio's own).
    let mut istio = BTreeMap::new();
    if class == Class::SidecarInbound {
        istio.insert(Phase::Stats, vec![rbac(PluginType::Http)]);
    }
    let mut filters = with_plugins(plugins, PluginType::Http, class, port, istio);
    filters.push(typed(
        "envoy.filters.http.grpc_stats",
        "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    ));
    // (istio.alpn would be here, outbound: PILOT_ENABLE_ALPN_FILTER=false.)
    filters.push(typed(
        "envoy.filters.http.fault",
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    ));
    filters.push(typed("envoy.filters.http.cors", "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"));
    filters.push(router());
    filters
}

fn hcm(plugins: &[Plugin], class: Class, port: u16, route: Value, log: Value) -> Value {
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": format!("{port}"),
        "codec_type": "AUTO",
        "route_config": route,
        "http_filters": http_filters(plugins, class, port),
        "access_log": log,
    });
    if class == Class::SidecarInbound {
        config["forward_client_cert_details"] = json!("APPEND_FORWARD");
    }
    json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": config })
}

/// Network filters in front of `terminal` (an HCM or tcp_proxy).
fn network_filters(plugins: &[Plugin], class: Class, port: u16, rbac_tcp: bool, terminal: Value) -> Vec<Value> {
    let mut istio = BTreeMap::new();
    if rbac_tcp {
        istio.insert(Phase::Stats, vec![rbac(PluginType::Network)]);
    }
    let mut filters = with_plugins(plugins, PluginType::Network, class, port, istio);
    filters.push(terminal);
    filters
}

fn tcp_proxy(cluster: &str, log: Value) -> Value {
    json!({ "name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": cluster, "cluster": cluster, "access_log": log } })
}

fn tls_certificate(pki: &Pki, name: &str) -> Value {
    json!([{ "certificate_chain": { "filename": pki.dir.join(format!("{name}.crt")).display().to_string() },
             "private_key": { "filename": pki.dir.join(format!("{name}.key")).display().to_string() } }])
}

fn socket(port: u16) -> Value {
    json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } })
}

fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({ "name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } } } }] }] } })
}

/// The server sidecar: one listener per service port (`inbound_<port>`),
/// with the chains a PERMISSIVE sidecar has for it, in front of the app.
pub fn inbound(plugins: &[Plugin], pki: &Pki, http_app: SocketAddr, tcp_app: SocketAddr, log: &Path) -> Value {
    let server_tls = json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": tls_certificate(pki, "server"),
            "validation_context": { "trusted_ca": { "filename": pki.dir.join("ca.crt").display().to_string() } },
        } } });
    let http_log = |port: u16| {
        file_log(
            log,
            json!({ "listener": format!("inbound_{port}"), "chain": "http", "protocol": "%PROTOCOL%",
                    "path": "%REQ(:PATH)%", "response_code": "%RESPONSE_CODE%",
                    "downstream_peer": "%FILTER_STATE(wasm.downstream_peer)%",
                    "downstream_peer_id": "%FILTER_STATE(wasm.downstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let tcp_log = |port: u16| {
        file_log(
            log,
            json!({ "listener": format!("inbound_{port}"), "chain": "tcp", "bytes_received": "%BYTES_RECEIVED%",
                    "downstream_peer": "%FILTER_STATE(wasm.downstream_peer)%",
                    "downstream_peer_id": "%FILTER_STATE(wasm.downstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    for port in PORTS {
        let cluster = format!("inbound|{}||", port.number);
        let http_chain = |alpns: &[&str]| {
            let route = json!({ "name": format!("inbound|{}||", port.number), "virtual_hosts": [{
                "name": "inbound|http", "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }] }] });
            let hcm = hcm(plugins, Class::SidecarInbound, port.number, route, http_log(port.number));
            json!({ "name": format!("0.0.0.0_{}", port.number),
                    "filter_chain_match": { "transport_protocol": "tls", "application_protocols": alpns },
                    "transport_socket": server_tls,
                    "filters": network_filters(plugins, Class::SidecarInbound, port.number, false, hcm) })
        };
        let tcp_chain = |alpns: &[&str]| {
            json!({ "name": format!("0.0.0.0_{}", port.number),
                    "filter_chain_match": { "transport_protocol": "tls", "application_protocols": alpns },
                    "transport_socket": server_tls,
                    "filters": network_filters(plugins, Class::SidecarInbound, port.number, true,
                                               tcp_proxy(&cluster, tcp_log(port.number))) })
        };
        let (chains, app) = match port.protocol {
            Protocol::Http | Protocol::Grpc => (vec![http_chain(&ALL_ISTIO_MTLS_ALPNS)], http_app),
            Protocol::Auto => (vec![http_chain(&MTLS_HTTP_ALPNS), tcp_chain(&MTLS_TCP_ALPNS)], http_app),
            Protocol::Tcp => (vec![tcp_chain(&ALL_ISTIO_MTLS_ALPNS)], tcp_app),
        };
        listeners.push(json!({
            "name": format!("inbound_{}", port.number),
            "address": socket(0),
            "listener_filters": [
                typed("envoy.filters.listener.tls_inspector", "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
                typed("envoy.filters.listener.http_inspector", "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"),
            ],
            "filter_chains": chains,
        }));
        let mut app_cluster = static_cluster(&cluster, app);
        if port.protocol == Protocol::Grpc {
            app_cluster["typed_extension_protocol_options"] = http2_options();
        }
        clusters.push(app_cluster);
    }
    let server = crate::workloads::SERVER;
    json!({
        "node": node(server.node_id, server.wire_fields, &server.wire_labels),
        "admin": { "address": socket(0) },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}

fn http2_options() -> Value {
    json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": { "http2_protocol_options": {} } } })
}

/// The client sidecar: an outbound listener per service port
/// (`0.0.0.0_<port>`, here on 127.0.0.1) and the service's cluster per
/// port, whose endpoint is the server sidecar's `inbound_<port>` listener.
pub fn outbound(plugins: &[Plugin], pki: &Pki, inbound_ports: &BTreeMap<u16, u16>, log: &Path) -> Value {
    let http_log = |port: u16| {
        file_log(
            log,
            json!({ "listener": format!("0.0.0.0_{port}"), "chain": "http", "protocol": "%PROTOCOL%",
                    "path": "%REQ(:PATH)%", "response_code": "%RESPONSE_CODE%",
                    "upstream_peer": "%FILTER_STATE(wasm.upstream_peer)%",
                    "upstream_peer_id": "%FILTER_STATE(wasm.upstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let tcp_log = |port: u16| {
        file_log(
            log,
            json!({ "listener": format!("0.0.0.0_{port}"), "chain": "tcp", "bytes_sent": "%BYTES_SENT%",
                    "upstream_peer": "%FILTER_STATE(wasm.upstream_peer)%",
                    "upstream_peer_id": "%FILTER_STATE(wasm.upstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    for port in PORTS {
        let cluster = format!("outbound|{}||{SERVICE_HOST}", port.number);
        let route = json!({ "name": format!("{}", port.number), "virtual_hosts": [{
            "name": format!("{SERVICE_HOST}:{}", port.number), "domains": ["*"],
            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }] }] });
        let http = || {
            network_filters(
                plugins,
                Class::SidecarOutbound,
                port.number,
                false,
                hcm(plugins, Class::SidecarOutbound, port.number, route.clone(), http_log(port.number)),
            )
        };
        let tcp = || {
            network_filters(
                plugins,
                Class::SidecarOutbound,
                port.number,
                false,
                tcp_proxy(&cluster, tcp_log(port.number)),
            )
        };
        let chains = match port.protocol {
            Protocol::Http | Protocol::Grpc => vec![json!({ "filters": http() })],
            Protocol::Auto => vec![
                json!({ "filter_chain_match": { "application_protocols": ["http/1.1", "h2c"] }, "filters": http() }),
                json!({ "filters": tcp() }),
            ],
            Protocol::Tcp => vec![json!({ "filters": tcp() })],
        };
        let mut listener =
            json!({ "name": format!("0.0.0.0_{}", port.number), "address": socket(0), "filter_chains": chains });
        if port.protocol == Protocol::Auto {
            listener["listener_filters"] = json!([typed(
                "envoy.filters.listener.http_inspector",
                "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
            )]);
        }
        listeners.push(listener);

        let alpn: &[&str] = if port.protocol == Protocol::Grpc { &["istio", "h2"] } else { &["istio"] };
        let tls = json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": format!("outbound_.{}_._.{SERVICE_HOST}", port.number),
            "common_tls_context": {
                "alpn_protocols": alpn,
                "tls_certificates": tls_certificate(pki, "client"),
                "validation_context": {
                    "trusted_ca": { "filename": pki.dir.join("ca.crt").display().to_string() },
                    "match_typed_subject_alt_names": [{ "san_type": "URI",
                        "matcher": { "exact": crate::pki::SERVER_IDENTITY } }],
                },
            } } });
        let inbound = inbound_ports[&port.number];
        let mut c = json!({
            "name": cluster, "type": "STATIC", "connect_timeout": "10s",
            "metadata": { "filter_metadata": { "istio": {
                "services": [{ "host": SERVICE_HOST, "name": "server", "namespace": "server-ns" }],
                "default_original_port": port.number } } },
            "transport_socket_matches": [
                { "name": "tlsMode-istio", "match": { "tlsMode": "istio" }, "transport_socket": tls },
                { "name": "tlsMode-disabled", "match": {}, "transport_socket": { "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" } } },
            ],
            "load_assignment": { "cluster_name": cluster, "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": inbound } } },
                "metadata": { "filter_metadata": {
                    "envoy.transport_socket_match": { "tlsMode": "istio" },
                    "istio": { "workload": "server;server-ns;server;v1;Kubernetes" } } },
            }] }] },
        });
        match port.protocol {
            Protocol::Grpc => c["typed_extension_protocol_options"] = http2_options(),
            Protocol::Auto => {
                c["typed_extension_protocol_options"] = json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "use_downstream_protocol_config": { "http_protocol_options": {}, "http2_protocol_options": {} } } })
            }
            Protocol::Http | Protocol::Tcp => {}
        }
        clusters.push(c);
    }
    let client = crate::workloads::CLIENT;
    json!({
        "node": node(client.node_id, client.wire_fields, &client.wire_labels),
        "admin": { "address": socket(0) },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}
