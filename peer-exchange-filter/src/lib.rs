//! `peer-exchange-filter`: Istio's peer metadata exchanges as a proxy-wasm
//! module — the thin host layer over [`peer_exchange`], which holds all of
//! their logic.
//!
//! `plugin` (the entry points, choosing the form by root id) over
//! `tcp_filter` (the TCP form, ALPN `istio-peer-exchange`) and
//! `http_filter` (the `x-envoy-peer-metadata` headers), which both write the
//! peer through `stored`; `istio_metrics` records Istio's standard metrics.
//! The glue is tested natively through `wasm_host`'s fake Envoy.

#[cfg(test)]
mod glue_tests;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod http_filter;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod istio_metrics;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod plugin;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod stored;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod tcp_filter;
