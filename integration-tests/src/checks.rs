//! Checks that hold for any deployment of the two Envoys — one this harness
//! started or one it is pointed at (docker compose) — so they use counter
//! deltas and find their own access-log lines instead of assuming a fresh
//! Envoy.

use crate::LOG_WAIT;
use alpn_decision::decision::Counter;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::clients::{assert_same_bytes, banner_exchange, echo_through, h2c_get, http1_get};
use crate::clients::{http1_request, parse_http1, STEP_TIMEOUT};
use crate::mesh::{CLIENT_TCP_LOG, SERVER_HTTP_LOG, SERVER_TCP_LOG};
use crate::target::Target;
use crate::workloads::{peer_struct, CLIENT, PEER_UNKNOWN, SERVER};
use crate::{pseudo_random_bytes, BANNER};

/// A value that differs between runs (unique paths and payload sizes).
fn nonce() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn as_u64(v: &serde_json::Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// HTTP/1.0, HTTP/1.1 and h2c through a use-downstream cluster: each gets
/// the list of the protocol it goes upstream with (HTTP/1.0 goes up as 1.1,
/// as in native) and reaches that list's inbound chain.
pub async fn http_versions_reach_their_inbound_chains(t: &Target) {
    let n = nonce();
    let app = t.client_listener("outbound_http");
    let counter = |counter| crate::stats::alpn(&t.client, counter);
    let before = [counter(Counter::OverrideHttp11), counter(Counter::OverrideHttp2)];
    let path = |v: &str| format!("/use-downstream/{n}/{v}");
    let cases = [
        (http1_get(app, "1.0", &path("v10")).await, "inbound-http11", path("v10")),
        (http1_get(app, "1.1", &path("v11")).await, "inbound-http11", path("v11")),
        (h2c_get(app, &path("v2")).await, "inbound-h2", path("v2")),
    ];
    for (response, chain, path) in &cases {
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.header("x-inbound-chain"), *chain, "{path}");
        let line = t.find_log_line(SERVER_HTTP_LOG, LOG_WAIT, |l| l["path"] == path.as_str());
        assert_eq!(line.expect("server access log line")["chain"], *chain, "{path}");
    }
    let after = [counter(Counter::OverrideHttp11), counter(Counter::OverrideHttp2)];
    assert_eq!([after[0] - before[0], after[1] - before[1]], [2, 1], "override_http11, override_http2");
}

/// Echoes `len` random bytes through a client listener (byte-exact) and
/// returns the client access-log line of that connection (the app sent
/// exactly `len` bytes, which makes the line findable).
async fn echo_and_find_client_line(t: &Target, listener: &str, len: usize) -> serde_json::Value {
    let payload = pseudo_random_bytes(len, nonce());
    let echoed = echo_through(t.client_listener(listener), &payload).await;
    assert_same_bytes(&echoed, &payload, listener);
    t.find_log_line(CLIENT_TCP_LOG, LOG_WAIT, |l| {
        l["listener"] == listener && as_u64(&l["bytes_received"]) == len as u64
    })
    .expect("client access log line for this connection")
}

/// Client-first TCP through both Envoys: exact bytes, both sides log the peer.
pub async fn tcp_exchange_learns_both_peers(t: &Target) {
    let len = 100_000 + (nonce() % 900_000) as usize;
    let client_line = echo_and_find_client_line(t, "outbound_tcp_echo", len).await;
    SERVER.assert_is(&client_line["upstream_peer"], "client access log");
    assert_eq!(client_line["upstream_peer_id"], SERVER.node_id);
    let server_line = t
        .find_log_line(SERVER_TCP_LOG, LOG_WAIT, |l| {
            let extra = as_u64(&l["bytes_received"]).wrapping_sub(len as u64);
            l["chain"] == "inbound-tcp-echo" && (1..4096).contains(&extra)
        })
        .expect("server access log line for this connection");
    CLIENT.assert_is(&server_line["downstream_peer"], "server access log");
}

/// Server-first TCP: the banner arrives before the app writes.
pub async fn server_first_banner_arrives_intact(t: &Target) {
    let (banner, echo) = banner_exchange(t.client_listener("outbound_tcp_banner"), b"QUIT\r\n").await;
    assert_eq!(banner, BANNER);
    assert_eq!(echo, b"QUIT\r\n");
}

/// A non-mesh TLS upstream gets exactly the app's bytes; with no exchange,
/// the peer comes from Istio's endpoint metadata, or is not found.
pub async fn non_mesh_upstream_is_untouched(t: &Target) {
    let len = 10_000 + (nonce() % 90_000) as usize;
    let line = echo_and_find_client_line(t, "outbound_tcp_plain", len).await;
    assert_eq!(peer_struct(&line["upstream_peer"])["source"], "endpoint_metadata", "{line}");
    assert_eq!(peer_struct(&line["upstream_peer"])["workload"], "legacy-db", "{line}");
    assert_eq!(as_u64(&line["bytes_sent"]), len as u64, "no prefix was stripped from, or added to, the stream");
    let line = echo_and_find_client_line(t, "outbound_tcp_plain_marked", len + 1).await;
    assert_eq!(line["peer_not_found"], "true", "{line}");
    assert_eq!(line["upstream_peer_id"], PEER_UNKNOWN, "{line}");
    assert_eq!(as_u64(&line["bytes_sent"]), len as u64 + 1);
}

/// A mesh client holding a certificate of the deployment's CA (the
/// `raw-client` of its certificate directory) sends its metadata headers
/// straight to the server Envoy: they are believed and stored. Fails if the
/// deployment's certificates are not the ones its Envoys run with.
pub async fn a_client_of_the_deployments_ca_is_learned_by_the_server(t: &Target) {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = format!("/raw-mesh-client/{}", nonce());
    let metadata = base64::engine::general_purpose::STANDARD.encode(crate::wire::strukt(&[
        ("NAME", crate::wire::V::Str("raw-client-1")),
        ("NAMESPACE", crate::wire::V::Str("raw-ns")),
    ]));
    let headers = [("x-envoy-peer-metadata", metadata.as_str()), ("x-envoy-peer-metadata-id", "raw-client~check")];
    let mut tls = t.connect_inbound("http.mesh.local", &["istio-http/1.1", "istio", "http/1.1"]).await;
    tls.write_all(http1_request("1.1", &path, &headers).as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tls.read_to_end(&mut raw)).await.expect("response timed out").ok();
    let response = parse_http1(&String::from_utf8_lossy(&raw));
    assert_eq!(response.status, 200, "{response:?}");
    let line = t.find_log_line(SERVER_HTTP_LOG, LOG_WAIT, |l| l["path"] == path.as_str()).expect("server log line");
    assert_eq!(line["downstream_peer_namespace"], "raw-ns", "{line}");
    assert_eq!(line["downstream_peer_id"], "raw-client~check", "{line}");
}

/// All of the above, in order (counter deltas stay meaningful).
pub async fn all(t: &Target) {
    a_client_of_the_deployments_ca_is_learned_by_the_server(t).await;
    http_versions_reach_their_inbound_chains(t).await;
    tcp_exchange_learns_both_peers(t).await;
    server_first_banner_arrives_intact(t).await;
    non_mesh_upstream_is_untouched(t).await;
}
