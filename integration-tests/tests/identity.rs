//! End-to-end tests of the identity check (`identity_check`): what each
//! side stores when the peer's claim does, or does not, agree with the mTLS
//! certificate it presented. Real Envoys, real mTLS with a per-run PKI, both
//! forms of the exchange (TCP prefix, HTTP headers).

use integration_tests::clients::{assert_same_bytes, echo_through, http1_get, STEP_TIMEOUT};
use integration_tests::mesh::{
    Mesh, MeshOptions, CLIENT_HTTP_LOG, CLIENT_TCP_LOG, SERVER_HTTP_LOG, SERVER_TCP_LOG, TEST_EXCHANGE_TIMEOUT_MS,
};
use integration_tests::pki::{CLIENT_IDENTITY, RAW_CLIENT_IDENTITY, SERVER_IDENTITY};
use integration_tests::wire::{self, V};
use integration_tests::workloads::{assert_stored, peer_struct, CLIENT, PEER_UNKNOWN, SERVER};
use integration_tests::{pseudo_random_bytes, LOG_WAIT};
use peer_exchange::config::Role;
use peer_exchange::exchange::Counter;
use peer_exchange::http::HttpCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What both Envoys claim to be in the lying meshes: another workload, in
/// another namespace, with another identity.
const LIE: &str = r#""metadata":{"NAME":"payments-api-0","NAMESPACE":"payments","WORKLOAD_NAME":"payments-api",
    "IDENTITY":"spiffe://cluster.local/ns/payments/sa/payments-api"}"#;
const LIED_IDENTITY: &str = "spiffe://cluster.local/ns/payments/sa/payments-api";
const RAW_CLIENT_ID: &str = "raw-client~10.9.9.9~raw.raw-ns~raw-ns.svc.cluster.local";

