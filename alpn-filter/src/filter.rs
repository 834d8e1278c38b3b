//! The proxy-wasm layer: reads the request's protocol and route cluster,
//! asks [`decide`](crate::decision::decide), and hands the list to Envoy.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use wasm_host::{Counters, HostResult};

use crate::config::AlpnConfig;
use crate::decision::{decide, Counter, Decision, SkipReason};

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
    config: AlpnConfig,
    counters: Counters,
}

impl Context for AlpnRoot {}

impl RootContext for AlpnRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        wasm_host::init_logging();
        let bytes = wasm_host::plugin_configuration(size);
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
        self.shared = Some(Rc::new(Shared { config, counters }));
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
            if let Err(e) = apply(shared) {
                log::warn!("alpn-filter: cannot read request properties: {e}");
            }
        }
        Action::Continue
    }
}

fn cluster_name() -> String {
    wasm_host::get_property_string(&["xds", "cluster_name"]).ok().flatten().unwrap_or_else(|| "-".into())
}

fn apply(shared: &Shared) -> HostResult<()> {
    let protocol = wasm_host::get_property_string(&["request", "protocol"])?;
    // One hostcall in the common case: the route's cluster metadata. Only
    // when Envoy has none do we ask whether there is a cluster at all.
    let cluster_metadata = match wasm_host::get_property(&["xds", "cluster_metadata"])? {
        Some(metadata) => Some(metadata),
        None => wasm_host::get_property(&["xds", "cluster_name"])?.map(|_| Vec::new()),
    };
    let decision = decide(&shared.config, protocol.as_deref(), cluster_metadata.as_deref());
    for counter in decision.counters() {
        shared.counters.inc(counter.index());
    }
    match &decision {
        Decision::Override { protocol, alpn, source } => {
            let value = alpn.to_envoy_value();
            if let Err(e) = wasm_host::set_envoy_filter_state(APPLICATION_PROTOCOLS, &value) {
                shared.counters.inc(Counter::OverrideFailed.index());
                log::warn!("alpn-filter: cluster {}: cannot set upstream ALPN: {e}", cluster_name());
            } else {
                log::debug!("alpn-filter: cluster {}: {protocol} -> ALPN {value} (from {source:?})", cluster_name());
            }
        }
        Decision::Skip(SkipReason::InvalidMetadata(reason)) => {
            log::warn!("alpn-filter: cluster {}: ALPN left alone, invalid metadata: {reason}", cluster_name());
        }
        Decision::Skip(reason) => {
            log::debug!("alpn-filter: cluster {}: ALPN left alone: {reason:?}", cluster_name());
        }
    }
    Ok(())
}
