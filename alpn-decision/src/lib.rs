//! Istio's outbound ALPN rule (`istio.alpn`), as pure logic: which list a
//! request's upstream connection offers, from the plugin configuration
//! ([`config`]), the route cluster's metadata ([`metadata`]) and its
//! protocol policy ([`protocol`]); the lists themselves ([`alpn`]); the
//! per-request decision, its caches and counters ([`decision`]); and
//! [`apply`] (feature `host`), the one hostcall a decision needs. `alpn-filter` runs it as a
//! filter of its own, and the exchange's HTTP client can run it in its own
//! filter.

pub mod alpn;
#[cfg(feature = "host")]
pub mod apply;
pub mod config;
pub mod decision;
pub mod metadata;
pub mod protocol;
