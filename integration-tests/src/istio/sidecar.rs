//! The listeners and clusters istiod writes for a server sidecar, a client
//! sidecar and a gateway, as stock Envoy configurations, with the plugins of
//! [`plugins`](super::plugins) where istiod puts them. Each shape names the
//! istiod function it is written from (istio/istio, `pilot/pkg/networking/`):
//!
//! - **inbound** (`listener_inbound.go`, `filterchain_options.go`): one
//!   `virtualInbound` listener on 15006 behind `original_dst`, TLS and HTTP
//!   inspectors, chains matched by `destination_port`, then transport and
//!   ALPN — PERMISSIVE: for an HTTP port mTLS (`allIstioMtlsALPNs`) and
//!   plaintext; for a TCP port mTLS, plain TLS (passed through, not
//!   terminated) and plaintext; for a port without a protocol name
//!   (sniffed) mTLS HTTP (`mtlsHTTPALPNs`), plaintext HTTP
//!   (`plaintextHTTPALPNs`), mTLS TCP (`mtlsTCPWithMxcALPNs`:
//!   `istio-peer-exchange, istio`), plain TLS and plaintext. The TLS
//!   context of TCP chains offers `istio-peer-exchange, h2, http/1.1` while
//!   the exchange flag is on, `h2, http/1.1` otherwise (`BuildInboundTLS`);
//! - **outbound** (`cluster_builder.go`, `cluster_tls.go`): service clusters
//!   `outbound|<port>||<host>` whose endpoints carry `tlsMode: istio` and
//!   `istio.workload`, mTLS in a `tlsMode-istio` transport socket match
//!   offering `istio` (`istio, h2` for HTTP/2 clusters), with
//!   `istio-peer-exchange` first while the exchange flag is on
//!   (`buildUpstreamClusterTLSContext`); a headless service's ORIGINAL_DST
//!   cluster with the mTLS socket set directly and no endpoint metadata
//!   (`applyUpstreamTLSSettings` skips the match for ORIGINAL_DST); the
//!   `PassthroughCluster` (ORIGINAL_DST, plaintext);
//! - **HTTP filters** (`buildHTTPConnectionManager`): [native exchange]
//!   [CUSTOM ext_authz] AUTHN [jwt_authn, istio_authn] AUTHZ [RBAC] STATS
//!   UNSPECIFIED [grpc_stats] [istio.alpn: outbound and gateways]
//!   [fault] [cors] [stats] router; network filters
//!   (`buildCompleteNetworkFilters`, `buildInboundNetworkFiltersForHTTP`):
//!   [native exchange, inbound] AUTHN AUTHZ [RBAC] STATS UNSPECIFIED, then
//!   `tcp_proxy` or the HCM.
//!
//! istiod's two flags change the shapes: `PILOT_ENABLE_METADATA_EXCHANGE`
//! puts `istio-peer-exchange` in the ALPN lists and native's exchange
//! filters on every proxy; `PILOT_ENABLE_ALPN_FILTER` puts `istio.alpn` on
//! every HCM but the sidecar's inbound ones. Stock Envoy cannot load
//! Istio's own filters: the exchange's are left out (their ALPN lists are
//! kept), and `istio.alpn` is played by alpn-filter configured with
//! native's lists and each cluster's protocol — native's rule, in its place.
//! One difference: where both run, native's filter state write is
//! read-only and Envoy keeps the first value (ours); the stand-in's write is
//! mutable, so its list wins. Both lists reach the same inbound chain.
//!
//! What differs from a real sidecar, and why: no iptables on loopback. Each
//! pod has an address of its own (`127.x.y.z`); the inbound listener binds
//! 15006 and, as additional addresses, each service port, so a connection
//! to `<pod>:<port>` arrives with that destination port as a redirected one
//! does. Apps reach the outbound side through one listener per service
//! port; for ORIGINAL_DST clusters a `set_filter_state` network filter gives
//! the original destination (the filter state key Envoy's ORIGINAL_DST
//! cluster reads) that iptables and `original_dst` would have. Plugins are
//! inlined rather than delivered by ECDS (same filter, same place);
//! listeners and clusters are static, not from xDS; Istio's own
//! `istio_authn` and `istio.stats` are left out, RBAC allows everything.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde_json::{json, Value};

