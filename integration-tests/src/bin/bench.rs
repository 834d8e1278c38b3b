//! Benchmark: the same two Envoys, the same paths, with each variant of
//! filter in front of them, measured in one run with rounds alternating
//! between variants (so drift hits all of them), medians over rounds.
//!
//! For every variant: throughput and the **CPU time per request (or
//! connection) of each Envoy process** — the sum of its threads' on-CPU
//! nanoseconds (`/proc/<pid>/task/*/schedstat`) while the load ran, divided
//! by the operations served. On a shared 2-core machine that is far steadier
//! than throughput. HTTP load comes from `wrk` (HTTP/1.1) and `h2load`
//! (h2c); TCP connection churn and bulk echo from the generator below.
//!
//!   cargo run --release -p integration-tests --bin bench [rounds] [seconds per run]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::mesh::{Mesh, MeshOptions};
use integration_tests::pseudo_random_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sum of the on-CPU time of every thread of a process, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One measured run: operations done, throughput, CPU per operation of each Envoy.
#[derive(Clone, Copy, Debug)]
struct Run {
    rate: f64,
    client_us: f64,
    server_us: f64,
}

struct Envoys {
    client: u32,
    server: u32,
}

impl Envoys {
    /// Runs `load` (which returns the operations it completed) and measures.
    async fn measure<F: std::future::Future<Output = u64>>(&self, load: F) -> Run {
        let (c0, s0, t0) = (cpu_ns(self.client), cpu_ns(self.server), Instant::now());
        let ops = load.await.max(1);
        let elapsed = t0.elapsed().as_secs_f64();
        let (c1, s1) = (cpu_ns(self.client), cpu_ns(self.server));
        Run {
            rate: ops as f64 / elapsed,
            client_us: (c1 - c0) as f64 / 1e3 / ops as f64,
            server_us: (s1 - s0) as f64 / 1e3 / ops as f64,
        }
    }
}

fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
}

/// Runs a load generator to completion; its output.
async fn run_tool(program: &'static str, args: Vec<String>, hint: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(program).args(&args).output())
        .await
        .expect(program)
        .unwrap_or_else(|e| panic!("run {program} ({hint}): {e}"))
}

/// `wrk` (HTTP/1.1 keep-alive) for `secs` over `connections`; successful requests.
async fn wrk(addr: SocketAddr, connections: u32, secs: u64) -> u64 {
    let threads = connections.clamp(1, 2);
    let args = vec![
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        format!("http://{addr}/mesh/bench"),
    ];
    let out = run_tool("wrk", args, "scripts/bench.sh installs it").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("Non-2xx"), "wrk failed:\n{text}");
    requests_from_wrk(&text)
}

fn requests_from_wrk(text: &str) -> u64 {
    // "  123456 requests in 4.00s, ..."
    text.lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"))
}

