//! The proxy-wasm layer: answers the [`Decider`]'s questions about the
//! request from Envoy's properties and hands the chosen list to Envoy.

use std::cell::RefCell;
use std::rc::Rc;

use filter_common::istio::{Marker, Reports};
use wasm_host::plugin::{Action, Plugin, Stream};
use wasm_host::Counters;

use crate::config::AlpnConfig;
use crate::decision::{Counter, Decider, RequestFacts};

// Our own entry points, not the SDK's: Envoy enters the VM three times per
// request (context create, request headers, delete) instead of for every
// callback of the stream (see `wasm_host::plugin`), plus the root's tick
// that refreshes what the decider remembers per cluster.
#[cfg(target_arch = "wasm32")]
wasm_host::plugin_exports!(Shared; request_headers, tick);

/// The cluster metadata markers this filter reads.
const MARKERS: [Marker; 2] = [Marker::AlpnOverride, Marker::Alpn];

/// One plugin's state: its decider and counters, shared by its requests.
struct Shared {
    decider: RefCell<Decider>,
    counters: Counters<Counter>,
    /// Cluster metadata already checked for misplaced markers.
    reports: RefCell<Reports>,
}

impl Plugin for Shared {
    type Stream = AlpnStream;

    fn configure(size: usize) -> Option<Shared> {
        let bytes = wasm_host::plugin::configuration("alpn-filter", &["set_envoy_filter_state"], size)?;
        let config = wasm_host::plugin::refuse("alpn-filter", AlpnConfig::parse(&bytes))?;
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
        counters.inc(Counter::ClusterMetadataRead);
        wasm_host::read_cluster_metadata("alpn-filter", &self.0.reports, &MARKERS, || {
            counters.inc(Counter::MisplacedMetadata)
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
    let record = decider.records();
    drop(decider);
    alpn_decision::apply::apply(&decision, &shared.counters, record, cluster_label);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proto::prost_types::value::Kind;
    use wasm_host::fake::{self, FakeHost, PLUGIN_CONFIGURATION};

    use super::*;

    /// Cluster metadata with `namespace: {key: "value"}` entries.
    fn metadata(entries: &[(&str, &str, &str)]) -> Vec<u8> {
        let entries: Vec<(&str, &str, Kind)> =
            entries.iter().map(|(n, k, v)| (*n, *k, Kind::StringValue(v.to_string()))).collect();
        fake::metadata(&entries)
    }

    /// Envoy with a plugin configuration and a request to `cluster`.
    fn envoy(config: &str, cluster: Option<&str>, cluster_metadata: Option<Vec<u8>>) -> FakeHost {
        let mut host = FakeHost::default();
        host.buffers.insert(PLUGIN_CONFIGURATION, config.as_bytes().to_vec());
        host.property("request.protocol", "HTTP/1.1");
        if let Some(cluster) = cluster {
            host.property("xds.cluster_name", cluster);
        }
        if let Some(bytes) = cluster_metadata {
            host.property("xds.cluster_metadata", bytes);
        }
        host
    }

    fn configure(host: FakeHost) -> Option<Rc<Shared>> {
        let size = host.buffers.get(&PLUGIN_CONFIGURATION).map_or(0, Vec::len);
        fake::install(host);
        Shared::configure(size).map(Rc::new)
    }

    fn request(shared: &Rc<Shared>) -> Action {
        Shared::stream(shared, 2).on_request_headers()
    }

    fn counted() -> BTreeMap<String, i64> {
        fake::with(|h| h.counted())
    }

    fn counts(names: &[&str]) -> BTreeMap<String, i64> {
        names.iter().map(|n| (format!("alpn_filter.{n}"), 1)).collect()
    }

    #[test]
    fn an_override_sets_envoys_filter_state_and_counts_the_decision() {
        let shared =
            configure(envoy("{}", Some("web"), Some(metadata(&[("istio.alpn", "upstream_protocol", "HTTP2")]))));
        let shared = shared.expect("configured");
        assert_eq!(request(&shared), Action::Continue);
        fake::with(|h| {
            assert_eq!(
                h.envoy_filter_state,
                [("envoy.network.application_protocols".to_string(), "istio-h2,istio,h2".to_string())]
            );
            assert_eq!(h.tick_period_ms, Some(1000), "the refresh timer runs");
        });
        assert_eq!(counted(), counts(&["override_http2", "protocol_from_cluster_metadata", "cluster_metadata_read"]));
    }

    #[test]
    fn with_record_alpn_the_list_offered_is_stored_for_access_logs_and_not_without() {
        for (config, recorded) in [(r#"{"record_alpn": true}"#, Some("istio-http/1.1,istio,http/1.1")), ("{}", None)] {
            let shared = configure(envoy(config, Some("web"), None)).expect("configured");
            request(&shared);
            let stored =
                fake::with(|h| h.filter_state.get("upstream_alpn").map(|v| String::from_utf8_lossy(v).into_owned()));
            assert_eq!(stored.as_deref(), recorded, "{config}");
        }
    }

    #[test]
    fn a_refused_override_is_counted_and_logged_and_the_request_goes_on() {
        let mut host = envoy("{}", Some("web"), None);
        host.failing.insert("foreign set_envoy_filter_state", fake::INTERNAL_FAILURE);
        let shared = configure(host).expect("configured");
        assert_eq!(request(&shared), Action::Continue);
        assert_eq!(
            counted(),
            counts(&["override_http11", "override_failed", "protocol_from_default", "cluster_metadata_read"])
        );
        fake::with(|h| assert_eq!(h.logged("cluster web: cannot set upstream ALPN").len(), 1, "{:?}", h.logs));
    }

    #[test]
    fn opt_out_and_no_cluster_leave_the_alpn_alone() {
        let opted_out = metadata(&[("istio", "alpn_override", "false")]);
        let shared = configure(envoy("{}", Some("web"), Some(opted_out))).expect("configured");
        request(&shared);
        assert_eq!(counted(), counts(&["skipped_opt_out", "cluster_metadata_read"]));
        fake::with(|h| assert!(h.envoy_filter_state.is_empty()));

        let shared = configure(envoy("{}", None, None)).expect("configured");
        request(&shared);
        assert_eq!(counted(), counts(&["skipped_no_cluster"]));
        fake::with(|h| assert!(h.envoy_filter_state.is_empty()));
    }

    #[test]
    fn a_clusters_metadata_is_read_once_per_refresh_period() {
        let shared = configure(envoy("{}", Some("web"), None)).expect("configured");
        for _ in 0..3 {
            request(&shared);
        }
        assert_eq!(fake::with(|h| h.called("get_property xds.cluster_metadata").len()), 1);
        shared.on_tick();
        request(&shared);
        assert_eq!(fake::with(|h| h.called("get_property xds.cluster_metadata").len()), 2, "read again after a tick");
        assert_eq!(fake::with(|h| h.counter("alpn_filter.override_http11")), Some(4));
    }

    #[test]
    fn a_misplaced_marker_is_counted_once_per_metadata() {
        let misplaced = metadata(&[("alpn", "upstream_protocol", "HTTP2")]);
        let shared = configure(envoy(r#"{"cluster_metadata_refresh_ms":0}"#, Some("web"), Some(misplaced)));
        let shared = shared.expect("configured");
        request(&shared);
        request(&shared);
        assert_eq!(fake::with(|h| h.counter("alpn_filter.misplaced_metadata")), Some(1));
        assert_eq!(
            fake::with(|h| h.counter("alpn_filter.cluster_metadata_read")),
            Some(2),
            "refresh 0: read per request"
        );
    }

    #[test]
    fn configurations_are_refused_with_the_reason_logged() {
        assert!(configure(envoy("{not json", Some("web"), None)).is_none());
        fake::with(|h| assert_eq!(h.logged("alpn-filter: invalid plugin configuration, refusing it").len(), 1));

        let mut old_envoy = envoy("{}", Some("web"), None);
        old_envoy.foreign_functions = vec!["declare_property"];
        assert!(configure(old_envoy).is_none());
        fake::with(|h| assert_eq!(h.logged("lacks the foreign function set_envoy_filter_state").len(), 1));

        let mut no_timer = envoy("{}", Some("web"), None);
        no_timer.failing.insert("set_tick_period_milliseconds", fake::INTERNAL_FAILURE);
        assert!(configure(no_timer).is_none());
        fake::with(|h| assert_eq!(h.logged("cannot start the 1000 ms metadata refresh").len(), 1));

        let mut unreadable = envoy("{}", Some("web"), None);
        unreadable.failing.insert("get_buffer_bytes", fake::INTERNAL_FAILURE);
        assert!(configure(unreadable).is_none());
        fake::with(|h| assert_eq!(h.logged("cannot read the plugin configuration").len(), 1));
    }
}
