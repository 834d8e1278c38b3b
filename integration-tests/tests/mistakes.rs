//! The everyday mistakes, made in the examples and run: each is named
//! where the user looks — one warning in the Envoy log with its fix (once,
//! however much traffic), a counter — and `mesh-doctor` finds it in the
//! running Envoys' configuration.

use std::time::{Duration, Instant};

use integration_tests::clients::{h2c_get, http1_get, http1_request, STEP_TIMEOUT};
use integration_tests::envoy::Envoy;
use integration_tests::examples::{read, with, Examples};
use integration_tests::paths::run_mesh_doctor;
use integration_tests::stats::{exchange, http_exchange, prometheus, wait_exchange};
use integration_tests::LOG_WAIT;
use peer_exchange::config::Role;
use peer_exchange::exchange::Counter;
use peer_exchange::http::HttpCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The log lines containing `text`, once Envoy has written at least `count`.
fn logged(envoy: &Envoy, text: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = envoy.log().lines().filter(|l| l.contains(text)).map(str::to_string).collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the app reads from the TCP listener after sending an HTTP request as bytes.
async fn over_tcp(examples: &Examples) -> Result<Vec<u8>, std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(examples.tcp()).await?;
    stream.write_all(http1_request("1.1", "/tcp", &[("connection", "close")]).as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut raw)).await.expect("TCP answer timed out")?;
    Ok(raw)
}

/// `mesh-doctor` on the running pair's live configuration.
fn doctor(examples: &Examples) -> (i32, String) {
    let outbound = format!("http://{}", examples.outbound.admin.addr);
    let inbound = format!("http://{}", examples.inbound.admin.addr);
    run_mesh_doctor(&[&outbound, &inbound])
}

