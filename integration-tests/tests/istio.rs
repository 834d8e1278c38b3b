//! The Istio deployment we support, run for real: the WasmPlugins of
//! `deploy/istio/`, exactly as shipped, placed where istiod places plugins
//! of their type, mode, phase and priority on a sidecar whose istiod emits
//! none of Istio's own exchange and ALPN filters (`integration-tests/src/istio.rs`
//! says what is built and from which istiod sources), in a client and a
//! server sidecar of that shape, with HTTP/1.1, h2c and TCP traffic
//! through an HTTP port, a gRPC port, a port of unknown protocol and a TCP
//! port.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use integration_tests::backends::Backends;
use integration_tests::clients::{assert_same_bytes, echo_through, h2c_get, http1_get, HttpResponse};
use integration_tests::envoy::{Envoy, Launch};
use integration_tests::istio::{self, Class, Phase, Plugin, PluginType, Protocol, PORTS};
use integration_tests::pki::Pki;
use integration_tests::workloads::{CLIENT, SERVER};
use integration_tests::{pseudo_random_bytes, LOG_WAIT};

const EXCHANGE_HTTP_ROOT_ID: &str = peer_exchange_filter::config::HTTP_ROOT_ID;

fn start(name: &str, config: &serde_json::Value, dir: &std::path::Path) -> Envoy {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(config).expect("JSON")).expect("write config");
    let vars = BTreeMap::new();
    let template = path.display().to_string();
    let launch = Launch { name, template: &template, vars: &vars, dir, wasm_log_level: "debug" };
    Envoy::start(&launch).unwrap_or_else(|e| panic!("{e}"))
}

/// The names of a chain's filters (network, or the HCM's HTTP filters).
fn names(filters: &serde_json::Value) -> Vec<String> {
    filters.as_array().into_iter().flatten().filter_map(|f| f["name"].as_str().map(str::to_string)).collect()
}

fn hcm_filters(chain: &serde_json::Value) -> Option<serde_json::Value> {
    chain["filters"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .map(|f| f["typed_config"]["http_filters"].clone())
}

/// The plugin of `kind` and `class` whose image is `module`.
fn plugin_named<'a>(plugins: &'a [Plugin], kind: PluginType, module: &str, class: Class) -> &'a Plugin {
    plugins
        .iter()
        .find(|p| p.kind == kind && p.url.contains(module) && p.modes.iter().any(|(m, _)| *m == Some(class)))
        .unwrap_or_else(|| panic!("deploy/istio/ has no {kind:?} plugin of {module} for {class:?}"))
}

