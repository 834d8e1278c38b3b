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

/// alpn-filter's debug line (`HTTP11 (Default) -> HTTP11 -> ALPN <list> (list
/// from PluginConfig)`) in words.
fn in_words(decision: &str) -> String {
    fn protocol(p: &str) -> &str {
        match p {
            "HTTP11" => "HTTP/1.1",
            "HTTP2" => "HTTP/2",
            "USE_DOWNSTREAM" => "whatever the app speaks",
            "AUTO" => "HTTP/2 first",
            other => other,
        }
    }
    fn who(s: &str) -> &str {
        match s {
            "(Default)" => "by default",
            "(ClusterMetadata)" => "says its metadata",
            "(ClusterRule)" => "says a rule in the plugin configuration",
            other => other,
        }
    }
    if let Some(reason) = decision.strip_prefix("ALPN left alone: ") {
        return match reason {
            "OptOut" => "ALPN left alone: the cluster opted out (istio.alpn_override: \"false\")".into(),
            other => format!("ALPN left alone ({other})"),
        };
    }
    let parts: Vec<&str> = decision.split(" -> ").collect();
    match parts.as_slice() {
        [policy, upstream, alpn] => {
            let mut policy = policy.split(' ');
            let (speaks, declared) = (policy.next().unwrap_or(""), policy.next().unwrap_or(""));
            let (list, from) = alpn.trim_start_matches("ALPN ").split_once(" (list from ").unwrap_or((alpn, ""));
            let from = match from.trim_end_matches(')') {
                "ClusterMetadata" => "the cluster's own list",
                _ => "Istio's list",
            };
            format!(
                "the cluster speaks {} ({}), so {} goes up: offers {list} ({from})",
                protocol(speaks),
                who(declared),
                protocol(upstream)
            )
        }
        _ => decision.to_string(),
    }
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
    println!("  {what}: HTTP {} through cluster {}", r.status, r.header("x-client-cluster"));
    println!("      {}", in_words(decision));
    println!("      reached {reached}");
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
            println!("  {side} Envoy's counters (admin /stats, each a decision the filter made):");
            for stat in stats {
                println!("      {stat}");
            }
        }
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default().replace('\n', "\n    ")
}

const INTRO: &str = "\
In a service mesh every workload gets a proxy beside it (a \"sidecar\"): the
app talks plaintext to its own proxy, and proxies talk mutual TLS (mTLS: both
sides show a certificate) to each other. Istio's proxies learn early who is at
the other end — the peer's workload, namespace, app and version — by two
exchanges this project reimplements for a stock Envoy:

  alpn-filter            tells the receiving proxy which HTTP version is coming, in
                         the TLS handshake's ALPN list (the protocols a client
                         offers), so it picks the right filter chain without guessing;
  peer-exchange-filter   each proxy sends its workload's metadata: on a TCP
                         connection as a short prefix (ALPN istio-peer-exchange), on
                         HTTP in x-envoy-peer-metadata headers; the other proxy reads
                         and removes it, so the apps never see it.

