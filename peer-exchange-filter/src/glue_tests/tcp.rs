//! The TCP form's glue: participation, our prefix, the peer's prefix
//! stripped and stored, stalls and their timeout, refusals by the host.

use proto::prost_types::value::Kind;
use wasm_host::fake::{self, FakeHost, DOWNSTREAM_DATA, UPSTREAM_DATA};
use wasm_host::plugin::{Action, Stream};

use super::*;
use filter_common::istio::{NAMESPACE as ISTIO_NAMESPACE, PEER_EXCHANGE_NAMESPACE as CLUSTER_NAMESPACE};

const SERVER_STATS: &str = "peer_exchange.server.";
const CLIENT_STATS: &str = "peer_exchange.client.";

/// The inbound Envoy: a TLS connection from `CLIENT`, proxied upstream.
fn server_envoy() -> FakeHost {
    let mut host = envoy(&SERVER, "peer_exchange", r#"{"role":"server","exchange_timeout_ms":1000}"#);
    host.property("connection.tls_version", "TLSv1.3")
        .property("connection.uri_san_peer_certificate", CLIENT.spiffe())
        .property("upstream.address", "127.0.0.1:8080");
    host
}

/// The outbound Envoy: a TLS connection to `SERVER` through cluster `mesh`.
fn client_envoy(cluster_metadata: Vec<u8>) -> FakeHost {
    let mut host = envoy(&CLIENT, "peer_exchange", r#"{"role":"client","exchange_timeout_ms":1000}"#);
    host.property("upstream.tls_version", "TLSv1.3")
        .property("upstream.uri_san_peer_certificate", SERVER.spiffe())
        .property("upstream.address", "10.0.0.2:15443")
        .property("xds.cluster_name", "mesh")
        .property("xds.cluster_metadata", cluster_metadata);
    host
}

fn mesh_cluster() -> Vec<u8> {
    metadata(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))])
}

/// Puts `bytes` in a direction's buffer, as Envoy does before the callback.
fn arrive(buffer: u32, bytes: &[u8]) -> usize {
    fake::with(|h| h.buffers.insert(buffer, bytes.to_vec()));
    bytes.len()
}

fn buffer(buffer: u32) -> Vec<u8> {
    fake::with(|h| h.buffers.get(&buffer).cloned().unwrap_or_default())
}

fn with_prefix(prefix: Vec<u8>, data: &[u8]) -> Vec<u8> {
    [prefix, data.to_vec()].concat()
}

#[test]
fn the_server_strips_and_stores_the_clients_prefix_and_sends_its_own() {
    let plugin = configure(server_envoy()).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, &with_prefix(CLIENT.prefix(), b"hello"));
    assert_eq!(connection.on_downstream_data(size, false), Action::Continue);
    assert_eq!(buffer(DOWNSTREAM_DATA), b"hello", "the app gets its bytes, byte-exact");
    assert_eq!(state("downstream_peer_id").as_deref(), Some("client-pod-id"));
    assert!(state("downstream_peer").is_some_and(|s| s.contains("client-ns")));
    assert_eq!(state("peer_not_found"), None);

    let size = arrive(UPSTREAM_DATA, b"world");
    assert_eq!(connection.on_upstream_data(size, false), Action::Continue);
    assert_eq!(buffer(UPSTREAM_DATA), with_prefix(SERVER.prefix(), b"world"), "ours, once, before the app's");
    let size = arrive(UPSTREAM_DATA, b"again");
    connection.on_upstream_data(size, false);
    assert_eq!(buffer(UPSTREAM_DATA), b"again");
    assert_eq!(
        counted(SERVER_STATS),
        names(&[
            ("alpn_protocol_found", 1),
            ("metadata_added", 1),
            ("metadata_received", 1),
            ("peer_identity_verified", 1)
        ])
    );
    fake::with(|h| {
        let declared: Vec<&str> = h.declared.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(declared, ["downstream_peer", "downstream_peer_id", "peer_not_found"]);
    });
}

