//! The rules: each names a mistake users make, why it matters, and its fix.
//! Where a rule is the filters' own (a configuration error, a cluster's
//! marker, who takes part), it calls the filters' code, so the doctor says
//! what the filter would do.

use serde_json::Value;

use filter_common::istio::{self, misplaced, Marker};
use peer_exchange::config::{Config, Transport};
use peer_exchange::istio_stats::LABEL_NAMES;
use proto::core::Metadata;
use proto::prost::Message;
use proto::prost_types::{value::Kind as ValueKind, ListValue, Struct, Value as ProtoValue};

use crate::finding::{Finding, Severity};
use crate::model::{alpn_list, array, upstream_tls, Chain, Exchange, Filter, Kind, Proxy};

/// What the user asks the doctor to hold.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The preflight before the client roles (docs/deployment.md): Istio's
    /// own exchange and ALPN filters must be gone.
    pub istio_filters_off: bool,
}

const PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";

struct Report<'a> {
    proxy: &'a Proxy,
    findings: Vec<Finding>,
}

impl Report<'_> {
    fn add(&mut self, severity: Severity, id: &'static str, location: String, what: String, why: &str, fix: &str) {
        self.findings.push(Finding {
            severity,
            id,
            source: self.proxy.source.clone(),
            location,
            what,
            why: why.to_string(),
            fix: fix.to_string(),
        });
    }
}

/// Every finding for `proxies` (each checked alone, then clients against
/// the servers given with them).
pub fn check(proxies: &[Proxy], options: Options) -> Vec<Finding> {
    let mut findings = Vec::new();
    for proxy in proxies {
        let mut report = Report { proxy, findings: Vec::new() };
        native_filters(&mut report, options);
        plugins(&mut report);
        node_metadata(&mut report);
        server_chains(&mut report);
        clusters(&mut report);
        client_chains(&mut report, proxies);
        findings.extend(report.findings);
    }
    findings.sort_by(|a, b| (a.severity, &a.source, &a.location).cmp(&(b.severity, &b.source, &b.location)));
    findings
}

/// Every filter of the proxy with where it is: network, HTTP and cluster filters.
fn all_filters(proxy: &Proxy) -> Vec<(String, Filter<'_>)> {
    let mut out = Vec::new();
    for chain in proxy.chains() {
        for f in chain.network_filters() {
            out.push((format!("{}, filter {}", chain.location(), f.name), f));
        }
        for f in chain.http_filters().unwrap_or_default() {
            out.push((format!("{}, HTTP filter {}", chain.location(), f.name), f));
        }
    }
    for cluster in &proxy.clusters {
        for f in array(&cluster["filters"]) {
            let f = Filter::new(proxy, f);
            out.push((format!("cluster {}, filter {}", cluster["name"].as_str().unwrap_or_default(), f.name), f));
        }
    }
    out
}

fn has_client_roles(proxy: &Proxy) -> bool {
    all_filters(proxy).iter().any(|(_, f)| matches!(f.kind, Kind::Exchange(Exchange { server: false, .. })))
}

fn has_alpn_rule(proxy: &Proxy) -> bool {
    all_filters(proxy).iter().any(|(_, f)| {
        f.kind == Kind::Alpn
            || (matches!(f.kind, Kind::Exchange(Exchange { http: true, server: false }))
                && plugin_json(f).get("alpn").is_some())
    })
}

fn plugin_json(f: &Filter<'_>) -> Value {
    serde_json::from_str(f.plugin_configuration().unwrap_or_default()).unwrap_or(Value::Null)
}

