//! End-to-end tests of Istio's standard metrics (`istio_metrics`): real
//! Envoys, real mTLS, our .wasm; each side's `/stats/prometheus` after known
//! traffic, every series checked against the labels native `istio_stats`
//! gives that traffic (`populatePeerInfo` in Envoy's
//! `contrib/istio/filters/http/istio_stats/`), and the cap on label sets.

use std::collections::BTreeMap;

use base64::Engine;
use integration_tests::clients::{echo_through, h2c_get, http1_get, http1_request, parse_http1, STEP_TIMEOUT};
use integration_tests::mesh::{with_istio_metrics_everywhere, Mesh, MeshOptions};
use integration_tests::pki::{CLIENT_IDENTITY, SERVER_IDENTITY};
use integration_tests::stats::{self, Sample};
use integration_tests::wire::{self, V};
use integration_tests::{pseudo_random_bytes, LOG_WAIT};
use peer_exchange::config::Role;
use peer_exchange::http::HttpCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP: &str = "outbound_http_exchange";
/// The `Host` every test client sends.
const HOST: &str = "app.local";

/// A mesh whose four exchange filters report Istio's metrics; `extra` is
/// merged into every configuration.
fn metrics_mesh(metrics: &str, extra: &str) -> Mesh {
    let merge = |config: String| {
        let mut value: serde_json::Value = serde_json::from_str(&config).expect("JSON");
        if let serde_json::Value::Object(extra) = serde_json::from_str(extra).expect("extra is JSON") {
            for (k, v) in extra {
                value[k] = v;
            }
        }
        value.to_string()
    };
    let mut options = with_istio_metrics_everywhere(MeshOptions::default(), metrics);
    // Histograms reach the scrape at Envoy's next stats flush.
    for vars in [&mut options.client_vars, &mut options.server_vars] {
        vars.insert("STATS_FLUSH_INTERVAL".into(), "0.2s".into());
    }
    Mesh::start_with(MeshOptions {
        server_exchange_config: merge(options.server_exchange_config.clone()),
        client_exchange_config: merge(options.client_exchange_config.clone()),
        server_http_exchange_config: merge(options.server_http_exchange_config.clone()),
        client_http_exchange_config: merge(options.client_http_exchange_config.clone()),
        ..options
    })
}

/// The Istio series of one scrape: (metric name, labels) → value, with the
/// histograms by their `_count` and `_sum`.
fn istio_series(envoy: &integration_tests::envoy::Admin) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    stats::prometheus(envoy)
        .into_iter()
        .filter(|s: &Sample| s.name.starts_with("istio_") && !s.name.ends_with("_bucket"))
        .map(|s| ((s.name, s.labels), s.value))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The client Envoy's own labels (its node: raw `LABELS`, as native reads
/// them — `app: client`, though the exchange sends `app.kubernetes.io/name`).
const CLIENT_AS_SOURCE: [(&str, &str); 9] = [
    ("reporter", "source"),
    ("source_workload", "client"),
    ("source_canonical_service", "client"),
    ("source_canonical_revision", "v2"),
    ("source_workload_namespace", "client-ns"),
    ("source_principal", CLIENT_IDENTITY),
    ("source_app", "client"),
    ("source_version", "v2"),
    ("source_cluster", "Kubernetes"),
];

/// The server, as the client learns it through the exchange — and as the
/// server reports itself (its node's raw labels are what it sends).
const SERVER_AS_DESTINATION: [(&str, &str); 9] = [
    ("destination_workload", "server"),
    ("destination_workload_namespace", "server-ns"),
    ("destination_principal", SERVER_IDENTITY),
    ("destination_app", "server"),
    ("destination_version", "v1"),
    ("destination_canonical_service", "server"),
    ("destination_canonical_revision", "v1"),
    ("destination_service_namespace", "server-ns"),
    ("destination_cluster", "Kubernetes"),
];

/// The client, as the server learns it: what the exchange sent (`app` from
/// `app.kubernetes.io/name`).
const CLIENT_AS_PEER: [(&str, &str); 8] = [
    ("source_workload", "client"),
    ("source_canonical_service", "client"),
    ("source_canonical_revision", "v2"),
    ("source_workload_namespace", "client-ns"),
    ("source_principal", CLIENT_IDENTITY),
    ("source_app", "client-app"),
    ("source_version", "v2"),
    ("source_cluster", "Kubernetes"),
];