#[test]
fn a_server_first_banner_goes_out_alone_and_a_later_client_prefix_is_still_stored() {
    let plugin = configure(server_envoy()).expect("configured");
    let mut connection = stream(&plugin, 2);
    let banner = b"220 smtp ready\r\n";
    let size = arrive(UPSTREAM_DATA, banner);
    assert_eq!(connection.on_upstream_data(size, false), Action::Continue);
    assert_eq!(buffer(UPSTREAM_DATA), banner, "no prefix in front of the banner: the client may not exchange");

    // A client that exchanges (as native's does, when the banner reaches it).
    let size = arrive(DOWNSTREAM_DATA, &with_prefix(CLIENT.prefix(), b"EHLO"));
    assert_eq!(connection.on_downstream_data(size, false), Action::Continue);
    assert_eq!(buffer(DOWNSTREAM_DATA), b"EHLO");
    assert_eq!(state("downstream_peer_id").as_deref(), Some("client-pod-id"));
    let size = arrive(UPSTREAM_DATA, b"250 ok");
    connection.on_upstream_data(size, false);
    assert_eq!(buffer(UPSTREAM_DATA), b"250 ok", "never later on that connection");
    assert_eq!(
        counted(SERVER_STATS),
        names(&[
            ("alpn_protocol_found", 1),
            ("metadata_received", 1),
            ("peer_identity_verified", 1),
            ("prefix_withheld_server_first", 1)
        ])
    );
}

#[test]
fn the_client_sends_first_and_stores_the_servers_answer() {
    let plugin = configure(client_envoy(mesh_cluster())).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, b"hi");
    assert_eq!(connection.on_downstream_data(size, false), Action::Continue);
    assert_eq!(buffer(DOWNSTREAM_DATA), with_prefix(CLIENT.prefix(), b"hi"));
    let size = arrive(UPSTREAM_DATA, &with_prefix(SERVER.prefix(), b"yo"));
    assert_eq!(connection.on_upstream_data(size, false), Action::Continue);
    assert_eq!(buffer(UPSTREAM_DATA), b"yo");
    assert_eq!(state("upstream_peer_id").as_deref(), Some("server-pod-id"));
    assert_eq!(
        counted(CLIENT_STATS),
        names(&[
            ("alpn_protocol_found", 1),
            ("cluster_metadata_read", 1),
            ("metadata_added", 1),
            ("metadata_received", 1),
            ("peer_identity_verified", 1)
        ])
    );
}

#[test]
fn a_stalled_prefix_is_held_then_closed_at_the_timeout_and_a_deleted_connection_is_forgotten() {
    let plugin = configure(server_envoy()).expect("configured");
    assert_eq!(fake::with(|h| h.tick_period_ms), Some(100), "a tenth of the timeout");
    let PeerPlugin::Tcp(shared) = &*plugin else { panic!("TCP form") };
    let half = CLIENT.prefix()[..10].to_vec();
    fake::with(|h| h.now_nanos = 5_000_000_000);
    let mut stalled = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, &half);
    assert_eq!(stalled.on_downstream_data(size, false), Action::Pause, "held, not passed to the app");
    let mut deleted = stream(&plugin, 3);
    let size = arrive(DOWNSTREAM_DATA, &half);
    assert_eq!(deleted.on_downstream_data(size, false), Action::Pause);
    deleted.on_delete();

    fake::with(|h| h.now_nanos = 5_999_000_000);
    shared.on_tick();
    assert!(fake::with(|h| h.closed.is_empty()), "not before the timeout");
    fake::with(|h| h.now_nanos = 6_000_000_000);
    shared.on_tick();
    fake::with(|h| {
        assert_eq!(h.closed, [2], "the downstream of the stalled connection only");
        assert_eq!(h.called("set_effective_context"), ["set_effective_context 2"]);
    });
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));
    assert_eq!(state("downstream_peer_id").as_deref(), Some("envoy.wasm.metadata_exchange.peer_unknown"));
    assert_eq!(counted(SERVER_STATS), names(&[("alpn_protocol_found", 2), ("exchange_timeout", 1)]));
    shared.on_tick();
    assert_eq!(fake::with(|h| h.closed.len()), 1, "closed once");
}

#[test]
fn a_prefix_the_host_will_not_strip_closes_the_connection_rather_than_corrupt_it() {
    let mut host = server_envoy();
    host.failing.insert("set_buffer_bytes", fake::INTERNAL_FAILURE);
    let plugin = configure(host).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, &with_prefix(CLIENT.prefix(), b"hello"));
    assert_eq!(connection.on_downstream_data(size, false), Action::Pause);
    fake::with(|h| {
        assert_eq!(h.closed, [DOWNSTREAM_DATA]);
        assert_eq!(h.logged("cannot strip the peer prefix").len(), 1);
    });
    let counts = counted(SERVER_STATS);
    assert!(counts.contains(&("buffer_error".to_string(), 1)), "{counts:?}");
}

