//! The dynamic-module measurement (`BENCH_DYNAMIC_MODULE=<dir of
//! libbench_dynamic_module.so>`, built by scripts/bench-dynamic-module.sh):
//! a second outbound Envoy (bench/dynamic-module/client.yaml) in front of
//! the benchmark's server Envoy, its listeners differing only in one
//! filter — none, the empty wasm filter, the empty dynamic module,
//! alpn-filter, alpn-filter's decision as a dynamic module.

use std::collections::BTreeMap;

use integration_tests::envoy::{Envoy, Launch};
use integration_tests::mesh::Mesh;

use crate::load::Load;
use crate::measure::{self, Envoys, Target};
use crate::report::{Row, Scenario};

/// The server's chain the two ALPN rows must reach (as alpn-filter's row).
const HTTP11_CHAIN: &str = "inbound-http11";

pub async fn run(mesh: &Mesh, server_pid: u32, module_dir: &str, rounds: usize, secs: u64) {
    // Envoy finds `lib<name>.so` here (its only search setting).
    std::env::set_var("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir);
    let root = integration_tests::paths::workspace_root();
    let template = root.join("bench/dynamic-module/client.yaml").display().to_string();
    let server = mesh.target.server_inbound();
    let vars: BTreeMap<String, String> = [
        ("BIND_ADDRESS", "127.0.0.1".to_string()),
        ("ADMIN_ADDRESS", "127.0.0.1".into()),
        ("ADMIN_PORT", "0".into()),
        ("CERT_DIR", mesh.target.pki.dir.display().to_string()),
        ("SERVER_HOST", server.ip().to_string()),
        ("SERVER_PORT", server.port().to_string()),
        ("EMPTY_WASM", integration_tests::paths::empty_filter_wasm().display().to_string()),
        ("ALPN_WASM", integration_tests::paths::alpn_filter_wasm().display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let launch =
        Launch { name: "dynamic-client", template: &template, vars: &vars, dir: mesh.dir(), wasm_log_level: "info" };
    let client = Envoy::start(&launch).unwrap_or_else(|e| panic!("the dynamic-module Envoy: {e}"));
    let listener = |name: &str| std::net::SocketAddr::from(([127, 0, 0, 1], client.listener_port(name)));
    // The ALPN rows work only if their filter set Istio's list: the
    // cluster itself offers `istio` alone, which no server chain takes.
    for name in ["dm_http_alpn_wasm", "dm_http_alpn_dynamic", "dm_http_empty_dynamic"] {
        let response = integration_tests::clients::http1_get(listener(name), "1.1", "/dynamic-check").await;
        assert_eq!(response.status, 200, "{name}: {response:?}\n{}", client.log_tail(30));
        assert_eq!(response.header("x-inbound-chain"), HTTP11_CHAIN, "{name}: the server chain");
    }
    let envoys = Envoys { client: client.pid().expect("dynamic-module Envoy pid"), server: server_pid };
    println!(
        "\ndynamic modules: outbound Envoy pid {} (Envoy 1.40's dynamic-module ABI), the same server Envoy",
        envoys.client
    );
    let http: Vec<(&str, &'static str)> = vec![
        ("no filter", "dm_http_none"),
        ("empty wasm filter (SDK)", "dm_http_empty_wasm"),
        ("empty dynamic module", "dm_http_empty_dynamic"),
        ("alpn-filter (wasm)", "dm_http_alpn_wasm"),
        ("ALPN decision as a dynamic module", "dm_http_alpn_dynamic"),
    ];
    let tcp: Vec<(&str, &'static str)> = vec![
        ("no filter", "dm_tcp_none"),
        ("empty wasm filter (SDK)", "dm_tcp_empty_wasm"),
        ("empty dynamic module", "dm_tcp_empty_dynamic"),
    ];
    for (title, unit, load, rows) in [
        ("dynamic modules, HTTP/1.1, wrk, 32 connections", "req/s", Load::Wrk(32), &http),
        ("dynamic modules, HTTP/1.1, wrk, 1 connection", "req/s", Load::Wrk(1), &http),
        ("dynamic modules, TCP over mTLS, new connection + 64-byte echo + close", "conn/s", Load::Churn, &tcp),
    ] {
        let rows: Vec<Row> = rows
            .iter()
            .enumerate()
            .map(|(i, (label, name))| {
                let row = Row::new(*label, name);
                if i == 0 {
                    row.floor()
                } else {
                    row
                }
            })
            .collect();
        let targets: Vec<Target> =
            rows.iter().map(|r| Target { addr: listener(r.listener), envoys: &envoys }).collect();
        let runs = measure::rounds(&targets, load, rounds, secs).await;
        let scenario = Scenario {
            title: title.into(),
            unit,
            rows,
            targets: vec![(
                "Δ floor".into(),
                "over no filter, client Envoy (the filters' side) / server Envoy (the same on every row)".into(),
            )],
        };
        scenario.print(&runs);
    }
}
