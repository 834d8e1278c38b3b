//! The proxy-wasm layer: answers the [`Decider`]'s questions about the
//! request from Envoy's properties and hands the chosen list to Envoy.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_host::markers::{Marker, Reports};
use wasm_host::plugin::{Action, Plugin, Stream};
use wasm_host::Counters;

use crate::config::AlpnConfig;
use crate::decision::{Counter, Decider, RequestFacts};

// Our own entry points, not the SDK's: Envoy enters the VM three times per
// request (context create, request headers, delete) instead of for every
// callback of the stream (see `wasm_host::plugin`), plus the root's tick
// that refreshes what the decider remembers per cluster.
wasm_host::plugin_exports!(Shared; request_headers, tick);

/// The cluster metadata markers this filter reads.
const MARKERS: [Marker; 2] = [Marker::AlpnOverride, Marker::Alpn];

/// One plugin's state: its decider and counters, shared by its requests.
struct Shared {
    decider: RefCell<Decider>,
    counters: Counters,
    /// Cluster metadata already checked for misplaced markers.
    reports: RefCell<Reports>,
}

impl Plugin for Shared {
    type Stream = AlpnStream;

    fn configure(size: usize) -> Option<Shared> {
        wasm_host::init_logging();
        if !wasm_host::host::check_logged("alpn-filter", &["set_envoy_filter_state"]) {
            return None;
        }
        let bytes = match wasm_host::plugin_configuration(size) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("alpn-filter: cannot read the plugin configuration ({e}), refusing it");
                return None;
            }
        };
        let config = match AlpnConfig::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("alpn-filter: invalid plugin configuration, refusing it: {e}");
                return None;
            }
        };
        for warning in config.warnings() {
            log::warn!("alpn-filter: {warning}");
        }
        let counters = alpn_decision::apply::define_counters();
        let decider = Decider::new(config);
        let refresh = decider.refresh_period_ms();
        if let Err(e) = wasm_host::start_cluster_refresh(refresh) {
            log::error!(
                "alpn-filter: cannot start the {refresh} ms metadata refresh ({e}), refusing the configuration"
            );
            return None;
        }
        Some(Shared { decider: RefCell::new(decider), counters, reports: RefCell::default() })
    }

    fn on_tick(&self) {
        if let Ok(mut decider) = self.decider.try_borrow_mut() {
            decider.refresh();
        }
    }

    fn stream(plugin: &Rc<Shared>, _context_id: u32) -> AlpnStream {
        AlpnStream(Rc::clone(plugin))
    }
}

/// A request: all it needs is its plugin.
struct AlpnStream(Rc<Shared>);

impl Stream for AlpnStream {
    fn on_request_headers(&mut self) -> Action {
        apply(&self.0);
        Action::Continue
    }
}

/// The request's facts, read from Envoy's properties when the rule asks.
/// A failing read counts as absent (and is logged): the request goes on
/// with the cluster's own ALPN rather than a guess.
struct HostRequest<'a>(&'a Shared);

fn read(path: &[&str]) -> Option<Vec<u8>> {
    wasm_host::get_property(path).unwrap_or_else(|e| {
        log::warn!("alpn-filter: cannot read {}: {e}", path.join("."));
        None
    })
}

impl RequestFacts for HostRequest<'_> {
    fn cluster_metadata(&mut self) -> Option<Vec<u8>> {
        let counters = &self.0.counters;
        counters.inc(Counter::ClusterMetadataRead.index());
        wasm_host::read_cluster_metadata("alpn-filter", &self.0.reports, &MARKERS, || {
            counters.inc(Counter::MisplacedMetadata.index())
        })
    }
    fn cluster_name(&mut self) -> Option<String> {
        cluster_name()
    }
    fn request_protocol(&mut self) -> Option<String> {
        read(&["request", "protocol"]).and_then(|b| String::from_utf8(b).ok())
    }
}

fn cluster_name() -> Option<String> {
    read(&["xds", "cluster_name"]).and_then(|b| String::from_utf8(b).ok())
}

/// For log lines only (debug lines are not formatted unless enabled).
fn cluster_label() -> String {
    cluster_name().unwrap_or_else(|| "-".into())
}

fn apply(shared: &Shared) {
    let Ok(mut decider) = shared.decider.try_borrow_mut() else { return };
    let decision = decider.decide(&mut HostRequest(shared));
    drop(decider);
    alpn_decision::apply::apply(&decision, &shared.counters, cluster_label);
}
