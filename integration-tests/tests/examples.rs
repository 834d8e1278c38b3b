//! The README's quick start, as a user runs it: `examples/make-certs.sh`,
//! then a real Envoy on each of `examples/inbound.yaml` and
//! `examples/outbound.yaml` from the repository root (the modules in
//! `dist/`), an app behind the inbound one, and traffic through both forms
//! of the exchange. The files are used as shipped; only the ports (so tests
//! can run side by side) and the certificate directory (so nothing is
//! written into the checkout) are substituted, each checked to occur where
//! the examples say. A real Prometheus then scrapes both Envoys and answers
//! the query docs/observability.md shows.

use std::time::{Duration, Instant};

use integration_tests::clients::{h2c_get, http1_get, http1_request, parse_http1, HttpResponse, STEP_TIMEOUT};
use integration_tests::envoy::Envoy;
use integration_tests::examples::Examples;
use integration_tests::paths::workspace_root;
use integration_tests::prometheus::Prometheus;
use integration_tests::LOG_WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The access-log lines (JSON, on Envoy's stdout) whose `log` is `name`,
/// waiting until there are `count` of them.
fn log_lines(envoy: &Envoy, name: &str, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let lines: Vec<serde_json::Value> = envoy
            .log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["log"] == name)
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stored peer a log line prints (`peer_json`'s text), as JSON.
fn peer(line: &serde_json::Value, field: &str) -> serde_json::Value {
    let text = line[field].as_str().unwrap_or_else(|| panic!("no {field} in {line}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{field} is not JSON ({e}): {line}"))
}

fn assert_peer(peer: &serde_json::Value, workload: &str, what: &str) {
    for (key, value) in [
        ("workload", workload),
        ("namespace", "shop"),
        ("app", workload),
        ("version", "v1"),
        ("service", workload),
        ("type", "deployment"),
        ("source", "exchange"),
    ] {
        assert_eq!(peer[key], value, "{what}: {key} in {peer}");
    }
    // make-certs.sh names each service account after its workload.
    assert_eq!(peer["identity"], format!("spiffe://cluster.local/ns/shop/sa/{workload}"), "{what}: {peer}");
    assert_eq!(peer["verified"], true, "{what}: the claim agrees with the certificate: {peer}");
}

fn assert_no_exchange_headers(response: &HttpResponse, what: &str) {
    let mut names: Vec<String> = response.headers.keys().cloned().collect();
    if let Ok(body) = serde_json::from_str::<serde_json::Value>(&response.body) {
        names.extend(body["headers"].as_object().into_iter().flat_map(|h| h.keys().cloned()));
    }
    let leaked: Vec<&String> = names.iter().filter(|n| n.starts_with("x-envoy-peer-metadata")).collect();
    assert!(leaked.is_empty(), "{what}: exchange headers reached an app: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_work_as_shipped_for_both_forms() {
    let examples = Examples::start();
    let (inbound, outbound, dir) = (&examples.inbound, &examples.outbound, examples.dir.path());
    let (http, tcp) = (examples.http(), examples.tcp());

    // HTTP/1.1 and h2c through the HTTP form (with alpn-filter's rule built in).
    let h1 = http1_get(http, "1.1", "/h1").await;
    let h2 = h2c_get(http, "/h2").await;
    // An HTTP request as plain bytes through the TCP form.
    let mut stream = tokio::net::TcpStream::connect(tcp).await.expect("connect to outbound_tcp");
    stream.write_all(http1_request("1.1", "/tcp", &[("connection", "close")]).as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut raw)).await.expect("TCP answer timed out").ok();
    // The backend closed; closing our half ends the connection, and Envoy
    // writes its TCP log lines.
    drop(stream);
    let over_tcp = parse_http1(&String::from_utf8_lossy(&raw));
    for (what, response) in [("HTTP/1.1", &h1), ("h2c", &h2), ("TCP", &over_tcp)] {
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert_no_exchange_headers(response, what);
    }

    let outbound_http = log_lines(outbound, "outbound_http", 2);
    let outbound_tcp = log_lines(outbound, "outbound_tcp", 1);
    let inbound_http = log_lines(inbound, "inbound_http", 2);
    let inbound_tcp = log_lines(inbound, "inbound_tcp", 1);
    assert_eq!((outbound_http.len(), outbound_tcp.len()), (2, 1), "outbound log: {}", outbound.log_tail(40));
    assert_eq!((inbound_http.len(), inbound_tcp.len()), (2, 1), "inbound log: {}", inbound.log_tail(40));
    for line in outbound_http.iter().chain(&outbound_tcp) {
        assert_peer(&peer(line, "upstream_peer"), "backend", &format!("outbound {line}"));
        assert_eq!(line["upstream_peer_id"], "sidecar~10.0.0.2~backend-7c8d9e-k3l5m.shop~shop.svc.cluster.local");
    }
    for line in inbound_http.iter().chain(&inbound_tcp) {
        assert_peer(&peer(line, "downstream_peer"), "frontend", &format!("inbound {line}"));
        assert_eq!(line["downstream_peer_id"], "sidecar~10.0.0.1~frontend-6d9f7c-x2x4p.shop~shop.svc.cluster.local");
    }
    // The ALPN rule offered the h2 list to the h2c request: the inbound Envoy
    // negotiated h2 and its codec spoke HTTP/2. The logs say so: the list
    // offered (outbound) and the chain it selected (inbound).
    let protocols: Vec<&str> = inbound_http.iter().filter_map(|l| l["protocol"].as_str()).collect();
    assert!(protocols.contains(&"HTTP/1.1") && protocols.contains(&"HTTP/2"), "inbound protocols {protocols:?}");
    let offered = |path: &str| outbound_http.iter().find(|l| l["path"] == path).map(|l| l["upstream_alpn"].clone());
    assert_eq!(offered("/h1"), Some("istio-http/1.1,istio,http/1.1".into()), "{outbound_http:?}");
    assert_eq!(offered("/h2"), Some("istio-h2,istio,h2".into()), "{outbound_http:?}");
    assert_eq!(offered("/h2"), Some("istio-h2,istio,h2".into()), "{outbound_http:?}");
    assert!(inbound_http.iter().all(|l| l["chain"] == "inbound_http"), "{inbound_http:?}");
    assert!(inbound_tcp.iter().all(|l| l["chain"] == "inbound_tcp"), "{inbound_tcp:?}");

    // The configuration checker finds nothing wrong in the running pair
    // (their live /config_dump) or in the files as shipped.
    for args in [
        vec![format!("http://{}", outbound.admin.addr), format!("http://{}", inbound.admin.addr)],
        vec!["examples/outbound.yaml".to_string(), "examples/inbound.yaml".to_string()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, report) = integration_tests::paths::run_mesh_doctor(&args);
        assert_eq!(code, 0, "mesh-doctor {args:?}:\n{report}");
        assert!(report.contains("0 error(s), 0 warning(s), 0 note(s)"), "mesh-doctor {args:?}:\n{report}");
    }

    // Istio's standard metrics, as a user's monitoring reads them: a real
    // Prometheus scrapes both Envoys, and observability.md's query, as
    // written there, answers with the frontend's requests to the backend.
    // The scrape configuration shipped beside the examples (only the admin
    // ports and the interval changed).
    let scrape = integration_tests::examples::substituted(
        &integration_tests::examples::read("prometheus.yml"),
        &[
            ("127.0.0.1:15000", outbound.admin.addr.to_string(), 1),
            ("127.0.0.1:15100", inbound.admin.addr.to_string(), 1),
            ("scrape_interval: 5s", "scrape_interval: 1s".into(), 1),
        ],
    );
    let prometheus = Prometheus::start_with(&scrape, dir).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("istio_requests_total").await.len() < 2 {
        assert!(Instant::now() < deadline, "no istio_requests_total scraped:\n{}", prometheus.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for _ in 0..3 {
        assert_eq!(http1_get(http, "1.1", "/after-first-scrape").await.status, 200);
    }
    // And a TCP connection, so the TCP counters move between scrapes too.
    let mut stream = tokio::net::TcpStream::connect(tcp).await.expect("connect to outbound_tcp");
    stream.write_all(http1_request("1.1", "/tcp-again", &[("connection", "close")]).as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut raw)).await.expect("TCP answer timed out").ok();
    drop(stream);
    let query = documented_query();
    let result = loop {
        let result = prometheus.query(&query).await;
        let value = |r: &serde_json::Value| r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if result.iter().any(|r| value(r) > 0.0) {
            break result;
        }
        assert!(Instant::now() < deadline, "{query} answered {result:?}:\n{}", prometheus.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let series: Vec<&serde_json::Value> = result.iter().map(|r| &r["metric"]).collect();
    assert!(
        series.iter().any(|m| m["source_workload"] == "frontend"
            && m["source_workload_namespace"] == "shop"
            && m["response_code"] == "200"),
        "{query}: {result:?}"
    );

    // What dashboards ask, as their documentation writes it: Kiali's
    // service graph (HTTP and TCP edges, grouped by source and destination
    // workload, namespace, canonical service and revision, service,
    // protocol, code, gRPC status and flags), and Istio's service and
    // workload dashboards (filtered by reporter and destination).
    let graph_by = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,\
                    source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,\
                    destination_service_name,destination_workload_namespace,destination_workload,\
                    destination_canonical_service,destination_canonical_revision,request_protocol,response_code,\
                    grpc_response_status,response_flags";
    let dashboards = [
        (
            "Kiali graph, HTTP",
            format!(
                "sum(rate(istio_requests_total{{reporter=\"destination\",source_workload_namespace!=\"unknown\",\
                 destination_service_namespace=\"shop\"}}[1m])) by ({graph_by}) > 0"
            ),
        ),
        (
            "Kiali graph, TCP",
            format!(
                "sum(rate(istio_tcp_sent_bytes_total{{reporter=\"source\",source_workload_namespace=\"shop\"}}[1m])) \
                 by ({graph_by}) > 0"
            ),
        ),
        (
            "Istio workload dashboard, inbound by source",
            "sum(irate(istio_requests_total{reporter=~\"destination\",destination_workload_namespace=~\"shop\",\
             destination_workload=~\"backend\"}[1m])) by (source_workload, source_workload_namespace)"
                .to_string(),
        ),
        (
            "Istio service dashboard, client success rate",
            "sum(irate(istio_requests_total{reporter=~\"source\",destination_canonical_service=~\"backend\",\
             response_code!~\"5.*\"}[1m])) by (source_workload)"
                .to_string(),
        ),
    ];
    for (what, query) in dashboards {
        let deadline = Instant::now() + Duration::from_secs(30);
        let result = loop {
            let result = prometheus.query(&query).await;
            if !result.is_empty() {
                break result;
            }
            assert!(Instant::now() < deadline, "{what}: {query} answered nothing:\n{}", prometheus.log_text());
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let m = &result[0]["metric"];
        match what {
            "Kiali graph, HTTP" | "Kiali graph, TCP" => {
                for (label, want) in [
                    ("source_workload", "frontend"),
                    ("source_workload_namespace", "shop"),
                    ("source_canonical_service", "frontend"),
                    ("source_canonical_revision", "v1"),
                    ("source_cluster", "Kubernetes"),
                    ("destination_workload", "backend"),
                    ("destination_workload_namespace", "shop"),
                    ("destination_canonical_service", "backend"),
                    ("destination_canonical_revision", "v1"),
                    ("destination_service_namespace", "shop"),
                    ("destination_cluster", "Kubernetes"),
                    ("response_flags", "-"),
                ] {
                    assert_eq!(m[label], want, "{what}: {label} in {result:?}");
                }
                let protocol = if what.ends_with("TCP") { "tcp" } else { "http" };
                assert_eq!(m["request_protocol"], protocol, "{what}: {result:?}");
            }
            _ => {
                assert_eq!(m["source_workload"], "frontend", "{what}: {result:?}");
            }
        }
    }
}

/// The PromQL query docs/observability.md shows (its `promql` block).
fn documented_query() -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/observability.md")).expect("observability.md");
    let start = doc.find("```promql\n").expect("observability.md has a promql block") + "```promql\n".len();
    let end = doc[start..].find("```").expect("the promql block ends") + start;
    doc[start..end].trim().to_string()
}
