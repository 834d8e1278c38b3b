//! The load generators: `wrk` (HTTP/1.1), `h2load` (h2c), and TCP
//! connection churn and bulk echo written here. Each returns the operations
//! it completed.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::pseudo_random_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a scenario drives through each row's listener.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// `wrk` over this many HTTP/1.1 connections.
    Wrk(u32),
    /// `h2load` over this many h2c connections.
    H2load(u32),
    /// New TCP connections, 16 at a time.
    Churn,
    /// 64 MiB through one TCP connection.
    Bulk,
}

impl Load {
    /// Runs once against `addr` for `secs` (bulk: until its bytes are back).
    pub async fn run(self, addr: SocketAddr, secs: u64) -> u64 {
        match self {
            Load::Wrk(c) => wrk(addr, c, secs).await,
            Load::H2load(c) => h2load(addr, c, secs).await,
            Load::Churn => tcp_churn(addr, secs).await,
            Load::Bulk => tcp_bulk(addr, 64).await,
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