/// What the placement must give, whatever istiod's other filters are: the
/// exchange first on every chain it serves, alpn-filter after everything
/// that could change the route.
fn assert_placement(plugins: &[Plugin], inbound: &serde_json::Value, outbound: &serde_json::Value) {
    for p in plugins {
        assert!(!p.scoped, "{}: the supported deployment needs every proxy of the mesh (no selector)", p.name);
        assert!(p.name.starts_with("istio-system."), "{}: in the root namespace, to reach every proxy", p.name);
    }
    let exchange = "peer-exchange-filter";
    let tcp_server = &plugin_named(plugins, PluginType::Network, exchange, Class::SidecarInbound).name;
    let http_server = &plugin_named(plugins, PluginType::Http, exchange, Class::SidecarInbound).name;
    let tcp_client = &plugin_named(plugins, PluginType::Network, exchange, Class::SidecarOutbound).name;
    let http_client = &plugin_named(plugins, PluginType::Http, exchange, Class::SidecarOutbound).name;
    let alpn = &plugin_named(plugins, PluginType::Http, "alpn-filter", Class::SidecarOutbound).name;
    for (name, root_id) in [(http_server, EXCHANGE_HTTP_ROOT_ID), (http_client, EXCHANGE_HTTP_ROOT_ID)] {
        let plugin = plugins.iter().find(|p| &p.name == name).expect("plugin");
        assert_eq!(plugin.root_id, root_id, "{name}: pluginName selects the exchange's HTTP form");
    }
    for listener in inbound["static_resources"]["listeners"].as_array().unwrap() {
        for chain in listener["filter_chains"].as_array().unwrap() {
            let network = names(&chain["filters"]);
            assert_eq!(
                network.first(),
                Some(tcp_server),
                "inbound {}: the TCP exchange first: {network:?}",
                listener["name"]
            );
            if let Some(http) = hcm_filters(chain) {
                let http = names(&http);
                assert_eq!(
                    http.first(),
                    Some(http_server),
                    "inbound {}: the HTTP exchange first: {http:?}",
                    listener["name"]
                );
            }
        }
    }
    for listener in outbound["static_resources"]["listeners"].as_array().unwrap() {
        for chain in listener["filter_chains"].as_array().unwrap() {
            let network = names(&chain["filters"]);
            assert_eq!(network.first(), Some(tcp_client), "outbound {}: {network:?}", listener["name"]);
            if let Some(http) = hcm_filters(chain) {
                let http = names(&http);
                assert_eq!(http.first(), Some(http_client), "outbound {}: {http:?}", listener["name"]);
                // Only filters that never change the route come after it.
                let after: Vec<&str> = http.iter().skip_while(|n| *n != alpn).skip(1).map(String::as_str).collect();
                assert_eq!(
                    after,
                    [
                        "envoy.filters.http.grpc_stats",
                        "envoy.filters.http.fault",
                        "envoy.filters.http.cors",
                        "envoy.filters.http.router"
                    ],
                    "outbound {}: alpn-filter's place: {http:?}",
                    listener["name"]
                );
            }
        }
    }
}

fn assert_no_exchange_headers(response: &HttpResponse, what: &str) {
    let mut seen: Vec<String> = response.headers.keys().cloned().collect();
    seen.extend(response.json()["headers"].as_object().into_iter().flat_map(|h| h.keys().cloned()));
    let leaked: Vec<&String> = seen.iter().filter(|n| n.starts_with("x-envoy-peer-metadata")).collect();
    assert!(leaked.is_empty(), "{what}: exchange headers reached an app: {leaked:?}");
}