fn node_metadata(outbound: &str) -> String {
    let start = outbound.find("  metadata:\n    NAME: frontend").expect("outbound node metadata");
    let end = outbound[start..].find("# Istio's metric labels").expect("end of the node section") + start;
    outbound[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_metadata_is_warned_about_and_istios_labels_say_unknown() {
    let outbound = read("outbound.yaml");
    let examples = Examples::start_changed(read("inbound.yaml"), with(&outbound, &node_metadata(&outbound), ""));
    for _ in 0..3 {
        assert_eq!(http1_get(examples.http(), "1.1", "/").await.status, 200);
    }
    assert!(over_tcp(&examples).await.expect("TCP").starts_with(b"HTTP/1.1 200"));
    let warned = logged(&examples.outbound, "node metadata has no", 2);
    // Once per plugin configuration, not per request: Envoy configures each
    // form's plugin in every worker's VM and twice on the main thread.
    assert!(!warned.is_empty() && warned.len() <= 8, "{warned:?}");
    for _ in 0..3 {
        assert_eq!(http1_get(examples.http(), "1.1", "/more").await.status, 200);
    }
    assert_eq!(logged(&examples.outbound, "node metadata has no", 0).len(), warned.len(), "traffic adds none");
    assert!(
        warned[0].contains(
            "the node metadata has no NAMESPACE or WORKLOAD_NAME: peers will store only what this \
                            workload's certificate proves and Istio's metrics will say unknown; set node.metadata \
                            NAMESPACE and WORKLOAD_NAME"
        ),
        "{warned:?}"
    );
    assert!(exchange(&examples.outbound, Role::Client, Counter::NodeMetadataMissing) >= 1);
    assert!(http_exchange(&examples.outbound, Role::Client, HttpCounter::NodeMetadataMissing) >= 1);
    // Istio's metrics on the client: its own labels are `unknown`, never empty.
    let deadline = Instant::now() + Duration::from_secs(15);
    let sample = loop {
        let found = prometheus(&examples.outbound).into_iter().find(|s| {
            s.name == "istio_requests_total" && s.labels.get("reporter").map(String::as_str) == Some("source")
        });
        if let Some(s) = found {
            break s;
        }
        assert!(Instant::now() < deadline, "no istio_requests_total on the outbound");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample.labels["source_workload"], "unknown", "{sample:?}");
    assert_eq!(sample.labels["source_workload_namespace"], "unknown", "{sample:?}");
    assert_eq!(sample.labels["source_canonical_revision"], "latest", "{sample:?}");
    let (code, report) = doctor(&examples);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("warning[node-metadata-missing]"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_without_the_mesh_marker_are_warned_about_once_each() {
    let outbound = read("outbound.yaml").replace("        istio.peer_exchange: { enabled: true }\n", "");
    let examples = Examples::start_changed(read("inbound.yaml"), outbound);
    for _ in 0..4 {
        assert_eq!(http1_get(examples.http(), "1.1", "/").await.status, 200);
        assert_eq!(h2c_get(examples.http(), "/").await.status, 200);
        assert!(over_tcp(&examples).await.expect("TCP").starts_with(b"HTTP/1.1 200"));
    }
    let warned = logged(&examples.outbound, "presents a mesh identity", 2);
    let clusters: std::collections::BTreeSet<&str> =
        warned.iter().filter_map(|l| l.split("cluster ").nth(1)?.split(':').next()).collect();
    assert_eq!(clusters.into_iter().collect::<Vec<_>>(), ["backend_http", "backend_tcp"], "{warned:?}");
    // At most once per cluster per worker VM, whatever the traffic.
    assert!(warned.len() <= 4, "{warned:?}");
    assert!(
        warned[0].contains(
            "the upstream presents a mesh identity (spiffe://cluster.local/ns/shop/sa/backend) but \
                            the cluster is not marked as a mesh upstream, so the exchange sends it nothing and its \
                            peer is not found; if it runs the exchange's server role, add filter_metadata: \
                            {istio.peer_exchange: {enabled: true}} to the cluster"
        ),
        "{warned:?}"
    );
    assert_eq!(
        wait_exchange(&examples.outbound, Role::Client, Counter::MeshUpstreamNotMarked, 4, LOG_WAIT),
        4,
        "per connection"
    );
    let http = http_exchange(&examples.outbound, Role::Client, HttpCounter::MeshUpstreamNotMarked);
    assert!((1..=2).contains(&http), "once per cluster per worker: {http}");
    let (code, report) = doctor(&examples);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("warning[cluster-not-marked-mesh]"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_cluster_offering_only_istio_reaches_the_http_chain_and_that_is_named() {
    let outbound =
        with(&read("outbound.yaml"), "alpn_protocols: [istio-peer-exchange, istio]", "alpn_protocols: [istio]");
    let examples = Examples::start_changed(read("inbound.yaml"), outbound);
    for _ in 0..3 {
        let raw = over_tcp(&examples).await.expect("TCP");
        assert!(raw.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&raw));
    }
    let warned = logged(&examples.outbound, "answered our prefix", 1);
    assert!(!warned.is_empty() && warned.len() <= 2, "{warned:?}");
    assert!(
        warned[0].contains("cluster backend_tcp: the upstream answered our prefix with an HTTP response: its Envoy \
                            serves this cluster's ALPN with an HTTP chain, which reads the prefix as a request; the \
                            cluster must offer istio-peer-exchange first (alpn_protocols: [istio-peer-exchange, istio])"),
        "{warned:?}"
    );
    assert_eq!(wait_exchange(&examples.outbound, Role::Client, Counter::UpstreamAnsweredHttp, 3, LOG_WAIT), 3);
    let (code, report) = doctor(&examples);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("error[tcp-alpn-http-chain]"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_cluster_offering_no_alpn_is_reset_and_that_is_named() {
    let outbound = with(&read("outbound.yaml"), "          alpn_protocols: [istio-peer-exchange, istio]\n", "");
    let examples = Examples::start_changed(read("inbound.yaml"), outbound);
    for _ in 0..3 {
        let answer = over_tcp(&examples).await;
        assert!(answer.as_ref().map_or(true, Vec::is_empty), "the connection is closed without an answer: {answer:?}");
    }
    let warned = logged(&examples.outbound, "TLS handshake with the mesh upstream failed", 1);
    assert!(!warned.is_empty() && warned.len() <= 2, "{warned:?}\n{}", examples.outbound.log_tail(30));
    assert!(warned[0].contains("cluster backend_tcp: the TLS handshake with the mesh upstream failed ("), "{warned:?}");
    assert!(
        warned[0].contains(
            "its Envoy closes connections whose ALPN none of its filter chains serves; the cluster \
                            must offer istio-peer-exchange first (alpn_protocols: [istio-peer-exchange, istio])"
        ),
        "{warned:?}"
    );
    // Counted as each connection's context is deleted.
    assert_eq!(wait_exchange(&examples.outbound, Role::Client, Counter::UpstreamHandshakeFailed, 3, LOG_WAIT), 3);
    let (code, report) = doctor(&examples);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("error[tcp-alpn-no-chain]"), "{report}");
}