fn native_filters(report: &mut Report<'_>, options: Options) {
    let proxy = report.proxy;
    let clients = has_client_roles(proxy);
    let alpn = has_alpn_rule(proxy);
    for (location, f) in all_filters(proxy) {
        match f.kind {
            Kind::NativeExchange => {
                let severity = if clients || options.istio_filters_off { Severity::Error } else { Severity::Warning };
                report.add(
                    severity,
                    "istio-exchange-present",
                    location,
                    format!("Istio's own metadata exchange ({}) is on this proxy", f.name),
                    "Istio's exchange and ours must not both run: its HTTP filter comes first and removes the \
                     headers, and a TCP connection would carry two prefixes. Our client roles may only arrive \
                     where it is gone.",
                    "istiod: PILOT_ENABLE_METADATA_EXCHANGE=false on every istiod revision and primary cluster, \
                     then wait until istioctl proxy-status says SYNCED (docs/deployment.md, Procedure step 5); \
                     an Envoy of your own: remove the filter",
                );
            }
            Kind::NativeAlpn => {
                let severity = if options.istio_filters_off {
                    Severity::Error
                } else if alpn {
                    Severity::Warning
                } else {
                    Severity::Note
                };
                report.add(
                    severity,
                    "istio-alpn-present",
                    location,
                    "Istio's own istio.alpn is on this proxy".into(),
                    "beside alpn-filter both write the upstream ALPN (Envoy keeps one; both select the same \
                     inbound chain): fine while rolling out, not as an end state",
                    "istiod: PILOT_ENABLE_ALPN_FILTER=false once alpn.yaml reaches every proxy \
                     (docs/deployment.md, Procedure step 5)",
                );
            }
            Kind::WasmFallback { deny } => report.add(
                if deny { Severity::Error } else { Severity::Warning },
                "plugin-not-loaded",
                location,
                format!(
                    "istio-agent replaced a WasmPlugin with an {} RBAC filter: it could not fetch the plugin's image",
                    if deny { "deny-all" } else { "allow-all" }
                ),
                if deny {
                    "every connection through this chain is refused, while istioctl proxy-status still says SYNCED"
                } else {
                    "the plugin does not run: no exchange, no ALPN rule"
                },
                "make the image fetchable from the cluster (mirror it in-cluster, check the url, sha256 and pull \
                 secret); the istio-proxy log names the fetch error (docs/deployment.md, \"Which failStrategy\")",
            ),
            _ => {}
        }
    }
    if options.istio_filters_off && proxy.is_istio() {
        let offering: Vec<&str> = proxy
            .clusters
            .iter()
            .filter(|c| upstream_tls(c).iter().any(|(_, tls)| alpn_list(tls).contains(&PEER_EXCHANGE_ALPN)))
            .filter_map(|c| c["name"].as_str())
            .collect();
        if let Some(first) = offering.first() {
            report.add(
                Severity::Error,
                "istio-exchange-alpn",
                format!("cluster {first} and {} more", offering.len() - 1),
                format!("istiod still offers `{PEER_EXCHANGE_ALPN}` in {} clusters' ALPN", offering.len()),
                "istiod adds it only while PILOT_ENABLE_METADATA_EXCHANGE is on: this proxy's istiod still runs \
                 Istio's exchange",
                "set PILOT_ENABLE_METADATA_EXCHANGE=false on this proxy's istiod revision, wait for SYNCED",
            );
        }
    }
}

