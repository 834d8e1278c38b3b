//! The local two-Envoy demo: starts a server Envoy and a client Envoy with the
//! real filters and real backends, sends traffic through them, prints what
//! each filter did, and stops everything.

use integration_tests::LOG_WAIT;

use integration_tests::clients::{banner_exchange, echo_through, h2c_get, http1_get, http1_get_with, HttpResponse};
use integration_tests::mesh::{with_istio_metrics_everywhere, Mesh, MeshOptions};
use integration_tests::mesh::{CLIENT_HTTP_LOG, CLIENT_TCP_LOG, SERVER_HTTP_LOG, SERVER_TCP_LOG};
use integration_tests::pseudo_random_bytes;
use integration_tests::wire::{self, V};
use integration_tests::workloads::peer_struct;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn section(title: &str) {
    println!("\n=== {title}");
}

/// The ALPN decision the filter logged for a request path's cluster.
fn alpn_decision(mesh: &Mesh, cluster: &str, nth: usize) -> String {
    let needle = format!("alpn-filter: cluster {cluster}: ");
    mesh.client
        .log()
        .lines()
        .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest.to_string()))
        .nth(nth)
        .unwrap_or_else(|| "(no decision logged)".into())
}

fn show_http(what: &str, r: &HttpResponse, decision: &str) {
    let backend = serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default();
    let protocol = backend["protocol"].as_str().unwrap_or("-");
    let reached = match r.header("x-inbound-chain") {
        "" => format!(
            "the non-mesh server directly: it negotiated TLS ALPN {}, saw {protocol}",
            backend["tls_alpn"].as_str().unwrap_or("-")
        ),
        chain => format!("server Envoy chain {chain}, backend saw {protocol}"),
    };
    println!(
        "  {what:<38} {} via cluster {:<24} | alpn-filter: {decision}\n  {:<38} reached {reached}",
        r.status,
        r.header("x-client-cluster"),
        "",
    );
}

