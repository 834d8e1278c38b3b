//! End-to-end tests of peer-exchange-filter: real Envoys, real mTLS + ALPN,
//! our .wasm. The client Envoy runs role "client", the server Envoy role
//! "server"; raw TLS clients speak the protocol to the server directly.

use integration_tests::{stats, LOG_WAIT};
use peer_exchange::config::Role;
use peer_exchange::exchange::Counter;
use std::time::{Duration, Instant};

use integration_tests::clients::{assert_same_bytes, echo_through, STEP_TIMEOUT};
use integration_tests::mesh::{Mesh, MeshOptions, CLIENT_TCP_LOG, SERVER_TCP_LOG, TEST_EXCHANGE_TIMEOUT_MS};
use integration_tests::pki::RAW_CLIENT_IDENTITY;
use integration_tests::wire::{self, V};
use integration_tests::workloads::{
    assert_stored, peer_struct, CLIENT, PEER_UNKNOWN, SERVER, SERVER_FROM_ENDPOINT_METADATA,
};
use integration_tests::{pseudo_random_bytes, BANNER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PEER_EXCHANGE_ALPN: &[&str] = &["istio-peer-exchange"];
const RAW_CLIENT_ID: &str = "raw-client~10.9.9.9~raw.raw-ns~raw-ns.svc.cluster.local";

fn client_counter(mesh: &Mesh, counter: Counter) -> u64 {
    stats::exchange(&mesh.client, Role::Client, counter)
}

fn server_counter(mesh: &Mesh, counter: Counter) -> u64 {
    stats::exchange(&mesh.server, Role::Server, counter)
}

/// The raw (native-style) client as the server stores it. It claims no
/// identity: the certificate's is stored, as the claim is consistent with it.
const RAW_CLIENT_STORED: &[(&str, &str)] = &[
    ("name", "raw-client-1"),
    ("namespace", "raw-ns"),
    ("app", "raw"),
    ("source", "exchange"),
    ("identity", RAW_CLIENT_IDENTITY),
    ("service_account", "raw-client"),
    ("verified", "true"),
];

/// The raw test client's own prefix, built from the spec.
fn raw_client_prefix() -> Vec<u8> {
    wire::prefix(
        vec![
            ("NAME", V::Str("raw-client-1")),
            ("NAMESPACE", V::Str("raw-ns")),
            ("LABELS", V::Struct(vec![("app", V::Str("raw"))])),
        ],
        RAW_CLIENT_ID,
    )
}

/// Reads until the other side closes (or errors); returns what arrived.
async fn read_all<R: AsyncReadExt + Unpin>(stream: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await.expect("read timed out") {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until `bytes` start with a complete server prefix followed by `want` bytes.
async fn read_prefixed<R: AsyncReadExt + Unpin>(stream: &mut R, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some((_, _, rest)) = wire::split_prefix(&out) {
            if rest.len() >= want {
                return out;
            }
        }
        let n = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await.expect("read timed out").expect("read");
        assert!(n > 0, "connection closed after {} bytes", out.len());
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_first_echo_of_1_mib_is_byte_exact_and_both_sides_log_the_peer() {
    let mesh = Mesh::start();
    let payload = pseudo_random_bytes(1 << 20, 1);
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_echo"), &payload).await;
    assert_same_bytes(&echoed, &payload, "1 MiB echo through both Envoys");

    let client_log = mesh.target.wait_access_log(CLIENT_TCP_LOG, 1, LOG_WAIT);
    assert_eq!(client_log.len(), 1, "{client_log:?}");
    SERVER.assert_is(&client_log[0]["upstream_peer"], "client access log");
    assert_eq!(client_log[0]["upstream_peer_id"], SERVER.node_id);
    assert!(client_log[0]["peer_not_found"].is_null(), "{}", client_log[0]);

    let server_log = mesh.target.wait_access_log(SERVER_TCP_LOG, 1, LOG_WAIT);
    assert_eq!(server_log.len(), 1, "{server_log:?}");
    CLIENT.assert_is(&server_log[0]["downstream_peer"], "server access log");
    assert_eq!(server_log[0]["downstream_peer_id"], CLIENT.node_id);
    assert_eq!(server_log[0]["chain"], "inbound-tcp-echo");
    // A CEL expression over the stored peer, as written for native's
    // `downstream_peer` with the `wasm.` prefix.
    assert_eq!(server_log[0]["downstream_peer_namespace"], "client-ns", "{}", server_log[0]);

    for (side, counter) in [("client", client_counter as fn(&Mesh, Counter) -> u64), ("server", server_counter)] {
        assert_eq!(counter(&mesh, Counter::AlpnProtocolFound), 1, "{side}");
        assert_eq!(counter(&mesh, Counter::MetadataAdded), 1, "{side}");
        assert_eq!(counter(&mesh, Counter::MetadataReceived), 1, "{side}");
        assert_eq!(counter(&mesh, Counter::InitialHeaderNotFound), 0, "{side}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_banner_reaches_the_app_exactly_and_the_client_learns_the_server_from_its_endpoint() {
    let mesh = Mesh::start();
    let mut app = TcpStream::connect(mesh.target.client_listener("outbound_tcp_banner")).await.unwrap();
    // The app says nothing yet: the banner must arrive on its own, without
    // the server's prefix (the server cannot know this client exchanges) and
    // without waiting for the client's metadata.
    let mut banner = vec![0u8; BANNER.len()];
    tokio::time::timeout(STEP_TIMEOUT, app.read_exact(&mut banner)).await.expect("banner timed out").unwrap();
    assert_eq!(banner, BANNER);
    app.write_all(b"EHLO client\r\n").await.unwrap();
    let mut reply = [0u8; 13];
    tokio::time::timeout(STEP_TIMEOUT, app.read_exact(&mut reply)).await.expect("echo timed out").unwrap();
    assert_eq!(&reply, b"EHLO client\r\n");
    drop(app);

    // The server withheld its prefix; the client, seeing a banner without
    // one, sent none of its own (the upstream showed no exchange) and took
    // the server from Istio's endpoint metadata.
    assert_eq!(server_counter(&mesh, Counter::PrefixWithheld), 1);
    assert_eq!(server_counter(&mesh, Counter::MetadataAdded), 0);
    assert_eq!(client_counter(&mesh, Counter::MetadataAdded), 0);
    assert_eq!(client_counter(&mesh, Counter::InitialHeaderNotFound), 1);
    assert_eq!(client_counter(&mesh, Counter::PeerFromEndpointMetadata), 1);
    let client_log = mesh.target.wait_access_log(CLIENT_TCP_LOG, 1, LOG_WAIT);
    let line = &client_log[0];
    assert_stored(&line["upstream_peer"], SERVER_FROM_ENDPOINT_METADATA, "client access log");
    // The banner chains also print the stored Struct (native's key): the
    // JSON text (`peer_json`) is that Struct, field for field.
    let typed = &line["upstream_peer_struct"];
    assert!(typed.get("@type").is_some(), "Envoy printed the typed Struct: {line}");
    assert_eq!(peer_struct(typed), peer_struct(&line["upstream_peer"]), "{line}");
    let server_log = mesh.target.wait_access_log(SERVER_TCP_LOG, 1, LOG_WAIT);
    assert_eq!(server_log[0]["chain"], "inbound-tcp-banner");
    assert_eq!(server_log[0]["peer_not_found"], "true", "{}", server_log[0]);
}

/// A server-first connection straight to the server Envoy's banner chain
/// (ALPN `istio-peer-exchange`), as a client that does not exchange sees
/// it: the banner, byte-exact, then its own bytes echoed byte-exact.
async fn banner_without_exchange(mesh: &Mesh, i: usize) {
    let mut tls = mesh.target.connect_inbound("banner.mesh.local", PEER_EXCHANGE_ALPN).await;
    let mut banner = vec![0u8; BANNER.len()];
    tokio::time::timeout(STEP_TIMEOUT, tls.read_exact(&mut banner)).await.expect("banner timed out").unwrap();
    assert_eq!(banner, BANNER, "connection {i}: the banner as the app wrote it");
    let line = format!("HELO plain-{i}\r\n");
    tls.write_all(line.as_bytes()).await.unwrap();
    tls.shutdown().await.unwrap();
    assert_eq!(read_all(&mut tls).await, line.as_bytes(), "connection {i}: the echo, exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_exchange_reads_a_server_first_banner_exactly_on_every_connection() {
    let mesh = Mesh::start();
    for i in 0..20 {
        banner_without_exchange(&mesh, i).await;
    }
    assert_eq!(server_counter(&mesh, Counter::PrefixWithheld), 20);
    assert_eq!(server_counter(&mesh, Counter::MetadataAdded), 0);
    assert_eq!(server_counter(&mesh, Counter::InitialHeaderNotFound), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_that_sends_its_prefix_when_the_banner_arrives_is_stored() {
    let mesh = Mesh::start();
    let mut tls = mesh.target.connect_inbound("banner.mesh.local", PEER_EXCHANGE_ALPN).await;
    // Native's client writes its prefix on its first callback, here the
    // banner's arrival, and looks for the server's prefix in what it read.
    let mut banner = vec![0u8; BANNER.len()];
    tokio::time::timeout(STEP_TIMEOUT, tls.read_exact(&mut banner)).await.expect("banner timed out").unwrap();
    assert_eq!(banner, BANNER, "no prefix: the client's had not arrived when the app wrote");
    tls.write_all(&raw_client_prefix()).await.unwrap();
    tls.write_all(b"EHLO native\r\n").await.unwrap();
    tls.shutdown().await.unwrap();
    assert_eq!(read_all(&mut tls).await, b"EHLO native\r\n", "the prefix stripped, the rest exact, none of ours later");

    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 1, LOG_WAIT);
    assert_stored(&log[0]["downstream_peer"], RAW_CLIENT_STORED, "native client");
    assert_eq!(log[0]["downstream_peer_id"], RAW_CLIENT_ID);
    let typed = &log[0]["downstream_peer_struct"];
    assert!(typed.get("@type").is_some(), "Envoy printed the typed Struct: {}", log[0]);
    assert_eq!(peer_struct(typed), peer_struct(&log[0]["downstream_peer"]), "{}", log[0]);
    assert_eq!(server_counter(&mesh, Counter::MetadataReceived), 1);
    assert_eq!(server_counter(&mesh, Counter::PrefixWithheld), 1);
    assert_eq!(server_counter(&mesh, Counter::MetadataAdded), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_delivered_one_byte_at_a_time_by_a_raw_tls_client() {
    let mesh = Mesh::start();
    let mut tls = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"istio-peer-exchange"[..]));
    for byte in raw_client_prefix() {
        tls.write_all(&[byte]).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let data = b"application bytes after the prefix";
    tls.write_all(data).await.unwrap();
    tls.flush().await.unwrap();

    let received = read_prefixed(&mut tls, data.len()).await;
    let (server_metadata, server_id, rest) = wire::split_prefix(&received).unwrap();
    assert_eq!(rest, data, "the echo, with the server's prefix stripped off");
    SERVER.assert_sent(&server_metadata, "server prefix");
    assert_eq!(server_id, SERVER.node_id);
    tls.shutdown().await.unwrap();
    drop(tls);

    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 1, LOG_WAIT);
    // No CLUSTER_ID: native would store `name` only with a cluster; we keep it.
    assert_stored(&log[0]["downstream_peer"], RAW_CLIENT_STORED, "raw client");
    assert_eq!(log[0]["downstream_peer_id"], RAW_CLIENT_ID);
    assert_eq!(server_counter(&mesh, Counter::MetadataReceived), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_that_do_not_take_part_never_receive_magic_bytes() {
    let mesh = Mesh::start();
    // plain_tls: a TLS server without a mesh identity that ignores the
    // offered ALPN, and no opt-in. plain_tls_marked: the same server behind
    // a cluster (wrongly) opted in: the missing SPIFFE identity still stops it.
    let mut sent = Vec::new();
    for (i, listener) in ["outbound_tcp_plain", "outbound_tcp_plain_marked"].into_iter().enumerate() {
        let payload = pseudo_random_bytes(100_000, 7 + i as u64);
        let echoed = echo_through(mesh.target.client_listener(listener), &payload).await;
        assert_same_bytes(&echoed, &payload, listener);
        sent.push(payload);
    }
    let received = mesh.backends.plain_tls_received.connections();
    assert_eq!(received.len(), 2);
    for (got, expected) in received.iter().zip(&sent) {
        assert_same_bytes(got, expected, "bytes the non-mesh server received");
        assert!(!got.starts_with(&wire::MAGIC));
    }
    assert_eq!(client_counter(&mesh, Counter::AlpnProtocolNotFound), 2);
    assert_eq!(client_counter(&mesh, Counter::MetadataAdded), 0);

    let log = mesh.target.wait_access_log(CLIENT_TCP_LOG, 2, LOG_WAIT);
    let line = |listener: &str| log.iter().find(|l| l["listener"] == listener).expect("log line");
    // No exchange, but the endpoint carries Istio's `istio.workload`: the
    // peer comes from it, marked as such.
    let plain = line("outbound_tcp_plain");
    assert_stored(
        &plain["upstream_peer"],
        &[
            ("workload", "legacy-db"),
            ("namespace", "legacy-ns"),
            ("service", "legacy-db"),
            ("revision", "v7"),
            ("cluster", "Kubernetes"),
            ("source", "endpoint_metadata"),
            ("verified", "false"),
            ("unverified_reason", "not_checked"),
        ],
        "peer from endpoint metadata",
    );
    assert!(plain["peer_not_found"].is_null(), "{plain}");
    assert_eq!(client_counter(&mesh, Counter::PeerFromEndpointMetadata), 1);
    // No endpoint metadata: peer not found.
    let marked = line("outbound_tcp_plain_marked");
    assert_eq!(marked["peer_not_found"], "true", "{marked}");
    assert_eq!(marked["upstream_peer_id"], PEER_UNKNOWN, "{marked}");
    assert!(marked["upstream_peer"].is_null(), "{marked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_magic_from_a_raw_tls_client_passes_through_untouched() {
    let mesh = Mesh::start();
    let mut tls = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    let data = b"GET / HTTP/1.1\r\nHost: not-a-mesh-peer\r\n\r\n";
    tls.write_all(data).await.unwrap();
    tls.flush().await.unwrap();
    let mut echoed = vec![0u8; data.len()];
    tokio::time::timeout(STEP_TIMEOUT, tls.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(echoed, data, "no server prefix for a peer that does not speak the exchange");
    tls.shutdown().await.unwrap();
    assert!(read_all(&mut tls).await.is_empty());

    assert_eq!(server_counter(&mesh, Counter::InitialHeaderNotFound), 1);
    assert_eq!(server_counter(&mesh, Counter::MetadataAdded), 0);
    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 1, LOG_WAIT);
    assert_eq!(log[0]["peer_not_found"], "true");
    assert_eq!(log[0]["downstream_peer_id"], PEER_UNKNOWN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_without_peer_metadata_is_no_peer_and_any_type_url_host_is_accepted() {
    let mesh = Mesh::start();
    let metadata = vec![("NAME", V::Str("other-host-1")), ("NAMESPACE", V::Str("other-ns"))];
    let cases = [
        // A valid frame whose Struct lacks x-envoy-peer-metadata.
        ("no-peer", wire::frame(wire::STRUCT_TYPE_URL, &wire::strukt(&[("x-envoy-peer-metadata-id", V::Str("id"))]))),
        // The Struct under another type URL host.
        (
            "other-host",
            wire::frame(
                "example.com/google.protobuf.Struct",
                &wire::strukt(&[("x-envoy-peer-metadata", V::Struct(metadata))]),
            ),
        ),
    ];
    for (i, (case, prefix)) in cases.iter().enumerate() {
        let mut tls = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
        tls.write_all(prefix).await.unwrap();
        tls.write_all(case.as_bytes()).await.unwrap();
        tls.shutdown().await.unwrap();
        let received = read_all(&mut tls).await;
        let (_, _, rest) = wire::split_prefix(&received).expect("the server's prefix: the peer speaks the exchange");
        assert_eq!(rest, case.as_bytes(), "{case}: our frame was stripped, the data came back exact");
        let log = mesh.target.wait_access_log(SERVER_TCP_LOG, i + 1, LOG_WAIT);
        let line = &log[i];
        match *case {
            "no-peer" => {
                assert_eq!(line["peer_not_found"], "true", "{line}");
                assert!(line["downstream_peer"].is_null(), "{line}");
            }
            // A claim the raw client's certificate does not back: only the
            // certificate is stored (identity_check enforce).
            _ => assert_stored(
                &line["downstream_peer"],
                &[
                    ("identity", RAW_CLIENT_IDENTITY),
                    ("namespace", "raw-ns"),
                    ("service_account", "raw-client"),
                    ("source", "certificate"),
                    ("verified", "true"),
                ],
                case,
            ),
        }
    }
    assert_eq!(server_counter(&mesh, Counter::PeerMetadataMissing), 1);
    assert_eq!(server_counter(&mesh, Counter::MetadataReceived), 1);
    assert_eq!(server_counter(&mesh, Counter::HeaderNotFound), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_data_size_closes_the_connection_and_envoy_keeps_serving() {
    let mesh = Mesh::start();
    let mut tls = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    let mut header = wire::MAGIC.to_vec();
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    header.extend_from_slice(b"some of a 4 GiB payload");
    tls.write_all(&header).await.unwrap();
    tls.flush().await.unwrap();
    assert!(read_all(&mut tls).await.is_empty(), "closed without a byte");
    assert_eq!(server_counter(&mesh, Counter::DataSizeTooLarge), 1);

    let payload = pseudo_random_bytes(10_000, 3);
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_echo"), &payload).await;
    assert_same_bytes(&echoed, &payload, "the next good connection");
    assert_eq!(server_counter(&mesh, Counter::MetadataReceived), 1);
    let log = mesh.target.wait_access_log(SERVER_TCP_LOG, 2, LOG_WAIT);
    assert_eq!(log[0]["peer_not_found"], "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_partial_prefix_is_closed_after_the_timeout_and_idle_connections_stay_open() {
    let mesh = Mesh::start();
    let mut idle = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    let idle_since = Instant::now();

    let prefix = raw_client_prefix();
    // Reset mid-prefix: Envoy sees the close without end-of-stream data and
    // deletes the context before its deadline; that deadline must count nothing.
    let mut reset = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    reset.write_all(&prefix[..20]).await.unwrap();
    reset.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A zero linger sends the RST at once: nothing blocks on drop.
    #[allow(deprecated)]
    reset.get_ref().0.set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset);

    let mut stalled = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    stalled.write_all(&prefix[..20]).await.unwrap();
    stalled.flush().await.unwrap();
    let started = Instant::now();
    assert!(read_all(&mut stalled).await.is_empty());
    let closed_after = started.elapsed();
    let timeout = Duration::from_millis(TEST_EXCHANGE_TIMEOUT_MS);
    assert!(
        closed_after >= timeout - Duration::from_millis(100) && closed_after < timeout * 3,
        "closed after {closed_after:?}, configured {timeout:?}"
    );
    assert_eq!(server_counter(&mesh, Counter::ExchangeTimeout), 1);

    // The idle connection has now been open for longer than the timeout.
    while idle_since.elapsed() < timeout * 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle.write_all(&prefix).await.unwrap();
    idle.write_all(b"still here").await.unwrap();
    idle.flush().await.unwrap();
    let received = read_prefixed(&mut idle, 10).await;
    assert_eq!(wire::split_prefix(&received).unwrap().2, b"still here");
    assert_eq!(server_counter(&mesh, Counter::ExchangeTimeout), 1, "the reset connection is not a timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_during_the_prefix_gives_up_and_passes_the_held_bytes() {
    let mesh = Mesh::start();
    let mut tls = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    let partial = raw_client_prefix()[..6].to_vec();
    tls.write_all(&partial).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.shutdown().await.unwrap(); // close_notify + FIN: no more bytes will come
    let received = read_all(&mut tls).await;
    // A peer that never completed its prefix is not known to speak the
    // exchange: it gets none of ours, only the echo of what was held.
    assert_eq!(received, partial, "the held bytes went on to the backend and came back, with no prefix of ours");
    assert_eq!(server_counter(&mesh, Counter::HalfClosedMidPrefix), 1);
    assert_eq!(server_counter(&mesh, Counter::MetadataAdded), 0);
    assert_eq!(server_counter(&mesh, Counter::ExchangeTimeout), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_all_learn_the_peer_with_exact_bytes() {
    const CONNECTIONS: usize = 200;
    let mesh = Mesh::start();
    let addr = mesh.target.client_listener("outbound_tcp_echo");
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            tokio::spawn(async move {
                let payload = pseudo_random_bytes(16 * 1024 + i, 100 + i as u64);
                let echoed = echo_through(addr, &payload).await;
                assert_same_bytes(&echoed, &payload, &format!("connection {i}"));
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("connection task");
    }
    let client_log = mesh.target.wait_access_log(CLIENT_TCP_LOG, CONNECTIONS, LOG_WAIT);
    let server_log = mesh.target.wait_access_log(SERVER_TCP_LOG, CONNECTIONS, LOG_WAIT);
    assert_eq!(client_log.len(), CONNECTIONS);
    assert_eq!(server_log.len(), CONNECTIONS);
    for line in &client_log {
        SERVER.assert_is(&line["upstream_peer"], "client access log");
    }
    for line in &server_log {
        CLIENT.assert_is(&line["downstream_peer"], "server access log");
    }
    assert_eq!(client_counter(&mesh, Counter::MetadataReceived), CONNECTIONS as u64);
    assert_eq!(server_counter(&mesh, Counter::MetadataReceived), CONNECTIONS as u64);
    // The cluster's metadata is read once per worker VM per refresh period
    // (1 s by default; the timer can fall one tick late), not per connection.
    let periods = started.elapsed().as_millis() as u64 / 1000 + 2;
    let reads = client_counter(&mesh, Counter::ClusterMetadataRead);
    assert!(reads >= 1 && reads <= 2 * periods, "{reads} metadata reads for {CONNECTIONS} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_wire_bytes_equal_the_prefix_built_from_the_spec() {
    let options = MeshOptions {
        client_exchange_config: r#"{"role":"client","peer_json":true,"additional_labels":["team"]}"#.into(),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(options);

    // What the client Envoy puts on the wire, as received by a TLS peer.
    let echoed = echo_through(mesh.target.client_listener("outbound_tcp_recorder"), b"golden").await;
    assert_eq!(echoed, b"golden");
    let recorded = mesh.backends.mesh_recorder_received.connections();
    let mut expected = wire::prefix(CLIENT.wire_metadata(true), CLIENT.node_id);
    expected.extend_from_slice(b"golden");
    assert_eq!(recorded, vec![expected], "client prefix on the wire");

    // What the server Envoy puts on the wire, as received by a raw client.
    let mut tls = mesh.target.connect_inbound("echo.mesh.local", PEER_EXCHANGE_ALPN).await;
    tls.write_all(&raw_client_prefix()).await.unwrap();
    tls.write_all(b"golden").await.unwrap();
    tls.shutdown().await.unwrap();
    let received = read_all(&mut tls).await;
    let mut expected = wire::prefix(SERVER.wire_metadata(false), SERVER.node_id);
    expected.extend_from_slice(b"golden");
    assert_eq!(received, expected, "server prefix on the wire");
}