/// Our plugins' own configuration: what the filter would refuse or warn
/// about when loading it, and the failure policy.
fn plugins(report: &mut Report<'_>) {
    let proxy = report.proxy;
    let mut metrics_on = false;
    for (location, f) in all_filters(proxy) {
        let text = f.plugin_configuration().unwrap_or_default();
        match f.kind {
            Kind::Exchange(e) => {
                let transport = if e.http { Transport::Http } else { Transport::Tcp };
                match Config::parse(text.as_bytes(), transport) {
                    Ok(config) => metrics_on |= config.istio_metrics.is_some(),
                    Err(error) => report.add(
                        Severity::Error,
                        "plugin-configuration",
                        location.clone(),
                        format!("peer-exchange-filter refuses this configuration: {error}"),
                        "Envoy does not load a plugin whose configuration is refused: the listener is rejected, or \
                         (by xDS) keeps its previous configuration",
                        "fix the field named (docs/configuration.md)",
                    ),
                }
                failure_policy(report, &location, &f, e);
            }
            Kind::Alpn => match alpn_decision::config::AlpnConfig::parse(text.as_bytes()) {
                Ok(config) => {
                    for warning in config.warnings() {
                        report.add(
                            Severity::Warning,
                            "alpn-list",
                            location.clone(),
                            warning,
                            "a mesh server negotiates that token and speaks the other protocol than the cluster",
                            "end each list with its own protocol's token, or none (docs/configuration.md)",
                        );
                    }
                }
                Err(error) => report.add(
                    Severity::Error,
                    "plugin-configuration",
                    location.clone(),
                    format!("alpn-filter refuses this configuration: {error}"),
                    "Envoy does not load a plugin whose configuration is refused",
                    "fix the field named (docs/configuration.md)",
                ),
            },
            _ => {}
        }
    }
    if metrics_on {
        let missing: Vec<&str> =
            LABEL_NAMES.iter().copied().filter(|n| !proxy.stats_tags.iter().any(|t| t == n)).collect();
        if !missing.is_empty() {
            report.add(
                Severity::Warning,
                "stats-tags-missing",
                "stats_config.stats_tags".into(),
                format!(
                    "istio_metrics is on, but {} of Istio's 25 labels have no stats tag: {}",
                    missing.len(),
                    missing.join(", ")
                ),
                "the labels travel in the metric names; without a tag per label Prometheus sees long names, not \
                 istio_requests_total{...}",
                "add Envoy's stats_tags for every label (examples/outbound.yaml has them); under Istio, name the \
                 25 labels in the proxy config's extraStatTags and restart the pods",
            );
        }
    }
}

fn failure_policy(report: &mut Report<'_>, location: &str, f: &Filter<'_>, e: Exchange) {
    match (f.failure_policy(), e.server) {
        (None, _) => report.add(
            Severity::Warning,
            "failure-policy-missing",
            location.to_string(),
            "no failure_policy: Envoy's default refuses every connection through the filter after a VM failure, \
             until Envoy restarts"
                .into(),
            "a panic or an out-of-memory in one VM then stops this listener's traffic for good",
            if e.server {
                "failure_policy: FAIL_RELOAD (a server role must not fail open: clients' prefixes would reach the app)"
            } else {
                "failure_policy: FAIL_OPEN for a client role (servers answer only clients that sent), or FAIL_RELOAD"
            },
        ),
        (Some("FAIL_OPEN"), true) => report.add(
            Severity::Error,
            "server-fails-open",
            location.to_string(),
            "a server role with failure_policy FAIL_OPEN".into(),
            "after a VM failure later connections bypass it: a client's prefix reaches the app as data, its \
             headers reach the app",
            "failure_policy: FAIL_RELOAD (Istio: failStrategy FAIL_RELOAD, or FAIL_CLOSE before Istio 1.27)",
        ),
        _ => {}
    }
}

fn node_metadata(report: &mut Report<'_>) {
    let proxy = report.proxy;
    if !all_filters(proxy).iter().any(|(_, f)| matches!(f.kind, Kind::Exchange(_))) {
        return;
    }
    let metadata = &proxy.node["metadata"];
    let missing: Vec<&str> = ["NAMESPACE", "WORKLOAD_NAME", "NAME"]
        .into_iter()
        .filter(|k| metadata[*k].as_str().is_none_or(str::is_empty))
        .collect();
    if !missing.is_empty() {
        report.add(
            Severity::Warning,
            "node-metadata-missing",
            "node.metadata".into(),
            format!("the exchange runs here, but the node has no {}", missing.join(", ")),
            "the exchange sends the node's metadata: peers store only what this workload's certificate proves, \
             and Istio's metrics label it unknown",
            "add node.metadata NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, LABELS (docs/configuration.md, \
             \"What is sent\"; examples/outbound.yaml has them)",
        );
    }
}