/// `h2load` (h2c, prior knowledge) for `secs` over `connections`; successful requests.
async fn h2load(addr: SocketAddr, connections: u32, secs: u64) -> u64 {
    let args =
        ["-c", &connections.to_string(), "-m", "1", "-D", &secs.to_string(), &format!("http://{addr}/mesh/bench")]
            .map(String::from)
            .to_vec();
    let out = run_tool("h2load", args, "scripts/bench.sh installs nghttp2-client").await;
    let text = String::from_utf8_lossy(&out.stdout);
    // "requests: N total, N started, N done, N succeeded, F failed, ..."
    let failed = number_after(&text, "succeeded, ");
    assert!(out.status.success() && failed == Some(0), "h2load failed:\n{text}");
    let line = text.lines().find(|l| l.starts_with("requests:")).unwrap_or_default();
    line.split(',')
        .find(|p| p.contains("succeeded"))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// New TCP connections for `secs`, 16 at a time, each: connect, 64-byte round trip, close.
async fn tcp_churn(addr: SocketAddr, secs: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let mut done = 0u64;
                while Instant::now() < until {
                    let mut s = TcpStream::connect(addr).await.expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    s.write_all(&[7u8; 64]).await.expect("write");
                    s.read_exact(&mut buf).await.expect("read");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total
}

/// MiB echoed through one long-lived connection.
async fn tcp_bulk(addr: SocketAddr, mib: usize) -> u64 {
    let payload = pseudo_random_bytes(1 << 20, 9);
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..mib {
            w.write_all(&payload).await.expect("write");
        }
        w.shutdown().await.expect("shutdown");
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    while total < mib << 20 {
        let n = r.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        total += n;
    }
    writer.await.expect("writer");
    mib as u64
}

/// `[lowest..highest]` of per-round values: how far one round can be from
/// the median on this machine, so a reader can tell a difference from noise.
fn range(v: &[f64]) -> String {
    let low = v.iter().copied().fold(f64::INFINITY, f64::min);
    let high = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("[{low:+.0}..{high:+.0}]")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A scenario: its variants (name, client listener, which mesh), each
/// measured once per round, in an order that rotates from round to round.
struct Scenario {
    title: &'static str,
    unit: &'static str,
    variants: Vec<(&'static str, &'static str, usize)>,
    /// Index of the variant that is the floor for "Δ over floor".
    floor: Option<usize>,
    targets: Vec<(&'static str, String)>,
}

#[derive(Clone, Copy)]
enum Load {
    Wrk(u32),
    H2load(u32),
    Churn,
    Bulk,
}

/// `BENCH_ONLY=http1,churn` runs only the scenarios whose key is listed
/// (http1, http32, h2c1, h2c32, churn, bulk, identity, identity_http);
/// unset runs all.
fn selected(key: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|k| k.trim() == key))
}

/// An A/B of two builds of one filter: `BENCH_VARIANT_ALPN=<alpn-filter
/// build>` loads that build in the HTTP empty-filter slot, and
/// `BENCH_VARIANT_EXCHANGE=<peer-exchange-filter build>` in the TCP
/// empty-filter slots of both Envoys, each with the shipped plugin
/// configuration (the TCP slot's cluster is marked as a mesh upstream and
/// both of its sides log quietly, like the quiet exchange row). That row is
/// then the variant, and "Δ floor" reads shipped build − variant.
/// `BENCH_VARIANT_HTTP_EXCHANGE=<peer-exchange-filter build>` adds a copy of
/// the quiet HTTP exchange path whose two roles are that build: a client
/// listener (in front of the shipped alpn-filter) and its cluster, whose
/// SNI picks a copy of the server's quiet chain. Both columns then compare
/// builds. The slots differ a little by themselves: an A/A run (the
/// shipped build as the variant) gives that bias.
struct Variants {
    alpn: Option<String>,
    exchange: Option<String>,
    http_exchange: Option<String>,
}

/// The listener the HTTP exchange variant runs on (a copy of the quiet one).
const HTTP_EXCHANGE_VARIANT_LISTENER: &str = "outbound_http_exchange_variant";
/// Its cluster, and the server chain that cluster's SNI selects.
const HTTP_EXCHANGE_VARIANT_CLUSTER: &str = "mesh_http_exchange_variant";
const HTTP_EXCHANGE_VARIANT_CHAIN: &str = "inbound-http11-exchange-variant";

impl Variants {
    fn from_env() -> Variants {
        let build = |name: &str| {
            let path = std::env::var(name).ok().filter(|p| !p.is_empty())?;
            let path = std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{name}={path}: {e}"));
            Some(path.display().to_string())
        };
        let variants = Variants {
            alpn: build("BENCH_VARIANT_ALPN"),
            exchange: build("BENCH_VARIANT_EXCHANGE"),
            http_exchange: build("BENCH_VARIANT_HTTP_EXCHANGE"),
        };
        // The HTTP exchange's A/B rows leave out the empty filter's slot.
        assert!(
            variants.alpn.is_none() || variants.http_exchange.is_none(),
            "BENCH_VARIANT_ALPN and BENCH_VARIANT_HTTP_EXCHANGE both set: run them one at a time"
        );
        variants
    }

    /// The templates with the variants in the empty filter's slots, written
    /// to `dir`; `None` when there is no variant.
    fn templates(&self, dir: &std::path::Path) -> Option<std::path::PathBuf> {
        if self.alpn.is_none() && self.exchange.is_none() && self.http_exchange.is_none() {
            return None;
        }
        let configs = integration_tests::paths::envoy_configs();
        let read = |file: &str| std::fs::read_to_string(configs.join(file)).expect("read an envoy-configs template");
        let (mut client, mut server) = (read("client.yaml"), read("server.yaml"));
        if let Some(build) = &self.alpn {
            let edits = [("root_id: empty", "root_id: alpn"), ("value: http }", "value: '${ALPN_CONFIG}' }")];
            client = edit_slot(&client, "  - name: outbound_http_empty_wasm\n", build, &edits);
        }
        if let Some(build) = &self.exchange {
            let edits = [
                ("root_id: empty", "root_id: peer_exchange"),
                // Compared with the quiet row: its configuration.
                ("value: network }", "value: '${PEER_EXCHANGE_QUIET_CONFIG}' }"),
            ];
            client = edit_slot(&client, "  - name: outbound_tcp_echo_empty_wasm\n", build, &edits);
            server = edit_slot(&server, "    - name: inbound-tcp-echo-empty-wasm\n", build, &edits);
        }
        if let Some(build) = &self.http_exchange {
            (client, server) = with_http_exchange_variant(&client, &server, build);
        }
        std::fs::write(dir.join("client.yaml"), client).expect("write client.yaml");
        std::fs::write(dir.join("server.yaml"), server).expect("write server.yaml");
        Some(dir.to_path_buf())
    }

    /// The row label of a slot: the variant's file, or the empty filter.
    fn label(variant: &Option<String>, empty: &'static str) -> &'static str {
        match variant {
            Some(path) => {
                let file = std::path::Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned());
                Box::leak(format!("variant {}", file.unwrap_or_default()).into_boxed_str())
            }
            None => empty,
        }
    }
}

/// What the Δ column means in an A/B run (instead of the targets).
fn a_b_note(row: &'static str) -> Vec<(&'static str, String)> {
    vec![(
        "A/B",
        format!("Δ on the \"{row}\" row = the shipped build − the variant (an A/A run gives the slots' own bias)"),
    )]
}

/// The HTTP exchange filter loading `build`, in its own VM, with the role's
/// shipped configuration (what the shipped filter is, but the file).
const HTTP_EXCHANGE_VARIANT_FILTER: &str = r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: peer_exchange_http_variant
                root_id: peer_exchange_http
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: peer_exchange_http_variant
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: "${BUILD}" } }
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '${PEER_EXCHANGE_HTTP_CONFIG}'
"#;