This demo runs two Envoys on this machine: a client Envoy (the calling
workload's outbound proxy, client-ns/client) and a server Envoy (the called
workload's inbound proxy, server-ns/server), with a fresh certificate
authority, backend apps behind the server, and the real .wasm filters.";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("{INTRO}");
    section("starting the two Envoys");
    // Istio's standard metrics on in all four exchange filters.
    let mesh = Mesh::start_with(with_istio_metrics_everywhere(MeshOptions::default(), "{}"));
    let pid = |p: Option<u32>| p.map_or_else(|| "-".into(), |p| p.to_string());
    println!(
        "  server Envoy (process {}) takes mTLS connections on {}",
        pid(mesh.server.pid()),
        mesh.target.server_inbound()
    );
    println!(
        "  client Envoy (process {}) takes the app's plaintext HTTP on {}",
        pid(mesh.client.pid()),
        mesh.target.client_listener("outbound_http")
    );

    section("1. alpn-filter: the ALPN list the client offers picks the server's filter chain");
    println!(
        "  For each request the filter finds which HTTP version the route's cluster speaks upstream, and\n  \
         offers Istio's list for it; the server Envoy selects a chain by the first token it knows."
    );
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
        "  HTTP/1.1, the same non-mesh server without the opt-out: HTTP {}\n      \
         it only speaks h2 and refuses Istio's list: why non-mesh TLS clusters need the opt-out",
        r.status
    );
    counters(&mesh, &["wasmcustom.alpn_filter."]);

    section("2. peer-exchange-filter over TCP: a prefix on each direction's first bytes");
    let payload = pseudo_random_bytes(1 << 20, 42);
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_echo"), &payload).await;
    let exact = |yes: bool| if yes { "yes" } else { "NO" };
    println!(
        "  an app that writes first (an echo service): sent {} bytes, got {} back, byte for byte: {}",
        payload.len(),
        echoed.len(),
        exact(echoed == payload)
    );
    let (banner, _) = banner_exchange(mesh.target.client_listener("outbound_tcp_banner"), b"QUIT\r\n").await;
    println!(
        "  a server that writes first (like SMTP or MySQL): the app read the greeting exactly: {:?}",
        String::from_utf8_lossy(&banner).trim_end()
    );
    let sent = b"plain TLS traffic";
    let back = echo_through(mesh.target.client_listener("outbound_tcp_plain"), sent).await;
    let received = mesh.backends.plain_tls_received.connections();
    println!(
        "  a TLS server outside the mesh: the echo came back intact: {}; it received only the app's bytes \
         (no prefix): {}",
        exact(back == sent),
        exact(received.first().map(Vec::as_slice) == Some(&sent[..]))
    );

    let client_log = mesh.target.wait_access_log(CLIENT_TCP_LOG, 3, LOG_WAIT);
    let server_log = mesh.target.wait_access_log(SERVER_TCP_LOG, 2, LOG_WAIT);
    if let Some(line) = client_log.iter().find(|l| l["listener"] == "outbound_tcp_echo") {
        println!(
            "  what the client Envoy learned about the echo service's server (its access log prints it with\n  \
             %FILTER_STATE(wasm.upstream_peer_json:PLAIN)%; `verified`: the claim agrees with the certificate):\n    {}",
            pretty(&peer_struct(&line["upstream_peer"]))
        );
        println!(
            "  and the server's node id (%FILTER_STATE(wasm.upstream_peer_id:PLAIN)%): {}",
            line["upstream_peer_id"]
        );
    }
    if let Some(line) = server_log.iter().find(|l| l["chain"] == "inbound-tcp-banner") {
        println!(
            "  the server that writes first: its Envoy sent no prefix ahead of the greeting (the client's had not\n  \
             arrived; a client without the exchange must read the greeting exactly), so neither side learned the\n  \
             other by the exchange; the server logged peer_not_found: {}",
            line["peer_not_found"]
        );
    }
    if let Some(line) = client_log.iter().find(|l| l["listener"] == "outbound_tcp_banner") {
        println!(
            "  instead the client took the server from the endpoint's metadata (`istio.workload`, which Istio's\n  \
             control plane puts on every endpoint):\n    {}",
            pretty(&peer_struct(&line["upstream_peer"]))
        );
    }
    if let Some(line) = client_log.iter().find(|l| l["listener"] == "outbound_tcp_plain") {
        println!(
            "  the server outside the mesh, from its endpoint's `istio.workload` too (no exchange with it):\n    {}",
            pretty(&peer_struct(&line["upstream_peer"]))
        );
    }
    counters(&mesh, &["wasmcustom.peer_exchange.client.", "wasmcustom.peer_exchange.server."]);

    section("3. peer-exchange-filter over HTTP: x-envoy-peer-metadata headers, between mesh proxies only");
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
            "  {what}: HTTP {}; exchange headers reached the backend app: {}, the calling app: {}",
            r.status,
            if backend_saw { "YES" } else { "no" },
            if saw(r.headers.keys().collect()) { "YES" } else { "no" }
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
    println!("  what each side's access log recorded (namespace/workload, how it was learned):");
    for path in ["/mesh/exchange", "/h2-cluster/exchange", "/optout/exchange", "/mesh/forged"] {
        let client = client_log.iter().find(|l| l["path"] == path).map(|l| peer(l, "upstream_peer"));
        let server = server_log.iter().find(|l| l["path"] == path).map(|l| peer(l, "downstream_peer"));
        println!(
            "      {path:<20} client learned: {:<42} server learned: {}",
            client.unwrap_or_else(|| "-".into()),
            server.unwrap_or_else(|| "(the request went to the non-mesh server)".into())
        );
    }
    println!("  (the forged request's headers were the calling app's own: removed before they left its proxy)");
    counters(&mesh, &["wasmcustom.peer_exchange.http_client.", "wasmcustom.peer_exchange.http_server."]);

    section("4. the identity check: a mesh client that claims to be someone else");
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
    println!("  a client whose certificate says raw-ns/raw-client sends a prefix claiming payments/payments-api");
    println!("  its data after the prefix came back exactly: {}", if echo_exact { "yes" } else { "NO" });
    if let Some(line) = mesh.target.wait_access_log(SERVER_TCP_LOG, tcp_lines + 1, LOG_WAIT).last() {
        println!(
            "  the server Envoy stored only what the certificate {} proves (identity_check: enforce):\n    {}",
            line["peer_certificate"],
            pretty(&peer_struct(&line["downstream_peer"]))
        );
        println!(
            "  a policy can rely on that: %CEL(... verified == true ? namespace : 'unverified')% printed {}",
            line["verified_peer_namespace"]
        );
    }
    counters(&mesh, &["wasmcustom.peer_exchange.server.peer_identity"]);

    section("5. Istio's standard metrics, labelled with what the exchange learned");
    println!(
        "  Each Envoy's /stats/prometheus, as Prometheus scrapes it: the client reports as the source of each\n  \
         request or connection, the server as its destination, under Istio's names and labels."
    );
    // Contexts are deleted, and histograms merged, just after the traffic.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (side, envoy) in [("client", &mesh.client), ("server", &mesh.server)] {
        let samples = integration_tests::stats::prometheus(envoy);
        let shown = ["istio_requests_total", "istio_tcp_connections_opened_total"];
        for sample in samples.iter().filter(|s| shown.contains(&s.name.as_str())) {
            let l = |k: &str| sample.labels.get(k).map_or("-", String::as_str);
            let one = sample.value == 1.0;
            let what = match (sample.name == "istio_requests_total", one) {
                (true, true) => "request",
                (true, false) => "requests",
                (false, true) => "TCP connection",
                (false, false) => "TCP connections",
            };
            let status = match l("response_code") {
                "-" | "" => String::new(),
                code => format!(", status {code}"),
            };
            let security = match l("connection_security_policy") {
                "mutual_tls" => "over mutual TLS",
                "none" => "in plaintext",
                _ => "(a client cannot tell the connection's security, as Istio's own filters)",
            };
            println!(
                "  {side} ({}): {} {what} from {}/{} to {}/{} (service {}){status} {security}",
                l("reporter"),
                sample.value,
                l("source_workload_namespace"),
                l("source_workload"),
                l("destination_workload_namespace"),
                l("destination_workload"),
                l("destination_service"),
            );
        }
    }
    println!(
        "  `unknown` is Istio's word for a peer not learned: the server counts every request that reached it,\n  \
         including section 1's (that client listener runs alpn-filter alone, so only the certificate's namespace\n  \
         is known), and the client counts only what went through its exchange filter, including the request to\n  \
         the server outside the mesh. Every series carries Istio's 25 labels (docs/observability.md)."
    );

    section("stopping both Envoys and the backends");
    drop(mesh);
    println!(
        "  done. To run the filters in an Envoy of your own, start from examples/ (README, quick start), and\n  \
         check your configuration with mesh-doctor."
    );
}
