//! The HTTP form's glue: which headers go out, which are believed, which
//! are removed (none ever reaches an app), what is stored, and what a
//! refusing host costs.

use proto::prost_types::value::Kind;
use wasm_host::fake::{self, FakeHost, REQUEST_HEADERS, RESPONSE_HEADERS};
use wasm_host::plugin::{Action, Stream};

use super::*;
use filter_common::istio::PEER_EXCHANGE_NAMESPACE as CLUSTER_NAMESPACE;
use peer_exchange::headers::{ID_HEADER, METADATA_HEADER};

const CLIENT_STATS: &str = "peer_exchange.http_client.";
const SERVER_STATS: &str = "peer_exchange.http_server.";

fn client_envoy(config: &str, cluster_metadata: Vec<u8>) -> FakeHost {
    let mut host = envoy(&CLIENT, peer_exchange::config::HTTP_ROOT_ID, config);
    host.property("xds.cluster_name", "mesh")
        .property("xds.cluster_metadata", cluster_metadata)
        .property("request.protocol", "HTTP/1.1")
        .property("upstream.uri_san_peer_certificate", SERVER.spiffe());
    host
}

fn server_envoy(config: &str, client_certificate: bool) -> FakeHost {
    let mut host = envoy(&SERVER, peer_exchange::config::HTTP_ROOT_ID, config);
    if client_certificate {
        host.property("connection.uri_san_peer_certificate", CLIENT.spiffe());
    }
    host
}

fn mesh_cluster() -> Vec<u8> {
    metadata(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))])
}

fn headers(map: u32, pairs: &[(&str, &str)]) {
    let pairs = pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
    fake::with(|h| h.headers.insert(map, pairs));
}

fn header(map: u32, name: &str) -> Vec<String> {
    fake::with(|h| h.header(map, name).into_iter().map(|v| String::from_utf8_lossy(&v).into_owned()).collect())
}

/// What the server sends back to a mesh client.
fn server_answer() -> Vec<(&'static str, String)> {
    vec![(":status", "200".into()), (METADATA_HEADER, SERVER.header()), (ID_HEADER, "server-pod-id".into())]
}

