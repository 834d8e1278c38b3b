//! Soak: the two Envoys under 500 concurrent connections for a long time —
//! 400 churning TCP connections through the exchange (each a few echoed
//! round trips of random sizes, then closed) and 100 churning HTTP/1.1
//! keep-alive connections through alpn-filter. Every minute: each Envoy's
//! RSS, operations, errors and the filters' counters. At the end: RSS
//! growth, errors, and whether every byte came back.
//!
//!   cargo run --release -p integration-tests --bin soak [minutes]   (default 30)
//!
//! Or reconfiguration under traffic (integration-tests/src/reconfig.rs):
//! listeners and clusters replaced `updates` times through file-based xDS
//! while HTTP/1.1, h2c and TCP run through both forms of the exchange and,
//! for comparison, through the same paths without our filters:
//!
//!   cargo run --release -p integration-tests --bin soak reconfig [updates] [--without-filters | --istio-metrics]   (default 300)
//!
//! (`--without-filters`: the same updates and traffic through the baseline
//! alone, to tell Envoy's own memory growth from ours.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::mesh::{Mesh, MeshOptions};
use integration_tests::pseudo_random_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TCP_CONNECTIONS: usize = 400;
const HTTP_CONNECTIONS: usize = 100;
/// Any single step slower than this counts as an error (and the connection is dropped).
const STEP: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Tally {
    tcp_connections: AtomicU64,
    tcp_bytes: AtomicU64,
    http_requests: AtomicU64,
    /// Connect, read or write failures and timeouts.
    errors: AtomicU64,
    /// Echoed bytes that differ from what was sent.
    mismatches: AtomicU64,
    /// HTTP responses other than 200.
    bad_status: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A tiny deterministic generator per task (no shared state, no locks).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn step<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> Result<T, ()> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(()),
    }
}