fn log_lines(path: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_manifests_phases_are_istiods_and_each_plugin_reaches_its_chains() {
    let plugins = istio::manifests();
    assert_eq!(plugins.len(), 5, "{plugins:?}");
    // What each manifest asks istiod for, read back through istiod's rules.
    for (kind, class, port, expected) in [
        (PluginType::Network, Class::SidecarInbound, 5432, "peer-exchange-server"),
        (PluginType::Network, Class::SidecarOutbound, 5432, "peer-exchange-client"),
        (PluginType::Http, Class::SidecarInbound, 8080, "peer-exchange-http-server"),
        (PluginType::Http, Class::SidecarOutbound, 8080, "peer-exchange-http-client"),
    ] {
        let authn: Vec<&str> =
            istio::placed(&plugins, kind, class, port, Phase::Authn).iter().map(|p| p.name.as_str()).collect();
        assert_eq!(authn, [format!("istio-system.{expected}")], "{kind:?} {class:?}");
    }
    let unspecified = istio::placed(&plugins, PluginType::Http, Class::SidecarOutbound, 8080, Phase::Unspecified);
    assert_eq!(unspecified.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["istio-system.alpn-override"]);
    assert!(istio::placed(&plugins, PluginType::Http, Class::SidecarInbound, 8080, Phase::Unspecified).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasm_plugins_where_istiod_places_them_serve_every_kind_of_port() {
    let plugins = istio::manifests();
    let dir = tempfile::Builder::new().prefix("istio-").tempdir().expect("temp dir");
    let pki = Pki::generate(&dir.path().join("certs"));
    let apps = Backends::start(&pki);
    let (inbound_log, outbound_log) = (dir.path().join("inbound-access.log"), dir.path().join("outbound-access.log"));

    let inbound_config = istio::inbound(&plugins, &pki, apps.http, apps.echo, &inbound_log);
    let server = start("server-sidecar", &inbound_config, dir.path());
    let inbound_ports: BTreeMap<u16, u16> =
        PORTS.iter().map(|p| (p.number, server.listener_port(&format!("inbound_{}", p.number)))).collect();
    let outbound_config = istio::outbound(&plugins, &pki, &inbound_ports, &outbound_log);
    assert_placement(&plugins, &inbound_config, &outbound_config);
    let client = start("client-sidecar", &outbound_config, dir.path());
    let app_port = |port: u16| SocketAddr::from(([127, 0, 0, 1], client.listener_port(&format!("0.0.0.0_{port}"))));

    // HTTP/1.1 and h2c from the app to each HTTP-capable port. What the
    // server sidecar speaks is the cluster's codec (istiod's: HTTP/1.1 for
    // http ports, HTTP/2 for grpc, the downstream's for unknown ones): its
    // AUTO codec detects it, as alpn-filter's Istio lists end with no real
    // protocol to negotiate.
    let mut expected_inbound = Vec::new();
    for port in PORTS.iter().filter(|p| p.protocol != Protocol::Tcp) {
        for downstream in ["HTTP/1.1", "HTTP/2"] {
            let path = format!("/{}/{}", port.number, if downstream == "HTTP/2" { "h2c" } else { "h1" });
            let response = if downstream == "HTTP/2" {
                h2c_get(app_port(port.number), &path).await
            } else {
                http1_get(app_port(port.number), "1.1", &path).await
            };
            assert_eq!(response.status, 200, "{path}: {response:?}\n{}", client.log_tail(30));
            assert_no_exchange_headers(&response, &path);
            let upstream = match port.protocol {
                Protocol::Http => "HTTP/1.1",
                Protocol::Grpc => "HTTP/2",
                _ => downstream,
            };
            expected_inbound.push((path, upstream));
        }
    }
    // TCP through the TCP port (the app behind it echoes).
    let payload = pseudo_random_bytes(50_000, 7);
    assert_same_bytes(&echo_through(app_port(5432), &payload).await, &payload, "TCP port 5432");

    let inbound_lines = log_lines(&inbound_log, expected_inbound.len() + 1);
    for (path, protocol) in &expected_inbound {
        let line = inbound_lines
            .iter()
            .find(|l| l["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no inbound log line for {path}: {inbound_lines:?}"));
        assert_eq!(line["protocol"], *protocol, "{path}: {line}");
        assert_eq!(line["response_code"], 200, "{path}: {line}");
        CLIENT.assert_is(&line["downstream_peer"], &format!("inbound {path}"));
        assert_eq!(line["downstream_peer_id"], CLIENT.node_id, "{line}");
        // The TCP role in front of the HTTP connection manager stayed out:
        // it marks no "peer not found" under the peer the HTTP form found.
        assert!(line["peer_not_found"].is_null(), "{line}");
    }
    let tcp_line = inbound_lines.iter().find(|l| l["chain"] == "tcp").expect("inbound TCP log line");
    CLIENT.assert_is(&tcp_line["downstream_peer"], "inbound TCP");
    let outbound_lines = log_lines(&outbound_log, expected_inbound.len() + 1);
    assert_eq!(outbound_lines.len(), expected_inbound.len() + 1, "{outbound_lines:?}");
    for line in &outbound_lines {
        SERVER.assert_is(&line["upstream_peer"], &format!("outbound {line}"));
        assert_eq!(line["upstream_peer_id"], SERVER.node_id, "{line}");
        assert!(line["peer_not_found"].is_null(), "{line}");
    }
    // One per HTTP connection, on each side: the TCP form in front of the
    // HTTP connection managers.
    use integration_tests::stats::exchange;
    use peer_exchange_filter::config::Role;
    use peer_exchange_filter::exchange::Counter;
    for (envoy, role) in [(&server, Role::Server), (&client, Role::Client)] {
        let stayed_out = exchange(envoy, role, Counter::NoUpstreamConnection);
        assert!(stayed_out >= 1, "{role:?} no_upstream_connection {stayed_out}");
        assert_eq!(exchange(envoy, role, Counter::MetadataReceived), 1, "{role:?}: the TCP port's connection");
    }
}