use super::plugins::{placed, Class, Phase, Plugin, PluginType};
use crate::backends::Backends;
use crate::pki::Pki;

/// istiod's two flags (`pilot/pkg/features`), both `true` by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Istiod {
    /// `PILOT_ENABLE_METADATA_EXCHANGE`.
    pub metadata_exchange: bool,
    /// `PILOT_ENABLE_ALPN_FILTER`.
    pub alpn_filter: bool,
}

impl Istiod {
    pub const DEFAULTS: Istiod = Istiod { metadata_exchange: true, alpn_filter: true };
    /// The deployment our manifests are made for.
    pub const FLAGS_OFF: Istiod = Istiod { metadata_exchange: false, alpn_filter: false };
}

/// What a service port speaks (istiod: the port's name or appProtocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `http-*`: HTTP/1.1 upstream.
    Http,
    /// `grpc-*` / `http2-*`: HTTP/2 upstream.
    Grpc,
    /// No protocol name: sniffed; the downstream's protocol upstream.
    Auto,
    /// `tcp-*`.
    Tcp,
}

/// The app behind a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// HTTP/1.1, h2c and unary gRPC.
    Http,
    /// Client-first TCP: echoes.
    Echo,
    /// Server-first TCP: writes a banner on accept, then echoes.
    Banner,
}

/// A port of the service the client calls and the server runs.
#[derive(Clone, Copy, Debug)]
pub struct ServicePort {
    pub number: u16,
    pub protocol: Protocol,
    pub app: App,
}

pub const PORTS: [ServicePort; 5] = [
    ServicePort { number: 8080, protocol: Protocol::Http, app: App::Http },
    ServicePort { number: 9090, protocol: Protocol::Grpc, app: App::Http },
    ServicePort { number: 8000, protocol: Protocol::Auto, app: App::Http },
    ServicePort { number: 5432, protocol: Protocol::Tcp, app: App::Echo },
    ServicePort { number: 3306, protocol: Protocol::Tcp, app: App::Banner },
];

pub fn port(number: u16) -> ServicePort {
    PORTS.into_iter().find(|p| p.number == number).unwrap_or_else(|| panic!("no service port {number}"))
}

/// The service's host name and the headless service's, both in the server's namespace.
pub const SERVICE_HOST: &str = "server.server-ns.svc.cluster.local";
pub const HEADLESS_HOST: &str = "server-headless.server-ns.svc.cluster.local";

/// The ports a headless service and the passthrough path are used on.
pub const HEADLESS_PORTS: [u16; 3] = [8080, 5432, 3306];
pub const PASSTHROUGH_PORTS: [u16; 2] = [8080, 5432];

/// `pilot/pkg/networking/core/listener.go`.
const MTLS_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const ALL_ISTIO_MTLS_ALPNS: [&str; 5] =
    ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"];
const MTLS_TCP_WITH_MXC_ALPNS: [&str; 2] = ["istio-peer-exchange", "istio"];
const PLAINTEXT_HTTP_ALPNS: [&str; 2] = ["http/1.1", "h2c"];

/// A pod's own address: `127.x.y.z`, distinct per call, so two sidecars
/// (and two tests) never share the service ports they bind.
pub fn pod_address() -> Ipv4Addr {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let h = hasher.finish().to_be_bytes();
    Ipv4Addr::new(127, 100 + h[0] % 100, h[1], 1 + h[2] % 250)
}

