//! End-to-end tests of alpn-filter and of the server Envoy's ALPN-selected
//! inbound chains: real Envoys, mTLS, our .wasm.

use alpn_decision::decision::Counter;
use integration_tests::{stats, LOG_WAIT};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use integration_tests::backends::Backends;
use integration_tests::clients::{h2c_get, http11_keepalive, http1_get, HttpResponse};
use integration_tests::envoy::{Envoy, Launch};
use integration_tests::mesh::{self, Mesh, MeshOptions, CLIENT_HTTP_LOG, SERVER_HTTP_LOG};
use integration_tests::pki::Pki;

fn counter(mesh: &Mesh, counter: Counter) -> u64 {
    stats::alpn(&mesh.client, counter)
}

/// The inbound chain that served a response, and what the backend saw.
fn served_by(response: &HttpResponse) -> (String, String) {
    assert_eq!(response.status, 200, "{response:?}");
    let body = response.json();
    assert_eq!(
        body["headers"]["x-inbound-chain"],
        response.header("x-inbound-chain"),
        "the chain the backend was told about is the one that answered"
    );
    (response.header("x-inbound-chain").to_string(), body["protocol"].as_str().unwrap_or_default().to_string())
}

/// The chain and backend protocol each upstream list leads to.
type Served = (&'static str, &'static str);
const H11: Served = ("inbound-http11", "HTTP/1.1");
const H2: Served = ("inbound-h2", "HTTP/2");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_downstream_protocol_through_every_kind_of_cluster_is_served_with_natives_list() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener("outbound_http");
    // Route prefix, the cluster's HttpProtocolOptions (and who declares
    // them), and the list native's table gives for HTTP/1.0, HTTP/1.1, h2c.
    let matrix: &[(&str, &str, [Served; 3])] = &[
        ("/no-options/", "none, left to the default", [H11, H11, H11]),
        ("/explicit-h1/", "explicit http1, name rule", [H11, H11, H11]),
        ("/h2-cluster/", "explicit http2, metadata", [H2, H2, H2]),
        ("/use-downstream/", "use_downstream, name rule", [H11, H11, H2]),
        ("/auto/", "auto_config, metadata AUTO", [H2, H2, H2]),
        ("/mesh/", "auto_config, left to the default", [H11, H11, H11]),
    ];
    let mut expected_counts = std::collections::HashMap::<Counter, u64>::new();
    for (prefix, kind, expected) in matrix {
        let responses = [
            http1_get(app, "1.0", &format!("{prefix}v10")).await,
            http1_get(app, "1.1", &format!("{prefix}v11")).await,
            h2c_get(app, &format!("{prefix}v2")).await,
        ];
        for (response, (chain, protocol)) in responses.iter().zip(expected) {
            // 200 everywhere: the list always matches what the cluster's codec speaks.
            assert_eq!(served_by(response), (chain.to_string(), protocol.to_string()), "{prefix} ({kind})");
            let counter = if *chain == H2.0 { Counter::OverrideHttp2 } else { Counter::OverrideHttp11 };
            *expected_counts.entry(counter).or_default() += 1;
        }
    }
    for (name, count) in &expected_counts {
        assert_eq!(counter(&mesh, *name), *count, "{}", name.name());
    }
    // Which source declared each cluster's protocol, 3 requests each.
    assert_eq!(counter(&mesh, Counter::ProtocolFromDefault), 6);
    assert_eq!(counter(&mesh, Counter::ProtocolFromClusterRule), 6);
    assert_eq!(counter(&mesh, Counter::ProtocolFromClusterMetadata), 6);
    let log = mesh.client.log();
    assert!(log.contains("cluster mesh_http_auto: AUTO (ClusterMetadata) -> HTTP2 -> ALPN istio-h2,istio,h2"), "{log}");
    assert!(log.contains("cluster mesh_http_use_downstream: USE_DOWNSTREAM (ClusterRule) -> HTTP11 -> ALPN istio-http/1.1,istio,http/1.1"));
    assert!(
        log.contains("cluster mesh_http_no_options: HTTP11 (Default) -> HTTP11 -> ALPN istio-http/1.1,istio,http/1.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_cluster_reaches_a_non_mesh_tls_server_with_its_default_alpn() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener("outbound_http");

    let ok = http1_get(app, "1.1", "/optout/x").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["tls_alpn"], "h2", "the cluster's own [h2, http/1.1] was offered");
    assert_eq!(counter(&mesh, Counter::SkippedOptOut), 1);

    // Control: the same server without the opt-out refuses the mesh list.
    let refused = http1_get(app, "1.1", "/no-optout/x").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, 2, LOG_WAIT);
    let failure = log.iter().find(|l| l["path"] == "/no-optout/x").expect("log line")["upstream_failure"].to_string();
    assert!(failure.to_ascii_uppercase().contains("NO_APPLICATION_PROTOCOL"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metadata_alpn_list_and_protocol_policy_are_applied() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener("outbound_http");

    // istio.alpn.alpn: [mesh-custom/1.1, http/1.1] -> only that list can pick the custom chain.
    let custom = http1_get(app, "1.1", "/custom/x").await;
    assert_eq!(served_by(&custom), ("inbound-custom".into(), "HTTP/1.1".into()));
    assert_eq!(counter(&mesh, Counter::OverrideFromClusterMetadata), 1);

    // istio.alpn.upstream_protocol: HTTP2 -> an HTTP/1.1 request goes upstream as h2.
    let h2 = http1_get(app, "1.1", "/h2-cluster/x").await;
    assert_eq!(served_by(&h2), ("inbound-h2".into(), "HTTP/2".into()));
    assert_eq!(counter(&mesh, Counter::OverrideHttp2), 1);
    assert_eq!(counter(&mesh, Counter::OverrideHttp11), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_decide_per_request_and_alpn_lists_never_share_a_connection() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener("outbound_http");
    let expected_chain = |cluster: &str| match cluster {
        "mesh_http" => "inbound-http11",
        "mesh_http_custom_alpn" => "inbound-custom",
        other => panic!("unexpected cluster {other}"),
    };

    let mut seen = BTreeSet::new();
    for connection in 0..4 {
        let paths: Vec<String> = (0..10).map(|i| format!("/weighted/{connection}/{i}")).collect();
        for response in http11_keepalive(app, &paths).await {
            let cluster = response.header("x-client-cluster").to_string();
            assert_eq!(served_by(&response).0, expected_chain(&cluster), "{response:?}");
            seen.insert(cluster);
        }
    }
    assert_eq!(seen.len(), 2, "both weighted clusters were picked: {seen:?}");

    // One cluster, two lists: HTTP/1.1 and h2c requests interleaved on a
    // use-downstream cluster.
    for i in 0..5 {
        let h11 = http1_get(app, "1.1", &format!("/use-downstream/eleven/{i}")).await;
        assert_eq!(served_by(&h11).0, "inbound-http11");
        assert_eq!(served_by(&h2c_get(app, &format!("/use-downstream/two/{i}")).await).0, "inbound-h2");
    }

    // Every upstream connection (seen from the server) carried one chain only.
    let log = mesh.target.wait_access_log(SERVER_HTTP_LOG, 50, LOG_WAIT);
    assert_eq!(log.len(), 50);
    let mut chains_by_connection: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for line in &log {
        chains_by_connection
            .entry(line["connection_id"].as_u64().expect("connection id"))
            .or_default()
            .insert(line["chain"].as_str().unwrap().to_string());
    }
    for (connection, chains) in &chains_by_connection {
        assert_eq!(chains.len(), 1, "connection {connection} carried {chains:?}");
    }
    let reused = chains_by_connection.len() < log.len();
    assert!(reused, "upstream connections were reused, so the separation above means something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_alpn_lists_in_cluster_metadata_are_refused_and_envoy_survives() {
    let mut mesh = Mesh::start();
    let app = mesh.target.client_listener("outbound_http");
    for case in ["empty-element", "trailing-comma", "whitespace", "long-token"] {
        let response = http1_get(app, "1.1", &format!("/invalid/{case}/x")).await;
        // No override: the cluster's own [h2, http/1.1] picks the default chain.
        assert_eq!(served_by(&response).0, "inbound-default", "{case}: {response:?}");
    }
    assert_eq!(counter(&mesh, Counter::SkippedInvalidMetadata), 4);
    assert_eq!(counter(&mesh, Counter::OverrideFailed), 0);
    assert!(mesh.client.is_alive(), "the client Envoy is still running");
    let log = mesh.client.log();
    assert!(log.contains("cluster invalid_empty_element: ALPN left alone, invalid metadata"), "{log}");
    assert!(log.contains("element 1 is empty"));
    assert!(log.contains("element 0 is 300 bytes long"));
    let after = http1_get(app, "1.1", "/mesh/after").await;
    assert_eq!(served_by(&after).0, "inbound-http11");

    // A route without a cluster (direct response) is not an error either.
    assert_eq!(http1_get(app, "1.1", "/no-cluster").await.status, 204);
    assert_eq!(counter(&mesh, Counter::SkippedNoCluster), 1);
    assert!(mesh.client.is_alive());
}

/// Starts only a client Envoy with the given plugin configurations and
/// expects it to refuse them: it must exit, and say why.
fn expect_refused(alpn_config: &str, exchange_config: &str, expected_log: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("certs"));
    let backends = Backends::start(&pki);
    let options = mesh::MeshOptions {
        alpn_config: alpn_config.into(),
        client_exchange_config: exchange_config.into(),
        ..mesh::MeshOptions::default()
    };
    let vars = mesh::client_vars(dir.path(), &pki, &backends, "127.0.0.1:9".parse().unwrap(), &options);
    let launch =
        Launch { name: "client", template: "client.yaml", vars: &vars, dir: dir.path(), wasm_log_level: "debug" };
    let mut envoy = Envoy::spawn(&launch).unwrap_or_else(|e| panic!("{e}"));
    let status = envoy.wait_exit(Duration::from_secs(60));
    let log = envoy.log();
    assert!(status.is_some_and(|s| !s.success()), "Envoy must refuse the configuration; status {status:?}\n{log}");
    for needle in expected_log {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
}

#[test]
fn invalid_plugin_configuration_is_refused_at_start_with_a_clear_log_line() {
    let good_exchange = MeshOptions::default().client_exchange_config;
    expect_refused(
        r#"{"alpn_override":[{"upstream_protocol":"HTTP3","alpn_override":["istio-h3"]}]}"#,
        &good_exchange,
        &[
            "alpn-filter: invalid plugin configuration",
            "alpn_override[0].upstream_protocol: must be one of HTTP10, HTTP11, HTTP2",
        ],
    );
    expect_refused(
        r#"{"alpn_override":[{"upstream_protocol":"HTTP11","alpn_override":["istio-http/1.1",""]}]}"#,
        &good_exchange,
        &["alpn_override[0].alpn_override: element 1 is empty"],
    );
    expect_refused(
        "",
        r#"{"role":"sidecar"}"#,
        &[
            "peer-exchange-filter: invalid plugin configuration",
            "role: unknown value `sidecar`, expected one of server, client",
        ],
    );
}

/// A client Envoy whose one cluster comes from a CDS file, so the test can
/// change the cluster's metadata the way xDS does.
const CDS_CLIENT: &str = r#"
node: { id: cds-client, cluster: cds-client }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
dynamic_resources:
  cds_config:
    resource_api_version: V3
    path_config_source: { path: "${LOG_DIR}/cds.yaml", watched_directory: { path: "${LOG_DIR}" } }
static_resources:
  listeners:
  - name: outbound_http
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_http
          route_config:
            validate_clusters: false
            virtual_hosts:
            - { name: all, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: dynamic } }] }
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                root_id: alpn
                vm_config: { vm_id: alpn, runtime: envoy.wasm.runtime.v8, code: { local: { filename: "${ALPN_WASM}" } } }
                configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: '${ALPN_CONFIG}' }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;