fn server_chains(report: &mut Report<'_>) {
    let proxy = report.proxy;
    for chain in proxy.chains() {
        let servers = chain.exchange_roles().into_iter().any(|(_, e)| e.server);
        let Some(tls) = chain.downstream_tls() else { continue };
        if servers && tls["require_client_certificate"] != Value::Bool(true) {
            report.add(
                Severity::Warning,
                "client-certificate-optional",
                chain.location(),
                "the exchange's server role runs on a chain that does not require client certificates".into(),
                "a client's claimed identity is checked against its certificate: without one the claim cannot be \
                 checked (identity_check: enforce stores nothing), and any TLS client can send a prefix",
                "require_client_certificate: true in the chain's DownstreamTlsContext",
            );
        }
    }
}

/// JSON (as a config file or dump writes metadata) to the protobuf the
/// filters read, so their own rules apply.
fn to_proto(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => ValueKind::NullValue(0),
        Value::Bool(b) => ValueKind::BoolValue(*b),
        Value::Number(n) => ValueKind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => ValueKind::StringValue(s.clone()),
        Value::Array(a) => ValueKind::ListValue(ListValue { values: a.iter().map(to_proto).collect() }),
        Value::Object(o) => ValueKind::StructValue(to_struct(o)),
    };
    ProtoValue { kind: Some(kind) }
}

fn to_struct(object: &serde_json::Map<String, Value>) -> Struct {
    Struct { fields: object.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect() }
}

fn metadata(cluster: &Value) -> Metadata {
    let mut m = Metadata::default();
    for (namespace, value) in cluster["metadata"]["filter_metadata"].as_object().into_iter().flatten() {
        if let Some(object) = value.as_object() {
            m.filter_metadata.insert(namespace.clone(), to_struct(object));
        }
    }
    m
}

/// What the exchange's client makes of a cluster: `Some(true)` marked as a
/// mesh upstream (its own marker, or Istio's endpoint marker), `Some(false)`
/// opted out, `None` neither.
fn mesh_cluster(proxy: &Proxy, cluster: &Value) -> Option<bool> {
    let verdict = peer_exchange::participation::cluster_enabled(&metadata(cluster).encode_to_vec());
    if verdict.is_some() {
        return verdict;
    }
    let name = cluster["name"].as_str().unwrap_or_default();
    let marked = proxy.endpoints.get(name).into_iter().flatten().any(|e| {
        e["metadata"]["filter_metadata"][istio::TRANSPORT_SOCKET_MATCH_NAMESPACE][istio::TLS_MODE]
            == istio::TLS_MODE_ISTIO
    });
    marked.then_some(true)
}

fn clusters(report: &mut Report<'_>) {
    let proxy = report.proxy;
    let all = [Marker::AlpnOverride, Marker::Alpn, Marker::PeerExchange, Marker::DisableMx, Marker::External];
    for cluster in &proxy.clusters {
        let name = cluster["name"].as_str().unwrap_or_default();
        for m in misplaced(&metadata(cluster), &all) {
            report.add(
                Severity::Error,
                "misplaced-marker",
                format!("cluster {name}"),
                m.to_string(),
                "Envoy's metadata namespaces are flat: the filters never read a marker written there, so the \
                 cluster behaves as if unmarked",
                "move it where the filters read it (docs/configuration.md, \"Cluster metadata markers\")",
            );
        }
        let explicitly = peer_exchange::participation::cluster_enabled(&metadata(cluster).encode_to_vec());
        if explicitly == Some(true) && upstream_tls(cluster).is_empty() {
            report.add(
                Severity::Error,
                "mesh-cluster-without-tls",
                format!("cluster {name}"),
                "marked as a mesh upstream (istio.peer_exchange: {enabled: true}) but it has no TLS transport socket"
                    .into(),
                "the exchange believes only a peer's mTLS certificate: over plaintext neither form takes part",
                "give the cluster an UpstreamTlsContext with the workload's certificate (examples/outbound.yaml)",
            );
        }
    }
}

