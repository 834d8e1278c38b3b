//! The rules against configurations in the shapes Envoy and istiod write:
//! each mistake is found with its id and severity; the right shape is clean.

use serde_json::{json, Value};

use crate::{check, Finding, Options, Proxy, Severity};

fn findings(configs: &[Value], options: Options) -> Vec<Finding> {
    let proxies: Vec<Proxy> =
        configs.iter().enumerate().map(|(i, c)| Proxy::from_value(&format!("config{i}"), c).expect("config")).collect();
    check(&proxies, options)
}

fn ids(found: &[Finding]) -> Vec<(Severity, &'static str)> {
    found.iter().map(|f| (f.severity, f.id)).collect()
}

fn wasm(http: bool, name: &str, root_id: &str, configuration: &str, policy: Option<&str>) -> Value {
    let kind = if http { "http" } else { "network" };
    let mut config = json!({ "root_id": root_id,
        "vm_config": { "runtime": "envoy.wasm.runtime.v8", "code": { "local": { "filename": "/var/lib/istio/data/x/module.wasm" } } },
        "configuration": { "@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration } });
    if let Some(p) = policy {
        config["failure_policy"] = json!(p);
    }
    json!({ "name": name, "typed_config": {
        "@type": format!("type.googleapis.com/envoy.extensions.filters.{kind}.wasm.v3.Wasm"), "config": config } })
}

fn typed_struct(name: &str, type_url: &str) -> Value {
    json!({ "name": name, "typed_config": { "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": type_url, "value": { "protocol": "istio-peer-exchange" } } })
}

fn tcp_proxy(cluster: &str) -> Value {
    json!({ "name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": cluster, "cluster": cluster } })
}

fn hcm(http_filters: Vec<Value>, cluster: &str) -> Value {
    json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "route_config": { "virtual_hosts": [{ "name": "all", "domains": ["*"],
            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }] }] },
        "http_filters": http_filters } })
}

fn upstream_tls(alpn: &[&str]) -> Value {
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": { "alpn_protocols": alpn } } })
}

fn downstream_tls(require_client_certificate: bool) -> Value {
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": require_client_certificate, "common_tls_context": {} } })
}

const CLIENT: &str = r#"{"role": "client"}"#;
const SERVER: &str = r#"{"role": "server"}"#;

fn node() -> Value {
    json!({ "id": "sidecar~1~a.ns~ns.svc.cluster.local",
            "metadata": { "NAME": "a-1", "NAMESPACE": "ns", "WORKLOAD_NAME": "a", "ISTIO_VERSION": "1.30.0" } })
}

/// An `istioctl proxy-config all -o json` dump of a sidecar: outbound TCP
/// and HTTP listeners with `extra` filters first, a service cluster.
fn istio_dump(network: Vec<Value>, http: Vec<Value>, cluster_alpn: &[&str], ecds: Vec<Value>) -> Value {
    let mut tcp_filters = network.clone();
    tcp_filters.push(tcp_proxy("outbound|5432||db.ns.svc.cluster.local"));
    let mut http_listener_filters = network;
    http_listener_filters.push(hcm(http, "outbound|8080||web.ns.svc.cluster.local"));
    let cluster = |name: &str| {
        json!({ "name": name, "transport_socket_matches": [
        { "name": "tlsMode-istio", "match": { "tlsMode": "istio" }, "transport_socket": upstream_tls(cluster_alpn) }] })
    };
    json!({ "configs": [
        { "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": { "node": node() } },
        { "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
            { "name": "0.0.0.0_5432", "active_state": { "listener": { "name": "0.0.0.0_5432",
                "filter_chains": [{ "filters": tcp_filters }] } } },
            { "name": "0.0.0.0_8080", "active_state": { "listener": { "name": "0.0.0.0_8080",
                "filter_chains": [{ "filters": http_listener_filters }] } } } ] },
        { "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": [
            { "cluster": cluster("outbound|5432||db.ns.svc.cluster.local") },
            { "cluster": cluster("outbound|8080||web.ns.svc.cluster.local") } ] },
        { "@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump", "ecds_filters": ecds },
        { "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": [
            { "endpoint_config": { "cluster_name": "outbound|5432||db.ns.svc.cluster.local", "endpoints": [{ "lb_endpoints": [
                { "endpoint": { "address": { "socket_address": { "address": "10.0.0.9", "port_value": 5432 } } },
                  "metadata": { "filter_metadata": { "envoy.transport_socket_match": { "tlsMode": "istio" } } } } ] }] } } ] },
    ] })
}