/// Adds, after each piece of the quiet HTTP exchange path, a copy of it
/// whose exchange filter is `build`: the client's listener and cluster, and
/// the server's chain (picked by the copied cluster's SNI).
fn with_http_exchange_variant(client: &str, server: &str, build: &str) -> (String, String) {
    let filter = HTTP_EXCHANGE_VARIANT_FILTER.replace("${BUILD}", build);
    let server_filters = format!(
        "          http_filters:\n{filter}          - name: envoy.filters.http.router\n            typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n"
    );
    const SNI: &str = "exchange-variant.mesh.local";
    let client = with_copy(
        client,
        "  - name: outbound_http_exchange_quiet_log\n",
        &[
            ("outbound_http_exchange_quiet_log", HTTP_EXCHANGE_VARIANT_LISTENER, 2),
            ("          - *peer_exchange_http_client\n", filter.as_str(), 1),
            ("cluster: mesh_http_quiet_log }", &format!("cluster: {HTTP_EXCHANGE_VARIANT_CLUSTER} }}"), 1),
        ],
    );
    let client = with_copy(
        &client,
        "  - name: mesh_http_quiet_log\n",
        &[
            ("mesh_http_quiet_log", HTTP_EXCHANGE_VARIANT_CLUSTER, 1),
            ("sni: quiet-log.mesh.local", &format!("sni: {SNI}"), 1),
        ],
    );
    let server = with_copy(
        server,
        "    - name: inbound-http11-quiet-log\n",
        &[
            ("inbound-http11-quiet-log", HTTP_EXCHANGE_VARIANT_CHAIN, 1),
            ("server_names: [quiet-log.mesh.local]", &format!("server_names: [{SNI}]"), 1),
            ("stat_prefix: inbound_http_quiet_log", "stat_prefix: inbound_http_exchange_variant", 1),
            ("          http_filters: *inbound_http_filters\n", &server_filters, 1),
        ],
    );
    (client, server)
}