#[test]
fn the_client_replaces_the_apps_headers_with_ours_and_believes_the_mesh_upstreams_answer() {
    let plugin = configure(client_envoy(r#"{"role":"client"}"#, mesh_cluster())).expect("configured");
    let mut request = stream(&plugin, 2);
    headers(REQUEST_HEADERS, &[(":path", "/"), (METADATA_HEADER, "forged"), (ID_HEADER, "forged-id")]);
    assert_eq!(request.on_request_headers(), Action::Continue);
    assert_eq!(header(REQUEST_HEADERS, METADATA_HEADER), [CLIENT.header()]);
    assert_eq!(header(REQUEST_HEADERS, ID_HEADER), ["client-pod-id"]);

    let answer = server_answer();
    headers(RESPONSE_HEADERS, &answer.iter().map(|(n, v)| (*n, v.as_str())).collect::<Vec<_>>());
    assert_eq!(request.on_response_headers(), Action::Continue);
    assert!(header(RESPONSE_HEADERS, METADATA_HEADER).is_empty(), "never reaches the app");
    assert!(header(RESPONSE_HEADERS, ID_HEADER).is_empty());
    assert_eq!(state("upstream_peer_id").as_deref(), Some("server-pod-id"));
    assert!(state("upstream_peer").is_some_and(|s| s.contains("server-ns")));
    assert_eq!(
        counted(CLIENT_STATS),
        names(&[
            ("cluster_metadata_read", 1),
            ("metadata_added", 1),
            ("metadata_received", 1),
            ("peer_identity_verified", 1),
            ("untrusted_header_removed", 1)
        ])
    );
}

#[test]
fn a_non_mesh_upstream_gets_nothing_and_its_exchange_headers_never_reach_the_app() {
    let plugin = configure(client_envoy(r#"{"role":"client"}"#, Vec::new())).expect("configured");
    let mut request = stream(&plugin, 2);
    headers(REQUEST_HEADERS, &[(":path", "/"), (METADATA_HEADER, "the app's")]);
    request.on_request_headers();
    assert!(header(REQUEST_HEADERS, METADATA_HEADER).is_empty(), "the app's are removed, ours not added");
    let answer = server_answer();
    headers(RESPONSE_HEADERS, &answer.iter().map(|(n, v)| (*n, v.as_str())).collect::<Vec<_>>());
    request.on_response_headers();
    assert!(header(RESPONSE_HEADERS, METADATA_HEADER).is_empty());
    assert!(header(RESPONSE_HEADERS, ID_HEADER).is_empty());
    assert_eq!(state("upstream_peer"), None, "not believed from an upstream we sent nothing to");
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));
    // The upstream presents a mesh identity on an unmarked cluster: said once, with the fix.
    let mut again = stream(&plugin, 3);
    again.on_request_headers();
    again.on_response_headers();
    assert_eq!(
        counted(CLIENT_STATS),
        names(&[
            ("cluster_metadata_read", 1),
            ("mesh_upstream_not_marked", 1),
            ("skipped_not_mesh", 2),
            ("untrusted_header_removed", 2)
        ])
    );
    let warned = fake::with(|h| h.logged("presents a mesh identity").iter().map(|l| l.to_string()).collect::<Vec<_>>());
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("add filter_metadata: {istio.peer_exchange: {enabled: true}}"), "{warned:?}");
    assert_eq!(fake::with(|h| h.called("get_property upstream.uri_san_peer_certificate").len()), 1, "once per cluster");
}

#[test]
fn when_envoy_refuses_our_headers_the_answer_is_not_believed() {
    let mut host = client_envoy(r#"{"role":"client"}"#, mesh_cluster());
    host.failing.insert("replace_header_map_value", fake::INTERNAL_FAILURE);
    let plugin = configure(host).expect("configured");
    let mut request = stream(&plugin, 2);
    headers(REQUEST_HEADERS, &[(":path", "/")]);
    request.on_request_headers();
    let answer = server_answer();
    headers(RESPONSE_HEADERS, &answer.iter().map(|(n, v)| (*n, v.as_str())).collect::<Vec<_>>());
    request.on_response_headers();
    assert!(header(RESPONSE_HEADERS, METADATA_HEADER).is_empty(), "removed all the same");
    assert_eq!(state("upstream_peer"), None);
    let counts = counted(CLIENT_STATS);
    assert!(counts.contains(&("header_error".to_string(), 1)), "{counts:?}");
    assert!(!counts.iter().any(|(n, _)| n == "metadata_received"), "{counts:?}");
    fake::with(|h| assert_eq!(h.logged("cannot add our metadata").len(), 1));
}

#[test]
fn unreadable_headers_are_counted_and_the_request_goes_on() {
    let mut host = server_envoy(r#"{"role":"server"}"#, true);
    host.failing.insert("get_header_map_pairs", fake::INTERNAL_FAILURE);
    let plugin = configure(host).expect("configured");
    let mut request = stream(&plugin, 2);
    assert_eq!(request.on_request_headers(), Action::Continue);
    assert_eq!(request.on_response_headers(), Action::Continue);
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));
    assert_eq!(counted(SERVER_STATS), names(&[("header_error", 2)]));
}

#[test]
fn the_server_stores_a_mesh_clients_headers_removes_them_and_answers() {
    let plugin = configure(server_envoy(r#"{"role":"server"}"#, true)).expect("configured");
    let mut request = stream(&plugin, 2);
    let metadata_value = CLIENT.header();
    headers(REQUEST_HEADERS, &[(":path", "/"), (METADATA_HEADER, &metadata_value), (ID_HEADER, "client-pod-id")]);
    request.on_request_headers();
    assert!(header(REQUEST_HEADERS, METADATA_HEADER).is_empty(), "never reaches the app");
    assert!(header(REQUEST_HEADERS, ID_HEADER).is_empty());
    assert_eq!(state("downstream_peer_id").as_deref(), Some("client-pod-id"));
    headers(RESPONSE_HEADERS, &[(":status", "200"), (METADATA_HEADER, "the app's")]);
    request.on_response_headers();
    assert_eq!(header(RESPONSE_HEADERS, METADATA_HEADER), [SERVER.header()], "ours replace the app's");
    assert_eq!(header(RESPONSE_HEADERS, ID_HEADER), ["server-pod-id"]);
    assert_eq!(
        counted(SERVER_STATS),
        names(&[("metadata_added", 1), ("metadata_received", 1), ("peer_identity_verified", 1)])
    );
}

#[test]
fn the_server_reads_nothing_from_a_client_without_a_mesh_certificate_and_sends_it_nothing() {
    let plugin = configure(server_envoy(r#"{"role":"server"}"#, false)).expect("configured");
    let mut request = stream(&plugin, 2);
    let metadata_value = CLIENT.header();
    headers(REQUEST_HEADERS, &[(":path", "/"), (METADATA_HEADER, &metadata_value), (ID_HEADER, "client-pod-id")]);
    request.on_request_headers();
    assert!(header(REQUEST_HEADERS, METADATA_HEADER).is_empty(), "removed unread");
    assert_eq!(state("downstream_peer"), None);
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));
    headers(RESPONSE_HEADERS, &[(":status", "200"), (METADATA_HEADER, "the app's"), (ID_HEADER, "x")]);
    request.on_response_headers();
    assert!(header(RESPONSE_HEADERS, METADATA_HEADER).is_empty(), "neither ours nor the app's");
    assert!(header(RESPONSE_HEADERS, ID_HEADER).is_empty());
    assert_eq!(counted(SERVER_STATS), names(&[("untrusted_header_removed", 2)]));
}

#[test]
fn baggage_is_read_from_a_mesh_client_and_ours_keeps_the_apps_members() {
    let config = r#"{"role":"server","downstream_discovery":[{"istio_headers":{}},{"baggage":{}}],
        "downstream_propagation":[{"istio_headers":{}},{"baggage":{}}]}"#;
    let plugin = configure(server_envoy(config, true)).expect("configured");
    let mut request = stream(&plugin, 2);
    let baggage = "k8s.deployment.name=client,k8s.namespace.name=client-ns,service.name=client";
    headers(REQUEST_HEADERS, &[(":path", "/"), ("baggage", baggage)]);
    request.on_request_headers();
    assert!(state("downstream_peer").is_some_and(|s| s.contains("client-ns")));
    assert_eq!(header(REQUEST_HEADERS, "baggage"), [baggage], "baggage is the app's too");
    headers(RESPONSE_HEADERS, &[(":status", "200"), ("baggage", "app=1")]);
    request.on_response_headers();
    let answer = header(RESPONSE_HEADERS, "baggage");
    assert!(answer.len() == 1 && answer[0].contains("app=1") && answer[0].contains("k8s.namespace.name=server-ns"));
    let counts = counted(SERVER_STATS);
    assert!(counts.contains(&("peer_from_baggage".to_string(), 1)), "{counts:?}");
    assert!(counts.contains(&("baggage_added".to_string(), 1)), "{counts:?}");
}

#[test]
fn the_built_in_alpn_rule_shares_the_route_reads_and_counts_as_alpn_filter() {
    let config = r#"{"role":"client","alpn":{}}"#;
    let plugin = configure(client_envoy(config, mesh_cluster())).expect("configured");
    let mut request = stream(&plugin, 2);
    headers(REQUEST_HEADERS, &[(":path", "/")]);
    request.on_request_headers();
    fake::with(|h| {
        assert_eq!(
            h.envoy_filter_state,
            [("envoy.network.application_protocols".to_string(), "istio-http/1.1,istio,http/1.1".to_string())]
        );
        assert_eq!(h.called("get_property xds.cluster_name").len(), 1, "one name read for both rules");
        assert_eq!(h.called("get_property xds.cluster_metadata").len(), 1, "one metadata read for both rules");
    });
    assert_eq!(header(REQUEST_HEADERS, METADATA_HEADER), [CLIENT.header()]);
    let alpn = counted("alpn_filter.");
    assert!(alpn.contains(&("override_http11".to_string(), 1)), "{alpn:?}");
}

#[test]
fn refused_configurations_say_why() {
    assert!(configure(client_envoy(r#"{"role":"client","exchange_timeout_ms":5}"#, Vec::new())).is_none());
    fake::with(|h| assert_eq!(h.logged("invalid plugin configuration, refusing it: exchange_timeout_ms").len(), 1));
    let mut old_envoy = client_envoy(r#"{"role":"client"}"#, Vec::new());
    old_envoy.foreign_functions.clear();
    assert!(configure(old_envoy).is_none());
    fake::with(|h| assert_eq!(h.logged("lacks the foreign function declare_property").len(), 1));
}