fn http_labels(parts: &[&[(&str, &str)]], extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut all: Vec<(&str, &str)> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    all.extend_from_slice(extra);
    labels(&all)
}

/// Checks that `series` holds exactly `expected` (name, labels, value) for
/// the metric names listed, nothing more.
fn assert_series(
    side: &str,
    series: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    names: &[&str],
    expected: &[(&str, &BTreeMap<String, String>, f64)],
) {
    let got: Vec<_> = series.iter().filter(|((name, _), _)| names.contains(&name.as_str())).collect();
    for (name, want_labels, value) in expected {
        let found = series.get(&(name.to_string(), (*want_labels).clone()));
        assert_eq!(
            found,
            Some(value),
            "{side}: {name} with labels {want_labels:#?}\nthe scrape has:\n{:#?}",
            got.iter().filter(|((n, _), _)| n == name).collect::<Vec<_>>()
        );
    }
    assert_eq!(got.len(), expected.len(), "{side}: series of {names:?}: {got:#?}");
}

const HTTP_NAMES: [&str; 7] = [
    "istio_requests_total",
    "istio_request_duration_milliseconds_count",
    "istio_request_bytes_count",
    "istio_response_bytes_count",
    "istio_request_duration_milliseconds_sum",
    "istio_request_bytes_sum",
    "istio_response_bytes_sum",
];
const TCP_NAMES: [&str; 4] = [
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
];

