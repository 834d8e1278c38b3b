//! The filters' counters by typed name: prefixes and names come from the
//! filter crates, so no test spells a stat.

use alpn_filter::decision::Counter as AlpnCounter;
use peer_exchange_filter::config::{stat_prefix, Role, Transport};
use peer_exchange_filter::exchange::Counter as ExchangeCounter;
use peer_exchange_filter::http::HttpCounter;

use crate::envoy::Admin;

/// Envoy's prefix for stats a wasm plugin defines.
pub const WASM_PREFIX: &str = "wasmcustom.";

pub fn alpn(envoy: &Admin, counter: AlpnCounter) -> u64 {
    envoy.counter(&format!("{WASM_PREFIX}{}{}", AlpnCounter::PREFIX, counter.name()))
}

/// The TCP exchange's counter of `role` (the client Envoy runs the client role).
pub fn exchange(envoy: &Admin, role: Role, counter: ExchangeCounter) -> u64 {
    envoy.counter(&format!("{WASM_PREFIX}{}{}", stat_prefix(Transport::Tcp, role), counter.name()))
}

/// The HTTP exchange's counter of `role`.
pub fn http_exchange(envoy: &Admin, role: Role, counter: HttpCounter) -> u64 {
    envoy.counter(&format!("{WASM_PREFIX}{}{}", stat_prefix(Transport::Http, role), counter.name()))
}

/// Waits until the TCP exchange's counter reaches `value` (or the timeout); its last value.
pub fn wait_exchange(
    envoy: &Admin,
    role: Role,
    counter: ExchangeCounter,
    value: u64,
    timeout: std::time::Duration,
) -> u64 {
    envoy.wait_counter(&format!("{WASM_PREFIX}{}{}", stat_prefix(Transport::Tcp, role), counter.name()), value, timeout)
}