/// Outbound chains with our client roles: the clusters they reach.
fn client_chains(report: &mut Report<'_>, proxies: &[Proxy]) {
    let proxy = report.proxy;
    for chain in proxy.chains() {
        let roles = chain.exchange_roles();
        let tcp_client = roles.iter().any(|(_, e)| !e.http && !e.server);
        let http_client = roles.iter().any(|(_, e)| e.http && !e.server);
        if tcp_client {
            if let Some(cluster) = chain.tcp_proxy_cluster().and_then(|c| proxy.cluster(c)) {
                tcp_cluster(report, proxies, &chain, cluster);
            }
        }
        if http_client && !proxy.is_istio() {
            for cluster in route_clusters(&chain).into_iter().filter_map(|c| proxy.cluster(c)) {
                if mesh_cluster(proxy, cluster).is_none() && !upstream_tls(cluster).is_empty() {
                    unmarked(report, &chain, cluster, "HTTP");
                }
            }
        }
    }
}

fn route_clusters<'a>(chain: &Chain<'a>) -> Vec<&'a str> {
    let Some(hcm) = chain.network_filters().into_iter().find(|f| f.kind == Kind::Hcm) else { return Vec::new() };
    let mut out: Vec<&str> = array(&hcm.config["route_config"]["virtual_hosts"])
        .flat_map(|vh| array(&vh["routes"]))
        .filter_map(|r| r["route"]["cluster"].as_str())
        .collect();
    out.dedup();
    out
}

fn unmarked(report: &mut Report<'_>, chain: &Chain<'_>, cluster: &Value, form: &str) {
    report.add(
        Severity::Warning,
        "cluster-not-marked-mesh",
        format!("{}, cluster {}", chain.location(), cluster["name"].as_str().unwrap_or_default()),
        format!("the exchange's {form} client runs here, but cluster {} carries no mesh marker: it sends nothing to it and records peer_not_found", cluster["name"].as_str().unwrap_or_default()),
        "the client sends its metadata only to upstreams marked as running the exchange (an unmarked one \
         would receive it as data)",
        "if the upstream runs the exchange's server role: filter_metadata: {istio.peer_exchange: {enabled: true}} \
         on the cluster (docs/configuration.md, \"Who takes part\"); if it does not, nothing to do",
    );
}

fn tcp_cluster(report: &mut Report<'_>, proxies: &[Proxy], chain: &Chain<'_>, cluster: &Value) {
    let proxy = report.proxy;
    let name = cluster["name"].as_str().unwrap_or_default();
    match mesh_cluster(proxy, cluster) {
        Some(false) => return,
        None => {
            if !proxy.is_istio() && !upstream_tls(cluster).is_empty() {
                unmarked(report, chain, cluster, "TCP");
            }
            return;
        }
        Some(true) => {}
    }
    let tls_contexts = upstream_tls(cluster);
    let Some((_, tls)) = tls_contexts.first() else { return };
    let offered = alpn_list(tls);
    let location = format!("{}, cluster {name}", chain.location());
    // With the inbound Envoy's configuration given too: exactly what it does.
    if let Some((server, listener, outcome)) = inbound_outcome(proxies, cluster, tls, &offered) {
        let at = format!("{} (listener {listener} of {})", location, server.source);
        let alpn = format!("[{}]", offered.join(", "));
        match outcome {
            Landing::NoChain => report.add(
                Severity::Error,
                "tcp-alpn-no-chain",
                at,
                format!("no filter chain of the inbound matches this cluster's ALPN {alpn}"),
                "the inbound Envoy closes the connection: the app sees connection reset by peer, the inbound \
                 counts no_filter_chain_match",
                "offer `istio-peer-exchange` first in the cluster's alpn_protocols ([istio-peer-exchange, istio]), \
                 as the inbound's exchange chain matches it",
            ),
            Landing::Http(chain) => report.add(
                Severity::Error,
                "tcp-alpn-http-chain",
                at,
                format!("this cluster's ALPN {alpn} selects the inbound's HTTP chain {chain}"),
                "the HTTP connection manager parses our prefix and the TCP app's bytes as a request: the app reads \
                 HTTP/1.1 400 Bad Request",
                "offer `istio-peer-exchange` first in the cluster's alpn_protocols ([istio-peer-exchange, istio])",
            ),
            Landing::TcpWithoutServer(chain) => report.add(
                Severity::Error,
                "tcp-chain-without-server-role",
                at,
                format!(
                    "this cluster's ALPN {alpn} selects the inbound chain {chain}, which has no exchange server role"
                ),
                "the inbound's app receives our prefix as data",
                "put peer-exchange-filter with role server first on that chain (examples/inbound.yaml)",
            ),
            Landing::Exchange => {}
        }
        return;
    }
    // istiod's inbound TCP chains also match `istio`.
    let istiod_serves_it = proxy.is_istio() && offered.contains(&"istio");
    if !offered.contains(&PEER_EXCHANGE_ALPN) && !istiod_serves_it {
        report.add(
            Severity::Error,
            "tcp-cluster-alpn",
            location,
            format!(
                "the exchange's TCP client prefixes connections to this cluster, but its ALPN [{}] lacks `{PEER_EXCHANGE_ALPN}`",
                offered.join(", ")
            ),
            "the inbound picks its exchange chain by `istio-peer-exchange`: with no ALPN no chain matches \
             (connection reset by peer, no_filter_chain_match); with `istio` alone an inbound like \
             examples/inbound.yaml picks its HTTP chain (the TCP app reads HTTP/1.1 400)",
            "alpn_protocols: [istio-peer-exchange, istio] in the cluster's UpstreamTlsContext; give mesh-doctor \
             the inbound Envoy's configuration too for an exact answer",
        );
    }
}

