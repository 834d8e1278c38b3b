//! `peer-exchange-filter`: Istio's TCP metadata exchange (ALPN
//! `istio-peer-exchange`) as a proxy-wasm network filter.
//!
//! Each side prefixes its stream with `magic, data_size, Any(Struct)` carrying
//! its workload metadata, strips the peer's prefix, and stores the peer's
//! metadata in filter state. Pure logic: [`codec`] (the frame), [`metadata`]
//! (the payload), [`workload`] (native's normalisation, wire and stored
//! views, endpoint metadata), [`exchange`] (the per-connection state machine), [`peers`] (payload to
//! stored peer, cached per VM),
//! [`participation`] (who takes part), [`deadlines`] (the exchange timeout),
//! [`config`]; the HTTP form: [`headers`] (header values), [`baggage`]
//! (Istio's W3C baggage form), [`http`] (who gets what, which peers are
//! believed). The thin proxy-wasm layer (wasm32 only): `plugin` (the
//! entry points, choosing the form by root id) over `tcp_filter` and
//! `http_filter`, which both write the peer through `stored`.

pub mod baggage;
pub mod codec;
pub mod config;
pub mod deadlines;
pub mod exchange;
pub mod headers;
pub mod http;
pub mod identity;
pub mod istio_stats;
pub mod metadata;
pub mod participation;
pub mod peers;
#[cfg(any(test, feature = "fuzzing"))]
pub mod simulate;
pub mod warnings;
pub mod workload;

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