/// A mesh whose two Envoys both claim [`LIE`] in both forms of the exchange.
fn lying_mesh(identity_check: &str) -> Mesh {
    let config = |role: &str, timeout: bool| {
        let timeout =
            if timeout { format!(r#""exchange_timeout_ms":{TEST_EXCHANGE_TIMEOUT_MS},"#) } else { String::new() };
        format!(r#"{{"role":"{role}",{timeout}"identity_check":"{identity_check}","peer_json":true,{LIE}}}"#)
    };
    Mesh::start_with(MeshOptions {
        server_exchange_config: config("server", true),
        client_exchange_config: config("client", true),
        server_http_exchange_config: config("server", false),
        client_http_exchange_config: config("client", false),
        ..MeshOptions::default()
    })
}

/// The four access-log lines of one TCP echo and one HTTP request through
/// both Envoys: (TCP client, TCP server, HTTP client, HTTP server).
struct Lines {
    tcp_client: serde_json::Value,
    tcp_server: serde_json::Value,
    http_client: serde_json::Value,
    http_server: serde_json::Value,
}

async fn exchange_both_forms(mesh: &Mesh) -> Lines {
    let payload = pseudo_random_bytes(64 * 1024, 12);
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_echo"), &payload).await;
    assert_same_bytes(&echoed, &payload, "the echo after the exchange");
    let response = http1_get(mesh.target.client_listener("outbound_http_exchange"), "1.1", "/mesh/identity").await;
    assert_eq!(response.status, 200, "{response:?}");
    let one = |log: &str| {
        let lines = mesh.target.wait_access_log(log, 1, LOG_WAIT);
        assert_eq!(lines.len(), 1, "{log}: {lines:?}");
        lines.into_iter().next().unwrap_or_default()
    };
    Lines {
        tcp_client: one(CLIENT_TCP_LOG),
        tcp_server: one(SERVER_TCP_LOG),
        http_client: one(CLIENT_HTTP_LOG),
        http_server: one(SERVER_HTTP_LOG),
    }
}

use integration_tests::stats::{exchange as tcp_counter, http_exchange as http_counter};

/// The identity counters of both forms on both sides: `(verified, mismatch)`.
fn assert_identity_counters(mesh: &Mesh, verified: u64, mismatch: u64) {
    for (envoy, role) in [(&mesh.client, Role::Client), (&mesh.server, Role::Server)] {
        let what = role.name();
        assert_eq!(tcp_counter(envoy, role, Counter::PeerIdentityVerified), verified, "{what} TCP verified");
        assert_eq!(tcp_counter(envoy, role, Counter::PeerIdentityMismatch), mismatch, "{what} TCP mismatch");
        assert_eq!(http_counter(envoy, role, HttpCounter::PeerIdentityVerified), verified, "{what} HTTP verified");
        assert_eq!(http_counter(envoy, role, HttpCounter::PeerIdentityMismatch), mismatch, "{what} HTTP mismatch");
    }
}

/// One raw TLS connection to the server chain that does not require a
/// client certificate, sending the raw client's prefix; returns the bytes
/// echoed after the server's prefix.
async fn raw_exchange_on_optional_chain(mesh: &Mesh, certificate: Option<&str>) -> Vec<u8> {
    let prefix = wire::prefix(vec![("NAME", V::Str("raw-client-1")), ("NAMESPACE", V::Str("raw-ns"))], RAW_CLIENT_ID);
    let data = b"application bytes after the prefix";
    let mut tls =
        mesh.target.connect_inbound_as(certificate, "optional-cert.mesh.local", &["istio-peer-exchange"]).await;
    tls.write_all(&prefix).await.expect("write prefix");
    tls.write_all(data).await.expect("write data");
    tls.shutdown().await.expect("half-close");
    let mut received = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tls.read_to_end(&mut received)).await.expect("echo timed out").ok();
    let (_, server_id, rest) = wire::split_prefix(&received).expect("the server's prefix");
    assert_eq!(server_id, SERVER.node_id);
    assert_eq!(rest, data, "the echo, byte-exact");
    rest.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_peers_are_verified_and_a_peer_without_a_certificate_never_is() {
    let mesh = Mesh::start();
    let lines = exchange_both_forms(&mesh).await;
    SERVER.assert_is(&lines.tcp_client["upstream_peer"], "TCP client");
    CLIENT.assert_is(&lines.tcp_server["downstream_peer"], "TCP server");
    SERVER.assert_is(&lines.http_client["upstream_peer"], "HTTP client");
    CLIENT.assert_is(&lines.http_server["downstream_peer"], "HTTP server");
    for line in [&lines.tcp_server, &lines.http_server] {
        assert_eq!(line["verified_peer_namespace"], "client-ns", "a CEL line over verified fields: {line}");
    }
    assert_identity_counters(&mesh, 1, 0);

    // TLS without a client certificate, on a chain that allows it: the
    // exchange still happens (the echo is exact), nothing is stored.
    raw_exchange_on_optional_chain(&mesh, None).await;
    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 2, LOG_WAIT);
    let anonymous = &log[1];
    assert_eq!(anonymous["chain"], "inbound-tcp-echo-optional-client-cert", "{anonymous}");
    assert_eq!(anonymous["peer_not_found"], "true", "{anonymous}");
    assert_eq!(anonymous["downstream_peer_id"], PEER_UNKNOWN, "{anonymous}");
    assert!(anonymous["downstream_peer"].is_null(), "{anonymous}");
    assert_eq!(tcp_counter(&mesh.server, Role::Server, Counter::PeerIdentityNoCertificate), 1);
    assert_eq!(tcp_counter(&mesh.server, Role::Server, Counter::MetadataReceived), 2, "the claim was read");

    // The same chain with a mesh certificate: verified.
    raw_exchange_on_optional_chain(&mesh, Some("raw-client")).await;
    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 3, LOG_WAIT);
    assert_stored(
        &log[2]["downstream_peer"],
        &[
            ("name", "raw-client-1"),
            ("namespace", "raw-ns"),
            ("source", "exchange"),
            ("identity", RAW_CLIENT_IDENTITY),
            ("service_account", "raw-client"),
            ("verified", "true"),
        ],
        "raw client with a certificate",
    );
    assert_eq!(tcp_counter(&mesh.server, Role::Server, Counter::PeerIdentityVerified), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_stores_only_what_the_certificate_proves_about_a_lying_peer() {
    let mesh = lying_mesh("enforce");
    let lines = exchange_both_forms(&mesh).await;
    let certificate_of = |identity: &'static str, namespace: &'static str, account: &'static str| {
        [
            ("identity", identity),
            ("namespace", namespace),
            ("service_account", account),
            ("source", "certificate"),
            ("verified", "true"),
        ]
    };
    let client_cert = certificate_of(CLIENT_IDENTITY, "client-ns", "client");
    let server_cert = certificate_of(SERVER_IDENTITY, "server-ns", "server");
    for (line, key, expected, what) in [
        (&lines.tcp_server, "downstream_peer", &client_cert, "TCP server: the client lied"),
        (&lines.http_server, "downstream_peer", &client_cert, "HTTP server: the client lied"),
        (&lines.tcp_client, "upstream_peer", &server_cert, "TCP client: the server lied"),
        (&lines.http_client, "upstream_peer", &server_cert, "HTTP client: the server lied"),
    ] {
        assert_stored(&line[key], expected, what);
        // The claimed node id is part of the lie: not stored.
        assert!(line[format!("{key}_id")].is_null(), "{what}: {line}");
        assert!(line["peer_not_found"].is_null(), "{what}: {line}");
    }
    for line in [&lines.tcp_server, &lines.http_server] {
        assert_eq!(line["downstream_peer_namespace"], "client-ns", "{line}");
        assert_eq!(line["verified_peer_namespace"], "client-ns", "{line}");
    }
    assert_identity_counters(&mesh, 0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_stores_the_claim_marked_unverified_and_why() {
    let mesh = lying_mesh("annotate");
    let lines = exchange_both_forms(&mesh).await;
    for (line, key, node_id) in [
        (&lines.tcp_server, "downstream_peer", CLIENT.node_id),
        (&lines.http_server, "downstream_peer", CLIENT.node_id),
        (&lines.tcp_client, "upstream_peer", SERVER.node_id),
        (&lines.http_client, "upstream_peer", SERVER.node_id),
    ] {
        let peer = peer_struct(&line[key]);
        assert_eq!(peer["namespace"], "payments", "the claim: {line}");
        assert_eq!(peer["workload"], "payments-api", "{line}");
        assert_eq!(peer["identity"], LIED_IDENTITY, "{line}");
        assert_eq!(peer["verified"], false, "{line}");
        assert_eq!(peer["unverified_reason"], "identity_mismatch", "{line}");
        assert!(peer.get("service_account").is_none(), "nothing from the certificate: {line}");
        assert_eq!(line[format!("{key}_id")], node_id, "{line}");
    }
    for line in [&lines.tcp_server, &lines.http_server] {
        assert_eq!(line["verified_peer_namespace"], "unverified", "{line}");
    }
    assert_identity_counters(&mesh, 0, 1);

    // No client certificate: the claim, marked as such.
    raw_exchange_on_optional_chain(&mesh, None).await;
    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 2, LOG_WAIT);
    assert_stored(
        &log[1]["downstream_peer"],
        &[
            ("name", "raw-client-1"),
            ("namespace", "raw-ns"),
            ("source", "exchange"),
            ("verified", "false"),
            ("unverified_reason", "no_certificate"),
        ],
        "annotated claim without a certificate",
    );
    assert_eq!(log[1]["downstream_peer_id"], RAW_CLIENT_ID);
    assert_eq!(tcp_counter(&mesh.server, Role::Server, Counter::PeerIdentityNoCertificate), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_stores_the_claim_as_native_does() {
    let mesh = lying_mesh("off");
    let lines = exchange_both_forms(&mesh).await;
    for (line, key) in [
        (&lines.tcp_server, "downstream_peer"),
        (&lines.http_server, "downstream_peer"),
        (&lines.tcp_client, "upstream_peer"),
        (&lines.http_client, "upstream_peer"),
    ] {
        let peer = peer_struct(&line[key]);
        assert_eq!(peer["namespace"], "payments", "{line}");
        assert_eq!(peer["identity"], LIED_IDENTITY, "{line}");
        for field in ["verified", "unverified_reason", "service_account"] {
            assert!(peer.get(field).is_none(), "native's schema, no {field}: {line}");
        }
    }
    for line in [&lines.tcp_server, &lines.http_server] {
        // No `verified` field: a verified-only line never prints the claim.
        assert_ne!(line["verified_peer_namespace"], "payments", "{line}");
    }
    assert_identity_counters(&mesh, 0, 0);
}