fn counters(mesh: &Mesh, prefixes: &[&str]) {
    for (side, envoy) in [("client", &mesh.client), ("server", &mesh.server)] {
        let stats: Vec<String> = envoy
            .stats()
            .into_iter()
            .filter(|(k, v)| prefixes.iter().any(|p| k.starts_with(p)) && *v > 0)
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("wasmcustom.")))
            .collect();
        if !stats.is_empty() {
            println!("  {side} Envoy counters: {}", stats.join(" "));
        }
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default().replace('\n', "\n    ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    section("starting a server Envoy and a client Envoy (real .wasm, mTLS with a fresh CA)");
    // Istio's standard metrics on in all four exchange filters.
    let mesh = Mesh::start_with(with_istio_metrics_everywhere(MeshOptions::default(), "{}"));
    println!("  server Envoy pid {:?}, inbound mTLS listener {}", mesh.server.pid(), mesh.target.server_inbound());
    println!(
        "  client Envoy pid {:?}, app-facing HTTP listener {}",
        mesh.client.pid(),
        mesh.target.client_listener("outbound_http")
    );
    println!("  configs, certificates and logs in {}", mesh.dir().display());

    section("alpn-filter: cluster's upstream protocol -> upstream ALPN -> inbound chain picked from the ClientHello");
    let app = mesh.target.client_listener("outbound_http");
    let r = h2c_get(app, "/no-options/demo").await;
    show_http("h2c, cluster without protocol options", &r, &alpn_decision(&mesh, "mesh_http_no_options", 0));
    let r = http1_get(app, "1.1", "/h2-cluster/demo").await;
    show_http("HTTP/1.1, explicit-h2 cluster", &r, &alpn_decision(&mesh, "mesh_http_h2_policy", 0));
    let r = http1_get(app, "1.0", "/use-downstream/demo").await;
    show_http("HTTP/1.0, use-downstream cluster", &r, &alpn_decision(&mesh, "mesh_http_use_downstream", 0));
    let r = h2c_get(app, "/use-downstream/demo").await;
    show_http("h2c, use-downstream cluster", &r, &alpn_decision(&mesh, "mesh_http_use_downstream", 1));
    let r = http1_get(app, "1.1", "/custom/demo").await;
    show_http("HTTP/1.1, cluster's own list", &r, &alpn_decision(&mesh, "mesh_http_custom_alpn", 0));
    let r = http1_get(app, "1.1", "/optout/demo").await;
    show_http("HTTP/1.1, istio.alpn_override=false", &r, &alpn_decision(&mesh, "plain_https_optout", 0));
    let r = http1_get(app, "1.1", "/no-optout/demo").await;
    println!(
        "  {:<38} {} (same h2-only server without the opt-out: the mesh ALPN list is refused)",
        "HTTP/1.1, no opt-out", r.status
    );
    counters(&mesh, &["wasmcustom.alpn_filter."]);

    section("peer-exchange-filter: Istio TCP metadata exchange (ALPN istio-peer-exchange)");
    let payload = pseudo_random_bytes(1 << 20, 42);
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_echo"), &payload).await;
    println!(
        "  client-first echo: sent {} bytes, got {} back, byte-exact: {}",
        payload.len(),
        echoed.len(),
        echoed == payload
    );
    let (banner, _) = banner_exchange(mesh.target.client_listener("outbound_tcp_banner"), b"QUIT\r\n").await;
    println!(
        "  server-first: the app read the banner before writing: {:?}",
        String::from_utf8_lossy(&banner).trim_end()
    );
    let sent = b"plain TLS traffic";
    let back = echo_through(mesh.target.client_listener("outbound_tcp_plain"), sent).await;
    let received = mesh.backends.plain_tls_received.connections();
    println!(
        "  non-mesh TLS upstream: echo intact: {}, it received exactly the app's bytes (no magic): {}",
        back == sent,
        received.first().map(Vec::as_slice) == Some(&sent[..])
    );

    let client_log = mesh.target.wait_access_log(CLIENT_TCP_LOG, 3, LOG_WAIT);
    let server_log = mesh.target.wait_access_log(SERVER_TCP_LOG, 2, LOG_WAIT);
    if let Some(line) = client_log.iter().find(|l| l["listener"] == "outbound_tcp_echo") {
        println!(
            "  client Envoy access log, %FILTER_STATE(wasm.upstream_peer_json:PLAIN)%:\n    {}",
            pretty(&peer_struct(&line["upstream_peer"]))
        );
        println!(
            "  client Envoy access log, %FILTER_STATE(wasm.upstream_peer_id:PLAIN)%: {}",
            line["upstream_peer_id"]
        );
    }
    if let Some(line) = server_log.iter().find(|l| l["chain"] == "inbound-tcp-banner") {
        println!(
            "  server-first: the server sent no prefix ahead of the banner (the client's had not arrived), \
             so the banner reached the app exactly; the server logged peer_not_found: {}",
            line["peer_not_found"]
        );
    }
    if let Some(line) = client_log.iter().find(|l| l["listener"] == "outbound_tcp_banner") {
        println!(
            "  server-first: the client took the server from Istio's endpoint metadata istio.workload:\n    {}",
            pretty(&peer_struct(&line["upstream_peer"]))
        );
    }
    if let Some(line) = client_log.iter().find(|l| l["listener"] == "outbound_tcp_plain") {
        println!(
            "  client Envoy access log (non-mesh upstream, no exchange): peer from Istio's endpoint metadata \
             istio.workload:\n    {}",
            pretty(&peer_struct(&line["upstream_peer"]))
        );
    }
    counters(&mesh, &["wasmcustom.peer_exchange.client.", "wasmcustom.peer_exchange.server."]);

    section("peer-exchange-filter, HTTP form: x-envoy-peer-metadata headers between mesh peers only");
    let app = mesh.target.client_listener("outbound_http_exchange");
    let (client_lines, server_lines) =
        (mesh.target.access_log(CLIENT_HTTP_LOG).len(), mesh.target.access_log(SERVER_HTTP_LOG).len());
    let forged = [("x-envoy-peer-metadata", "Cg8KBE5BTUUSBxoFZm9yZ2U="), ("x-envoy-peer-metadata-id", "forged")];
    let requests = [
        ("HTTP/1.1 to a mesh upstream", http1_get(app, "1.1", "/mesh/exchange").await),
        ("h2c to a mesh upstream (HTTP/2 up)", h2c_get(app, "/h2-cluster/exchange").await),
        ("HTTP/1.1 to a non-mesh HTTPS server", http1_get(app, "1.1", "/optout/exchange").await),
        ("app-forged headers to a mesh upstream", http1_get_with(app, "1.1", "/mesh/forged", &forged).await),
    ];
    for (what, r) in &requests {
        let backend = serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default();
        let saw = |names: Vec<&String>| names.iter().any(|n| n.starts_with("x-envoy-peer-metadata"));
        let backend_saw = saw(backend["headers"].as_object().map(|h| h.keys().collect()).unwrap_or_default());
        println!(
            "  {what:<40} {} | exchange headers seen by the backend: {backend_saw}, by the app: {}",
            r.status,
            saw(r.headers.keys().collect())
        );
    }
    // Every request has a client line; the non-mesh one has no server line.
    let client_log = mesh.target.wait_access_log(CLIENT_HTTP_LOG, client_lines + 4, LOG_WAIT);
    let server_log = mesh.target.wait_access_log(SERVER_HTTP_LOG, server_lines + 3, LOG_WAIT);
    let peer = |line: &serde_json::Value, key: &str| {
        let p = peer_struct(&line[key]);
        match p.get("namespace") {
            Some(ns) => format!(
                "{}/{} ({}, verified {})",
                ns.as_str().unwrap_or(""),
                p["workload"].as_str().unwrap_or(""),
                p["source"],
                p["verified"]
            ),
            None => format!("peer_not_found={}", line["peer_not_found"]),
        }
    };
    for path in ["/mesh/exchange", "/h2-cluster/exchange", "/optout/exchange", "/mesh/forged"] {
        let client = client_log.iter().find(|l| l["path"] == path).map(|l| peer(l, "upstream_peer"));
        let server = server_log.iter().find(|l| l["path"] == path).map(|l| peer(l, "downstream_peer"));
        println!(
            "  {path:<20} client log upstream_peer: {:<40} server log downstream_peer: {}",
            client.unwrap_or_else(|| "-".into()),
            server.unwrap_or_else(|| "(never reached the server Envoy)".into())
        );
    }
    counters(&mesh, &["wasmcustom.peer_exchange.http_client.", "wasmcustom.peer_exchange.http_server."]);

    section("peer-exchange-filter, identity check: a mesh client that claims to be someone else");
    // The raw client holds spiffe://cluster.local/ns/raw-ns/sa/raw-client
    // and claims to be the payments API.
    let lie = wire::prefix(
        vec![
            ("NAME", V::Str("payments-api-0")),
            ("NAMESPACE", V::Str("payments")),
            ("WORKLOAD_NAME", V::Str("payments-api")),
            ("IDENTITY", V::Str("spiffe://cluster.local/ns/payments/sa/payments-api")),
        ],
        "sidecar~10.9.9.9~payments-api-0.payments~payments.svc.cluster.local",
    );
    let tcp_lines = mesh.target.access_log(SERVER_TCP_LOG).len();
    let mut tls = mesh.target.connect_inbound("echo.mesh.local", &["istio-peer-exchange"]).await;
    tls.write_all(&lie).await.expect("write");
    tls.write_all(b"hello").await.expect("write");
    tls.shutdown().await.expect("half-close");
    let mut echoed = Vec::new();
    tls.read_to_end(&mut echoed).await.ok();
    let echo_exact = wire::split_prefix(&echoed).is_some_and(|(_, _, rest)| rest == b"hello");
    println!("  claimed: payments/payments-api, spiffe://cluster.local/ns/payments/sa/payments-api");
    println!("  the echo after the exchange is byte-exact: {echo_exact}");
    if let Some(line) = mesh.target.wait_access_log(SERVER_TCP_LOG, tcp_lines + 1, LOG_WAIT).last() {
        println!(
            "  server Envoy stored (identity_check: enforce), certificate {}:\n    {}",
            line["peer_certificate"],
            pretty(&peer_struct(&line["downstream_peer"]))
        );
        println!("  %CEL(... verified == true ? namespace : 'unverified')%: {}", line["verified_peer_namespace"]);
    }
    counters(&mesh, &["wasmcustom.peer_exchange.server.peer_identity"]);

    section("Istio's standard metrics (istio_metrics), from each Envoy's /stats/prometheus");
    // Contexts are deleted, and histograms merged, just after the traffic.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (side, envoy) in [("client", &mesh.client), ("server", &mesh.server)] {
        let samples = integration_tests::stats::prometheus(envoy);
        let shown = ["istio_requests_total", "istio_tcp_connections_opened_total"];
        for sample in samples.iter().filter(|s| shown.contains(&s.name.as_str())) {
            let l = |k: &str| sample.labels.get(k).map_or("-", String::as_str);
            println!(
                "  {side}: {} {} reporter={} {}/{} -> {}/{} ({}) code={} flags={} mTLS={}",
                sample.name,
                sample.value,
                l("reporter"),
                l("source_workload_namespace"),
                l("source_workload"),
                l("destination_workload_namespace"),
                l("destination_workload"),
                l("destination_service"),
                l("response_code"),
                l("response_flags"),
                l("connection_security_policy"),
            );
        }
    }
    println!("  (every series has Istio's 25 labels; docs/observability.md, \"Istio's standard metrics\")");

    section("stopping both Envoys and the backends");
    drop(mesh);
    println!("  done");
}