#[test]
fn a_peer_without_the_magic_passes_untouched_and_gets_nothing_from_us() {
    let plugin = configure(server_envoy()).expect("configured");
    let mut connection = stream(&plugin, 2);
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let size = arrive(DOWNSTREAM_DATA, request);
    assert_eq!(connection.on_downstream_data(size, false), Action::Continue);
    assert_eq!(buffer(DOWNSTREAM_DATA), request);
    let size = arrive(UPSTREAM_DATA, b"HTTP/1.1 200 OK\r\n");
    connection.on_upstream_data(size, false);
    assert_eq!(buffer(UPSTREAM_DATA), b"HTTP/1.1 200 OK\r\n", "no prefix to a peer that sent none");
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));
    assert_eq!(counted(SERVER_STATS), names(&[("alpn_protocol_found", 1), ("initial_header_not_found", 1)]));
}

#[test]
fn connections_that_do_not_take_part_are_left_alone() {
    // Plaintext downstream: recorded as not found, nothing sent.
    let mut plaintext = server_envoy();
    plaintext.properties.remove("connection.tls_version");
    let plugin = configure(plaintext).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(UPSTREAM_DATA, b"banner");
    connection.on_upstream_data(size, false);
    assert_eq!(buffer(UPSTREAM_DATA), b"banner");
    assert_eq!(counted(SERVER_STATS), names(&[("alpn_protocol_not_found", 1)]));
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));

    // No upstream connection of its own (an HTTP connection manager follows): nothing recorded.
    let mut terminal = server_envoy();
    terminal.properties.remove("upstream.address");
    let plugin = configure(terminal).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, &with_prefix(CLIENT.prefix(), b"x"));
    connection.on_downstream_data(size, false);
    assert_eq!(buffer(DOWNSTREAM_DATA), with_prefix(CLIENT.prefix(), b"x"));
    assert_eq!(counted(SERVER_STATS), names(&[("no_upstream_connection", 1)]));
    fake::with(|h| assert!(h.filter_state.is_empty(), "{:?}", h.filter_state));
}

#[test]
fn the_client_sends_nothing_to_an_unmarked_or_opted_out_cluster_and_falls_back_to_endpoint_metadata() {
    let mut host = client_envoy(Vec::new());
    let endpoint = metadata(&[("istio", "workload", Kind::StringValue("web;server-ns;web;v1;Kubernetes".into()))]);
    host.property("xds.upstream_host_metadata", endpoint);
    let plugin = configure(host).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, b"hi");
    connection.on_downstream_data(size, false);
    assert_eq!(buffer(DOWNSTREAM_DATA), b"hi");
    assert!(state("upstream_peer").is_some_and(|s| s.contains("server-ns")), "the endpoint's word");
    assert_eq!(state("peer_not_found"), None);
    assert_eq!(
        counted(CLIENT_STATS),
        names(&[
            ("alpn_protocol_not_found", 1),
            ("cluster_metadata_read", 1),
            ("mesh_upstream_not_marked", 1),
            ("peer_from_endpoint_metadata", 1)
        ])
    );
    // The upstream presents a mesh identity on an unmarked cluster: counted
    // per connection, said once per cluster, with the fix.
    let mut second = stream(&plugin, 3);
    let size = arrive(DOWNSTREAM_DATA, b"hi");
    second.on_downstream_data(size, false);
    assert_eq!(counted(CLIENT_STATS).iter().find(|(n, _)| n == "mesh_upstream_not_marked").map(|(_, v)| *v), Some(2));
    let warned = fake::with(|h| h.logged("presents a mesh identity").len());
    assert_eq!(warned, 1);

    let hbone = metadata(&[
        (CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true)),
        (ISTIO_NAMESPACE, "disable_mx", Kind::BoolValue(true)),
    ]);
    let plugin = configure(client_envoy(hbone)).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, b"hi");
    connection.on_downstream_data(size, false);
    assert_eq!(buffer(DOWNSTREAM_DATA), b"hi", "istiod's disable_mx: no prefix");
    assert_eq!(state("peer_not_found").as_deref(), Some("true"));
}

