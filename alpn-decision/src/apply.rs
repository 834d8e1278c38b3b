//! Hands a [`Decision`] to Envoy: its counters, the one hostcall that sets
//! the upstream ALPN list, and its log line — the same for alpn-filter and
//! for the exchange's HTTP client running the rule in its own filter.

use wasm_host::Counters;

use crate::decision::{Counter, Decision, SkipReason};

/// Envoy's filter-state object that replaces the upstream TLS ALPN list.
pub const APPLICATION_PROTOCOLS: &str = "envoy.network.application_protocols";

/// The name alpn-filter's log lines start with, whichever filter runs it.
const FILTER: &str = "alpn-filter";

/// The wasm property (`wasm.upstream_alpn` in filter state) holding the list
/// offered, with `record_alpn`: `%FILTER_STATE(wasm.upstream_alpn:PLAIN)%`.
/// (Envoy's own object cannot be printed by an access log.)
pub const RECORDED: &str = "upstream_alpn";

/// Counts `decision` in `counters` (alpn-filter's [`Counter`] table) and, for
/// an override, sets the request's upstream ALPN list (and, if `record`,
/// stores it for access logs). `cluster` names the route's cluster in log
/// lines; it is asked only when a line is written.
pub fn apply(decision: &Decision, counters: &Counters<Counter>, record: bool, mut cluster: impl FnMut() -> String) {
    for counter in decision.counters() {
        counters.inc(counter);
    }
    match decision {
        Decision::Override { protocol, alpn, source, policy } => {
            let value = alpn.envoy_value();
            if let Err(e) = wasm_host::set_envoy_filter_state(APPLICATION_PROTOCOLS, value) {
                counters.inc(Counter::OverrideFailed);
                log::warn!("{FILTER}: cluster {}: cannot set upstream ALPN: {e}", cluster());
            } else {
                if record {
                    if let Err(e) = wasm_host::set_property(RECORDED, value.as_bytes()) {
                        log::debug!("{FILTER}: cluster {}: cannot record the ALPN offered: {e}", cluster());
                    }
                }
                log::debug!(
                    "{FILTER}: cluster {}: {} ({:?}) -> {protocol} -> ALPN {value} (list from {source:?})",
                    cluster(),
                    policy.0,
                    policy.1
                );
            }
        }
        Decision::Skip(SkipReason::InvalidMetadata(reason)) => {
            log::warn!("{FILTER}: cluster {}: ALPN left alone, invalid metadata: {reason}", cluster());
        }
        Decision::Skip(reason) => {
            log::debug!("{FILTER}: cluster {}: ALPN left alone: {reason:?}", cluster());
        }
    }
}

/// alpn-filter's counters, defined in the calling plugin's VM.
pub fn define_counters() -> Counters<Counter> {
    Counters::define(Counter::PREFIX)
}
