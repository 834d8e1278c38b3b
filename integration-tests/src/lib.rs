//! A harness that runs the real Envoy binary with the real .wasm filters.
//!
//! - [`paths`]: where Envoy and the .wasm files are (clear errors when missing).
//! - [`pki`]: a CA and SPIFFE workload certificates, generated per run.
//! - [`ports`]: fixed listener ports chosen at run time, outside the kernel's ephemeral range.
//! - [`backends`]: the servers behind the Envoys (echo, server-first, HTTP,
//!   non-mesh TLS/HTTPS, a recorder), on ports chosen at run time.
//! - [`envoy`]: one Envoy child process: config rendering, readiness, admin
//!   queries, logs; killed by PID on drop (also when a test panics).
//! - [`examples`]: the examples run as a user runs them (optionally with a mistake made in them).
//! - [`istio`]: the sidecar istiod builds around our WasmPlugins, as a stock Envoy config.
//! - [`prometheus`]: a real Prometheus scraping the Envoys, and its query API.
//! - [`mesh`]: the two-Envoy deployment the tests and the demo use.
//! - [`reconfig`]: two Envoys whose listeners and clusters change under traffic (file-based xDS).
//! - [`target`]: a deployment to test, started here or pointed at (docker compose).
//! - [`checks`]: end-to-end checks that hold for any deployment.
//! - [`clients`]: what the local app does (TCP echo, HTTP/1.0, HTTP/1.1, h2c).
//! - [`grpc`]: unary gRPC as the HTTP backend answers it and the app calls it.
//! - [`workloads`]: the workload metadata the two Envoys' nodes carry.
//! - [`wire`]: the exchange's wire format, written from the spec
//!   independently of the filter code.

pub mod backends;
pub mod checks;
pub mod clients;
pub mod envoy;
pub mod examples;
pub mod grpc;
pub mod istio;
pub mod mesh;
pub mod paths;
pub mod pki;
pub mod ports;
pub mod prometheus;
pub mod reconfig;
pub mod stats;
pub mod target;
pub mod wire;
pub mod workloads;

/// The banner the server-first backend writes on accept.
/// How long tests wait for an access-log line or a counter: Envoy writes a
/// TCP line when the connection closes and flushes its log files every 100 ms.
pub const LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

pub const BANNER: &[u8] = b"220 banner.mesh.local ESMTP server-first backend ready\r\n";

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