#[test]
fn a_clusters_verdict_is_read_once_per_refresh_period() {
    let plugin = configure(client_envoy(mesh_cluster())).expect("configured");
    let PeerPlugin::Tcp(shared) = &*plugin else { panic!("TCP form") };
    for id in 2..5 {
        let size = arrive(DOWNSTREAM_DATA, b"hi");
        stream(&plugin, id).on_downstream_data(size, false);
    }
    assert_eq!(fake::with(|h| h.called("get_property xds.cluster_metadata").len()), 1);
    fake::with(|h| h.now_nanos = 1_000_000_000);
    shared.on_tick(); // the first tick starts the period and empties the map
    let size = arrive(DOWNSTREAM_DATA, b"hi");
    stream(&plugin, 5).on_downstream_data(size, false);
    assert_eq!(fake::with(|h| h.called("get_property xds.cluster_metadata").len()), 2);
}

#[test]
fn a_node_without_namespace_or_workload_name_is_warned_about_once_with_its_fix() {
    let mut host = FakeHost::default();
    host.buffers.insert(wasm_host::fake::PLUGIN_CONFIGURATION, br#"{"role":"client"}"#.to_vec());
    host.property("plugin_root_id", "peer_exchange");
    configure(host).expect("still configured: the exchange works, with less to say");
    assert_eq!(counted(CLIENT_STATS), names(&[("node_metadata_missing", 1)]));
    let warned = fake::with(|h| h.logged("node metadata has no").iter().map(|l| l.to_string()).collect::<Vec<_>>());
    assert_eq!(warned.len(), 1);
    assert!(warned[0].contains("no NAMESPACE or WORKLOAD_NAME"), "{warned:?}");
    let loaded = fake::with(|h| h.logged("sending").iter().map(|l| l.to_string()).collect::<Vec<_>>());
    assert!(loaded[0].ends_with("sending (no namespace)/(no workload name)"), "{loaded:?}");
}

#[test]
fn a_mesh_upstream_whose_handshake_fails_is_named_once_with_the_alpn_to_offer() {
    let mut host = client_envoy(mesh_cluster());
    // tcp_proxy reads nothing until its upstream is up: the connection
    // ends with no data when the TLS handshake fails.
    host.property(
        "upstream.transport_failure_reason",
        "TLS_error:|268435703:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end",
    );
    let plugin = configure(host).expect("configured");
    for id in 2..4 {
        let mut connection = stream(&plugin, id);
        connection.on_delete();
    }
    assert_eq!(counted(CLIENT_STATS), names(&[("cluster_metadata_read", 1), ("upstream_handshake_failed", 2)]));
    let warned = fake::with(|h| h.logged("TLS handshake").iter().map(|l| l.to_string()).collect::<Vec<_>>());
    assert_eq!(warned.len(), 1, "once per cluster: {warned:?}");
    assert!(warned[0].contains("cluster mesh:") && warned[0].contains("[istio-peer-exchange, istio]"), "{warned:?}");
    // A refused TCP connect is not that: nothing said.
    let mut host = client_envoy(mesh_cluster());
    host.property("upstream.transport_failure_reason", "delayed connect error: 111");
    let plugin = configure(host).expect("configured");
    stream(&plugin, 2).on_delete();
    assert_eq!(counted(CLIENT_STATS), names(&[]));
}

#[test]
fn an_http_answer_to_our_prefix_names_the_alpn_to_offer() {
    let plugin = configure(client_envoy(mesh_cluster())).expect("configured");
    let mut connection = stream(&plugin, 2);
    let size = arrive(DOWNSTREAM_DATA, b"hello");
    connection.on_downstream_data(size, false);
    assert_eq!(buffer(DOWNSTREAM_DATA), with_prefix(CLIENT.prefix(), b"hello"));
    let answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\nBad Request";
    let size = arrive(UPSTREAM_DATA, answer);
    connection.on_upstream_data(size, false);
    assert_eq!(buffer(UPSTREAM_DATA), answer, "passed on untouched");
    let count = |name: &str| counted(CLIENT_STATS).iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(count("upstream_answered_http"), Some(1));
    assert_eq!(count("initial_header_not_found"), Some(1));
    let warned = fake::with(|h| h.logged("answered our prefix").iter().map(|l| l.to_string()).collect::<Vec<_>>());
    assert_eq!(warned.len(), 1);
    assert!(warned[0].contains("alpn_protocols: [istio-peer-exchange, istio]"), "{warned:?}");
}
