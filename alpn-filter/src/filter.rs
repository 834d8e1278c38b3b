//! The proxy-wasm layer: answers the [`Decider`]'s questions about the
//! request from Envoy's properties and hands the chosen list to Envoy.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use wasm_host::Counters;

use crate::config::AlpnConfig;
use crate::decision::{Counter, Decider, Decision, RequestFacts, SkipReason};

/// Envoy's filter-state object that replaces the upstream TLS ALPN list.
const APPLICATION_PROTOCOLS: &str = "envoy.network.application_protocols";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AlpnRoot::default()) });
}}

#[derive(Default)]
struct AlpnRoot {
    shared: Option<Rc<Shared>>,
}

struct Shared {
    decider: RefCell<Decider>,
    counters: Counters,
}

impl Context for AlpnRoot {}

impl RootContext for AlpnRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        wasm_host::init_logging();
        let bytes = match wasm_host::plugin_configuration(size) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("alpn-filter: cannot read the plugin configuration ({e}), refusing it");
                return false;
            }
        };
        let config = match AlpnConfig::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("alpn-filter: invalid plugin configuration, refusing it: {e}");
                return false;
            }
        };
        for warning in config.warnings() {
            log::warn!("alpn-filter: {warning}");
        }
        let counters = Counters::define(Counter::PREFIX, Counter::ALL.iter().map(|c| c.name()));
        self.shared = Some(Rc::new(Shared { decider: RefCell::new(Decider::new(config)), counters }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AlpnStream { shared: self.shared.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AlpnStream {
    shared: Option<Rc<Shared>>,
}

impl Context for AlpnStream {}

impl HttpContext for AlpnStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(shared) = &self.shared {
            apply(shared);
        }
        Action::Continue
    }
}

/// The request's facts, read from Envoy's properties when the rule asks.
/// A failing read counts as absent (and is logged): the request goes on
/// with the cluster's own ALPN rather than a guess.
struct HostRequest;

fn read(path: &[&str]) -> Option<Vec<u8>> {
    wasm_host::get_property(path).unwrap_or_else(|e| {
        log::warn!("alpn-filter: cannot read {}: {e}", path.join("."));
        None
    })
}

impl RequestFacts for HostRequest {
    fn cluster_metadata(&mut self) -> Option<Vec<u8>> {
        read(&["xds", "cluster_metadata"])
    }
    fn cluster_name(&mut self) -> Option<String> {
        read(&["xds", "cluster_name"]).and_then(|b| String::from_utf8(b).ok())
    }
    fn request_protocol(&mut self) -> Option<String> {
        read(&["request", "protocol"]).and_then(|b| String::from_utf8(b).ok())
    }
}

/// For log lines only (debug lines are not formatted unless enabled).
fn cluster_name() -> String {
    HostRequest.cluster_name().unwrap_or_else(|| "-".into())
}

fn apply(shared: &Shared) {
    let Ok(mut decider) = shared.decider.try_borrow_mut() else { return };
    let decision = decider.decide(&mut HostRequest);
    drop(decider);
    for counter in decision.counters() {
        shared.counters.inc(counter.index());
    }
    match &decision {
        Decision::Override { protocol, alpn, source, policy } => {
            let value = alpn.envoy_value();
            if let Err(e) = wasm_host::set_envoy_filter_state(APPLICATION_PROTOCOLS, value) {
                shared.counters.inc(Counter::OverrideFailed.index());
                log::warn!("alpn-filter: cluster {}: cannot set upstream ALPN: {e}", cluster_name());
            } else {
                log::debug!(
                    "alpn-filter: cluster {}: {} ({:?}) -> {protocol} -> ALPN {value} (list from {source:?})",
                    cluster_name(),
                    policy.0,
                    policy.1
                );
            }
        }
        Decision::Skip(SkipReason::InvalidMetadata(reason)) => {
            log::warn!("alpn-filter: cluster {}: ALPN left alone, invalid metadata: {reason}", cluster_name());
        }
        Decision::Skip(reason) => {
            log::debug!("alpn-filter: cluster {}: ALPN left alone: {reason:?}", cluster_name());
        }
    }
}
