//! End-to-end tests of the exchange's HTTP form (`x-envoy-peer-metadata`
//! headers): real Envoys, real mTLS, our .wasm. The client Envoy's
//! `outbound_http_exchange` listener runs role "client" in front of
//! alpn-filter; every HTTP chain of the server Envoy runs role "server".

use integration_tests::{stats, LOG_WAIT};

use alpn_decision::decision::Counter as AlpnCounter;
use base64::Engine;
use integration_tests::backends::ANSWERS_AS_A_PEER;
use integration_tests::clients::{h2c_get, h2c_get_with, http11_keepalive, http1_get, http1_get_with, http1_request};
use integration_tests::clients::{parse_http1, HttpResponse, STEP_TIMEOUT};
use integration_tests::mesh::{Mesh, MeshOptions, CLIENT_HTTP_LOG, SERVER_HTTP_LOG};
use integration_tests::wire::{self, V};
use integration_tests::workloads::{CLIENT, PEER_UNKNOWN, SERVER};
use peer_exchange::config::Role;
use peer_exchange::http::HttpCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const METADATA: &str = "x-envoy-peer-metadata";
const METADATA_ID: &str = "x-envoy-peer-metadata-id";
const APP: &str = "outbound_http_exchange";
const RAW_CLIENT_ID: &str = "raw-client~10.9.9.9~raw.raw-ns~raw-ns.svc.cluster.local";

use integration_tests::stats::http_exchange as counter;

/// Checks counters of one side (names from the filter crate).
fn assert_counters(mesh: &Mesh, role: Role, expected: &[(HttpCounter, u64)]) {
    let envoy = if role == Role::Client { &mesh.client } else { &mesh.server };
    for (c, value) in expected {
        assert_eq!(counter(envoy, role, *c), *value, "{} {}", role.name(), c.name());
    }
}