/// The CDS response: `dynamic`, the non-mesh TLS server, with or without
/// Istio's opt-out in its metadata.
fn cds(vars: &BTreeMap<String, String>, opt_out: bool) -> String {
    let metadata = if opt_out { r#"metadata: { filter_metadata: { istio: { alpn_override: "false" } } }"# } else { "" };
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: dynamic
  connect_timeout: 2s
  type: STATIC
  {metadata}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: plain.example.local
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        validation_context: {{ trusted_ca: {{ filename: "{cert_dir}/ca.crt" }} }}
  load_assignment:
    cluster_name: dynamic
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: "{host}", port_value: {port} }} }} }} }}] }}]
"#,
        cert_dir = vars["CERT_DIR"],
        host = vars["PLAIN_HTTPS_HOST"],
        port = vars["PLAIN_HTTPS_PORT"],
    )
}

/// Replaces the CDS file the way Envoy's file watch expects (a rename into
/// the watched directory).
fn write_cds(dir: &std::path::Path, text: &str) {
    let staged = dir.join("cds.yaml.next");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, dir.join("cds.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_metadata_change_by_xds_applies_within_the_refresh_period() {
    const REFRESH_MS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("certs"));
    let backends = Backends::start(&pki);
    let options = MeshOptions {
        alpn_config: format!(r#"{{"cluster_metadata_refresh_ms":{REFRESH_MS}}}"#),
        ..MeshOptions::default()
    };
    let vars = mesh::client_vars(dir.path(), &pki, &backends, "127.0.0.1:9".parse().unwrap(), &options);
    write_cds(dir.path(), &cds(&vars, true));
    let template = dir.path().join("cds-client.template.yaml");
    std::fs::write(&template, CDS_CLIENT).unwrap();
    let template = template.display().to_string();
    let launch = Launch { name: "client", template: &template, vars: &vars, dir: dir.path(), wasm_log_level: "debug" };
    let envoy = Envoy::start(&launch).unwrap_or_else(|e| panic!("{e}"));
    let app = std::net::SocketAddr::from(([127, 0, 0, 1], envoy.listener_port("outbound_http")));
    let reads = || stats::alpn(&envoy, Counter::ClusterMetadataRead);

    // The opt-out applies: the cluster's own [h2, http/1.1] reaches the server.
    let started = std::time::Instant::now();
    const REQUESTS: u64 = 30;
    for i in 0..REQUESTS {
        let response = http1_get(app, "1.1", &format!("/before/{i}")).await;
        assert_eq!(response.status, 200, "{response:?}\n{}", envoy.log());
        assert_eq!(response.json()["tls_alpn"], "h2");
    }
    // Remembered by name: each of Envoy's two worker VMs reads the metadata
    // once, then once more after each refresh tick in the window.
    let periods = started.elapsed().as_millis() as u64 / REFRESH_MS + 2;
    assert_eq!(stats::alpn(&envoy, Counter::SkippedOptOut), REQUESTS);
    let read = reads();
    assert!(
        read >= 1 && read <= 2 * periods && read < REQUESTS,
        "{read} reads for {REQUESTS} requests in {periods} periods"
    );

    // xDS drops the opt-out: once Envoy has taken the update, the next
    // refresh makes requests carry the mesh list, which this server refuses.
    write_cds(dir.path(), &cds(&vars, false));
    let updated = envoy.wait_counter("cluster_manager.cds.update_success", 2, Duration::from_secs(10));
    assert!(updated >= 2, "Envoy did not take the CDS update:\n{}", envoy.log());
    let changed = std::time::Instant::now();
    let mut refused_after = None;
    while changed.elapsed() < Duration::from_secs(10) {
        let response = http1_get(app, "1.1", "/after").await;
        if response.status == 503 {
            refused_after = Some(changed.elapsed());
            break;
        }
        assert_eq!(response.status, 200, "{response:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = refused_after.unwrap_or_else(|| panic!("the metadata change never applied:\n{}", envoy.log()));
    assert!(stats::alpn(&envoy, Counter::OverrideHttp11) >= 1);
    assert!(envoy.log().contains("cluster dynamic: HTTP11 (Default) -> HTTP11 -> ALPN istio-http/1.1,istio,http/1.1"));
    eprintln!("the new metadata applied {refused_after:?} after Envoy took the update (refresh {REFRESH_MS} ms)");
}

/// The exchange's HTTP client with alpn-filter's rule built in (`alpn`):
/// one wasm filter on the listener instead of two, the same lists, the same
/// counters (`wasmcustom.alpn_filter.*`), and the exchange still done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_client_applies_the_alpn_rule_in_one_filter() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener("outbound_http_exchange_alpn_builtin");
    let cases: [(&str, bool, Served); 5] = [
        ("/use-downstream/v11", false, H11),
        ("/use-downstream/v2", true, H2),
        ("/h2-cluster/v11", false, H2),
        ("/h2-cluster/v2", true, H2),
        // The benchmark's route: its cluster's SNI picks a chain of its own.
        ("/default", false, ("inbound-http11-quiet-log", "HTTP/1.1")),
    ];
    for (path, h2, expected) in cases {
        let response = if h2 { h2c_get(app, path).await } else { http1_get(app, "1.1", path).await };
        assert_eq!(served_by(&response), (expected.0.to_string(), expected.1.to_string()), "{path}");
    }
    // The opt-out cluster keeps its own ALPN (the non-mesh h2 server accepts it).
    assert_eq!(http1_get(app, "1.1", "/optout/x").await.status, 200);
    assert_eq!(counter(&mesh, Counter::OverrideHttp11), 2);
    assert_eq!(counter(&mesh, Counter::OverrideHttp2), 3);
    assert_eq!(counter(&mesh, Counter::SkippedOptOut), 1);
    // The exchange happened on every request to a cluster marked as a mesh
    // upstream (h2-cluster and the default; use-downstream is unmarked), in
    // the same filter.
    use peer_exchange::config::Role;
    use peer_exchange::http::HttpCounter;
    let exchanged = |c| stats::http_exchange(&mesh.client, Role::Client, c);
    assert_eq!(exchanged(HttpCounter::MetadataReceived), 3, "the server answered every mesh request");
    assert_eq!(exchanged(HttpCounter::SkippedNotMesh), 3, "use-downstream twice, the opt-out cluster");
    // (The benchmark's chain prints no peer.)
    let server_log = mesh.target.wait_access_log(SERVER_HTTP_LOG, 5, LOG_WAIT);
    for line in server_log.iter().filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/h2-cluster/"))) {
        integration_tests::workloads::CLIENT.assert_is(&line["downstream_peer"], &format!("server log {line}"));
    }
}
