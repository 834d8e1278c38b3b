//! Istio's standard metrics through the glue: what each form records at a
//! request's or connection's end, the series' names, the cap, and nothing
//! at all when `istio_metrics` is off.

use std::collections::BTreeMap;

use proto::prost_types::value::Kind;
use wasm_host::fake::{self, FakeHost, DOWNSTREAM_DATA, REQUEST_HEADERS, RESPONSE_HEADERS};
use wasm_host::plugin::Stream;

use super::*;
use filter_common::istio::PEER_EXCHANGE_NAMESPACE as CLUSTER_NAMESPACE;
use peer_exchange::headers::{ID_HEADER, METADATA_HEADER};

fn number(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// The inbound Envoy's HTTP form, a request from `CLIENT` finished with a
/// 200 after 7 ms; Envoy's sizes of it: 321 bytes received, 55 sent.
fn http_server(config: &str) -> FakeHost {
    let mut host = envoy(&SERVER, peer_exchange::config::HTTP_ROOT_ID, config);
    host.property("connection.uri_san_peer_certificate", CLIENT.spiffe())
        .property("connection.uri_san_local_certificate", SERVER.spiffe())
        .property("xds.cluster_name", "inbound_app")
        .property("response.code", number(200))
        .property("response.flags", number(0))
        .property("request.duration", number(7_400_000))
        .property("request.total_size", number(321))
        .property("response.total_size", number(55));
    host
}

fn headers(map: u32, pairs: &[(&str, &str)]) {
    let pairs = pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
    fake::with(|h| h.headers.insert(map, pairs));
}

/// One request from `CLIENT` through the server role, logged and deleted at its end.
fn serve_one(plugin: &Rc<PeerPlugin>, context_id: u32, metadata: &str) {
    let mut request = stream(plugin, context_id);
    headers(REQUEST_HEADERS, &[(":authority", "app.local"), (METADATA_HEADER, metadata), (ID_HEADER, "client-pod-id")]);
    request.on_request_headers();
    headers(RESPONSE_HEADERS, &[(":status", "200")]);
    request.on_response_headers();
    request.on_log();
    request.on_delete();
}

/// A TCP client whose cluster is marked as a mesh upstream and whose
/// upstream presents the server's mesh identity; Envoy's byte counts so far.
fn tcp_mesh_client(config: &str, received: u64, sent: u64) -> FakeHost {
    let mut host = envoy(&CLIENT, "peer_exchange", config);
    host.property("upstream.tls_version", "TLSv1.3")
        .property("upstream.uri_san_peer_certificate", SERVER.spiffe())
        .property("upstream.address", "10.0.0.2:15443")
        .property("xds.cluster_name", "mesh")
        .property("xds.cluster_metadata", metadata(&[(CLUSTER_NAMESPACE, "enabled", Kind::BoolValue(true))]))
        .property("request.total_size", number(received))
        .property("response.total_size", number(sent));
    host
}

/// A TCP client connection's exchange: the app's first bytes go out with
/// our prefix, the server answers with its own.
fn client_exchange(connection: &mut PeerContext) {
    fake::with(|h| h.buffers.insert(DOWNSTREAM_DATA, b"hello".to_vec()));
    connection.on_downstream_data(5, false);
    let answer = [SERVER.prefix(), b"world".to_vec()].concat();
    let size = answer.len();
    fake::with(|h| h.buffers.insert(wasm_host::fake::UPSTREAM_DATA, answer));
    connection.on_upstream_data(size, false);
}

/// The metrics defined, as (metric name, label set).
fn defined() -> Vec<(String, String)> {
    fake::with(|h| {
        h.called("define_metric ")
            .iter()
            .filter_map(|c| c.strip_prefix("define_metric "))
            .filter(|name| name.starts_with("reporter="))
            .map(|name| {
                // The label set keeps its last `;.;`: the name is labels + metric.
                let split = name.rfind(";.;").map_or(0, |i| i + 3);
                (name[split..].to_string(), name[..split].to_string())
            })
            .collect()
    })
}

#[test]
fn a_finished_request_counts_once_and_records_its_duration_and_sizes() {
    let plugin = configure(http_server(r#"{"role":"server","istio_metrics":{}}"#)).expect("configured");
    serve_one(&plugin, 2, &CLIENT.header());
    serve_one(&plugin, 3, &CLIENT.header());
    let defined = defined();
    let metrics: Vec<&str> = defined.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        metrics,
        ["istio_requests_total", "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"],
        "one label set, defined once for both requests"
    );
    let labels = &defined[0].1;
    for label in [
        "reporter=.=destination",
        "source_workload=.=client-pod",
        "source_workload_namespace=.=client-ns",
        "destination_principal=.=spiffe://cluster.local/ns/server-ns/sa/server-pod",
        "destination_service=.=app.local",
        "response_code=.=200",
        "connection_security_policy=.=mutual_tls",
    ] {
        assert!(labels.contains(&format!("{label};.;")), "{label} in {labels}");
    }
    let name = |metric: &str| format!("{labels}{metric}");
    fake::with(|h| {
        assert_eq!(h.counter(&name("istio_requests_total")), Some(2));
        let records = h.called("record_metric ");
        let of =
            |metric: &str| records.iter().filter(|r| r.starts_with(&format!("record_metric {}", name(metric)))).count();
        assert_eq!((of("istio_request_duration_milliseconds"), of("istio_request_bytes")), (2, 2));
        // 7.4 ms as whole milliseconds.
        assert!(records.iter().any(|r| r.ends_with("istio_request_duration_milliseconds 7")), "{records:?}");
    });
    // The sizes are Envoy's, read in the log phase.
    fake::with(|h| {
        assert_eq!(h.counter(&name("istio_request_bytes")), Some(2 * 321));
        assert_eq!(h.counter(&name("istio_response_bytes")), Some(2 * 55));
    });
}

#[test]
fn label_sets_past_the_cap_are_counted_not_defined() {
    let plugin =
        configure(http_server(r#"{"role":"server","istio_metrics":{"max_label_sets":1}}"#)).expect("configured");
    serve_one(&plugin, 2, &CLIENT.header());
    serve_one(&plugin, 3, &SERVER.header());
    serve_one(&plugin, 4, &CLIENT.header());
    assert_eq!(defined().len(), 4, "only the first label set's four metrics");
    fake::with(|h| {
        let requests: i64 =
            h.counters().iter().filter(|(n, _)| n.ends_with(";.;istio_requests_total")).map(|(_, v)| v).sum();
        assert_eq!(requests, 2);
    });
    assert_eq!(
        counted("peer_exchange.http_server.").iter().find(|(n, _)| n == "istio_metrics_overflow").map(|(_, v)| *v),
        Some(1)
    );
}

#[test]
fn without_istio_metrics_a_request_end_reads_and_defines_nothing() {
    let plugin = configure(http_server(r#"{"role":"server"}"#)).expect("configured");
    fake::with(|h| h.calls.clear());
    serve_one(&plugin, 2, &CLIENT.header());
    fake::with(|h| {
        assert!(h.called("define_metric").is_empty());
        assert!(h.called("record_metric").is_empty());
        let reads = h.called("get_property");
        assert!(!reads.iter().any(|r| r.contains("response") || r.contains("duration")), "{reads:?}");
    });
}

#[test]
fn a_connection_opens_when_its_peer_is_known_and_closes_with_its_bytes() {
    let host = tcp_mesh_client(r#"{"role":"client","exchange_timeout_ms":1000,"istio_metrics":{}}"#, 11, 22);
    let plugin = configure(host).expect("configured");
    let mut connection = stream(&plugin, 2);
    client_exchange(&mut connection);
    let defined = defined();
    let labels = defined.first().map(|(_, l)| l.clone()).unwrap_or_default();
    assert!(labels.contains("destination_workload=.=server-pod;.;"), "{labels}");
    assert!(labels.contains("request_protocol=.=tcp;.;") && !labels.contains("response_code"), "{labels}");
    let name = |metric: &str| format!("{labels}{metric}");
    fake::with(|h| {
        assert_eq!(h.counter(&name("istio_tcp_connections_opened_total")), Some(1));
        assert_eq!(h.counter(&name("istio_tcp_connections_closed_total")), Some(0));
    });
    connection.on_delete();
    fake::with(|h| {
        assert_eq!(h.counter(&name("istio_tcp_connections_closed_total")), Some(1));
        assert_eq!(h.counter(&name("istio_tcp_sent_bytes_total")), Some(22));
        assert_eq!(h.counter(&name("istio_tcp_received_bytes_total")), Some(11));
        assert_eq!(h.counter(&name("istio_tcp_connections_opened_total")), Some(1), "opened once");
    });
}

#[test]
fn an_open_connections_bytes_are_reported_every_period_and_the_rest_at_its_close() {
    let config = r#"{"role":"client","exchange_timeout_ms":1000,"istio_metrics":{"tcp_reporting_ms":5000}}"#;
    let host = tcp_mesh_client(config, 100, 40);
    let plugin = configure(host).expect("configured");
    let PeerPlugin::Tcp(shared) = &*plugin else { panic!("TCP form") };
    let mut connection = stream(&plugin, 2);
    client_exchange(&mut connection);
    let labels = defined().first().map(|(_, l)| l.clone()).unwrap_or_default();
    let count = |metric: &str| fake::with(|h| h.counter(&format!("{labels}{metric}")));
    let at = |ms: u64| {
        fake::with(|h| h.now_nanos = ms * 1_000_000);
        shared.on_tick();
    };
    at(1_000);
    assert_eq!(count("istio_tcp_received_bytes_total"), Some(0), "not before the period");
    at(5_000);
    assert_eq!(count("istio_tcp_received_bytes_total"), Some(100), "while open");
    assert_eq!(count("istio_tcp_sent_bytes_total"), Some(40));
    fake::with(|h| {
        h.property("request.total_size", number(250));
    });
    at(9_000);
    assert_eq!(count("istio_tcp_received_bytes_total"), Some(100), "one report per period");
    at(10_000);
    assert_eq!(count("istio_tcp_received_bytes_total"), Some(250), "only the difference is added");
    fake::with(|h| {
        h.property("request.total_size", number(300));
    });
    connection.on_delete();
    assert_eq!(count("istio_tcp_received_bytes_total"), Some(300), "the rest at the close");
    assert_eq!(count("istio_tcp_sent_bytes_total"), Some(40));
    assert_eq!(count("istio_tcp_connections_closed_total"), Some(1));
    at(20_000);
    assert_eq!(count("istio_tcp_received_bytes_total"), Some(300), "a closed connection is not reported again");
}

#[test]
fn a_connection_an_http_connection_manager_terminates_has_no_tcp_series() {
    let config = r#"{"role":"server","exchange_timeout_ms":1000,"istio_metrics":{}}"#;
    let mut host = envoy(&SERVER, "peer_exchange", config);
    // No `upstream.address`: the filter sits in front of an HCM.
    host.property("connection.tls_version", "TLSv1.3").property("connection.uri_san_peer_certificate", CLIENT.spiffe());
    let plugin = configure(host).expect("configured");
    let mut connection = stream(&plugin, 2);
    fake::with(|h| h.buffers.insert(DOWNSTREAM_DATA, b"GET / HTTP/1.1\r\n\r\n".to_vec()));
    connection.on_downstream_data(18, false);
    connection.on_delete();
    assert!(defined().is_empty(), "{:?}", defined());
    assert!(counted("peer_exchange.server.").iter().all(|(n, _)| n != "istio_metrics_overflow"));
}

#[test]
fn a_configuration_replaced_in_the_same_vm_reuses_the_label_sets_ids() {
    let config = r#"{"role":"server","istio_metrics":{}}"#;
    let first = configure(http_server(config)).expect("configured");
    serve_one(&first, 2, &CLIENT.header());
    // xDS replaces the configuration: a new root in the same VM.
    let size = config.len();
    let second = PeerPlugin::configure(size).map(Rc::new).expect("configured again");
    serve_one(&second, 3, &CLIENT.header());
    assert_eq!(defined().len(), 4, "the one label set's four metrics, defined once: {:?}", defined());
    let requests = fake::with(|h| {
        h.counters().iter().filter(|(n, _)| n.ends_with(";.;istio_requests_total")).map(|(_, v)| *v).sum::<i64>()
    });
    assert_eq!(requests, 2);
}

#[test]
fn a_grpc_requests_status_is_envoys_in_the_log_phase_and_nothing_else_reads_it() {
    let plugin = configure(http_server(r#"{"role":"server","istio_metrics":{}}"#)).expect("configured");
    // Envoy's `response.grpc_status` (trailers, else a Trailers-Only answer's
    // headers, else the HTTP code mapped); `None`: a request that is not gRPC.
    for (context_id, status) in [(2, Some(7)), (3, Some(0)), (4, None)] {
        let mut request = stream(&plugin, context_id);
        let content_type = if status.is_some() { "application/grpc" } else { "text/plain" };
        headers(
            REQUEST_HEADERS,
            &[(":authority", "app.local"), ("content-type", content_type), (METADATA_HEADER, &CLIENT.header())],
        );
        request.on_request_headers();
        headers(RESPONSE_HEADERS, &[(":status", "200")]);
        request.on_response_headers();
        fake::with(|h| {
            h.property("response.grpc_status", number(status.unwrap_or(2)));
        });
        request.on_log();
        request.on_delete();
    }
    let statuses: Vec<(String, String)> = defined()
        .iter()
        .filter(|(m, _)| m == "istio_requests_total")
        .filter_map(|(_, labels)| {
            let label = |name: &str| labels.split(&format!("{name}=.=")).nth(1)?.split(";.;").next().map(String::from);
            Some((label("request_protocol")?, label("grpc_response_status")?))
        })
        .collect();
    let expected = [("grpc", "7"), ("grpc", "0"), ("http", "")].map(|(p, s)| (p.to_string(), s.to_string()));
    assert_eq!(statuses, expected);
}

#[test]
fn a_servers_byte_counts_leave_out_both_prefixes_as_natives_tcp_proxy_does() {
    let config = r#"{"role":"server","exchange_timeout_ms":1000,"istio_metrics":{"tcp_reporting_ms":5000}}"#;
    let mut host = envoy(&SERVER, "peer_exchange", config);
    // Envoy's counts on the downstream connection: the client's prefix and
    // 5 bytes of the app's in, our prefix and 7 bytes of the app's out.
    let (theirs, ours) = (CLIENT.prefix().len() as u64, SERVER.prefix().len() as u64);
    host.property("connection.tls_version", "TLSv1.3")
        .property("connection.uri_san_peer_certificate", CLIENT.spiffe())
        .property("upstream.address", "127.0.0.1:8080")
        .property("request.total_size", number(theirs + 5))
        .property("response.total_size", number(ours + 7));
    let plugin = configure(host).expect("configured");
    let PeerPlugin::Tcp(shared) = &*plugin else { panic!("TCP form") };
    let mut connection = stream(&plugin, 2);
    let incoming = [CLIENT.prefix(), b"hello".to_vec()].concat();
    let size = incoming.len();
    fake::with(|h| h.buffers.insert(DOWNSTREAM_DATA, incoming));
    connection.on_downstream_data(size, false);
    fake::with(|h| h.buffers.insert(wasm_host::fake::UPSTREAM_DATA, b"answers".to_vec()));
    connection.on_upstream_data(7, false);
    let labels = defined().first().map(|(_, l)| l.clone()).unwrap_or_default();
    let count = |metric: &str| fake::with(|h| h.counter(&format!("{labels}{metric}")));
    // While open (the period's report), then at the close: the app's bytes only.
    fake::with(|h| h.now_nanos = 6_000 * 1_000_000);
    shared.on_tick();
    assert_eq!((count("istio_tcp_received_bytes_total"), count("istio_tcp_sent_bytes_total")), (Some(5), Some(7)));
    connection.on_delete();
    assert_eq!((count("istio_tcp_received_bytes_total"), count("istio_tcp_sent_bytes_total")), (Some(5), Some(7)));
}

/// The hostcalls of a run, by kind (the call's first word).
fn hostcalls() -> BTreeMap<String, usize> {
    fake::with(|h| {
        let mut kinds = BTreeMap::new();
        for call in &h.calls {
            *kinds.entry(call.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
        kinds
    })
}

/// What `istio_metrics` adds to a request and to a connection once its
/// label set is defined (docs/performance.md prices each hostcall).
#[test]
fn what_istio_metrics_adds_to_a_request_and_a_connection_in_hostcalls() {
    let request = |config: &str| {
        let plugin = configure(http_server(config)).expect("configured");
        serve_one(&plugin, 2, &CLIENT.header());
        fake::with(|h| h.calls.clear());
        serve_one(&plugin, 3, &CLIENT.header());
        hostcalls()
    };
    let connection = |config: &str| {
        let plugin = configure(tcp_mesh_client(config, 11, 22)).expect("configured");
        let mut calls = BTreeMap::new();
        for context_id in [2, 3] {
            fake::with(|h| h.calls.clear());
            let mut connection = stream(&plugin, context_id);
            client_exchange(&mut connection);
            connection.on_log();
            connection.on_delete();
            calls = hostcalls();
        }
        calls
    };
    let added = |on: BTreeMap<String, usize>, off: BTreeMap<String, usize>| {
        on.into_iter()
            .filter_map(|(kind, n)| {
                let more = n.saturating_sub(off.get(&kind).copied().unwrap_or(0));
                (more > 0).then(|| format!("{kind} +{more}"))
            })
            .collect::<Vec<_>>()
    };
    let http = added(request(r#"{"role":"server","istio_metrics":{}}"#), request(r#"{"role":"server"}"#));
    let tcp = added(
        connection(r#"{"role":"client","exchange_timeout_ms":1000,"istio_metrics":{}}"#),
        connection(r#"{"role":"client","exchange_timeout_ms":1000}"#),
    );
    // A request: its flags, duration, two sizes, the route cluster's name
    // and our certificate's URI SAN; one counter, three histograms.
    assert_eq!(http, ["get_property +6", "increment_metric +1", "record_metric +3"]);
    // A connection: its flags, our URI SAN, the cluster's name, two byte
    // counts; opened, closed and the two byte counters.
    assert_eq!(tcp, ["get_property +5", "increment_metric +4"]);
}