/// Adds, after the list item that starts with the line `start`, a copy of
/// it with `edits` applied (each `from` expected exactly `times` times).
fn with_copy(text: &str, start: &str, edits: &[(&str, &str, usize)]) -> String {
    let (begin, end) = list_item(text, start);
    let copy = edited(&text[begin..end], start, edits.iter().copied());
    format!("{}{copy}{}", &text[..end], &text[end..])
}

/// `item` (the list item starting with `start`) with each `from` replaced
/// by `to`, after checking it occurs exactly `times` times.
fn edited<'a>(item: &str, start: &str, edits: impl Iterator<Item = (&'a str, &'a str, usize)>) -> String {
    let mut item = item.to_string();
    for (from, to, times) in edits {
        assert_eq!(item.matches(from).count(), times, "benchmark slot {start:?}: expected {from:?} {times}×");
        item = item.replace(from, to);
    }
    item
}

/// The byte range of the list item that starts with the line `start`, up to
/// the next item at the same indentation.
fn list_item(text: &str, start: &str) -> (usize, usize) {
    let begin = text.find(start).unwrap_or_else(|| panic!("benchmark slot {start:?} not in the template"));
    let indent = &start[..start.len() - start.trim_start().len()];
    let next_item = format!("\n{indent}- ");
    let end = text[begin + start.len()..].find(&next_item).map_or(text.len(), |i| begin + start.len() + i + 1);
    (begin, end)
}

/// In the list item that starts with the line `start` (up to the next item
/// at the same indentation), loads `build` instead of the empty filter and
/// applies `edits`, each exactly once.
fn edit_slot(text: &str, start: &str, build: &str, edits: &[(&str, &str)]) -> String {
    let (begin, end) = list_item(text, start);
    let once = edits.iter().map(|&(from, to)| (from, to, 1)).chain([("${EMPTY_WASM}", build, 1)]);
    let slot = edited(&text[begin..end], start, once);
    format!("{}{slot}{}", &text[..begin], &text[end..])
}

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