/// One TCP connection: 1–8 echoed round trips of 1 B–64 KiB, with pauses.
async fn tcp_connection(addr: SocketAddr, rng: &mut Rng, data: &[u8], tally: &Tally) -> Result<(), ()> {
    let mut stream = step(TcpStream::connect(addr)).await?;
    stream.set_nodelay(true).map_err(|_| ())?;
    let mut echoed = vec![0u8; 64 * 1024];
    for _ in 0..1 + rng.below(8) {
        let len = 1 + rng.below(64 * 1024) as usize;
        let start = rng.below((data.len() - len) as u64) as usize;
        let sent = &data[start..start + len];
        step(stream.write_all(sent)).await?;
        step(stream.read_exact(&mut echoed[..len])).await?;
        if &echoed[..len] != sent {
            tally.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        tally.tcp_bytes.fetch_add(len as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
    }
    tally.tcp_connections.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Reads one HTTP/1.1 response (Content-Length or chunked); its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, ()> {
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = step(stream.read(&mut chunk)).await?;
        if n == 0 {
            return Err(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(())?;
    let length: Option<usize> =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    let done = |buf: &[u8]| match length {
        Some(len) => buf.len() >= header_end + len,
        None => buf[header_end..].windows(5).any(|w| w == b"0\r\n\r\n"),
    };
    while !done(buf) {
        let n = step(stream.read(&mut chunk)).await?;
        if n == 0 {
            return Err(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let consumed = match length {
        Some(len) => header_end + len,
        None => buf.len(),
    };
    buf.drain(..consumed);
    Ok(status)
}

/// One keep-alive HTTP/1.1 connection: 1–40 requests, with pauses.
async fn http_connection(addr: SocketAddr, rng: &mut Rng, tally: &Tally) -> Result<(), ()> {
    let mut stream = step(TcpStream::connect(addr)).await?;
    stream.set_nodelay(true).map_err(|_| ())?;
    let mut buf = Vec::new();
    for i in 0..1 + rng.below(40) {
        let request = format!("GET /mesh/soak/{i} HTTP/1.1\r\nHost: app.local\r\n\r\n");
        step(stream.write_all(request.as_bytes())).await?;
        if read_response(&mut stream, &mut buf).await? != 200 {
            tally.bad_status.fetch_add(1, Ordering::Relaxed);
        }
        tally.http_requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
    }
    Ok(())
}

fn counters(mesh: &Mesh) -> String {
    let pick = |envoy: &integration_tests::envoy::Envoy, prefix: &str| {
        envoy
            .stats()
            .into_iter()
            .filter(|(k, v)| k.starts_with(prefix) && *v > 0)
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("wasmcustom.")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "client: {} {}\n    server: {}",
        pick(&mesh.client, "wasmcustom.peer_exchange.client."),
        pick(&mesh.client, "wasmcustom.alpn_filter."),
        pick(&mesh.server, "wasmcustom.peer_exchange.server.")
    )
}

/// The long form of the reconfiguration test; exits non-zero on a VM
/// failure, a lost TCP connection through the exchange, or more losses than
/// the same paths without our filters.
async fn reconfig(updates: u64, filters: integration_tests::reconfig::Filters) {
    use integration_tests::reconfig::Filters;
    let what = match filters {
        Filters::None => ", without our filters (the baseline alone)",
        Filters::Ours => "",
        Filters::OursWithMetrics => ", our filters with istio_metrics on",
    };
    println!("reconfiguration soak: {updates} updates of every listener and cluster under traffic{what}");
    let started = Instant::now();
    let report = integration_tests::reconfig::run(updates, 4, Duration::from_millis(500), true, filters).await;
    println!("\nreconfiguration soak result after {:.0} s:\n{report}", started.elapsed().as_secs_f64());
    let lost_more = report.traffic.values().any(|(_, errors, _, base_errors)| errors > base_errors);
    let tcp_lost = report.traffic.get(&integration_tests::reconfig::Kind::Tcp).is_some_and(|t| t.1 > 0);
    if !report.vm_failures.is_empty() || lost_more || tcp_lost {
        for line in &report.vm_failures {
            println!("  {line}");
        }
        std::process::exit(1);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("reconfig") {
        use integration_tests::reconfig::Filters;
        let filters = if args.iter().any(|a| a == "--without-filters") {
            Filters::None
        } else if args.iter().any(|a| a == "--istio-metrics") {
            Filters::OursWithMetrics
        } else {
            Filters::Ours
        };
        return reconfig(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300), filters).await;
    }
    let minutes: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(30);
    let mut mesh = Mesh::start_with(MeshOptions { wasm_log_level: "info".into(), ..MeshOptions::default() });
    let pids = (mesh.client.pid().unwrap_or(0), mesh.server.pid().unwrap_or(0));
    // Listeners whose access logs do not print the peer: a long run writes
    // millions of lines.
    let tcp = mesh.target.client_listener("outbound_tcp_echo_quiet_log");
    let http = mesh.target.client_listener("outbound_http");
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let data = Arc::new(pseudo_random_bytes(1 << 20, 42));
    println!(
        "soak: {minutes} min, {TCP_CONNECTIONS} TCP connections through the exchange and {HTTP_CONNECTIONS} HTTP/1.1 \
         connections through alpn-filter, churning; client Envoy pid {}, server Envoy pid {}",
        pids.0, pids.1
    );
    let mut tasks = Vec::new();
    for i in 0..TCP_CONNECTIONS + HTTP_CONNECTIONS {
        let (tally, data) = (tally.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            while Instant::now() < until {
                let result = if i < TCP_CONNECTIONS {
                    tcp_connection(tcp, &mut rng, &data, &tally).await
                } else {
                    http_connection(http, &mut rng, &tally).await
                };
                if result.is_err() {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let start = Instant::now();
    let first_rss = (rss_kib(pids.0), rss_kib(pids.1));
    let mut after_first_minute = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(60).min(until.saturating_duration_since(Instant::now()))).await;
        let rss = (rss_kib(pids.0), rss_kib(pids.1));
        after_first_minute.get_or_insert(rss);
        println!(
            "[{:>3} min] RSS client {} KiB, server {} KiB | TCP connections {} ({} MiB echoed), HTTP requests {} | \
             errors {}, mismatches {}, non-200 {}\n    {}",
            start.elapsed().as_secs() / 60,
            rss.0,
            rss.1,
            tally.tcp_connections.load(Ordering::Relaxed),
            tally.tcp_bytes.load(Ordering::Relaxed) >> 20,
            tally.http_requests.load(Ordering::Relaxed),
            tally.errors.load(Ordering::Relaxed),
            tally.mismatches.load(Ordering::Relaxed),
            tally.bad_status.load(Ordering::Relaxed),
            counters(&mesh)
        );
    }
    for task in tasks {
        let _ = task.await;
    }
    let end_rss = (rss_kib(pids.0), rss_kib(pids.1));
    let base = after_first_minute.unwrap_or(first_rss);
    let alive = mesh.client.is_alive() && mesh.server.is_alive();
    let (errors, mismatches, bad) = (
        tally.errors.load(Ordering::Relaxed),
        tally.mismatches.load(Ordering::Relaxed),
        tally.bad_status.load(Ordering::Relaxed),
    );
    println!("\nsoak result after {minutes} min:");
    println!(
        "  RSS client {} → {} KiB (from the first minute: {:+} KiB), server {} → {} KiB ({:+} KiB)",
        base.0,
        end_rss.0,
        end_rss.0 as i64 - base.0 as i64,
        base.1,
        end_rss.1,
        end_rss.1 as i64 - base.1 as i64
    );
    println!(
        "  TCP connections {}, {} MiB echoed; HTTP requests {}",
        tally.tcp_connections.load(Ordering::Relaxed),
        tally.tcp_bytes.load(Ordering::Relaxed) >> 20,
        tally.http_requests.load(Ordering::Relaxed)
    );
    println!("  errors {errors}, non-200 {bad}, Envoys alive: {alive}");
    println!("  every byte came back: {}", if mismatches == 0 { "yes" } else { "NO" });
    drop(mesh);
    if mismatches > 0 || !alive || bad > 0 {
        std::process::exit(1);
    }
}