/// A header value built from the spec: standard padded base64 of the
/// deterministic Struct bytes.
fn header_value(metadata: &[(&str, V<'_>)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(wire::strukt(metadata))
}

fn raw_client_value() -> String {
    header_value(&[
        ("NAME", V::Str("raw-client-1")),
        ("NAMESPACE", V::Str("raw-ns")),
        ("LABELS", V::Struct(vec![("app", V::Str("raw"))])),
    ])
}

/// A workload claiming to be someone it is not.
fn forged_value() -> String {
    header_value(&[
        ("NAME", V::Str("payments-api-0")),
        ("NAMESPACE", V::Str("payments")),
        ("WORKLOAD_NAME", V::Str("payments-api")),
        ("LABELS", V::Struct(vec![("app", V::Str("payments-api"))])),
    ])
}

/// No exchange header in what a side handed on (response headers, or the
/// request headers a backend echoed).
fn assert_no_exchange_headers<'a>(names: impl IntoIterator<Item = &'a String>, what: &str) {
    let leaked: Vec<&String> = names.into_iter().filter(|n| n.to_ascii_lowercase().starts_with(METADATA)).collect();
    assert!(leaked.is_empty(), "{what}: exchange headers leaked: {leaked:?}");
}

fn backend_saw(response: &HttpResponse) -> Vec<String> {
    let body = response.json();
    body["headers"].as_object().map(|h| h.keys().cloned().collect()).unwrap_or_default()
}

/// One request straight to the server Envoy's HTTP/1.1 chain over a raw
/// TLS connection with `certificate` (the raw mesh client, or `plain`).
async fn raw_request(mesh: &Mesh, certificate: &str, headers: &[(&str, &str)]) -> HttpResponse {
    raw_request_to(mesh, certificate, "/raw", headers).await
}

async fn raw_request_to(mesh: &Mesh, certificate: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut tls = mesh
        .target
        .connect_inbound_as(Some(certificate), "http.mesh.local", &["istio-http/1.1", "istio", "http/1.1"])
        .await;
    tls.write_all(http1_request("1.1", path, headers).as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tls.read_to_end(&mut raw)).await.expect("response timed out").ok();
    parse_http1(&String::from_utf8_lossy(&raw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_requests_learn_each_other_and_neither_app_sees_the_headers() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener(APP);
    // mesh_http speaks HTTP/1.1 upstream, mesh_http_h2_policy HTTP/2.
    let requests =
        [("HTTP/1.1", "/mesh/a"), ("h2c", "/mesh/b"), ("HTTP/1.1", "/h2-cluster/c"), ("h2c", "/h2-cluster/d")];
    for (protocol, path) in requests {
        let response = if protocol == "h2c" { h2c_get(app, path).await } else { http1_get(app, "1.1", path).await };
        assert_eq!(response.status, 200, "{protocol} {path}: {response:?}");
        assert_no_exchange_headers(response.headers.keys(), &format!("{protocol} {path}: the client app"));
        assert_no_exchange_headers(&backend_saw(&response), &format!("{protocol} {path}: the backend"));
    }
    let client_log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, requests.len(), LOG_WAIT);
    assert_eq!(client_log.len(), requests.len());
    for line in &client_log {
        SERVER.assert_is(&line["upstream_peer"], &format!("client access log {line}"));
        assert_eq!(line["upstream_peer_id"], SERVER.node_id, "{line}");
        assert!(line["peer_not_found"].is_null(), "{line}");
    }
    let server_log = mesh.target.wait_access_log(SERVER_HTTP_LOG, requests.len(), LOG_WAIT);
    let protocols: Vec<&str> = server_log.iter().filter_map(|l| l["protocol"].as_str()).collect();
    assert!(protocols.contains(&"HTTP/1.1") && protocols.contains(&"HTTP/2"), "both upstream protocols: {protocols:?}");
    for line in &server_log {
        CLIENT.assert_is(&line["downstream_peer"], &format!("server access log {line}"));
        assert_eq!(line["downstream_peer_id"], CLIENT.node_id, "{line}");
        assert_eq!(line["downstream_peer_namespace"], "client-ns", "{line}");
    }
    let n = requests.len() as u64;
    assert_counters(&mesh, Role::Client, &[(HttpCounter::MetadataAdded, n), (HttpCounter::MetadataReceived, n)]);
    assert_counters(&mesh, Role::Server, &[(HttpCounter::MetadataReceived, n), (HttpCounter::MetadataAdded, n)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_mesh_upstreams_never_receive_our_headers_nor_the_apps() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener(APP);
    // Unmarked HTTPS server; the same server marked as mesh but external.
    let plain = http1_get(app, "1.1", "/optout/a").await;
    let external = h2c_get(app, "/external/b").await;
    // The app itself sets exchange headers towards a non-mesh upstream.
    let forged = [(METADATA, forged_value()), (METADATA_ID, "forged".to_string())];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app_set = http1_get_with(app, "1.1", "/optout/c", &forged).await;
    for (what, response) in [("unmarked", &plain), ("external", &external), ("app-set headers", &app_set)] {
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert_no_exchange_headers(&backend_saw(response), &format!("{what}: the non-mesh server"));
    }
    let log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, 3, LOG_WAIT);
    for line in &log {
        assert_eq!(line["peer_not_found"], "true", "{line}");
        assert_eq!(line["upstream_peer_id"], PEER_UNKNOWN, "{line}");
        assert!(line["upstream_peer"].is_null(), "{line}");
    }
    assert_counters(
        &mesh,
        Role::Client,
        &[
            (HttpCounter::SkippedNotMesh, 2),
            (HttpCounter::SkippedExternal, 1),
            (HttpCounter::UntrustedHeaderRemoved, 1),
            (HttpCounter::MetadataAdded, 0),
        ],
    );
}

/// Upstreams and apps that answer with exchange headers of their own (an
/// Istio proxy does, whatever cluster we reached it through): no app ever
/// sees them, in any role, whether or not ours were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_headers_in_any_response_never_reach_an_app() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener(APP);
    let path = |route: &str| format!("{route}{ANSWERS_AS_A_PEER}");
    // Client role, ours not sent: an unmarked upstream, HTTP/1.1 and h2c.
    let unmarked = http1_get(app, "1.1", &path("/optout")).await;
    let unmarked_h2 = h2c_get(app, &path("/optout")).await;
    // Client role, ours not sent: a cluster not marked as mesh, in front of
    // the server Envoy (whose server role then sends nothing either).
    let no_options = http1_get(app, "1.1", &path("/no-options")).await;
    // Client role, ours sent: the server role replaces the app's with its own.
    let mesh_answer = http1_get(app, "1.1", &path("/mesh")).await;
    for (what, response) in [
        ("unmarked upstream", &unmarked),
        ("unmarked upstream, h2c", &unmarked_h2),
        ("unmarked cluster to a mesh server", &no_options),
        ("mesh upstream", &mesh_answer),
    ] {
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert_no_exchange_headers(response.headers.keys(), &format!("{what}: the client app"));
    }
    let client_log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, 4, LOG_WAIT);
    assert_eq!(client_log.len(), 4, "{client_log:?}");
    for line in &client_log {
        if line["path"].as_str().is_some_and(|p| p.starts_with("/mesh")) {
            // What the server role sent, not what its app answered.
            SERVER.assert_is(&line["upstream_peer"], &format!("client access log {line}"));
        } else {
            assert_eq!(line["peer_not_found"], "true", "{line}");
            assert!(line["upstream_peer"].is_null(), "{line}");
        }
    }
    // Server role, ours not sent: a plain client, and a mesh client that
    // sent nothing.
    for certificate in ["plain", "raw-client"] {
        let answer = raw_request_to(&mesh, certificate, &path("/raw"), &[]).await;
        assert_eq!(answer.status, 200, "{certificate}: {answer:?}");
        assert_no_exchange_headers(answer.headers.keys(), &format!("the server's answer to {certificate}"));
    }
    // The unmarked upstream's two answers (the no-options answer was already
    // cleaned by the server role).
    assert_counters(&mesh, Role::Client, &[(HttpCounter::UntrustedHeaderRemoved, 2), (HttpCounter::MetadataAdded, 1)]);
    // The no-options request and the two raw ones; the mesh request's app
    // headers were replaced by ours.
    assert_counters(&mesh, Role::Server, &[(HttpCounter::UntrustedHeaderRemoved, 3), (HttpCounter::MetadataAdded, 1)]);
}

/// `istio: {peer_exchange: ...}` is not `istio.peer_exchange: ...`: the
/// filters do not read it, and say so once (a warning and a counter) instead
/// of ignoring it silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_in_places_the_filters_do_not_read_are_reported_once() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener(APP);
    for i in 0..3 {
        let response = http1_get(app, "1.1", &format!("/misplaced-markers/{i}")).await;
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert_counters(&mesh, Role::Client, &[(HttpCounter::SkippedNotMesh, 3), (HttpCounter::MetadataAdded, 0)]);
    // Once per distinct metadata and worker VM (the harness runs two workers).
    let misplaced = counter(&mesh.client, Role::Client, HttpCounter::MisplacedMetadata);
    let alpn_misplaced = stats::alpn(&mesh.client, AlpnCounter::MisplacedMetadata);
    assert!((1..=2).contains(&misplaced), "HTTP exchange misplaced_metadata {misplaced}");
    assert!((1..=2).contains(&alpn_misplaced), "alpn-filter misplaced_metadata {alpn_misplaced}");
    let log = mesh.client.log();
    let cluster = "cluster mesh_http_misplaced_markers";
    for expected in [
        "peer-exchange-filter: {cluster}: filter_metadata.istio.peer_exchange (a key of the namespace istio) is not read; write it as filter_metadata: {istio.peer_exchange: {enabled: ...}}",
        "alpn-filter: {cluster}: filter_metadata.istio.alpn (a key of the namespace istio) is not read; write it as filter_metadata: {istio.alpn: {...}}",
    ] {
        let expected = expected.replace("{cluster}", cluster);
        let lines = log.lines().filter(|l| l.contains(&expected)).count() as u64;
        assert!(lines >= 1, "no warning {expected:?} in the client log");
    }
    // The markers in their places are never reported.
    assert_eq!(http1_get(app, "1.1", "/mesh/placed").await.status, 200);
    assert_eq!(counter(&mesh.client, Role::Client, HttpCounter::MisplacedMetadata), misplaced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_header_from_the_app_never_reaches_the_server() {
    let mesh = Mesh::start();
    let app = mesh.target.client_listener(APP);
    let forged = forged_value();
    let headers = [(METADATA, forged.as_str()), (METADATA_ID, "payments-api-0.payments")];
    assert_eq!(http1_get_with(app, "1.1", "/mesh/forged", &headers).await.status, 200);
    assert_eq!(h2c_get_with(app, "/mesh/forged", &headers).await.status, 200);
    // Only a metadata id: removed too.
    assert_eq!(http1_get_with(app, "1.1", "/mesh/forged-id", &headers[1..]).await.status, 200);
    let server_log = mesh.target.wait_access_log(SERVER_HTTP_LOG, 3, LOG_WAIT);
    assert_eq!(server_log.len(), 3);
    for line in &server_log {
        CLIENT.assert_is(&line["downstream_peer"], &format!("the server stores the real client: {line}"));
        assert_eq!(line["downstream_peer_id"], CLIENT.node_id, "{line}");
    }
    assert_counters(&mesh, Role::Client, &[(HttpCounter::UntrustedHeaderRemoved, 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_oversized_values_are_peer_not_found_and_requests_are_served() {
    let mut mesh = Mesh::start();
    let valid = raw_client_value();
    let truncated = valid[..valid.len() - 5].to_string();
    // 20 KB of base64 (15 KB decoded): over the default 8 KiB, under Envoy's header limit.
    let oversized = "A".repeat(20_000);
    let cases: [(&str, &str, &str); 5] = [
        ("garbage", "!!not base64!!", "metadata_invalid"),
        ("truncated", &truncated, "metadata_invalid"),
        ("not a Struct", "/w==", "metadata_invalid"),
        ("non-ASCII junk", "\u{e9}\u{ff}%%=", "metadata_invalid"),
        ("oversized", &oversized, "metadata_too_large"),
    ];
    for (what, value, _) in &cases {
        let response = raw_request(&mesh, "raw-client", &[(METADATA, value), (METADATA_ID, RAW_CLIENT_ID)]).await;
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert_no_exchange_headers(&backend_saw(&response), &format!("{what}: the server's backend"));
    }
    let log = mesh.target.wait_access_log(SERVER_HTTP_LOG, cases.len(), LOG_WAIT);
    assert_eq!(log.len(), cases.len());
    for line in &log {
        assert_eq!(line["peer_not_found"], "true", "{line}");
        assert!(line["downstream_peer"].is_null(), "{line}");
    }
    for c in [HttpCounter::MetadataInvalid, HttpCounter::MetadataTooLarge] {
        let expected = cases.iter().filter(|(_, _, name)| *name == c.name()).count() as u64;
        assert_counters(&mesh, Role::Server, &[(c, expected)]);
    }
    assert_counters(&mesh, Role::Server, &[(HttpCounter::MetadataReceived, 0)]);
    assert!(mesh.server.is_alive());
    // Still serving, and a valid value is stored.
    let response = raw_request(&mesh, "raw-client", &[(METADATA, &valid), (METADATA_ID, RAW_CLIENT_ID)]).await;
    assert_eq!(response.status, 200);
    let log = mesh.target.wait_access_log(SERVER_HTTP_LOG, cases.len() + 1, LOG_WAIT);
    let last = log.last().expect("a line");
    assert_eq!(last["downstream_peer_namespace"], "raw-ns", "{last}");
    assert_eq!(last["downstream_peer_id"], RAW_CLIENT_ID, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_without_a_mesh_certificate_are_removed_and_plain_clients_never_get_ours() {
    let mesh = Mesh::start();
    let valid = raw_client_value();
    // A certificate the server accepts, but with no mesh (SPIFFE) identity.
    let untrusted = raw_request(&mesh, "plain", &[(METADATA, &valid), (METADATA_ID, RAW_CLIENT_ID)]).await;
    assert_eq!(untrusted.status, 200, "{untrusted:?}");
    assert_no_exchange_headers(&backend_saw(&untrusted), "the backend behind an untrusted sender");
    assert_no_exchange_headers(untrusted.headers.keys(), "our answer to an untrusted sender");
    // A mesh client that sends nothing gets nothing.
    let silent = raw_request(&mesh, "raw-client", &[]).await;
    assert_eq!(silent.status, 200);
    assert_no_exchange_headers(silent.headers.keys(), "our answer to a client that sent no metadata");
    let log = mesh.target.wait_access_log(SERVER_HTTP_LOG, 2, LOG_WAIT);
    for line in &log {
        assert_eq!(line["peer_not_found"], "true", "{line}");
        assert!(line["downstream_peer"].is_null(), "{line}");
    }
    assert_counters(
        &mesh,
        Role::Server,
        &[(HttpCounter::UntrustedHeaderRemoved, 1), (HttpCounter::MetadataAbsent, 1), (HttpCounter::MetadataAdded, 0)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_header_values_equal_the_ones_built_from_the_spec() {
    let mesh = Mesh::start();
    // What the client Envoy sends, as a mesh-marked recorder received it.
    let recorded = http1_get(mesh.target.client_listener(APP), "1.1", "/recorder/golden").await;
    assert_eq!(recorded.status, 200);
    let seen = &recorded.json()["headers"];
    assert_eq!(seen[METADATA], header_value(&CLIENT.wire_metadata(false)), "client header value");
    assert_eq!(seen[METADATA_ID], CLIENT.node_id);
    // The recorder answered without metadata: no peer, and counted.
    assert_counters(&mesh, Role::Client, &[(HttpCounter::MetadataAbsent, 1)]);

    // What the server Envoy answers a mesh client with.
    let response = raw_request(&mesh, "raw-client", &[(METADATA, &raw_client_value())]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header(METADATA), header_value(&SERVER.wire_metadata(false)), "server header value");
    assert_eq!(response.header(METADATA_ID), SERVER.node_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_requests_over_eight_connections_each_log_the_right_peer() {
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 25;
    let mesh = Mesh::start();
    let app = mesh.target.client_listener(APP);
    let started = std::time::Instant::now();
    // Mesh and non-mesh requests interleaved on each keep-alive connection:
    // a peer stored for one request must never show up on the next.
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let paths: Vec<String> = (0..PER_CONNECTION)
                .map(|i| if (c + i) % 2 == 0 { format!("/mesh/{c}/{i}") } else { format!("/optout/{c}/{i}") })
                .collect();
            tokio::spawn(async move { http11_keepalive(app, &paths).await })
        })
        .collect();
    for task in tasks {
        for response in task.await.expect("connection task") {
            assert_eq!(response.status, 200, "{response:?}");
            assert_no_exchange_headers(response.headers.keys(), "the client app");
        }
    }
    let total = CONNECTIONS * PER_CONNECTION;
    let client_log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, total, LOG_WAIT);
    assert_eq!(client_log.len(), total);
    let mut mesh_lines = 0;
    for line in &client_log {
        let path = line["path"].as_str().unwrap_or_default();
        if path.starts_with("/mesh/") {
            mesh_lines += 1;
            SERVER.assert_is(&line["upstream_peer"], &format!("{line}"));
            assert!(line["peer_not_found"].is_null(), "{line}");
        } else {
            assert!(line["upstream_peer"].is_null(), "{line}");
            assert_eq!(line["peer_not_found"], "true", "{line}");
        }
    }
    let server_log = mesh.target.wait_access_log(SERVER_HTTP_LOG, mesh_lines, LOG_WAIT);
    assert_eq!(server_log.len(), mesh_lines);
    for line in &server_log {
        CLIENT.assert_is(&line["downstream_peer"], &format!("{line}"));
    }
    assert_counters(&mesh, Role::Client, &[(HttpCounter::MetadataReceived, mesh_lines as u64)]);
    assert_counters(&mesh, Role::Server, &[(HttpCounter::MetadataReceived, mesh_lines as u64)]);
    // Two clusters, each read once per worker VM per refresh period (1 s by
    // default), not per request.
    let periods = started.elapsed().as_millis() as u64 / 1000 + 2;
    let reads = stats::http_exchange(&mesh.client, Role::Client, HttpCounter::ClusterMetadataRead);
    assert!(reads >= 2 && reads <= 2 * 2 * periods, "{reads} metadata reads for {total} requests");
}

/// A mesh whose HTTP exchange runs other discovery or propagation methods.
fn mesh_with(client: Option<&str>, server: Option<&str>) -> Mesh {
    let mut options = MeshOptions::default();
    if let Some(client) = client {
        options.client_http_exchange_config = client.into();
    }
    if let Some(server) = server {
        options.server_http_exchange_config = server.into();
    }
    Mesh::start_with(options)
}

/// Native's `workload_discovery` reads Istio's WDS, which stock Envoy lacks;
/// `endpoint_metadata` reads istiod's `istio.workload` endpoint metadata
/// instead, for an upstream that answers without headers (here: no mesh
/// upstream at all, so no headers are sent or believed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_metadata_discovery_names_an_upstream_that_answers_without_headers() {
    let with_endpoints = r#"{"role":"client","peer_json":true,
        "upstream_discovery":[{"istio_headers":{}},{"endpoint_metadata":{}}]}"#;
    let mesh = mesh_with(Some(with_endpoints), None);
    let app = mesh.target.client_listener(APP);
    assert_eq!(http1_get(app, "1.1", "/endpoint-metadata/a").await.status, 200);
    // Headers first: a mesh upstream's answer wins over its endpoint metadata.
    assert_eq!(http1_get(app, "1.1", "/mesh/b").await.status, 200);
    let log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, 2, LOG_WAIT);
    let line = |path: &str| log.iter().find(|l| l["path"] == path).unwrap_or_else(|| panic!("{path}: {log:?}")).clone();
    let legacy = integration_tests::workloads::peer_struct(&line("/endpoint-metadata/a")["upstream_peer"]);
    assert_eq!(legacy["source"], "endpoint_metadata", "{legacy}");
    assert_eq!((legacy["workload"].as_str(), legacy["namespace"].as_str()), (Some("legacy-web"), Some("legacy-ns")));
    assert_eq!(legacy["verified"], false, "the control plane's word, not checked against a certificate: {legacy}");
    SERVER.assert_is(&line("/mesh/b")["upstream_peer"], "headers first");
    assert_counters(
        &mesh,
        Role::Client,
        &[(HttpCounter::PeerFromEndpointMetadata, 1), (HttpCounter::MetadataReceived, 1)],
    );
    drop(mesh);

    // Without the method (the default): no peer.
    let mesh = Mesh::start();
    assert_eq!(http1_get(mesh.target.client_listener(APP), "1.1", "/endpoint-metadata/a").await.status, 200);
    let log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, 1, LOG_WAIT);
    assert_eq!(log[0]["peer_not_found"], "true", "{log:?}");
}

/// Baggage propagation writes native's members for our workload into the
/// request's `baggage`, keeping the app's own members (native replaces the
/// whole header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_propagation_writes_natives_members_and_keeps_the_apps() {
    let client = r#"{"role":"client","peer_json":true,"upstream_propagation":[{"istio_headers":{}},{"baggage":{}}]}"#;
    let mesh = mesh_with(Some(client), None);
    let app = mesh.target.client_listener(APP);
    // The client node (envoy-configs/client.yaml): a StatefulSet, so no known
    // type (written as pod); app.kubernetes.io/name differs from the
    // canonical name; the version equals the canonical revision; region and
    // zone from the node locality.
    let ours = "k8s.pod.name=client,service.name=client,app.name=client-app,service.version=v2,\
                k8s.namespace.name=client-ns,k8s.cluster.name=Kubernetes,k8s.instance.name=client-5f6d8e-fghij,\
                cloud.region=region-a,cloud.availability_zone=zone-a2";
    let alone = http1_get(app, "1.1", "/recorder/alone").await;
    let with_apps = http1_get_with(app, "1.1", "/recorder/with-apps", &[("baggage", "userid=42;ttl=3")]).await;
    let seen = |r: &HttpResponse| r.json()["headers"]["baggage"].as_str().unwrap_or_default().to_string();
    assert_eq!(seen(&alone), ours);
    assert_eq!(seen(&with_apps), format!("userid=42;ttl=3,{ours}"));
    // Not to a cluster that is no mesh upstream.
    let plain = http1_get_with(app, "1.1", "/optout/x", &[("baggage", "userid=42")]).await;
    assert_eq!(seen(&plain), "userid=42");
    assert_counters(&mesh, Role::Client, &[(HttpCounter::BaggageAdded, 2)]);
}

/// Baggage discovery (server): a mesh peer's baggage names it; unrelated,
/// oversized or untrusted baggage names nobody (native turns any baggage
/// into a peer); a claimed namespace is checked against the certificate;
/// baggage propagation answers mesh peers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_discovery_names_mesh_peers_only_and_checks_their_namespace() {
    let server = r#"{"role":"server","peer_json":true,"downstream_discovery":[{"baggage":{}}],
        "downstream_propagation":[{"istio_headers":{}},{"baggage":{}}]}"#;
    let mesh = mesh_with(None, Some(server));
    let honest = "k8s.deployment.name=raw,k8s.namespace.name=raw-ns,service.name=raw,service.version=v1";
    let lying = "k8s.deployment.name=payments-api,k8s.namespace.name=payments";
    let oversized = format!("k8s.pod.name=p,k8s.namespace.name=raw-ns,blob={}", "x".repeat(9000));
    let cases: [(&str, &str, &str); 5] = [
        ("raw-client", honest, "/baggage/honest"),
        ("raw-client", "userid=42,sessionid=7", "/baggage/unrelated"),
        ("raw-client", &oversized, "/baggage/oversized"),
        ("plain", honest, "/baggage/untrusted"),
        ("raw-client", lying, "/baggage/lying"),
    ];
    let mut answers = Vec::new();
    for (certificate, baggage, path) in cases {
        let response = raw_request_to(&mesh, certificate, path, &[("baggage", baggage)]).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        answers.push((path, response));
    }
    let log = mesh.target.wait_access_log(SERVER_HTTP_LOG, cases.len(), LOG_WAIT);
    let line = |path: &str| log.iter().find(|l| l["path"] == path).unwrap_or_else(|| panic!("{path}: {log:?}")).clone();
    let peer = |path: &str| integration_tests::workloads::peer_struct(&line(path)["downstream_peer"]);
    let honest_peer = peer("/baggage/honest");
    assert_eq!(honest_peer["source"], "baggage", "{honest_peer}");
    assert_eq!((honest_peer["workload"].as_str(), honest_peer["service"].as_str()), (Some("raw"), Some("raw")));
    assert_eq!(honest_peer["verified"], true, "{honest_peer}");
    for path in ["/baggage/unrelated", "/baggage/oversized", "/baggage/untrusted"] {
        assert_eq!(line(path)["peer_not_found"], "true", "{path}");
    }
    let lying_peer = peer("/baggage/lying");
    assert_eq!(
        (lying_peer["source"].as_str(), lying_peer["namespace"].as_str()),
        (Some("certificate"), Some("raw-ns"))
    );
    // Our baggage goes back to the mesh peers, not to the plain client.
    let server_baggage = |path: &str| {
        answers.iter().find(|(p, _)| *p == path).map(|(_, r)| r.header("baggage").to_string()).unwrap_or_default()
    };
    assert!(server_baggage("/baggage/honest").contains("k8s.deployment.name=server,service.name=server"));
    assert!(server_baggage("/baggage/honest").contains("k8s.namespace.name=server-ns"));
    assert_eq!(server_baggage("/baggage/untrusted"), "", "a plain client gets none of ours");
    assert_counters(
        &mesh,
        Role::Server,
        &[
            (HttpCounter::PeerFromBaggage, 2),
            (HttpCounter::BaggageInvalid, 1),
            (HttpCounter::BaggageTooLarge, 1),
            (HttpCounter::BaggageUntrusted, 1),
            (HttpCounter::PeerIdentityMismatch, 1),
            (HttpCounter::BaggageAdded, 4),
        ],
    );
}