async fn run_scenario(benches: &[&Bench], scenario: &Scenario, load: Load, rounds: usize, secs: u64) {
    let listeners: Vec<(SocketAddr, &Envoys)> = scenario
        .variants
        .iter()
        .map(|(_, l, m)| (benches[*m].mesh.target.client_listener(l), &benches[*m].envoys))
        .collect();
    let go = |addr: SocketAddr| async move {
        match load {
            Load::Wrk(c) => wrk(addr, c, secs).await,
            Load::H2load(c) => h2load(addr, c, secs).await,
            Load::Churn => tcp_churn(addr, secs).await,
            Load::Bulk => tcp_bulk(addr, 64).await,
        }
    };
    for (addr, _) in &listeners {
        // Warm-up: connection pools, VMs, caches.
        let _ = go(*addr).await;
    }
    let n = listeners.len();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let (addr, envoys) = listeners[i];
            runs[i].push(envoys.measure(go(addr)).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("\n{} ({} rounds, median)", scenario.title, rounds);
    println!(
        "  {:<38} {:>10} {:>7} {:>13} {:>13} {:>22}  Δ's range over the rounds",
        "variant", scenario.unit, "ratio", "client µs/op", "server µs/op", "client/server Δ floor"
    );
    for (i, (name, _, _)) in scenario.variants.iter().enumerate() {
        let per_round = |f: &dyn Fn(usize) -> f64| median((0..rounds).map(f).collect());
        let rate = per_round(&|r| runs[i][r].rate);
        let ratio = per_round(&|r| runs[i][r].rate / runs[0][r].rate);
        let client = per_round(&|r| runs[i][r].client_us);
        let server = per_round(&|r| runs[i][r].server_us);
        let (delta, spread) = match scenario.floor {
            Some(f) if i > f => {
                let client: Vec<f64> = (0..rounds).map(|r| runs[i][r].client_us - runs[f][r].client_us).collect();
                let server: Vec<f64> = (0..rounds).map(|r| runs[i][r].server_us - runs[f][r].server_us).collect();
                (
                    format!("{:+.1} / {:+.1}", median(client.clone()), median(server.clone())),
                    format!("{} / {}", range(&client), range(&server)),
                )
            }
            _ => (String::new(), String::new()),
        };
        println!("  {name:<38} {rate:>10.1} {ratio:>7.3} {client:>13.1} {server:>13.1} {delta:>22}  {spread}");
    }
    for (what, target) in &scenario.targets {
        println!("  target: {what}: {target}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    // Production log level: the per-decision debug lines are off.
    let options = |identity_check: &str| {
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
    };
    let variants = Variants::from_env();
    let templates_dir = tempfile::Builder::new().prefix("bench-templates-").tempdir().expect("temp dir");
    let templates = variants.templates(templates_dir.path());
    // The deployment as shipped (identity_check: enforce, the default) and,
    // for the identity scenarios only, a second one with the check off.
    let shipped = Bench::start(MeshOptions { templates, ..options("enforce") });
    let unchecked = (selected("identity") || selected("identity_http")).then(|| Bench::start(options("off")));
    if variants.http_exchange.is_some() {
        // The copied cluster's SNI must reach the copied server chain, or
        // the server column would time the shipped server role.
        let addr = shipped.mesh.target.client_listener(HTTP_EXCHANGE_VARIANT_LISTENER);
        let response = integration_tests::clients::http1_get(addr, "1.1", "/variant-check").await;
        assert_eq!(response.status, 200, "the HTTP exchange variant's path: {response:?}");
        assert_eq!(response.header("x-inbound-chain"), HTTP_EXCHANGE_VARIANT_CHAIN, "the variant's server chain");
    }
    println!(
        "client Envoy pid {} and server Envoy pid {}, --concurrency 1 each; {rounds} rounds of {secs} s per variant, \
         variants alternating; µs/op = the Envoy's CPU time (all threads) per request or connection",
        shipped.envoys.client, shipped.envoys.server
    );
    let quiet_exchange = ("alpn + HTTP exchange, logs without peer", "outbound_http_exchange_quiet_log", 0);
    // The floor is the third row in both layouts: the empty filter (or the
    // alpn variant), or for the A/B of the HTTP exchange, its variant.
    let http_variants = match &variants.http_exchange {
        Some(_) => vec![
            ("no filter (static ALPN cluster)", "outbound_http_baseline", 0),
            ("alpn-filter", "outbound_http", 0),
            (Variants::label(&variants.http_exchange, ""), HTTP_EXCHANGE_VARIANT_LISTENER, 0),
            quiet_exchange,
        ],
        None => vec![
            ("no filter (static ALPN cluster)", "outbound_http_baseline", 0),
            ("native set_filter_state", "outbound_http_native", 0),
            (Variants::label(&variants.alpn, "empty wasm filter (floor)"), "outbound_http_empty_wasm", 0),
            ("alpn-filter", "outbound_http", 0),
            quiet_exchange,
            ("HTTP exchange with alpn built in, one filter", "outbound_http_exchange_alpn_builtin", 0),
            ("alpn + HTTP exchange, shipped logs", "outbound_http_exchange", 0),
        ],
    };
    let http_targets = || {
        vec![
            ("alpn-filter", "client Δ over the empty wasm filter ≤ +5 µs; req/s ratio ≥ 0.95".to_string()),
            (
                "HTTP exchange",
                "its cost = the rows' Δ over the alpn-filter row (the server runs the exchange on every row: \
                 without headers on the first four); targets: client ≤ +12 µs, server ≤ +8 µs, \
                 req/s ratio ≥ 0.85 at 32 connections"
                    .to_string(),
            ),
        ]
    };
    for (key, title, load) in [
        ("http1", "HTTP/1.1, wrk, 1 connection", Load::Wrk(1)),
        ("http32", "HTTP/1.1, wrk, 32 connections", Load::Wrk(32)),
        ("h2c1", "h2c, h2load, 1 connection", Load::H2load(1)),
        ("h2c32", "h2c, h2load, 32 connections", Load::H2load(32)),
    ] {
        if !selected(key) {
            continue;
        }
        let targets = if variants.http_exchange.is_some() {
            a_b_note(quiet_exchange.0)
        } else if variants.alpn.is_some() {
            a_b_note("alpn-filter")
        } else {
            http_targets()
        };
        let scenario = Scenario { title, unit: "req/s", variants: http_variants.clone(), floor: Some(2), targets };
        run_scenario(&[&shipped], &scenario, load, rounds, secs).await;
    }
    let churn = Scenario {
        title: "TCP over mTLS, new connection + 64-byte echo + close, 16 at a time",
        unit: "conn/s",
        variants: vec![
            ("no filter", "outbound_tcp_echo_baseline", 0),
            (
                Variants::label(&variants.exchange, "empty wasm filter, both sides (floor)"),
                "outbound_tcp_echo_empty_wasm",
                0,
            ),
            ("exchange, logs without the peer", "outbound_tcp_echo_quiet_log", 0),
            ("exchange, shipped logs (peer JSON)", "outbound_tcp_echo", 0),
        ],
        floor: Some(1),
        targets: if variants.exchange.is_some() {
            a_b_note("exchange, logs without the peer")
        } else {
            vec![
                ("exchange, logs without the peer", "client and server Δ over the floor ≤ +15 µs".to_string()),
                (
                    "exchange, shipped logs",
                    "conn/s ratio ≥ 0.90; the extra over the quiet row is printing the peer".into(),
                ),
            ]
        },
    };
    if selected("churn") {
        run_scenario(&[&shipped], &churn, Load::Churn, rounds, secs).await;
    }
    let bulk = Scenario {
        title: "TCP bulk echo, 64 MiB through one connection",
        unit: "MiB/s",
        variants: vec![("no filter", "outbound_tcp_echo_baseline", 0), ("exchange", "outbound_tcp_echo", 0)],
        floor: None,
        targets: vec![("exchange", "MiB/s ratio ≥ 0.98".into())],
    };
    if selected("bulk") {
        run_scenario(&[&shipped], &bulk, Load::Bulk, rounds, secs).await;
    }
    // The identity check's own cost: the same paths in two deployments that
    // differ only in identity_check, alternating; Δ = enforce − off.
    if let Some(unchecked) = &unchecked {
        let identity = |title, unit, listener| Scenario {
            title,
            unit,
            variants: vec![("identity_check: off", listener, 1), ("identity_check: enforce (default)", listener, 0)],
            floor: Some(0),
            targets: vec![("enforce", "client and server Δ over off: the check's cost, ≈ 0–2 µs".to_string())],
        };
        if selected("identity") {
            let title = "identity check, TCP: new connection + 64-byte echo + close, logs without the peer";
            let scenario = identity(title, "conn/s", "outbound_tcp_echo_quiet_log");
            run_scenario(&[&shipped, unchecked], &scenario, Load::Churn, rounds, secs).await;
        }
        if selected("identity_http") {
            let title = "identity check, HTTP exchange: HTTP/1.1, wrk, 1 connection, logs without the peer";
            let scenario = identity(title, "req/s", "outbound_http_exchange_quiet_log");
            run_scenario(&[&shipped, unchecked], &scenario, Load::Wrk(1), rounds, secs).await;
        }
    }

    let sizes: Vec<String> = ["alpn_filter", "peer_exchange_filter", "empty_filter"]
        .iter()
        .map(|n| {
            let len = std::fs::metadata(integration_tests::paths::wasm(n)).map(|m| m.len()).unwrap_or(0);
            format!("{n}.wasm {len} B ({:.1} KiB)", len as f64 / 1024.0)
        })
        .collect();
    println!("\nmodule sizes: {} (bound: each filter < 256 KiB, checked by scripts/build-wasm.sh)", sizes.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_replaces_the_empty_filter_in_its_slot_only() {
        let template = "  - name: a\n    root_id: empty\n    file: ${EMPTY_WASM}\n  - name: b\n    root_id: empty\n";
        let edited = edit_slot(template, "  - name: a\n", "/v.wasm", &[("root_id: empty", "root_id: alpn")]);
        assert_eq!(edited, "  - name: a\n    root_id: alpn\n    file: /v.wasm\n  - name: b\n    root_id: empty\n");
    }

    /// The shipped templates keep the slots the A/B runs edit, so a template
    /// change that breaks them fails here, not in the middle of a benchmark.
    #[test]
    fn the_shipped_templates_take_both_variants() {
        let dir = tempfile::tempdir().expect("temp dir");
        let variants = Variants {
            alpn: Some("/a.wasm".into()),
            exchange: Some("/x.wasm".into()),
            http_exchange: Some("/h.wasm".into()),
        };
        let written = variants.templates(dir.path()).expect("templates written");
        let client = std::fs::read_to_string(written.join("client.yaml")).expect("client.yaml");
        let server = std::fs::read_to_string(written.join("server.yaml")).expect("server.yaml");
        assert!(client.contains("root_id: alpn") && client.contains("\"/a.wasm\"") && client.contains("\"/x.wasm\""));
        assert!(server.contains("root_id: peer_exchange") && server.contains("\"/x.wasm\""));
        assert!(!client.contains("${EMPTY_WASM}") && !server.contains("${EMPTY_WASM}"));
        // The HTTP exchange variant: a copy of the quiet path, both roles the variant build.
        let item = |text: &str, start: String| {
            let (begin, end) = list_item(text, &start);
            text[begin..end].to_string()
        };
        let listener = item(&client, format!("  - name: {HTTP_EXCHANGE_VARIANT_LISTENER}\n"));
        assert!(listener.contains("\"/h.wasm\"") && listener.contains("*alpn_filter"));
        assert!(listener.contains(&format!("cluster: {HTTP_EXCHANGE_VARIANT_CLUSTER} }}")));
        assert!(!listener.contains("*peer_exchange_http_client") && !listener.contains("mesh_http_quiet_log"));
        let cluster = item(&client, format!("  - name: {HTTP_EXCHANGE_VARIANT_CLUSTER}\n"));
        assert!(cluster.contains("sni: exchange-variant.mesh.local") && cluster.contains("istio.peer_exchange"));
        let chain = item(&server, format!("    - name: {HTTP_EXCHANGE_VARIANT_CHAIN}\n"));
        assert!(chain.contains("server_names: [exchange-variant.mesh.local]") && chain.contains("\"/h.wasm\""));
        assert!(chain.contains("envoy.filters.http.router") && !chain.contains("*inbound_http_filters"));
        for (text, original) in [
            (&client, "- name: outbound_http_exchange_quiet_log\n"),
            (&client, "- name: mesh_http_quiet_log\n"),
            (&server, "- name: inbound-http11-quiet-log\n"),
        ] {
            assert_eq!(text.matches(original).count(), 1, "{original:?} kept once");
        }
        // Still YAML (once its placeholders are filled), and the copies sit
        // in the lists they were copied from.
        let yaml = |text: &str| -> serde_yaml::Value {
            let (mut filled, mut rest) = (String::new(), text);
            while let Some(i) = rest.find("${") {
                let end = rest[i..].find('}').expect("a closed placeholder") + i;
                filled.push_str(&rest[..i]);
                filled.push('0');
                rest = &rest[end + 1..];
            }
            filled.push_str(rest);
            serde_yaml::from_str(&filled).expect("the edited template stays YAML")
        };
        let (client_yaml, server_yaml) = (yaml(&client), yaml(&server));
        let count = |list: &serde_yaml::Value, name: &str| {
            list.as_sequence().expect("a list").iter().filter(|item| item["name"] == name).count()
        };
        assert_eq!(count(&client_yaml["static_resources"]["listeners"], HTTP_EXCHANGE_VARIANT_LISTENER), 1);
        assert_eq!(count(&client_yaml["static_resources"]["clusters"], HTTP_EXCHANGE_VARIANT_CLUSTER), 1);
        let inbound = &server_yaml["static_resources"]["listeners"][0];
        assert_eq!(inbound["name"], "inbound_mtls");
        assert_eq!(count(&inbound["filter_chains"], HTTP_EXCHANGE_VARIANT_CHAIN), 1);
        let none = Variants { alpn: None, exchange: None, http_exchange: None };
        assert!(none.templates(dir.path()).is_none());
    }
}