/// A node as pilot-agent writes it.
fn node(workload: &crate::workloads::Workload) -> Value {
    let mut metadata: serde_json::Map<String, Value> =
        workload.wire_fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    metadata.insert("LABELS".into(), workload.wire_labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
    metadata.insert("ISTIO_VERSION".into(), json!("1.30.0"));
    json!({ "id": workload.node_id, "cluster": "istio-proxy", "metadata": metadata })
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

fn typed(name: &str, type_url: &str) -> Value {
    json!({ "name": name, "typed_config": { "@type": type_url } })
}

fn socket(ip: Ipv4Addr, port: u16) -> Value {
    json!({ "socket_address": { "address": ip.to_string(), "port_value": port } })
}

/// Istio's RBAC (an AuthorizationPolicy's), here allowing everything.
fn rbac(kind: PluginType) -> Value {
    let rules = json!({ "action": "ALLOW", "policies": { "allow-all": {
        "permissions": [{ "any": true }], "principals": [{ "any": true }] } } });
    match kind {
        PluginType::Http => json!({ "name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": rules } }),
        PluginType::Network => json!({ "name": "envoy.filters.network.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "tcp.", "rules": rules } }),
    }
}

/// What runs on a proxy: the plugins applied, istiod's flags.
#[derive(Clone, Copy)]
pub struct Proxy<'a> {
    pub plugins: &'a [Plugin],
    pub istiod: Istiod,
}

impl Proxy<'_> {
    /// `istiod` filters with each phase's plugins appended where istiod appends them.
    fn with_plugins(
        &self,
        kind: PluginType,
        class: Class,
        port: u16,
        mut istio: std::collections::BTreeMap<Phase, Vec<Value>>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for phase in [Phase::Authn, Phase::Authz, Phase::Stats, Phase::Unspecified] {
            out.extend(istio.remove(&phase).unwrap_or_default());
            out.extend(placed(self.plugins, kind, class, port, phase).into_iter().map(Plugin::filter));
        }
        out
    }

    fn http_filters(&self, class: Class, port: u16) -> Vec<Value> {
        let mut istio = std::collections::BTreeMap::new();
        if class == Class::SidecarInbound {
            istio.insert(Phase::Stats, vec![rbac(PluginType::Http)]);
        }
        let mut filters = self.with_plugins(PluginType::Http, class, port, istio);
        // istiod's (`filters.go` GrpcStats): message counts in filter state.
        filters.push(json!({ "name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": true, "stats_for_all_methods": false } }));
        if self.istiod.alpn_filter && class != Class::SidecarInbound {
            filters.push(native_alpn_stand_in());
        }
        filters.push(typed(
            "envoy.filters.http.fault",
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        ));
        filters
            .push(typed("envoy.filters.http.cors", "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"));
        filters.push(typed(
            "envoy.filters.http.router",
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        ));
        filters
    }

    fn hcm(&self, class: Class, port: u16, cluster: &str, log: Value) -> Value {
        let route = json!({ "name": format!("{port}"), "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }] }] });
        let mut config = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": format!("{port}"),
            "codec_type": "AUTO",
            "route_config": route,
            "http_filters": self.http_filters(class, port),
            "access_log": log,
        });
        if class == Class::SidecarInbound {
            config["forward_client_cert_details"] = json!("APPEND_FORWARD");
        }
        json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": config })
    }

    /// Network filters: `first` (the test's stand-in for iptables), the
    /// plugins and Istio's in their phases, then `terminal`.
    fn network_filters(&self, class: Class, port: u16, first: Option<Value>, terminal: Value) -> Vec<Value> {
        let mut istio = std::collections::BTreeMap::new();
        if terminal["name"] == "envoy.filters.network.tcp_proxy" && class == Class::SidecarInbound {
            istio.insert(Phase::Stats, vec![rbac(PluginType::Network)]);
        }
        let mut filters: Vec<Value> = first.into_iter().collect();
        filters.extend(self.with_plugins(PluginType::Network, class, port, istio));
        filters.push(terminal);
        filters
    }
}

