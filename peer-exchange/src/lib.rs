//! Istio's peer metadata exchanges as pure logic: no hostcall, so it builds
//! and tests natively and any host layer can run it (`peer-exchange-filter`
//! is the proxy-wasm one).
//!
//! The TCP form (ALPN `istio-peer-exchange`): each side prefixes its stream
//! with `magic, data_size, Any(Struct)` carrying its workload metadata,
//! strips the peer's prefix, and stores the peer's metadata. [`codec`] (the
//! frame), [`metadata`] (the payload), [`workload`] (native's normalisation,
//! wire and stored views, endpoint metadata), [`exchange`] (the
//! per-connection state machine), [`peers`] (payload to stored peer, cached
//! per VM), [`identity`] (claims checked against the peer certificate),
//! [`participation`] (who takes part), [`deadlines`] (the exchange timeout),
//! [`warnings`] (the mistakes a running filter names), [`config`].
//!
//! The HTTP form (`x-envoy-peer-metadata` headers): [`headers`] (header
//! values), [`baggage`] (Istio's W3C baggage form), [`http`] (who gets what,
//! which peers are believed). [`istio_stats`]: Istio's standard metrics'
//! labels and series, from the stored peers.

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
