//! Benchmark: the same Envoys, the same paths, with and without our filters,
//! measured in one run (rounds alternate between the two so drift hits both).
//! Prints operations per second and the ratio filter/baseline.
//!
//!   cargo run --release -p integration-tests --bin bench [rounds]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use integration_tests::mesh::{Mesh, MeshOptions};
use integration_tests::pseudo_random_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONCURRENCY: usize = 16;

/// HTTP/1.1 keep-alive requests per second over CONCURRENCY connections.
async fn http_requests(addr: SocketAddr, per_connection: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
                tokio::spawn(conn);
                for _ in 0..per_connection {
                    sender.ready().await.expect("ready");
                    let req = hyper::Request::get("/mesh/bench")
                        .header("host", "app.local")
                        .body(Empty::<Bytes>::new())
                        .expect("req");
                    let res = sender.send_request(req).await.expect("send");
                    assert_eq!(res.status(), 200);
                    res.into_body().collect().await.expect("body");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (CONCURRENCY * per_connection) as f64 / start.elapsed().as_secs_f64()
}

/// New TCP connections per second, each: connect, 64-byte round trip, close.
async fn tcp_connections(addr: SocketAddr, per_task: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                for _ in 0..per_task {
                    let mut s = TcpStream::connect(addr).await.expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    s.write_all(&[7u8; 64]).await.expect("write");
                    s.read_exact(&mut buf).await.expect("read");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (CONCURRENCY * per_task) as f64 / start.elapsed().as_secs_f64()
}

/// MiB/s of echo through one long-lived connection.
async fn tcp_throughput(addr: SocketAddr, mib: usize) -> f64 {
    let payload = pseudo_random_bytes(1 << 20, 9);
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let start = Instant::now();
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
    mib as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // Production log level: the per-decision debug lines are off.
    let mesh = Mesh::start_with(MeshOptions { wasm_log_level: "info".into(), ..MeshOptions::default() });
    let pairs = [
        ("HTTP/1.1 requests/s (alpn-filter)", "outbound_http_baseline", "outbound_http"),
        ("TCP new connections/s (peer exchange)", "outbound_tcp_echo_baseline", "outbound_tcp_echo"),
        ("TCP echo MiB/s (peer exchange)", "outbound_tcp_echo_baseline", "outbound_tcp_echo"),
    ];
    println!("rounds: {rounds}, concurrency {CONCURRENCY}; each round runs baseline and filter back to back");
    println!("{:<40} {:>12} {:>12} {:>8}", "scenario", "baseline", "filter", "ratio");
    for (i, (name, base, with)) in pairs.iter().enumerate() {
        let (base, with) = (mesh.client_listener(base), mesh.client_listener(with));
        let run = |addr: SocketAddr| async move {
            match i {
                0 => http_requests(addr, 200).await,
                1 => tcp_connections(addr, 40).await,
                _ => tcp_throughput(addr, 64).await,
            }
        };
        run(base).await; // warm-up: connection pools, VMs, caches
        run(with).await;
        let (mut b, mut f, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate the order so neither side always runs second.
            let (x, y) = if round % 2 == 0 {
                let x = run(base).await;
                (x, run(with).await)
            } else {
                let y = run(with).await;
                (run(base).await, y)
            };
            b.push(x);
            f.push(y);
            ratios.push(y / x);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("{:<40} {:>12.1} {:>12.1} {:>8.3}", name, median(b), median(f), median(ratios));
    }
    let stats = mesh.client.stats();
    println!(
        "\nclient counters: override_http11={} metadata_added={} metadata_received={}",
        stats.get("wasmcustom.alpn_filter.override_http11").copied().unwrap_or(0),
        stats.get("wasmcustom.peer_exchange.client.metadata_added").copied().unwrap_or(0),
        stats.get("wasmcustom.peer_exchange.client.metadata_received").copied().unwrap_or(0),
    );
}
