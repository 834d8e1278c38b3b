//! `alpn-filter`: Istio's outbound ALPN override (`istio.alpn`) as a
//! proxy-wasm HTTP filter.
//!
//! Before the router runs, the filter decides the upstream HTTP protocol of the
//! request and replaces the upstream TLS ALPN list with the list for that
//! protocol (`istio-http/1.0`, `istio-http/1.1`, `istio-h2`, ...), so the inbound
//! Envoy can pick its filter chain from the ClientHello. The pure logic is
//! the `alpn-decision` crate (re-exported here); `filter` is the thin
//! proxy-wasm layer (built for wasm32 only).

pub use alpn_decision::{alpn, config, decision, metadata, protocol};

// Natively (unit tests) the glue runs against wasm-host's fake Envoy; only
// the wasm build exports it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod filter;
