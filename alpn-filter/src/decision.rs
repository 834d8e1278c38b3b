//! The per-request decision: which ALPN list (if any) the upstream connection offers.
//!
//! Rule, in order:
//! 1. No route cluster: leave the ALPN alone.
//! 2. Cluster metadata `istio.alpn_override: "false"`: leave it alone (Istio's opt-out).
//! 3. Cluster metadata in `istio.alpn` that does not validate: leave it alone,
//!    warn and count — it must never reach Envoy.
//! 4. Upstream protocol = the cluster's `istio.alpn.upstream_protocol` if set,
//!    else the downstream protocol (HTTP/1.0, HTTP/1.1, HTTP/2). Anything else
//!    (HTTP/3, unknown): leave the ALPN alone.
//! 5. List = the cluster's own list for that protocol, else its single list,
//!    else the plugin config's list (Istio's map by default). No list: leave alone.

use crate::alpn::{AlpnList, UpstreamProtocol};
use crate::config::AlpnConfig;
use crate::metadata::cluster_policy;

/// Where the applied list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListSource {
    ClusterMetadata,
    PluginConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Override { protocol: UpstreamProtocol, alpn: AlpnList, source: ListSource },
    Skip(SkipReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NoCluster,
    OptOut,
    InvalidMetadata(String),
    UnknownProtocol(String),
    NoListForProtocol(UpstreamProtocol),
}

/// `cluster_metadata`: the route cluster's serialized
/// `envoy.config.core.v3.Metadata` (empty when it has none); `None` when the
/// route has no cluster.
pub fn decide(config: &AlpnConfig, request_protocol: Option<&str>, cluster_metadata: Option<&[u8]>) -> Decision {
    let Some(cluster_metadata) = cluster_metadata else {
        return Decision::Skip(SkipReason::NoCluster);
    };
    let policy = match cluster_policy(cluster_metadata) {
        Ok(policy) => policy,
        Err(e) => return Decision::Skip(SkipReason::InvalidMetadata(e.to_string())),
    };
    if policy.opt_out {
        return Decision::Skip(SkipReason::OptOut);
    }
    let protocol = match policy.upstream_protocol {
        Some(p) => p,
        None => match request_protocol.and_then(UpstreamProtocol::from_request_protocol) {
            Some(p) => p,
            None => return Decision::Skip(SkipReason::UnknownProtocol(request_protocol.unwrap_or("").to_string())),
        },
    };
    let (alpn, source) = match policy.alpn_for(protocol) {
        Some(list) => (list, ListSource::ClusterMetadata),
        None => (config.alpn_for(protocol), ListSource::PluginConfig),
    };
    match alpn {
        Some(alpn) => Decision::Override { protocol, alpn: alpn.clone(), source },
        None => Decision::Skip(SkipReason::NoListForProtocol(protocol)),
    }
}

/// Every counter the filter keeps, declared in one list. The full stat name
/// is `alpn_filter.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    OverrideHttp10,
    OverrideHttp11,
    OverrideHttp2,
    OverrideFromClusterMetadata,
    SkippedOptOut,
    SkippedInvalidMetadata,
    SkippedUnknownProtocol,
    SkippedNoCluster,
    SkippedNoAlpnForProtocol,
    OverrideFailed,
}

impl Counter {
    pub const ALL: [Counter; 10] = [
        Counter::OverrideHttp10,
        Counter::OverrideHttp11,
        Counter::OverrideHttp2,
        Counter::OverrideFromClusterMetadata,
        Counter::SkippedOptOut,
        Counter::SkippedInvalidMetadata,
        Counter::SkippedUnknownProtocol,
        Counter::SkippedNoCluster,
        Counter::SkippedNoAlpnForProtocol,
        Counter::OverrideFailed,
    ];
    pub const PREFIX: &'static str = "alpn_filter.";

