//! Benchmark: the same two Envoys, the same paths, with each variant of
//! filter in front of them, measured in one run with rounds alternating
//! between variants (so drift hits all of them), medians over rounds.
//!
//! For every variant: throughput and the **CPU time per request (or
//! connection) of each Envoy process** — the sum of its threads' on-CPU
//! nanoseconds (`/proc/<pid>/task/*/schedstat`) while the load ran, divided
//! by the operations served. On a shared 2-core machine that is far steadier
//! than throughput. HTTP load comes from `wrk` (HTTP/1.1) and `h2load`
//! (h2c); TCP connection churn and bulk echo from [`load`].
//!
//!   cargo run --release -p integration-tests --bin bench [rounds] [seconds per run]
//!
//! `BENCH_ONLY=http1,churn` runs only the scenarios whose key is listed
//! (http1, http32, h2c1, h2c32, churn, bulk, identity, identity_http, metrics_http, metrics_tcp, memory;
//! `dynamic` with `BENCH_DYNAMIC_MODULE`, see scripts/bench-dynamic-module.sh);
//! `BENCH_VARIANT_*` runs an A/B ([`variants`]).

mod dynamic;
mod load;
mod measure;
mod memory;
mod report;
mod variants;

use integration_tests::mesh::{with_istio_metrics_everywhere, Mesh, MeshOptions};

use crate::load::Load;
use crate::measure::{Envoys, Target};
use crate::report::{Deployment, Row, Scenario};
use crate::variants::{Variants, HTTP_EXCHANGE_SLOT_CHAIN, HTTP_EXCHANGE_SLOT_LISTENER};

/// A running mesh and its Envoys' pids.
struct Bench {
    mesh: Mesh,
    envoys: Envoys,
}

impl Bench {
    fn start(options: MeshOptions) -> Bench {
        let mesh = Mesh::start_with(options);
        let envoys = Envoys {
            client: mesh.client.pid().expect("client Envoy pid"),
            server: mesh.server.pid().expect("server Envoy pid"),
        };
        Bench { mesh, envoys }
    }
}

fn selected(key: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|k| k.trim() == key))
}