/// The counts of one HTTP label set: requests and each histogram's count.
fn http_counts(set: &BTreeMap<String, String>, n: f64) -> Vec<(&'static str, &BTreeMap<String, String>, f64)> {
    HTTP_NAMES[..4].iter().map(|name| (*name, set, n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reporters_label_http_tcp_and_non_mesh_traffic_as_native_does() {
    let mesh = metrics_mesh("{}", "{}");
    let app = mesh.target.client_listener(APP);
    for version in ["1.1", "1.1"] {
        let response = http1_get(app, version, "/mesh/metrics").await;
        assert_eq!(response.status, 200, "{response:?}");
    }
    let response = h2c_get(app, "/mesh/metrics-h2").await;
    assert_eq!(response.status, 200, "{response:?}");
    // A plain TLS upstream, not in the mesh: no peer, no principal.
    let response = http1_get(app, "1.1", "/optout/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    let payload = pseudo_random_bytes(20_000, 29);
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_echo"), &payload).await;
    assert_eq!(echoed.len(), payload.len());
    // Each side's context is deleted after its access log line.
    mesh.target.wait_access_log(integration_tests::mesh::CLIENT_TCP_LOG, 1, LOG_WAIT);
    mesh.target.wait_access_log(integration_tests::mesh::SERVER_TCP_LOG, 1, LOG_WAIT);
    mesh.target.wait_access_log(integration_tests::mesh::CLIENT_HTTP_LOG, 4, LOG_WAIT);
    let ok =
        [("request_protocol", "http"), ("response_code", "200"), ("grpc_response_status", ""), ("response_flags", "-")];

    // The client (reporter "source").
    let client = wait_for_series(&mesh.client, "istio_tcp_connections_closed_total");
    let service = [("destination_service", HOST), ("destination_service_name", HOST)];
    let mesh_http = http_labels(
        &[&CLIENT_AS_SOURCE, &SERVER_AS_DESTINATION, &service, &ok],
        &[("connection_security_policy", "unknown")],
    );
    // No client certificate towards it either: no source principal.
    let mut unknown_principal = CLIENT_AS_SOURCE;
    unknown_principal[5] = ("source_principal", "unknown");
    let non_mesh = http_labels(
        &[&unknown_principal, &service, &ok],
        &[
            ("destination_workload", "unknown"),
            ("destination_workload_namespace", "unknown"),
            ("destination_principal", "unknown"),
            ("destination_app", "unknown"),
            ("destination_version", "unknown"),
            ("destination_canonical_service", "unknown"),
            ("destination_canonical_revision", "latest"),
            ("destination_service_namespace", "unknown"),
            ("destination_cluster", "unknown"),
            ("connection_security_policy", "unknown"),
        ],
    );
    let mut expected = http_counts(&mesh_http, 3.0);
    expected.extend(http_counts(&non_mesh, 1.0));
    assert_series("client", &client, &HTTP_NAMES[..4], &expected);
    let tcp = http_labels(
        &[&CLIENT_AS_SOURCE, &SERVER_AS_DESTINATION],
        &[
            ("destination_service", "unknown"),
            ("destination_service_name", "unknown"),
            ("request_protocol", "tcp"),
            ("response_flags", "-"),
            ("connection_security_policy", "unknown"),
        ],
    );
    let client_tcp = [
        ("istio_tcp_connections_opened_total", &tcp, 1.0),
        ("istio_tcp_connections_closed_total", &tcp, 1.0),
        // What the app sent and got back, through the plaintext listener.
        ("istio_tcp_sent_bytes_total", &tcp, payload.len() as f64),
        ("istio_tcp_received_bytes_total", &tcp, payload.len() as f64),
    ];
    assert_series("client", &client, &TCP_NAMES, &client_tcp);

    // The server (reporter "destination").
    let server = wait_for_series(&mesh.server, "istio_tcp_connections_closed_total");
    let server_http = http_labels(
        &[&[("reporter", "destination")], &CLIENT_AS_PEER, &SERVER_AS_DESTINATION, &ok],
        &[
            ("destination_service", HOST),
            ("destination_service_name", HOST),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    assert_series("server", &server, &HTTP_NAMES[..4], &http_counts(&server_http, 3.0));
    let server_tcp = http_labels(
        &[&[("reporter", "destination")], &CLIENT_AS_PEER, &SERVER_AS_DESTINATION],
        &[
            // No Host on a connection: native falls back to our canonical name.
            ("destination_service", "server"),
            ("destination_service_name", "server"),
            ("request_protocol", "tcp"),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    let opened = server.get(&("istio_tcp_connections_opened_total".into(), server_tcp.clone()));
    assert_eq!(opened, Some(&1.0), "server TCP opened: {server:#?}");
    // The app's bytes, as native's tcp_proxy meter counts them: not the
    // exchange's prefixes, which Envoy also counts on the connection.
    for metric in ["istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"] {
        let bytes = server.get(&(metric.into(), server_tcp.clone())).copied();
        assert_eq!(bytes, Some(payload.len() as f64), "server {metric}");
    }
    // Histograms hold sizes and durations that are plausible for the traffic.
    let sum = |name: &str| client.get(&(name.to_string(), mesh_http.clone())).copied().unwrap_or(-1.0);
    assert!(sum("istio_request_bytes_sum") > 3.0 * 20.0, "request bytes {}", sum("istio_request_bytes_sum"));
    assert!(sum("istio_response_bytes_sum") > 3.0 * 100.0, "response bytes {}", sum("istio_response_bytes_sum"));
    assert!(sum("istio_request_duration_milliseconds_sum") >= 0.0);
    for (envoy, role) in [(&mesh.client, Role::Client), (&mesh.server, Role::Server)] {
        assert_eq!(stats::http_exchange(envoy, role, HttpCounter::IstioMetricsOverflow), 0);
    }
}

/// Waits until `metric` appears in the Istio series (contexts are deleted
/// shortly after their log line) and the histograms are merged.
fn wait_for_series(
    envoy: &integration_tests::envoy::Admin,
    metric: &str,
) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    loop {
        let series = istio_series(envoy);
        // Histograms reach the scrape at Envoy's next flush: settled once
        // every request series' histogram has counted as many.
        let merged = series.iter().filter(|((name, _), _)| name == "istio_requests_total").all(|((_, labels), n)| {
            series.get(&("istio_request_duration_milliseconds_count".to_string(), labels.clone())) == Some(n)
        });
        let present = series.keys().any(|(name, _)| name == metric);
        if (present && merged) || std::time::Instant::now() > deadline {
            return series;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Both Envoys claim another workload in another namespace; with
/// `identity_check: annotate` the claim is stored, and the namespace
/// label comes from the certificate, as native prefers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_claim_names_the_workload_but_the_certificate_names_the_namespace() {
    let lie = r#"{"identity_check":"annotate","metadata":{"NAME":"payments-api-0","NAMESPACE":"payments","WORKLOAD_NAME":"payments-api","IDENTITY":"spiffe://cluster.local/ns/payments/sa/payments-api"}}"#;
    let mesh = metrics_mesh("{}", lie);
    let response = http1_get(mesh.target.client_listener(APP), "1.1", "/mesh/lie").await;
    assert_eq!(response.status, 200, "{response:?}");
    mesh.target.wait_access_log(integration_tests::mesh::CLIENT_HTTP_LOG, 1, LOG_WAIT);
    let server = wait_for_series(&mesh.server, "istio_requests_total");
    let (_, labels) = server.keys().find(|(name, _)| name == "istio_requests_total").expect("a request series").clone();
    assert_eq!(labels["source_workload"], "payments-api");
    assert_eq!(labels["source_workload_namespace"], "client-ns", "the certificate's namespace wins");
    assert_eq!(labels["source_principal"], CLIENT_IDENTITY);
    // Our own labels follow the configuration's `metadata`, as what we send does.
    assert_eq!(labels["destination_workload"], "payments-api");
    let client = wait_for_series(&mesh.client, "istio_requests_total");
    let (_, labels) = client.keys().find(|(name, _)| name == "istio_requests_total").expect("a request series").clone();
    assert_eq!(labels["destination_workload"], "payments-api");
    assert_eq!(labels["destination_workload_namespace"], "server-ns");
    assert_eq!(labels["destination_principal"], SERVER_IDENTITY);
}

/// One request to the server's HTTP chain from the raw client (a mesh
/// certificate, no Envoy of ours) whose `x-envoy-peer-metadata` claims
/// `claim` (a serialised Struct); the server must answer 200.
async fn claimed_request(target: &integration_tests::target::Target, claim: &[u8]) {
    let claim = base64::engine::general_purpose::STANDARD.encode(claim);
    let mut tls = target.connect_inbound_as(Some("raw-client"), "http.mesh.local", &["istio-http/1.1"]).await;
    let request = http1_request("1.1", "/raw", &[("x-envoy-peer-metadata", &claim)]);
    tls.write_all(request.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tls.read_to_end(&mut raw)).await.expect("timeout").ok();
    assert_eq!(parse_http1(&String::from_utf8_lossy(&raw)).status, 200);
}

/// A peer claiming a new workload on every request: the label sets stop at
/// the cap, the rest is counted, and Envoy's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_claimed_workloads_stay_within_the_cap() {
    const CAP: u64 = 50;
    let mesh = metrics_mesh(&format!(r#"{{"max_label_sets":{CAP}}}"#), "{}");
    let memory = || mesh.server.counter("server.memory_allocated");
    let batch = |from: usize| {
        let mesh = &mesh;
        async move {
            let mut tasks = Vec::new();
            for worker in 0..8 {
                let target = mesh.target.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (from + worker..from + 1500).step_by(8) {
                        let claim = wire::strukt(&[
                            ("NAME", V::Str("raw-client-1")),
                            ("NAMESPACE", V::Str("raw-ns")),
                            ("WORKLOAD_NAME", V::Str(&format!("workload-{i}"))),
                        ]);
                        claimed_request(&target, &claim).await;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("request task");
            }
        }
    };
    batch(0).await;
    let overflow = || stats::http_exchange(&mesh.server, Role::Server, HttpCounter::IstioMetricsOverflow);
    let settled = |count: u64| {
        let deadline = std::time::Instant::now() + LOG_WAIT;
        while overflow() + defined_sets(&mesh) < count && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    settled(1500);
    let after_first = memory();
    let sets = defined_sets(&mesh);
    // One table per worker VM (the harness runs two workers).
    assert!((CAP..=2 * CAP).contains(&sets), "{sets} label sets defined (cap {CAP} per worker)");
    assert_eq!(overflow() + sets, 1500, "every request is in a series or counted as overflow");
    batch(10_000).await;
    settled(3000);
    assert_eq!(defined_sets(&mesh), sets, "no label set defined past the cap");
    assert_eq!(overflow() + sets, 3000);
    let after_second = memory();
    let growth = after_second.saturating_sub(after_first);
    eprintln!(
        "label sets {sets} (cap {CAP} per worker), overflow {}, server heap {after_first} -> {after_second} bytes",
        overflow()
    );
    assert!(growth < 512 * 1024, "server heap grew {growth} bytes over 1500 more distinct workloads");
}

/// Distinct `istio_requests_total` label sets the server reports.
fn defined_sets(mesh: &Mesh) -> u64 {
    istio_series(&mesh.server).keys().filter(|(name, _)| name == "istio_requests_total").count() as u64
}

/// gRPC's status as both reporters label it: from the trailers of an
/// ordinary answer, from the headers of a Trailers-Only one (what gRPC
/// servers send for errors), as native's `getGrpcStatus` reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_comes_from_the_trailers_or_a_trailers_only_answers_headers() {
    use integration_tests::grpc;
    let mesh = metrics_mesh("{}", "{}");
    let app = mesh.target.client_listener(APP);
    let ok = grpc::call(app, "/h2-cluster/mesh.Echo/Call", b"ping", &[]).await;
    assert_eq!((ok.status, ok.grpc_status()), (200, Some("0")), "{ok:?}");
    assert_eq!(ok.body, grpc::frame(b"ping"));
    for _ in 0..2 {
        let denied = grpc::call(app, &format!("/h2-cluster{}7", grpc::STATUS_PATH), b"ping", &[]).await;
        assert_eq!((denied.status, denied.grpc_status()), (200, Some("7")), "{denied:?}");
        assert!(denied.trailers.is_empty() && denied.body.is_empty(), "Trailers-Only: {denied:?}");
    }
    mesh.target.wait_access_log(integration_tests::mesh::CLIENT_HTTP_LOG, 3, LOG_WAIT);
    mesh.target.wait_access_log(integration_tests::mesh::SERVER_HTTP_LOG, 3, LOG_WAIT);
    // Three messages each way on one call: Envoy's grpc_stats counts them.
    let three = grpc::call_with(app, "/h2-cluster/mesh.Echo/Stream", &[b"a", b"b", b"c"], &[]).await;
    assert_eq!(three.grpc_status(), Some("0"), "{three:?}");
    mesh.target.wait_access_log(integration_tests::mesh::CLIENT_HTTP_LOG, 4, LOG_WAIT);
    mesh.target.wait_access_log(integration_tests::mesh::SERVER_HTTP_LOG, 4, LOG_WAIT);
    for (side, envoy) in [("client", &mesh.client), ("server", &mesh.server)] {
        let series = wait_for_series(envoy, "istio_requests_total");
        let messages = |metric: &str| -> f64 {
            series
                .iter()
                .filter(|((name, l), _)| name == metric && l["grpc_response_status"] == "0")
                .map(|(_, v)| *v)
                .sum()
        };
        // The first call's one message each way, and the three.
        assert_eq!(messages("istio_request_messages_total"), 4.0, "{side}: {series:#?}");
        assert_eq!(messages("istio_response_messages_total"), 4.0, "{side}");
        let by_status: BTreeMap<String, f64> = series
            .iter()
            .filter(|((name, labels), _)| name == "istio_requests_total" && labels["request_protocol"] == "grpc")
            .map(|((_, labels), v)| (labels["grpc_response_status"].clone(), *v))
            .collect();
        assert_eq!(by_status, BTreeMap::from([("0".to_string(), 2.0), ("7".to_string(), 2.0)]), "{side}");
    }
}

/// Whatever a peer claims about itself — every control byte, the label
/// delimiters, very long and non-ASCII values, thousands of workloads — it
/// never makes a metric family of its own, and every request is either in
/// `istio_requests_total` or counted in `istio_metrics_overflow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_claim_makes_a_metric_family_and_every_request_is_counted_somewhere() {
    const CAP: u64 = 200;
    let mesh = metrics_mesh(&format!(r#"{{"max_label_sets":{CAP}}}"#), "{}");
    let mut claims: Vec<String> = (0u8..0x20).chain([0x7f]).map(|b| format!("w{}x{}", b, b as char)).collect();
    claims.extend(
        [
            "a;.;reporter=.=source",
            "b=.=c",
            ";.;istio_requests_total",
            "\n\nistio_requests_total{x=\"1\"} 99\n",
            "d.e.f",
            "ünïcödé-工作负载-🚀",
            "\u{202e}rtl",
            "\u{2028}line\u{2029}sep",
        ]
        .map(String::from),
    );
    claims.push("long-".repeat(2000));
    claims.extend((0..300).map(|i| format!("workload-{i}\n")));
    let total = claims.len() as u64;
    let mut tasks = Vec::new();
    for (worker, chunk) in claims.chunks(claims.len().div_ceil(8)).enumerate() {
        let (target, chunk) = (mesh.target.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for (i, workload) in chunk.iter().enumerate() {
                let claim = wire::strukt(&[
                    ("NAME", V::Str(&format!("pod-{worker}-{i}\u{0}"))),
                    ("NAMESPACE", V::Str("raw-ns")),
                    ("WORKLOAD_NAME", V::Str(workload)),
                    ("LABELS", V::Struct(vec![("app", V::Str(workload)), ("version", V::Str("v\r\n1"))])),
                ]);
                claimed_request(&target, &claim).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    let overflow = || stats::http_exchange(&mesh.server, Role::Server, HttpCounter::IstioMetricsOverflow);
    let counted = || -> u64 {
        istio_series(&mesh.server)
            .iter()
            .filter(|((name, _), _)| name == "istio_requests_total")
            .map(|(_, v)| *v as u64)
            .sum()
    };
    let deadline = std::time::Instant::now() + LOG_WAIT;
    while counted() + overflow() < total && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(counted() + overflow(), total, "every request in Istio's series or in istio_metrics_overflow");
    // The scrape: every metric name is Envoy's or one of Istio's.
    let istio = [
        "istio_requests_total",
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
        "istio_request_messages_total",
        "istio_response_messages_total",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ];
    for sample in stats::prometheus(&mesh.server) {
        let base = sample.name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        let ours = istio.contains(&base) || istio.contains(&sample.name.as_str());
        // Envoy's own, and our filters' counters (their `wasmcustom.` names).
        let known = ["envoy_", "peer_exchange_", "alpn_filter_"].iter().any(|p| sample.name.starts_with(p));
        assert!(ours || (known && !sample.name.contains("istio_requests")), "a metric family of its own: {sample:?}");
        assert!(!sample.name.contains("reporter") && !sample.name.contains("source_workload"), "{sample:?}");
        if ours {
            assert_eq!(sample.labels.get("reporter").map(String::as_str), Some("destination"), "{sample:?}");
            for (name, value) in &sample.labels {
                assert!(!value.chars().any(char::is_control), "{name}={value:?}");
            }
        }
    }
}

/// A long-lived connection (a database pool, a tunnel) shows its traffic
/// while open, every `tcp_reporting_ms`, as native's `tcp_reporting_duration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connections_bytes_are_reported_while_it_is_open() {
    let mesh = metrics_mesh(r#"{"tcp_reporting_ms":200}"#, "{}");
    let mut stream = tokio::net::TcpStream::connect(mesh.target.client_listener("outbound_tcp_echo")).await.unwrap();
    let bytes_so_far = |envoy: &integration_tests::envoy::Admin, metric: &str| -> f64 {
        istio_series(envoy).iter().filter(|((name, _), _)| name == metric).map(|(_, v)| *v).sum()
    };
    let mut sent = 0usize;
    for (round, size) in [(0u64, 10_000usize), (1, 5_000)] {
        let payload = pseudo_random_bytes(size, 40 + round);
        stream.write_all(&payload).await.unwrap();
        let mut echoed = vec![0u8; size];
        tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut echoed)).await.expect("echo").unwrap();
        assert_eq!(echoed, payload);
        sent += size;
        // The client's counters follow the app's bytes while the connection stays open.
        let deadline = std::time::Instant::now() + LOG_WAIT;
        while bytes_so_far(&mesh.client, "istio_tcp_received_bytes_total") < sent as f64 {
            assert!(std::time::Instant::now() < deadline, "round {round}: {:#?}", istio_series(&mesh.client));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(bytes_so_far(&mesh.client, "istio_tcp_received_bytes_total"), sent as f64, "round {round}");
        assert_eq!(bytes_so_far(&mesh.client, "istio_tcp_sent_bytes_total"), sent as f64, "round {round}");
        assert_eq!(bytes_so_far(&mesh.client, "istio_tcp_connections_closed_total"), 0.0, "still open");
        // And the server's: the app's bytes too, not the exchange's
        // prefixes (its own timer and stats flush: waited for separately).
        while bytes_so_far(&mesh.server, "istio_tcp_received_bytes_total") < sent as f64 {
            assert!(std::time::Instant::now() < deadline, "round {round}: {:#?}", istio_series(&mesh.server));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(bytes_so_far(&mesh.server, "istio_tcp_received_bytes_total"), sent as f64, "round {round}");
        assert_eq!(bytes_so_far(&mesh.server, "istio_tcp_sent_bytes_total"), sent as f64, "round {round}");
    }
    drop(stream);
    mesh.target.wait_access_log(integration_tests::mesh::CLIENT_TCP_LOG, 1, LOG_WAIT);
    let series = wait_for_series(&mesh.client, "istio_tcp_connections_closed_total");
    let total = |metric: &str| series.iter().filter(|((n, _), _)| n == metric).map(|(_, v)| *v).sum::<f64>();
    assert_eq!(total("istio_tcp_received_bytes_total"), sent as f64, "nothing counted twice at the close");
    assert_eq!(total("istio_tcp_connections_closed_total"), 1.0);
}

/// An HTTP/1.1 POST of `body` on a connection of its own; the status.
async fn post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(&[head.as_bytes(), body].concat()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut raw)).await.expect("response timed out").expect("read");
    parse_http1(&String::from_utf8_lossy(&raw)).status
}

/// The sizes each Envoy's filter recorded (its debug line per request).
fn recorded_sizes(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("in Istio's metrics, ").nth(1)?;
            let mut numbers = rest.split(' ').filter_map(|word| word.parse::<u64>().ok());
            Some((numbers.next()?, numbers.next()?))
        })
        .collect()
}

/// `istio_request_bytes` / `istio_response_bytes` are Envoy's own sizes of
/// each stream (`request.total_size` / `response.total_size`: the final
/// header maps' bytes plus the body Envoy counted, and the response
/// trailers'), checked request by request against Envoy's access-log
/// figures of the same stream, whose body counts are the bytes the app
/// sent; native records its wire-bytes meter, which no wasm property
/// exposes (docs/observability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_histograms_record_envoys_size_of_each_request_and_response() {
    let mesh = metrics_mesh("{}", "{}");
    let app = mesh.target.client_listener(APP);
    let bodies = [0usize, 1, 999, 70_001];
    for (i, len) in bodies.iter().enumerate() {
        let body = pseudo_random_bytes(*len, 60 + i as u64);
        assert_eq!(post(app, &format!("/mesh/sizes/{i}"), &body).await, 200, "POST of {len} bytes");
    }
    let response = h2c_get(app, "/mesh/sizes/h2").await;
    assert_eq!(response.status, 200, "{response:?}");
    let n = bodies.len() + 1;
    let number = |line: &serde_json::Value, key: &str| -> u64 {
        match &line[key] {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            serde_json::Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        }
    };
    for (side, log, envoy) in [
        ("client", integration_tests::mesh::CLIENT_HTTP_LOG, &mesh.client),
        ("server", integration_tests::mesh::SERVER_HTTP_LOG, &mesh.server),
    ] {
        let lines = mesh.target.wait_access_log(log, n, LOG_WAIT);
        // The bodies arrived whole: Envoy's count is the app's.
        for (i, len) in bodies.iter().enumerate() {
            let line = lines.iter().find(|l| l["path"] == format!("/mesh/sizes/{i}").as_str());
            assert_eq!(line.map(|l| number(l, "bytes_received")), Some(*len as u64), "{side} /mesh/sizes/{i}");
        }
        let mut expected: Vec<(u64, u64)> = lines
            .iter()
            .map(|l| {
                (
                    number(l, "request_headers_bytes") + number(l, "bytes_received"),
                    number(l, "response_headers_bytes")
                        + number(l, "response_trailers_bytes")
                        + number(l, "bytes_sent"),
                )
            })
            .collect();
        // The filter's line is written in the log phase, with the access log's.
        let deadline = std::time::Instant::now() + LOG_WAIT;
        let mut recorded = recorded_sizes(&envoy.log());
        while recorded.len() < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            recorded = recorded_sizes(&envoy.log());
        }
        expected.sort_unstable();
        recorded.sort_unstable();
        assert_eq!(recorded, expected, "{side}: recorded sizes against Envoy's");
        // And they reached the histograms (whose sums Envoy keeps to its
        // buckets' precision: ~1 %).
        let series = wait_for_series(envoy, "istio_request_bytes_count");
        let total = |metric: &str| series.iter().filter(|((m, _), _)| m == metric).map(|(_, v)| *v).sum::<f64>();
        assert_eq!(total("istio_request_bytes_count"), n as f64, "{side}");
        for (metric, exact) in [
            ("istio_request_bytes_sum", expected.iter().map(|e| e.0).sum::<u64>()),
            ("istio_response_bytes_sum", expected.iter().map(|e| e.1).sum::<u64>()),
        ] {
            let sum = total(metric);
            assert!((sum - exact as f64).abs() <= 0.02 * exact as f64, "{side} {metric}: {sum} against {exact}");
        }
    }
}