    pub fn name(self) -> &'static str {
        match self {
            Counter::OverrideHttp10 => "override_http10",
            Counter::OverrideHttp11 => "override_http11",
            Counter::OverrideHttp2 => "override_http2",
            Counter::OverrideFromClusterMetadata => "override_from_cluster_metadata",
            Counter::SkippedOptOut => "skipped_opt_out",
            Counter::SkippedInvalidMetadata => "skipped_invalid_metadata",
            Counter::SkippedUnknownProtocol => "skipped_unknown_protocol",
            Counter::SkippedNoCluster => "skipped_no_cluster",
            Counter::SkippedNoAlpnForProtocol => "skipped_no_alpn_for_protocol",
            Counter::OverrideFailed => "override_failed",
        }
    }

    /// Position in [`Counter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Decision {
    /// The counters a decision increments (before the hostcall is made).
    pub fn counters(&self) -> &'static [Counter] {
        match self {
            Decision::Override { protocol, source, .. } => match (protocol, source) {
                (UpstreamProtocol::Http10, ListSource::PluginConfig) => &[Counter::OverrideHttp10],
                (UpstreamProtocol::Http11, ListSource::PluginConfig) => &[Counter::OverrideHttp11],
                (UpstreamProtocol::Http2, ListSource::PluginConfig) => &[Counter::OverrideHttp2],
                (UpstreamProtocol::Http10, ListSource::ClusterMetadata) => {
                    &[Counter::OverrideHttp10, Counter::OverrideFromClusterMetadata]
                }
                (UpstreamProtocol::Http11, ListSource::ClusterMetadata) => {
                    &[Counter::OverrideHttp11, Counter::OverrideFromClusterMetadata]
                }
                (UpstreamProtocol::Http2, ListSource::ClusterMetadata) => {
                    &[Counter::OverrideHttp2, Counter::OverrideFromClusterMetadata]
                }
            },
            Decision::Skip(SkipReason::NoCluster) => &[Counter::SkippedNoCluster],
            Decision::Skip(SkipReason::OptOut) => &[Counter::SkippedOptOut],
            Decision::Skip(SkipReason::InvalidMetadata(_)) => &[Counter::SkippedInvalidMetadata],
            Decision::Skip(SkipReason::UnknownProtocol(_)) => &[Counter::SkippedUnknownProtocol],
            Decision::Skip(SkipReason::NoListForProtocol(_)) => &[Counter::SkippedNoAlpnForProtocol],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::{list, metadata, s, strukt};
    use crate::metadata::{FILTER_NAMESPACE, ISTIO_NAMESPACE};
    use proptest::prelude::*;

    fn cluster(md: &[u8]) -> Option<&[u8]> {
        Some(md)
    }

    fn applied(d: &Decision) -> Option<(UpstreamProtocol, String, ListSource)> {
        match d {
            Decision::Override { protocol, alpn, source } => Some((*protocol, alpn.to_envoy_value(), *source)),
            Decision::Skip(_) => None,
        }
    }

    #[test]
    fn downstream_protocol_picks_istios_list_by_default() {
        let config = AlpnConfig::default();
        for (proto, expected) in [
            ("HTTP/1.0", "istio-http/1.0,istio,http/1.0"),
            ("HTTP/1.1", "istio-http/1.1,istio,http/1.1"),
            ("HTTP/2", "istio-h2,istio,h2"),
        ] {
            let d = decide(&config, Some(proto), cluster(&[]));
            assert_eq!(applied(&d).map(|a| a.1), Some(expected.to_string()), "{proto}");
            assert_eq!(applied(&d).map(|a| a.2), Some(ListSource::PluginConfig));
        }
    }

    #[test]
    fn opt_out_wins_over_everything() {
        let md = metadata(&[
            (ISTIO_NAMESPACE, strukt(&[("alpn_override", s("false"))])),
            (FILTER_NAMESPACE, strukt(&[("alpn", list(&["x", "h2"]))])),
        ]);
        assert_eq!(decide(&AlpnConfig::default(), Some("HTTP/2"), cluster(&md)), Decision::Skip(SkipReason::OptOut));
        assert_eq!(Decision::Skip(SkipReason::OptOut).counters(), &[Counter::SkippedOptOut]);
    }

    #[test]
    fn cluster_protocol_policy_overrides_the_downstream_protocol() {
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP2"))]))]);
        let d = decide(&AlpnConfig::default(), Some("HTTP/1.1"), cluster(&md));
        assert_eq!(applied(&d).map(|a| (a.0, a.1)), Some((UpstreamProtocol::Http2, "istio-h2,istio,h2".into())));
        // Even when the downstream protocol is unknown.
        let d = decide(&AlpnConfig::default(), Some("HTTP/3"), cluster(&md));
        assert_eq!(applied(&d).map(|a| a.0), Some(UpstreamProtocol::Http2));
    }

    #[test]
    fn cluster_list_wins_over_config_and_is_counted() {
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpn", list(&["istio-http/1.0", "http/1.1"]))]))]);
        let d = decide(&AlpnConfig::default(), Some("HTTP/1.1"), cluster(&md));
        assert_eq!(
            applied(&d),
            Some((UpstreamProtocol::Http11, "istio-http/1.0,http/1.1".into(), ListSource::ClusterMetadata))
        );
        assert_eq!(d.counters(), &[Counter::OverrideHttp11, Counter::OverrideFromClusterMetadata]);
    }

    #[test]
    fn invalid_metadata_unknown_protocol_and_missing_cluster_skip() {
        let config = AlpnConfig::default();
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpn", s("a,,b"))]))]);
        assert!(matches!(
            decide(&config, Some("HTTP/1.1"), cluster(&md)),
            Decision::Skip(SkipReason::InvalidMetadata(_))
        ));
        assert!(
            matches!(decide(&config, Some("HTTP/3"), cluster(&[])), Decision::Skip(SkipReason::UnknownProtocol(p)) if p == "HTTP/3")
        );
        assert!(matches!(decide(&config, None, cluster(&[])), Decision::Skip(SkipReason::UnknownProtocol(_))));
        assert_eq!(decide(&config, Some("HTTP/1.1"), None), Decision::Skip(SkipReason::NoCluster));
    }

    #[test]
    fn a_protocol_without_a_list_is_left_alone() {
        let config = AlpnConfig::parse(
            br#"{"alpn_override":[{"upstream_protocol":"HTTP2","alpn_override":["istio-h2","h2"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            decide(&config, Some("HTTP/1.1"), cluster(&[])),
            Decision::Skip(SkipReason::NoListForProtocol(UpstreamProtocol::Http11))
        );
    }

    #[test]
    fn counter_names_are_unique_and_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }

    proptest! {
        // Arbitrary metadata bytes and protocol strings never panic, and an
        // override always carries a list that is safe for Envoy.
        #[test]
        fn any_input_gives_a_safe_decision(md in proptest::collection::vec(any::<u8>(), 0..200), proto in ".{0,12}") {
            let d = decide(&AlpnConfig::default(), Some(&proto), cluster(&md));
            if let Decision::Override { alpn, .. } = d {
                prop_assert!(crate::alpn::AlpnList::from_comma_separated(&alpn.to_envoy_value()).is_ok());
            }
        }
    }
}
