//! Fixed listener ports chosen at run time.
//!
//! A port taken from `bind(127.0.0.1:0)` and released lies in the kernel's
//! ephemeral range, where the next `bind(..:0)` or `connect` may take it
//! before the process it was meant for binds it — an Envoy's admin listener
//! (port 0) has answered a TLS client with plain HTTP that way. Ports below
//! the ephemeral range are never handed out by the kernel, so only another
//! process's fixed choice can take them; the ports are held until all are
//! chosen, so they are distinct.

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

/// The lowest port handed out (the rest below the ephemeral range).
const LOWEST: u16 = 10_000;

/// `n` distinct ports on 127.0.0.1, free now, outside the ephemeral range.
pub fn reserve(n: usize) -> Vec<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    assert!(
        ephemeral_low > LOWEST + 1_000,
        "the ephemeral port range starts at {ephemeral_low}: too low to choose fixed ports below it"
    );
    let span = u64::from(ephemeral_low - LOWEST);
    // A random start, so concurrent runs seldom probe the same ports.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = hasher.finish() % span;
    let mut held = Vec::with_capacity(n);
    for offset in 0..span {
        if held.len() == n {
            break;
        }
        let port = LOWEST + u16::try_from((start + offset) % span).expect("below the ephemeral range");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), n, "fewer than {n} free ports below {ephemeral_low}");
    held.iter().map(|l| l.local_addr().expect("bound").port()).collect()
}

/// One port, as [`reserve`].
pub fn reserve_one() -> u16 {
    reserve(1)[0]
}
