//! The Istio deployment we support, run for real: the WasmPlugins of
//! `deploy/istio/`, exactly as shipped, placed where istiod places plugins
//! of their type, mode, phase and priority, in a server sidecar, a client
//! sidecar and a gateway of the shapes istiod writes
//! (`integration-tests/src/istio/` names the istiod source of each), in
//! every state of docs/deployment.md's procedure and its rollback. Through
//! each: HTTP/1.1, h2c, gRPC, a client-first and a server-first TCP app, from
//! a sidecar (ClusterIP service), to a headless service (ORIGINAL_DST), to
//! the passthrough cluster, from a client without a sidecar (PERMISSIVE) and
//! from the gateway, on an http, a grpc, an unnamed (sniffed) and two tcp
//! ports.

use std::collections::BTreeMap;

use integration_tests::istio::rollout::{State, ISTIO_PROXIES, STOCK_PROXIES_BEFORE};
use integration_tests::istio::sidecar::{self, ClientSide, Istiod, Proxy};
use integration_tests::istio::traffic::{self, cases, is_http_chain, Case, Mesh, Origin};
use integration_tests::istio::{self, Class, Phase, Plugin, PluginType};
use integration_tests::pki::Pki;
use integration_tests::workloads::{
    assert_stored, CLIENT, GATEWAY, PEER_UNKNOWN, SERVER, SERVER_FROM_ENDPOINT_METADATA,
};

const EXCHANGE_HTTP_ROOT_ID: &str = peer_exchange::config::HTTP_ROOT_ID;

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

/// Every chain of every listener of a configuration.
fn chains(config: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for listener in config["static_resources"]["listeners"].as_array().into_iter().flatten() {
        for chain in listener["filter_chains"].as_array().into_iter().flatten() {
            out.push((listener["name"].as_str().unwrap_or_default().to_string(), chain.clone()));
        }
    }
    out
}

/// What the placement must give, whatever istiod's other filters are: the
/// exchange first on every chain it serves (after the test's stand-in for
/// iptables), alpn-filter after everything that could change the route,
/// and no server role on a gateway.
fn assert_placement(
    plugins: &[Plugin],
    inbound: &serde_json::Value,
    outbound: &serde_json::Value,
    gateway: &serde_json::Value,
) {
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
    for (listener, chain) in chains(inbound) {
        let network = names(&chain["filters"]);
        assert_eq!(network.first(), Some(tcp_server), "inbound {listener}: the TCP exchange first: {network:?}");
        if let Some(http) = hcm_filters(&chain) {
            let http = names(&http);
            assert_eq!(http.first(), Some(http_server), "inbound {listener}: the HTTP exchange first: {http:?}");
        }
    }
    for (side, config) in [("outbound", outbound), ("gateway", gateway)] {
        for (listener, chain) in chains(config) {
            let network: Vec<String> = names(&chain["filters"])
                .into_iter()
                .filter(|n| n != "envoy.filters.network.set_filter_state")
                .collect();
            assert_eq!(network.first(), Some(tcp_client), "{side} {listener}: {network:?}");
            assert!(!network.contains(tcp_server), "{side} {listener}: a server role on a client-class chain");
            if let Some(http) = hcm_filters(&chain) {
                let http = names(&http);
                assert_eq!(http.first(), Some(http_client), "{side} {listener}: {http:?}");
                assert!(!http.contains(http_server), "{side} {listener}: a server role on a client-class chain");
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
                    "{side} {listener}: alpn-filter's place: {http:?}"
                );
            }
        }
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
        (PluginType::Network, Class::Gateway, 5432, "peer-exchange-client"),
        (PluginType::Http, Class::SidecarInbound, 8080, "peer-exchange-http-server"),
        (PluginType::Http, Class::SidecarOutbound, 8080, "peer-exchange-http-client"),
        (PluginType::Http, Class::Gateway, 8080, "peer-exchange-http-client"),
    ] {
        let authn: Vec<&str> =
            istio::placed(&plugins, kind, class, port, Phase::Authn).iter().map(|p| p.name.as_str()).collect();
        assert_eq!(authn, [format!("istio-system.{expected}")], "{kind:?} {class:?}");
    }
    for class in [Class::SidecarOutbound, Class::Gateway] {
        let unspecified = istio::placed(&plugins, PluginType::Http, class, 8080, Phase::Unspecified);
        assert_eq!(unspecified.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["istio-system.alpn-override"]);
    }
    assert!(istio::placed(&plugins, PluginType::Http, Class::SidecarInbound, 8080, Phase::Unspecified).is_empty());

    // And where they land in istiod's listeners.
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path());
    let apps = integration_tests::backends::Backends::start(&pki);
    let proxy = Proxy { plugins: &plugins, istiod: Istiod::FLAGS_OFF };
    let pod = sidecar::pod_address();
    let log = dir.path().join("log");
    assert_placement(
        &plugins,
        &sidecar::inbound(proxy, &pki, pod, &apps, &log),
        &sidecar::outbound(proxy, ClientSide::Sidecar, &pki, pod, &log),
        &sidecar::outbound(proxy, ClientSide::Gateway, &pki, pod, &log),
    );
}