/// The benchmark's deployments: production log level (the per-decision
/// debug lines off), the shipped configurations but for `identity_check`.
fn options(identity_check: &str) -> MeshOptions {
    let config = |role: &str, timeout: bool| {
        let timeout = if timeout { r#","exchange_timeout_ms":10000"# } else { "" };
        format!(r#"{{"role":"{role}"{timeout},"identity_check":"{identity_check}","peer_json":true}}"#)
    };
    MeshOptions {
        wasm_log_level: "info".into(),
        server_exchange_config: config("server", true),
        client_exchange_config: config("client", true),
        server_http_exchange_config: config("server", false),
        client_http_exchange_config: config("client", false),
        ..MeshOptions::default()
    }
}

struct Deployments {
    shipped: Bench,
    /// For the identity scenarios only.
    unchecked: Option<Bench>,
    /// For the `istio_metrics` scenarios only.
    metrics: Option<Bench>,
}

impl Deployments {
    fn get(&self, deployment: Deployment) -> &Bench {
        match (deployment, &self.unchecked, &self.metrics) {
            (Deployment::Unchecked, Some(unchecked), _) => unchecked,
            (Deployment::Metrics, _, Some(metrics)) => metrics,
            _ => &self.shipped,
        }
    }

    async fn run(&self, scenario: &Scenario, load: Load, rounds: usize, secs: u64) {
        let targets: Vec<Target> = scenario
            .rows
            .iter()
            .map(|row| {
                let bench = self.get(row.deployment);
                Target { addr: bench.mesh.target.client_listener(row.listener), envoys: &bench.envoys }
            })
            .collect();
        let runs = measure::rounds(&targets, load, rounds, secs).await;
        scenario.print(&runs);
    }
}

/// The HTTP scenarios' rows: the floor is the HTTP slot (the empty filter
/// or the alpn-filter variant), or for the HTTP exchange's A/B its slot.
fn http_rows(variants: &Variants, quiet_exchange: &Row) -> Vec<Row> {
    let baseline = Row::new("no filter (static ALPN cluster)", "outbound_http_baseline");
    match &variants.http_exchange {
        Some(_) => vec![
            baseline,
            Row::new("alpn-filter", "outbound_http"),
            Row::new(Variants::label(&variants.http_exchange, ""), HTTP_EXCHANGE_SLOT_LISTENER).floor(),
            quiet_exchange.clone(),
        ],
        None => vec![
            baseline,
            Row::new("native set_filter_state", "outbound_http_native"),
            Row::new(Variants::label(&variants.alpn, "empty wasm filter (floor)"), "outbound_http_empty_wasm").floor(),
            Row::new("alpn-filter", "outbound_http"),
            quiet_exchange.clone(),
            Row::new("HTTP exchange with alpn built in, one filter", "outbound_http_exchange_alpn_builtin"),
            Row::new("alpn + HTTP exchange, shipped logs", "outbound_http_exchange"),
        ],
    }
}

fn http_targets(variants: &Variants, quiet_exchange: &Row) -> Vec<(String, String)> {
    if variants.http_exchange.is_some() {
        return Variants::a_b_note(&quiet_exchange.label);
    }
    if variants.alpn.is_some() {
        return Variants::a_b_note("alpn-filter");
    }
    vec![
        ("alpn-filter".into(), "client Δ over the empty wasm filter ≤ +5 µs; req/s ratio ≥ 0.95".into()),
        (
            "HTTP exchange".into(),
            "its cost = the rows' Δ over the alpn-filter row (the server runs the exchange on every row: \
             without headers on the first four); targets: client ≤ +12 µs, server ≤ +8 µs, \
             req/s ratio ≥ 0.85 at 32 connections"
                .into(),
        ),
    ]
}

fn churn(variants: &Variants) -> Scenario {
    let quiet = "exchange, logs without the peer";
    Scenario {
        title: "TCP over mTLS, new connection + 64-byte echo + close, 16 at a time".into(),
        unit: "conn/s",
        rows: vec![
            Row::new("no filter", "outbound_tcp_echo_baseline"),
            Row::new(
                Variants::label(&variants.exchange, "empty wasm filter, both sides (floor)"),
                "outbound_tcp_echo_empty_wasm",
            )
            .floor(),
            Row::new(quiet, "outbound_tcp_echo_quiet_log"),
            Row::new("exchange, shipped logs (peer JSON)", "outbound_tcp_echo"),
        ],
        targets: if variants.exchange.is_some() {
            Variants::a_b_note(quiet)
        } else {
            vec![
                (quiet.into(), "client and server Δ over the floor ≤ +15 µs".into()),
                (
                    "exchange, shipped logs".into(),
                    "conn/s ratio ≥ 0.90; the extra over the quiet row is printing the peer".into(),
                ),
            ]
        },
    }
}

/// The identity check's own cost: the same path in two deployments that
/// differ only in `identity_check`, alternating; Δ = enforce − off.
fn identity(title: &str, unit: &'static str, listener: &'static str) -> Scenario {
    Scenario {
        title: title.into(),
        unit,
        rows: vec![
            Row::new("identity_check: off", listener).on(Deployment::Unchecked).floor(),
            Row::new("identity_check: enforce (default)", listener),
        ],
        targets: vec![("enforce".into(), "client and server Δ over off: the check's cost, ≈ 0–2 µs".into())],
    }
}

/// Istio's standard metrics' own cost: the same path in two deployments
/// that differ only in `istio_metrics`, alternating; Δ = with − without.
fn istio_metrics(title: &str, unit: &'static str, listener: &'static str) -> Scenario {
    Scenario {
        title: title.into(),
        unit,
        rows: vec![
            Row::new("without istio_metrics (shipped default)", listener).floor(),
            Row::new("with istio_metrics", listener).on(Deployment::Metrics),
        ],
        targets: vec![(
            "istio_metrics".into(),
            "client and server Δ: the metrics' cost per request or connection (opt-in)".into(),
        )],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let variants = Variants::from_env();
    let shipped_options = options("enforce");
    let quiet = |config: &str| integration_tests::mesh::without_peer_json(config);
    let [client_vars, server_vars] = variants.vars(
        &shipped_options.alpn_config,
        [&quiet(&shipped_options.client_exchange_config), &quiet(&shipped_options.server_exchange_config)],
    );
    let deployments = Deployments {
        shipped: Bench::start(MeshOptions { client_vars, server_vars, ..shipped_options }),
        unchecked: (selected("identity") || selected("identity_http")).then(|| Bench::start(options("off"))),
        metrics: (selected("metrics_http") || selected("metrics_tcp"))
            .then(|| Bench::start(with_istio_metrics_everywhere(options("enforce"), "{}"))),
    };
    if variants.http_exchange.is_some() {
        // The slot's SNI must reach the slot's server chain, or the server
        // column would time the shipped server role.
        let addr = deployments.shipped.mesh.target.client_listener(HTTP_EXCHANGE_SLOT_LISTENER);
        let response = integration_tests::clients::http1_get(addr, "1.1", "/variant-check").await;
        assert_eq!(response.status, 200, "the HTTP exchange slot's path: {response:?}");
        assert_eq!(response.header("x-inbound-chain"), HTTP_EXCHANGE_SLOT_CHAIN, "the slot's server chain");
    }
    let envoys = &deployments.shipped.envoys;
    println!(
        "client Envoy pid {} and server Envoy pid {}, --concurrency 2 each (the harness's); {rounds} rounds of {secs} s per variant, \
         variants alternating; µs/op = the Envoy's CPU time (all threads) per request or connection",
        envoys.client, envoys.server
    );

    let quiet_exchange = Row::new("alpn + HTTP exchange, logs without peer", "outbound_http_exchange_quiet_log");
    for (key, title, load) in [
        ("http1", "HTTP/1.1, wrk, 1 connection", Load::Wrk(1)),
        ("http32", "HTTP/1.1, wrk, 32 connections", Load::Wrk(32)),
        ("h2c1", "h2c, h2load, 1 connection", Load::H2load(1)),
        ("h2c32", "h2c, h2load, 32 connections", Load::H2load(32)),
    ] {
        if selected(key) {
            let scenario = Scenario {
                title: title.into(),
                unit: "req/s",
                rows: http_rows(&variants, &quiet_exchange),
                targets: http_targets(&variants, &quiet_exchange),
            };
            deployments.run(&scenario, load, rounds, secs).await;
        }
    }
    if selected("churn") {
        deployments.run(&churn(&variants), Load::Churn, rounds, secs).await;
    }
    if selected("bulk") {
        let bulk = Scenario {
            title: "TCP bulk echo, 64 MiB through one connection".into(),
            unit: "MiB/s",
            rows: vec![Row::new("no filter", "outbound_tcp_echo_baseline"), Row::new("exchange", "outbound_tcp_echo")],
            targets: vec![("exchange".into(), "MiB/s ratio ≥ 0.98".into())],
        };
        deployments.run(&bulk, Load::Bulk, rounds, secs).await;
    }
    if deployments.unchecked.is_some() {
        if selected("identity") {
            let title = "identity check, TCP: new connection + 64-byte echo + close, logs without the peer";
            deployments.run(&identity(title, "conn/s", "outbound_tcp_echo_quiet_log"), Load::Churn, rounds, secs).await;
        }
        if selected("identity_http") {
            let title = "identity check, HTTP exchange: HTTP/1.1, wrk, 1 connection, logs without the peer";
            let scenario = identity(title, "req/s", "outbound_http_exchange_quiet_log");
            deployments.run(&scenario, Load::Wrk(1), rounds, secs).await;
        }
    }

    if deployments.metrics.is_some() {
        if selected("metrics_http") {
            let title = "istio_metrics, HTTP exchange: HTTP/1.1, wrk, 32 connections, logs without the peer";
            let scenario = istio_metrics(title, "req/s", "outbound_http_exchange_quiet_log");
            deployments.run(&scenario, Load::Wrk(32), rounds, secs).await;
        }
        if selected("metrics_tcp") {
            let title = "istio_metrics, TCP exchange: new connection + 64-byte echo + close, logs without the peer";
            let scenario = istio_metrics(title, "conn/s", "outbound_tcp_echo_quiet_log");
            deployments.run(&scenario, Load::Churn, rounds, secs).await;
        }
    }

    if selected("memory") {
        memory::run(secs).await;
    }

    match std::env::var("BENCH_DYNAMIC_MODULE") {
        Ok(dir) if !dir.is_empty() && selected("dynamic") => {
            let shipped = &deployments.shipped;
            dynamic::run(&shipped.mesh, shipped.envoys.server, &dir, rounds, secs).await;
        }
        _ => assert!(
            std::env::var("BENCH_ONLY").map_or(true, |only| !only.split(',').any(|k| k.trim() == "dynamic")),
            "BENCH_ONLY=dynamic needs BENCH_DYNAMIC_MODULE: run scripts/bench-dynamic-module.sh"
        ),
    }

    let sizes: Vec<String> = ["alpn_filter", "peer_exchange_filter", "empty_filter"]
        .iter()
        .map(|n| {
            let len = std::fs::metadata(integration_tests::paths::wasm(n)).map(|m| m.len()).unwrap_or(0);
            format!("{n}.wasm {len} B ({:.1} KiB)", len as f64 / 1024.0)
        })
        .collect();
    println!("\nmodule sizes: {} (bound: each filter < 288 KiB, checked by scripts/build-wasm.sh)", sizes.join(", "));
}