/// `istio.alpn` with native's lists (its default map) and each test
/// cluster's protocol, as native reads it from the cluster: HTTP/2 for the
/// grpc port, the downstream's for the port without a protocol name.
fn native_alpn_stand_in() -> Value {
    let configuration = json!({
        "default_upstream_protocol": "HTTP11",
        "cluster_upstream_protocols": [
            { "cluster": "outbound|9090||*", "upstream_protocol": "HTTP2" },
            { "cluster": "outbound|8000||*", "upstream_protocol": "USE_DOWNSTREAM" },
        ],
    });
    json!({ "name": "istio.alpn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "istio.alpn",
            "failure_policy": "FAIL_CLOSED",
            "vm_config": { "vm_id": "istio.alpn", "runtime": "envoy.wasm.runtime.v8",
                           "code": { "local": { "filename": crate::paths::alpn_filter_wasm().display().to_string() } } },
            "configuration": { "@type": "type.googleapis.com/google.protobuf.StringValue",
                               "value": configuration.to_string() },
        } } })
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

fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({ "name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } } } }] }] } })
}

fn http2_options() -> Value {
    json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": { "http2_protocol_options": {} } } })
}

fn protocol_options(protocol: Protocol) -> Option<Value> {
    match protocol {
        Protocol::Grpc => Some(http2_options()),
        Protocol::Auto => Some(json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "use_downstream_protocol_config": { "http_protocol_options": {}, "http2_protocol_options": {} } } })),
        Protocol::Http | Protocol::Tcp => None,
    }
}

/// How a log line names the chain a connection took on the server.
pub mod chain {
    pub const MTLS_HTTP: &str = "mtls-http";
    pub const PLAINTEXT_HTTP: &str = "plaintext-http";
    pub const MTLS_TCP: &str = "mtls-tcp";
    pub const PLAINTEXT_TCP: &str = "plaintext-tcp";
    pub const TLS_PASSTHROUGH: &str = "tls-passthrough";
}