/// Runs every case through `state`'s mesh; fails with every failure listed.
async fn run_state(state: State, pki: &Pki) -> (Mesh, BTreeMap<Case, serde_json::Value>) {
    let mesh = Mesh::start(state, pki);
    let cases = cases();
    let results = mesh.run(&cases).await;
    let failures: Vec<String> =
        results.iter().filter_map(|(case, r)| r.as_ref().err().map(|e| format!("  {case:?}: {e}"))).collect();
    assert!(
        failures.is_empty(),
        "state `{}` ({}): {} of {} cases failed:\n{}\nserver log:\n{}",
        state.name,
        state.step,
        failures.len(),
        cases.len(),
        failures.join("\n"),
        mesh.server.log_tail(40)
    );
    let lines = mesh.inbound_http_lines(&cases);
    (mesh, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_istiod_writes_carries_every_apps_bytes_exactly_and_the_peers_are_learned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path());
    let end_state = ISTIO_PROXIES[ISTIO_PROXIES.len() - 1];
    let (mesh, http_lines) = run_state(end_state, &pki).await;

    // HTTP: every request reached an HTTP chain; the server learned the
    // client over mTLS (the HTTP form), not from a plaintext client.
    for case in cases().iter().filter(|c| c.is_http()) {
        let line = http_lines.get(case).unwrap_or_else(|| panic!("{case:?}: no inbound HTTP log line"));
        assert!(is_http_chain(line), "{case:?}: {line}");
        match case.from {
            Origin::Sidecar | Origin::Headless => CLIENT.assert_is(&line["downstream_peer"], &format!("{case:?}")),
            Origin::Gateway => GATEWAY.assert_is(&line["downstream_peer"], &format!("{case:?}")),
            Origin::Plaintext | Origin::Passthrough => {
                assert!(line["downstream_peer"].is_null(), "{case:?}: {line}");
            }
        }
    }
    // The client side of the same requests: the server's answer believed
    // from its certificate, through the service and the headless cluster.
    let outbound = traffic::wait_log(
        &mesh.outbound_log,
        cases().iter().filter(|c| c.from != Origin::Plaintext && c.from != Origin::Gateway).count(),
    );
    for line in outbound.iter().filter(|l| l["chain"] == "http") {
        SERVER.assert_is(&line["upstream_peer"], &format!("outbound {line}"));
    }
    // TCP through the service: client-first, both learn each other;
    // server-first, the banner went out without a prefix, so the client
    // took the server from its endpoint's istio.workload and the server
    // learned nothing. Headless (no endpoint marker, so no client role) and
    // passthrough (plaintext): nothing exchanged, the bytes exact.
    let by_listener = |name: &str| -> serde_json::Value {
        outbound
            .iter()
            .find(|l| l["listener"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {name}: {outbound:?}"))
    };
    SERVER.assert_is(&by_listener("0.0.0.0_5432")["upstream_peer"], "client-first TCP");
    assert_stored(&by_listener("0.0.0.0_3306")["upstream_peer"], SERVER_FROM_ENDPOINT_METADATA, "server-first TCP");
    for listener in ["headless_5432", "headless_3306", "passthrough_5432"] {
        let line = by_listener(listener);
        assert_eq!(line["peer_not_found"], "true", "{listener}: {line}");
        assert_eq!(line["upstream_peer_id"], PEER_UNKNOWN, "{listener}: {line}");
    }
    let mtls_tcp = cases()
        .iter()
        .filter(|c| !c.is_http() && matches!(c.from, Origin::Sidecar | Origin::Headless | Origin::Gateway))
        .count();
    let tcp = traffic::wait_log_where(&mesh.inbound_log, mtls_tcp, |l| l["chain"] == sidecar::chain::MTLS_TCP);
    assert_eq!(tcp.len(), mtls_tcp, "one inbound line per TCP connection over mTLS: {tcp:?}");
    let learned = tcp.iter().filter(|l| !l["downstream_peer"].is_null()).count();
    // 5432 from the sidecar and from the gateway.
    assert_eq!(learned, 2, "{tcp:?}");
    use integration_tests::stats::exchange;
    use peer_exchange::config::Role;
    use peer_exchange::exchange::Counter;
    // Server-first: from the sidecar, the headless client and the gateway-less paths over mTLS.
    assert_eq!(exchange(&mesh.server, Role::Server, Counter::PrefixWithheld), 2, "3306 from the sidecar and headless");
    let gateway_lines = traffic::wait_log(&mesh.gateway_log, 4);
    for line in &gateway_lines {
        SERVER.assert_is(&line["upstream_peer"], &format!("gateway {line}"));
    }

    // The configuration checker, on the three proxies' live /config_dump,
    // as the docs' preflight and verification run it: nothing wrong.
    let admins: Vec<String> =
        [&mesh.server, &mesh.client, &mesh.gateway].iter().map(|e| format!("http://{}", e.admin.addr)).collect();
    let mut args: Vec<&str> = vec!["--istio-filters-off"];
    args.extend(admins.iter().map(String::as_str));
    let (code, report) = integration_tests::paths::run_mesh_doctor(&args);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("0 error(s), 0 warning(s)"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_the_rollout_and_its_rollback_keeps_every_path_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path());
    // Which HTTP cases an HTTP chain handled (L7: routes, metrics, policy), by state.
    let mut l7: Vec<(State, Vec<Case>)> = Vec::new();
    for state in std::iter::once(STOCK_PROXIES_BEFORE).chain(ISTIO_PROXIES) {
        let (_mesh, lines) = run_state(state, &pki).await;
        let handled: Vec<Case> = lines.iter().filter(|(_, l)| is_http_chain(l)).map(|(c, _)| *c).collect();
        l7.push((state, handled));
    }
    // Procedure on Istio's proxies, forward and back (the rollback visits
    // the same states in reverse): what an HTTP chain handled in one state
    // it handles in the next and the previous — every state the same.
    let istio: Vec<&(State, Vec<Case>)> = l7.iter().skip(1).collect();
    for pair in istio.windows(2) {
        let ((a, a_cases), (b, b_cases)) = (pair[0], pair[1]);
        assert_eq!(
            a_cases, b_cases,
            "HTTP handling differs between `{}` ({}) and `{}` ({})",
            a.name, a.step, b.name, b.step
        );
    }
    // Stock proxies: before (flags off, nothing applied), a port without a
    // protocol name has no HTTP chain for clients that offer only `istio`;
    // the ALPN rule gives it one, and nothing else changes.
    let (stock, stock_cases) = &l7[0];
    let (_, end_cases) = &l7[l7.len() - 1];
    let gained: Vec<&Case> = end_cases.iter().filter(|c| !stock_cases.contains(c)).collect();
    assert!(stock_cases.iter().all(|c| end_cases.contains(c)), "{}: lost HTTP handling", stock.name);
    assert!(
        gained.iter().all(|c| c.port == 8000 && matches!(c.from, Origin::Sidecar)),
        "only the unnamed port's requests from the sidecar gain an HTTP chain: {gained:?}"
    );
    assert!(!gained.is_empty(), "the unnamed port's HTTP is on the TCP chain before the ALPN rule");
}
