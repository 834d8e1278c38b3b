//! The harness itself: real Envoys load our real .wasm files and the filters
//! run (read back from Envoy's counters and logs).

use alpn_decision::decision::Counter as AlpnCounter;
use integration_tests::{stats, LOG_WAIT};
use peer_exchange::config::Role;
use peer_exchange::exchange::Counter;

use integration_tests::mesh::{Mesh, CLIENT_TCP_LOG};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_filters_load_into_real_envoys_and_run() {
    let mesh = Mesh::start();

    // alpn-filter: one HTTP/1.1 request through the client Envoy.
    let mut http = TcpStream::connect(mesh.target.client_listener("outbound_http")).await.unwrap();
    http.write_all(b"GET /mesh/hello HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(stats::alpn(&mesh.client, AlpnCounter::OverrideHttp11), 1);

    // peer-exchange-filter: one TCP echo through both Envoys.
    let mut tcp = TcpStream::connect(mesh.target.client_listener("outbound_tcp_echo")).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tcp.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    drop(tcp);
    assert_eq!(stats::wait_exchange(&mesh.client, Role::Client, Counter::MetadataAdded, 1, LOG_WAIT), 1);
    assert_eq!(stats::exchange(&mesh.server, Role::Server, Counter::MetadataReceived), 1);
    assert_eq!(stats::exchange(&mesh.server, Role::Server, Counter::MetadataAdded), 1);
    assert_eq!(stats::exchange(&mesh.client, Role::Client, Counter::MetadataReceived), 1);
    let log = mesh.target.wait_access_log(CLIENT_TCP_LOG, 1, LOG_WAIT);
    assert_eq!(log.len(), 1, "{log:?}");
    // Both forms of the exchange, selected by root id, from the same module.
    for (envoy, role) in [(&mesh.client, "client"), (&mesh.server, "server")] {
        for form in ["TCP", "HTTP"] {
            let line = format!("peer-exchange-filter: {form} exchange, role {role}");
            assert!(envoy.log().contains(&line), "{line}:\n{}", envoy.log_tail(50));
        }
    }
}

/// At load, each filter checks the Envoy it runs on and says which it is
/// (read back from Envoy's own `/server_info`); on a supported Envoy
/// nothing is missing and the version is one of the tested ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filters_say_which_envoy_they_run_on_and_find_what_they_need() {
    let mesh = Mesh::start();
    let (_, info) = mesh.client.admin_get("/server_info").expect("server_info");
    let info: serde_json::Value = serde_json::from_str(&info).expect("server_info JSON");
    // "<sha>/<version>/<status>/<type>/<ssl>"
    let version = info["version"].as_str().and_then(|v| v.split('/').nth(1)).expect("Envoy version").to_string();
    let supported = wasm_host::host::SUPPORTED;
    for envoy in [&mesh.client, &mesh.server] {
        let log = envoy.log();
        let filters: &[&str] =
            if envoy.name == "client" { &["alpn-filter", "peer-exchange-filter"] } else { &["peer-exchange-filter"] };
        for filter in filters {
            let line = format!("{filter}: running on Envoy {version} (supported: {supported})");
            assert!(log.contains(&line), "{line}:\n{}", envoy.log_tail(50));
        }
        assert!(!log.contains("not tested") && !log.contains("lacks the foreign function"), "{}", envoy.log_tail(50));
    }
}