enum Landing {
    NoChain,
    Http(String),
    TcpWithoutServer(String),
    Exchange,
}

/// Where the inbound Envoy (one of `proxies` with a server role, on the
/// port the cluster's endpoint names, or its only such listener) puts a
/// connection offering `offered`: Envoy matches the destination port, the
/// server name, `tls`, then the first offered protocol a chain names.
fn inbound_outcome<'a>(
    proxies: &'a [Proxy],
    cluster: &Value,
    tls: &Value,
    offered: &[&str],
) -> Option<(&'a Proxy, &'a str, Landing)> {
    let endpoint_port = array(&cluster["load_assignment"]["endpoints"])
        .flat_map(|e| array(&e["lb_endpoints"]))
        .find_map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].as_u64());
    let sni = tls["sni"].as_str();
    for server in proxies {
        let listeners: Vec<&Value> = server
            .listeners
            .iter()
            .filter(|l| {
                server
                    .chains()
                    .iter()
                    .any(|c| std::ptr::eq(c.listener_value, *l) && c.exchange_roles().iter().any(|(_, e)| e.server))
            })
            .collect();
        let by_port = listeners.iter().copied().find(|l| {
            endpoint_port.is_some() && l["address"]["socket_address"]["port_value"].as_u64() == endpoint_port
        });
        let listener = match (by_port, listeners.as_slice()) {
            (Some(l), _) => l,
            (None, [only]) => *only,
            _ => continue,
        };
        let chains: Vec<Chain<'_>> = server
            .chains()
            .into_iter()
            .filter(|c| std::ptr::eq(c.listener_value, listener))
            .filter(|c| c.destination_port().is_none() || c.destination_port() == endpoint_port)
            .filter(|c| {
                let names = c.server_names();
                names.is_empty() || sni.is_some_and(|s| names.contains(&s))
            })
            .filter(|c| {
                let transport = c.chain["filter_chain_match"]["transport_protocol"].as_str();
                transport.is_none_or(|t| t == "tls")
            })
            .collect();
        let pick = offered
            .iter()
            .find_map(|p| chains.iter().find(|c| c.application_protocols().contains(p)))
            .or_else(|| chains.iter().find(|c| c.application_protocols().is_empty()));
        let name = listener["name"].as_str().unwrap_or_default();
        let landing = match pick {
            None => Landing::NoChain,
            Some(c) if c.http_filters().is_some() => Landing::Http(c.name()),
            Some(c) if c.exchange_roles().iter().any(|(_, e)| e.server && !e.http) => Landing::Exchange,
            Some(c) => Landing::TcpWithoutServer(c.name()),
        };
        return Some((server, name, landing));
    }
    None
}