/// A plugin delivered by ECDS: the listener names it, the dump holds it.
fn ecds_reference(name: &str) -> Value {
    json!({ "name": name, "config_discovery": { "config_source": { "ads": {} },
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"] } })
}

fn ecds(name: &str, typed_config: Value) -> Value {
    json!({ "ecds_filter": { "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": name, "typed_config": typed_config } })
}

#[test]
fn the_supported_istio_shape_is_clean_and_so_is_the_preflight() {
    let client = wasm(false, "istio-system.peer-exchange-client", "", CLIENT, Some("FAIL_OPEN"));
    let http_client =
        wasm(true, "istio-system.peer-exchange-http-client", "peer_exchange_http", CLIENT, Some("FAIL_OPEN"));
    let alpn = wasm(
        true,
        "istio-system.alpn-override",
        "",
        r#"{"default_upstream_protocol": "USE_DOWNSTREAM"}"#,
        Some("FAIL_OPEN"),
    );
    let dump = istio_dump(
        vec![ecds_reference("istio-system.peer-exchange-client")],
        vec![http_client, alpn],
        &["istio"],
        vec![ecds("istio-system.peer-exchange-client", client["typed_config"].clone())],
    );
    assert_eq!(ids(&findings(std::slice::from_ref(&dump), Options::default())), []);
    assert_eq!(ids(&findings(&[dump], Options { istio_filters_off: true })), []);
}

#[test]
fn istios_own_filters_are_found_and_are_errors_beside_our_clients_or_in_the_preflight() {
    let native = vec![typed_struct(
        "istio.metadata_exchange",
        "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
    )];
    let native_http = vec![
        typed_struct("istio.metadata_exchange", "type.googleapis.com/io.istio.http.peer_metadata.Config"),
        json!({ "name": "istio.alpn", "typed_config": { "@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig" } }),
    ];
    // Istio's defaults, before anything of ours: noted, not wrong.
    let before = istio_dump(native.clone(), native_http.clone(), &["istio-peer-exchange", "istio"], vec![]);
    let found = findings(std::slice::from_ref(&before), Options::default());
    assert_eq!(
        ids(&found),
        [
            (Severity::Warning, "istio-exchange-present"),
            (Severity::Warning, "istio-exchange-present"),
            (Severity::Warning, "istio-exchange-present"),
            (Severity::Note, "istio-alpn-present"),
        ]
    );
    assert!(found[0].location.contains("listener 0.0.0.0_5432"), "{}", found[0]);
    // The preflight: every one an error, and istiod's exchange ALPN too.
    let preflight = findings(&[before], Options { istio_filters_off: true });
    assert!(preflight.iter().all(|f| f.severity == Severity::Error), "{preflight:?}");
    assert!(preflight.iter().any(|f| f.id == "istio-exchange-alpn"));
    // Our client roles beside Istio's exchange: errors without any option.
    let mut network = native;
    network.push(wasm(false, "istio-system.peer-exchange-client", "", CLIENT, Some("FAIL_OPEN")));
    let both = istio_dump(network, native_http, &["istio"], vec![]);
    let found = findings(&[both], Options::default());
    assert_eq!(found.iter().filter(|f| f.id == "istio-exchange-present" && f.severity == Severity::Error).count(), 3);
}

#[test]
fn a_plugin_istio_agent_could_not_fetch_is_found_where_it_should_be() {
    let deny = json!({ "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                       "stat_prefix": "wasm-default-deny", "rules": {} });
    let dump = istio_dump(
        vec![ecds_reference("istio-system.peer-exchange-client")],
        vec![],
        &["istio"],
        vec![ecds("istio-system.peer-exchange-client", deny)],
    );
    let found = findings(&[dump], Options::default());
    assert_eq!(ids(&found), [(Severity::Error, "plugin-not-loaded"), (Severity::Error, "plugin-not-loaded")]);
    assert!(found[0].location.contains("istio-system.peer-exchange-client"), "{}", found[0]);
}

/// An Envoy of the user's own: an outbound with both client roles, an inbound with both servers.
fn own(outbound_cluster: Value, node_metadata: Value, tcp_client: Value) -> Value {
    json!({ "node": { "id": "a", "metadata": node_metadata },
        "static_resources": {
            "listeners": [{ "name": "out_tcp", "filter_chains": [{ "filters": [tcp_client, tcp_proxy("backend_tcp")] }] }],
            "clusters": [outbound_cluster] } })
}

fn marked_cluster(alpn: &[&str], port: u16) -> Value {
    json!({ "name": "backend_tcp", "metadata": { "filter_metadata": { "istio.peer_exchange": { "enabled": true } } },
            "transport_socket": upstream_tls(alpn),
            "load_assignment": { "cluster_name": "backend_tcp", "endpoints": [{ "lb_endpoints": [
                { "endpoint": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } } } }] }] } })
}

fn own_node() -> Value {
    json!({ "NAME": "a-1", "NAMESPACE": "ns", "WORKLOAD_NAME": "a" })
}

fn inbound(require_client_certificate: bool) -> Value {
    let server = wasm(false, "server", "peer_exchange", SERVER, Some("FAIL_RELOAD"));
    let http_server = wasm(true, "http-server", "peer_exchange_http", SERVER, Some("FAIL_RELOAD"));
    json!({ "node": { "id": "b", "metadata": own_node() },
        "static_resources": { "listeners": [{ "name": "inbound",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": 15006 } },
            "filter_chains": [
                { "name": "tcp", "filter_chain_match": { "application_protocols": ["istio-peer-exchange"] },
                  "transport_socket": downstream_tls(require_client_certificate), "filters": [server, tcp_proxy("app")] },
                { "name": "http", "filter_chain_match": { "application_protocols": ["istio-http/1.1", "istio"] },
                  "transport_socket": downstream_tls(true), "filters": [hcm(vec![http_server], "app")] },
                { "name": "plain", "filter_chain_match": { "application_protocols": ["plain-tcp"] },
                  "transport_socket": downstream_tls(true), "filters": [tcp_proxy("app")] } ] }] } })
}

fn client() -> Value {
    wasm(false, "client", "peer_exchange", CLIENT, Some("FAIL_RELOAD"))
}

#[test]
fn a_tcp_clusters_alpn_is_checked_against_the_inbound_chain_it_selects() {
    type Case = (&'static [&'static str], Vec<(Severity, &'static str)>);
    let cases: [Case; 4] = [
        (&["istio-peer-exchange", "istio"], vec![]),
        (&["istio"], vec![(Severity::Error, "tcp-alpn-http-chain")]),
        (&[], vec![(Severity::Error, "tcp-alpn-no-chain")]),
        (&["plain-tcp"], vec![(Severity::Error, "tcp-chain-without-server-role")]),
    ];
    for (alpn, expected) in cases {
        let outbound = own(marked_cluster(alpn, 15006), own_node(), client());
        assert_eq!(ids(&findings(&[outbound.clone(), inbound(true)], Options::default())), expected, "{alpn:?}");
        // Without the inbound: any list without the exchange's token is an error.
        let alone = ids(&findings(&[outbound], Options::default()));
        if alpn.contains(&"istio-peer-exchange") {
            assert_eq!(alone, []);
        } else {
            assert_eq!(alone, [(Severity::Error, "tcp-cluster-alpn")], "{alpn:?}");
        }
    }
}

#[test]
fn mistakes_in_an_envoy_of_ones_own_are_each_found() {
    let ok = marked_cluster(&["istio-peer-exchange"], 15006);
    let only = |config: Value| ids(&findings(&[config], Options::default()));
    assert_eq!(only(own(ok.clone(), json!({}), client())), [(Severity::Warning, "node-metadata-missing")]);
    let mut unmarked = ok.clone();
    unmarked["metadata"] = json!({});
    assert_eq!(only(own(unmarked, own_node(), client())), [(Severity::Warning, "cluster-not-marked-mesh")]);
    let mut misplaced = ok.clone();
    misplaced["metadata"] = json!({ "filter_metadata": { "istio": { "peer_exchange": { "enabled": true } } } });
    assert_eq!(
        only(own(misplaced, own_node(), client())),
        [(Severity::Error, "misplaced-marker"), (Severity::Warning, "cluster-not-marked-mesh")]
    );
    let mut plaintext = ok.clone();
    plaintext.as_object_mut().expect("object").remove("transport_socket");
    assert_eq!(only(own(plaintext, own_node(), client())), [(Severity::Error, "mesh-cluster-without-tls")]);
    let no_policy = wasm(false, "client", "peer_exchange", CLIENT, None);
    assert_eq!(only(own(ok.clone(), own_node(), no_policy)), [(Severity::Warning, "failure-policy-missing")]);
    let refused = wasm(
        false,
        "client",
        "peer_exchange",
        r#"{"role": "client", "exchange_timeout_ms": "soon"}"#,
        Some("FAIL_OPEN"),
    );
    let found = findings(&[own(ok.clone(), own_node(), refused)], Options::default());
    assert_eq!(ids(&found), [(Severity::Error, "plugin-configuration")]);
    assert!(found[0].what.contains("exchange_timeout_ms"), "{}", found[0]);
    let metrics =
        wasm(false, "client", "peer_exchange", r#"{"role": "client", "istio_metrics": {}}"#, Some("FAIL_OPEN"));
    let found = findings(&[own(ok, own_node(), metrics)], Options::default());
    assert_eq!(ids(&found), [(Severity::Warning, "stats-tags-missing")]);
    assert!(found[0].what.contains("25 of Istio's 25"), "{}", found[0]);
}

#[test]
fn server_roles_without_client_certificates_or_failing_open_are_found() {
    let only = |config: Value| ids(&findings(&[config], Options::default()));
    assert_eq!(only(inbound(true)), []);
    assert_eq!(only(inbound(false)), [(Severity::Warning, "client-certificate-optional")]);
    let mut open = inbound(true);
    open["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["config"]
        ["failure_policy"] = json!("FAIL_OPEN");
    assert_eq!(only(open), [(Severity::Error, "server-fails-open")]);
}

#[test]
fn a_live_admin_dump_and_a_bootstrap_read_the_same() {
    let bootstrap = own(marked_cluster(&["istio"], 15006), own_node(), client());
    let dump = json!({ "configs": [
        { "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": bootstrap } ] });
    assert_eq!(ids(&findings(&[dump], Options::default())), ids(&findings(&[bootstrap], Options::default())));
    assert!(Proxy::from_value("x", &json!({"listeners": []})).is_err());
}

#[test]
fn every_id_the_checks_use_is_listed() {
    let source = include_str!("checks.rs");
    let used: std::collections::BTreeSet<&str> = source
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix('"')?.strip_suffix("\","))
        .filter(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '-') && l.contains('-'))
        .collect();
    let listed: std::collections::BTreeSet<&str> = crate::finding::IDS.into_iter().collect();
    assert_eq!(used, listed);
}