/// The server sidecar of the pod at `pod`: `virtualInbound` in front of the apps.
pub fn inbound(proxy: Proxy<'_>, pki: &Pki, pod: Ipv4Addr, apps: &Backends, log: &Path) -> Value {
    let tls = |tcp: bool| {
        // BuildInboundTLS: TCP chains offer the exchange's token while the flag is on.
        let alpn: &[&str] = if tcp && proxy.istiod.metadata_exchange {
            &["istio-peer-exchange", "h2", "http/1.1"]
        } else {
            &["h2", "http/1.1"]
        };
        json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "alpn_protocols": alpn,
                "tls_certificates": tls_certificate(pki, "server"),
                "validation_context": { "trusted_ca": { "filename": pki.dir.join("ca.crt").display().to_string() } },
            } } })
    };
    let http_log = |port: u16, chain: &str| {
        file_log(
            log,
            json!({ "port": port, "chain": chain, "protocol": "%PROTOCOL%",
                    "path": "%REQ(:PATH)%", "response_code": "%RESPONSE_CODE%",
                    "grpc_messages": "%FILTER_STATE(envoy.filters.http.grpc_stats:PLAIN)%",
                    "downstream_peer": "%FILTER_STATE(wasm.downstream_peer)%",
                    "downstream_peer_id": "%FILTER_STATE(wasm.downstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let tcp_log = |port: u16, chain: &str| {
        file_log(
            log,
            json!({ "port": port, "chain": chain, "bytes_received": "%BYTES_RECEIVED%",
                    "downstream_peer": "%FILTER_STATE(wasm.downstream_peer)%",
                    "downstream_peer_id": "%FILTER_STATE(wasm.downstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let mut chains = Vec::new();
    let mut clusters = Vec::new();
    for port in PORTS {
        let n = port.number;
        let cluster = format!("inbound|{n}||");
        let matched = |transport: &str, alpns: &[&str]| {
            let mut m = json!({ "destination_port": n, "transport_protocol": transport });
            if !alpns.is_empty() {
                m["application_protocols"] = json!(alpns);
            }
            m
        };
        let http = |name: &str, transport: &str, alpns: &[&str], tls_socket: bool| {
            let hcm = proxy.hcm(Class::SidecarInbound, n, &cluster, http_log(n, name));
            let mut c = json!({ "name": format!("{name}_{n}"), "filter_chain_match": matched(transport, alpns),
                                "filters": proxy.network_filters(Class::SidecarInbound, n, None, hcm) });
            if tls_socket {
                c["transport_socket"] = tls(false);
            }
            c
        };
        let tcp = |name: &str, transport: &str, alpns: &[&str], tls_socket: bool| {
            let terminal = tcp_proxy(&cluster, tcp_log(n, name));
            let mut c = json!({ "name": format!("{name}_{n}"), "filter_chain_match": matched(transport, alpns),
                                "filters": proxy.network_filters(Class::SidecarInbound, n, None, terminal) });
            if tls_socket {
                c["transport_socket"] = tls(true);
            }
            c
        };
        match port.protocol {
            // inboundPermissiveHTTPFilterChainMatchWithMxcOptions
            Protocol::Http | Protocol::Grpc => {
                chains.push(http(chain::MTLS_HTTP, "tls", &ALL_ISTIO_MTLS_ALPNS, true));
                chains.push(http(chain::PLAINTEXT_HTTP, "raw_buffer", &[], false));
            }
            // inboundPermissiveTCPFilterChainMatchWithMxcOptions
            Protocol::Tcp => {
                chains.push(tcp(chain::MTLS_TCP, "tls", &ALL_ISTIO_MTLS_ALPNS, true));
                chains.push(tcp(chain::TLS_PASSTHROUGH, "tls", &[], false));
                chains.push(tcp(chain::PLAINTEXT_TCP, "raw_buffer", &[], false));
            }
            // inboundPermissiveFilterChainMatchWithMxcOptions
            Protocol::Auto => {
                chains.push(http(chain::MTLS_HTTP, "tls", &MTLS_HTTP_ALPNS, true));
                chains.push(http(chain::PLAINTEXT_HTTP, "raw_buffer", &PLAINTEXT_HTTP_ALPNS, false));
                chains.push(tcp(chain::MTLS_TCP, "tls", &MTLS_TCP_WITH_MXC_ALPNS, true));
                chains.push(tcp(chain::PLAINTEXT_TCP, "raw_buffer", &[], false));
                chains.push(tcp(chain::TLS_PASSTHROUGH, "tls", &[], false));
            }
        }
        let app = match port.app {
            App::Http => apps.http,
            App::Echo => apps.echo,
            App::Banner => apps.banner,
        };
        // The inbound cluster speaks what the port declares; a sniffed
        // port's, what the downstream spoke.
        let mut app_cluster = static_cluster(&cluster, app);
        if let Some(options) = protocol_options(port.protocol) {
            app_cluster["typed_extension_protocol_options"] = options;
        }
        clusters.push(app_cluster);
    }
    let additional: Vec<Value> = PORTS.iter().map(|p| json!({ "address": socket(pod, p.number) })).collect();
    let listener = json!({
        "name": "virtualInbound",
        "address": socket(pod, 15006),
        "additional_addresses": additional,
        "traffic_direction": "INBOUND",
        // populateListenerFilters: the HTTP inspector only where a chain
        // matches a sniffed protocol (the unnamed port); no timeout
        // (meshConfig.protocolDetectionTimeout defaults to 0), continue on it.
        "listener_filters": [
            typed("envoy.filters.listener.original_dst", "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"),
            typed("envoy.filters.listener.tls_inspector", "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
            { "name": "envoy.filters.listener.http_inspector",
              "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" },
              "filter_disabled": { "not_match": { "destination_port_range": { "start": 8000, "end": 8001 } } } },
        ],
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
        "filter_chains": chains,
    });
    json!({
        "node": node(&crate::workloads::SERVER),
        "admin": { "address": socket(Ipv4Addr::LOCALHOST, 0) },
        "static_resources": { "listeners": [listener], "clusters": clusters },
    })
}

/// The upstream mTLS context istiod gives a mesh cluster.
fn mesh_tls(proxy: Proxy<'_>, pki: &Pki, client: &str, sni: &str, h2: bool) -> Value {
    let alpn: &[&str] = match (h2, proxy.istiod.metadata_exchange) {
        (true, true) => &["istio-peer-exchange", "istio", "h2"],
        (true, false) => &["istio", "h2"],
        (false, true) => &["istio-peer-exchange", "istio"],
        (false, false) => &["istio"],
    };
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": sni,
        "common_tls_context": {
            "alpn_protocols": alpn,
            "tls_certificates": tls_certificate(pki, client),
            "validation_context": {
                "trusted_ca": { "filename": pki.dir.join("ca.crt").display().to_string() },
                "match_typed_subject_alt_names": [{ "san_type": "URI",
                    "matcher": { "exact": crate::pki::SERVER_IDENTITY } }],
            },
        } } })
}

/// Which listeners a client-side proxy has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientSide {
    /// A sidecar: a listener per service port (`0.0.0.0_<port>`), per
    /// headless port (`headless_<port>`) and per passthrough port (`passthrough_<port>`).
    Sidecar,
    /// A gateway: `gateway_<port>` for the HTTP, gRPC and TCP ports.
    Gateway,
}

pub const GATEWAY_PORTS: [u16; 3] = [8080, 9090, 5432];

/// A client sidecar or a gateway, calling the service whose pod is `server_pod`.
pub fn outbound(proxy: Proxy<'_>, side: ClientSide, pki: &Pki, server_pod: Ipv4Addr, log: &Path) -> Value {
    let (class, workload, cert) = match side {
        ClientSide::Sidecar => (Class::SidecarOutbound, &crate::workloads::CLIENT, "client"),
        ClientSide::Gateway => (Class::Gateway, &crate::workloads::GATEWAY, "gateway"),
    };
    let http_log = |listener: &str| {
        file_log(
            log,
            json!({ "listener": listener, "chain": "http", "protocol": "%PROTOCOL%", "path": "%REQ(:PATH)%",
                    "response_code": "%RESPONSE_CODE%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
                    "upstream_peer": "%FILTER_STATE(wasm.upstream_peer)%",
                    "upstream_peer_id": "%FILTER_STATE(wasm.upstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    let tcp_log = |listener: &str| {
        file_log(
            log,
            json!({ "listener": listener, "chain": "tcp", "bytes_sent": "%BYTES_SENT%",
                    "upstream_cluster": "%UPSTREAM_CLUSTER%",
                    "upstream_peer": "%FILTER_STATE(wasm.upstream_peer)%",
                    "upstream_peer_id": "%FILTER_STATE(wasm.upstream_peer_id:PLAIN)%",
                    "peer_not_found": "%FILTER_STATE(wasm.peer_not_found:PLAIN)%" }),
        )
    };
    // The original destination iptables would have kept, for ORIGINAL_DST clusters.
    let original_dst = |port: u16| {
        json!({ "name": "envoy.filters.network.set_filter_state", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
            "on_new_connection": [{
                "object_key": "envoy.network.transport_socket.original_dst_address",
                "format_string": { "text_format_source": { "inline_string": format!("{server_pod}:{port}") } },
            }] } })
    };
    let listener = |name: String, port: ServicePort, cluster: &str, first: Option<Value>| {
        let n = port.number;
        let http = || proxy.network_filters(class, n, first.clone(), proxy.hcm(class, n, cluster, http_log(&name)));
        let tcp = || proxy.network_filters(class, n, first.clone(), tcp_proxy(cluster, tcp_log(&name)));
        let chains = match port.protocol {
            Protocol::Http | Protocol::Grpc => vec![json!({ "filters": http() })],
            Protocol::Auto => vec![
                json!({ "filter_chain_match": { "application_protocols": PLAINTEXT_HTTP_ALPNS }, "filters": http() }),
                json!({ "filters": tcp() }),
            ],
            Protocol::Tcp => vec![json!({ "filters": tcp() })],
        };
        let mut l = json!({ "name": name, "address": socket(Ipv4Addr::LOCALHOST, 0), "filter_chains": chains });
        if port.protocol == Protocol::Auto {
            l["listener_filters"] = json!([typed(
                "envoy.filters.listener.http_inspector",
                "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
            )]);
        }
        l
    };
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    let services = |host: &str, name: &str| json!([{ "host": host, "name": name, "namespace": "server-ns" }]);
    for p in PORTS {
        let n = p.number;
        let cluster = format!("outbound|{n}||{SERVICE_HOST}");
        let included = match side {
            ClientSide::Sidecar => true,
            ClientSide::Gateway => GATEWAY_PORTS.contains(&n),
        };
        if included {
            let name = match side {
                ClientSide::Sidecar => format!("0.0.0.0_{n}"),
                ClientSide::Gateway => format!("gateway_{n}"),
            };
            listeners.push(listener(name, p, &cluster, None));
        }
        let sni = format!("outbound_.{n}_._.{SERVICE_HOST}");
        let mut c = json!({
            "name": cluster, "type": "STATIC", "connect_timeout": "10s",
            "metadata": { "filter_metadata": { "istio": {
                "services": services(SERVICE_HOST, "server"), "default_original_port": n } } },
            "transport_socket_matches": [
                { "name": "tlsMode-istio", "match": { "tlsMode": "istio" },
                  "transport_socket": mesh_tls(proxy, pki, cert, &sni, p.protocol == Protocol::Grpc) },
                { "name": "tlsMode-disabled", "match": {}, "transport_socket": { "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" } } },
            ],
            "load_assignment": { "cluster_name": cluster, "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": socket(server_pod, n) },
                "metadata": { "filter_metadata": {
                    "envoy.transport_socket_match": { "tlsMode": "istio" },
                    "istio": { "workload": "server;server-ns;server;v1;Kubernetes" } } },
            }] }] },
        });
        if let Some(options) = protocol_options(p.protocol) {
            c["typed_extension_protocol_options"] = options;
        }
        clusters.push(c);

        if side == ClientSide::Sidecar && HEADLESS_PORTS.contains(&n) {
            let cluster = format!("outbound|{n}||{HEADLESS_HOST}");
            listeners.push(listener(format!("headless_{n}"), p, &cluster, Some(original_dst(n))));
            let sni = format!("outbound_.{n}_._.{HEADLESS_HOST}");
            let mut c = json!({
                "name": cluster, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s",
                "metadata": { "filter_metadata": { "istio": {
                    "services": services(HEADLESS_HOST, "server-headless"), "default_original_port": n } } },
                "transport_socket": mesh_tls(proxy, pki, cert, &sni, false),
            });
            if let Some(options) = protocol_options(p.protocol) {
                c["typed_extension_protocol_options"] = options;
            }
            clusters.push(c);
        }
        if side == ClientSide::Sidecar && PASSTHROUGH_PORTS.contains(&n) {
            let tcp_port = ServicePort { protocol: Protocol::Tcp, ..p };
            listeners.push(listener(format!("passthrough_{n}"), tcp_port, "PassthroughCluster", Some(original_dst(n))));
        }
    }
    if side == ClientSide::Sidecar {
        clusters.push(json!({ "name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                              "connect_timeout": "10s" }));
    }
    json!({
        "node": node(workload),
        "admin": { "address": socket(Ipv4Addr::LOCALHOST, 0) },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}
