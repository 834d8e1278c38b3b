//! The per-request decision: which ALPN list (if any) the upstream connection offers.
//!
//! Rule, in order:
//! 1. No route cluster: leave the ALPN alone.
//! 2. Cluster metadata `istio.alpn_override: "false"`: leave it alone (Istio's
//!    opt-out; it wins even over an invalid `istio.alpn` block).
//! 3. Cluster metadata in `istio.alpn` that does not validate: leave it alone,
//!    warn and count — it must never reach Envoy.
//! 4. The cluster's protocol policy (see [`crate::protocol`]): its metadata's
//!    `istio.alpn.upstream_protocol`, else the first plugin-config rule
//!    matching its name, else the plugin config's default (HTTP/1.1, Envoy's
//!    default codec). The upstream protocol is the one that policy makes the
//!    cluster's codec speak for this request, as in Istio's native filter;
//!    only `USE_DOWNSTREAM` looks at the downstream protocol.
//! 5. List = the cluster's own list for that protocol, else its single list,
//!    else the plugin config's list (Istio's map by default). No list: leave alone.
//!
//! Facts are asked lazily ([`RequestFacts`]) so a request costs only the
//! hostcalls its decision needs; decoded cluster metadata is cached by its
//! bytes, and remembered per cluster name for `cluster_metadata_refresh_ms`
//! ([`Decider`]).

use std::rc::Rc;

use crate::alpn::{AlpnList, UpstreamProtocol};
use crate::config::AlpnConfig;
use crate::metadata::{cluster_policy, ClusterPolicy};
use crate::protocol::ProtocolPolicy;
use filter_common::bounded::BoundedMap;
use filter_common::clusters::ByCluster;

/// What a request tells the filter, each asked only when the rule needs it.
pub trait RequestFacts {
    /// The route cluster's serialized `envoy.config.core.v3.Metadata`;
    /// `None` when Envoy has none (no cluster, or a cluster without metadata).
    fn cluster_metadata(&mut self) -> Option<Vec<u8>>;
    /// The route cluster's name; `None` when the route has no cluster.
    fn cluster_name(&mut self) -> Option<String>;
    /// `request.protocol`: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`.
    fn request_protocol(&mut self) -> Option<String>;
}

/// Where the applied list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListSource {
    ClusterMetadata,
    PluginConfig,
}

/// What declared the cluster's protocol policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    ClusterMetadata,
    ClusterRule,
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Override { protocol: UpstreamProtocol, alpn: AlpnList, source: ListSource, policy: (ProtocolPolicy, PolicySource) },
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

/// Cached entries per map; past it the map starts over. A mesh has as many
/// distinct cluster metadata blobs as clusters, so this only bounds memory
/// against pathological churn.
const MAX_CACHED: usize = 512;

/// A cluster's decoded metadata, shared by the requests that use it.
type Policy = Rc<Result<ClusterPolicy, String>>;

/// Decides per request, remembering what it decoded.
///
/// Decoded metadata is cached by the metadata **bytes**: the same bytes
/// always decode to the same policy, so that cache is never stale. On top
/// of it, when `cluster_metadata_refresh_ms` is set, the policy is
/// remembered per cluster **name**, and a request to a known cluster reads
/// only the name (Envoy serialises the whole Metadata for every
/// `xds.cluster_metadata` read). That map is emptied by
/// [`Decider::refresh`], which the filter calls every
/// `cluster_metadata_refresh_ms`, so a metadata change made by xDS reaches
/// requests within one period. Name rules are keyed by name: they depend
/// only on the name and the plugin config, and a new plugin config makes a
/// new `Decider`.
pub struct Decider {
    config: AlpnConfig,
    /// Shared, not cloned, per request: a hit costs a hash of the bytes.
    policies: BoundedMap<Vec<u8>, Policy>,
    /// The policy of a cluster without metadata.
    no_metadata: Policy,
    rules: BoundedMap<String, Option<ProtocolPolicy>>,
    /// Cluster name → its policy, until the next [`Decider::refresh`].
    clusters: ByCluster<Policy>,
}

impl Decider {
    /// Whether the list offered is also stored for access logs (`record_alpn`).
    pub fn records(&self) -> bool {
        self.config.record_alpn
    }

    pub fn new(config: AlpnConfig) -> Self {
        Decider {
            policies: BoundedMap::new(MAX_CACHED),
            no_metadata: Rc::new(Ok(ClusterPolicy::default())),
            rules: BoundedMap::new(MAX_CACHED),
            clusters: ByCluster::new(config.cluster_metadata_refresh_ms),
            config,
        }
    }

    /// How often [`Decider::refresh`] must run; 0 = never (nothing is
    /// remembered by name).
    pub fn refresh_period_ms(&self) -> u32 {
        self.clusters.refresh_ms()
    }

    /// Forgets which policy each cluster name had: the next request to
    /// each cluster reads its metadata again.
    pub fn refresh(&mut self) {
        self.clusters.refresh();
    }

    pub fn decide(&mut self, facts: &mut dyn RequestFacts) -> Decision {
        let (policy, name) = match self.cluster_policy(facts) {
            Some(found) => found,
            None => return Decision::Skip(SkipReason::NoCluster),
        };
        let policy = match &*policy {
            Ok(policy) => policy,
            Err(e) => return Decision::Skip(SkipReason::InvalidMetadata(e.clone())),
        };
        if policy.opt_out {
            return Decision::Skip(SkipReason::OptOut);
        }
        let (protocol_policy, policy_source) = match policy.protocol {
            Some(p) => (p, PolicySource::ClusterMetadata),
            None => match self.rule_for(name, facts) {
                Some(p) => (p, PolicySource::ClusterRule),
                None => (self.config.default_policy, PolicySource::Default),
            },
        };
        let downstream = if protocol_policy.follows_downstream() { facts.request_protocol() } else { None };
        let Some(protocol) = protocol_policy.upstream_protocol(downstream.as_deref()) else {
            return Decision::Skip(SkipReason::UnknownProtocol(downstream.unwrap_or_default()));
        };
        let (alpn, source) = match policy.alpn_for(protocol) {
            Some(list) => (list, ListSource::ClusterMetadata),
            None => (self.config.alpn_for(protocol), ListSource::PluginConfig),
        };
        match alpn {
            Some(alpn) => {
                Decision::Override { protocol, alpn: alpn.clone(), source, policy: (protocol_policy, policy_source) }
            }
            None => Decision::Skip(SkipReason::NoListForProtocol(protocol)),
        }
    }

    /// The route cluster's policy, and its name when it was read on the
    /// way; `None` when the route has no cluster.
    fn cluster_policy(&mut self, facts: &mut dyn RequestFacts) -> Option<(Policy, Option<String>)> {
        if !self.clusters.enabled() {
            return match facts.cluster_metadata() {
                Some(bytes) => Some((self.decoded(bytes), None)),
                None => facts.cluster_name().map(|name| (Rc::clone(&self.no_metadata), Some(name))),
            };
        }
        let name = facts.cluster_name()?;
        if let Some(known) = self.clusters.get(&name) {
            return Some((known, Some(name)));
        }
        let policy = match facts.cluster_metadata() {
            Some(bytes) => self.decoded(bytes),
            None => Rc::clone(&self.no_metadata),
        };
        self.clusters.insert(name.clone(), Rc::clone(&policy));
        Some((policy, Some(name)))
    }

    fn decoded(&mut self, bytes: Vec<u8>) -> Policy {
        if let Some(cached) = self.policies.get(&bytes) {
            return Rc::clone(cached);
        }
        let decoded = Rc::new(cluster_policy(&bytes).map_err(|e| e.to_string()));
        self.policies.insert(bytes, Rc::clone(&decoded));
        decoded
    }

    /// The name rule for the route's cluster; the name is read (if it was
    /// not already) only when the plugin config has rules.
    fn rule_for(&mut self, name: Option<String>, facts: &mut dyn RequestFacts) -> Option<ProtocolPolicy> {
        if self.config.cluster_rules.is_empty() {
            return None;
        }
        let name = name.or_else(|| facts.cluster_name())?;
        if let Some(cached) = self.rules.get(&name) {
            return *cached;
        }
        let found = self.config.rule_for(&name);
        self.rules.insert(name, found);
        found
    }
}

filter_common::counters! {
    /// Every counter the filter keeps, declared in one list. The full stat name
    /// is `alpn_filter.<name>`.
    pub enum Counter {
        OverrideHttp11 => "override_http11",
        OverrideHttp2 => "override_http2",
        OverrideFromClusterMetadata => "override_from_cluster_metadata",
        ProtocolFromClusterMetadata => "protocol_from_cluster_metadata",
        ProtocolFromClusterRule => "protocol_from_cluster_rule",
        ProtocolFromDefault => "protocol_from_default",
        SkippedOptOut => "skipped_opt_out",
        SkippedInvalidMetadata => "skipped_invalid_metadata",
        SkippedUnknownProtocol => "skipped_unknown_protocol",
        SkippedNoCluster => "skipped_no_cluster",
        SkippedNoAlpnForProtocol => "skipped_no_alpn_for_protocol",
        OverrideFailed => "override_failed",
        /// Not a decision: how often the cluster metadata was read (once
        /// per cluster per refresh, or every request with refresh 0).
        ClusterMetadataRead => "cluster_metadata_read",
        /// Not a decision: a cluster's metadata carries one of this filter's
        /// markers in a place it does not read (once per distinct metadata).
        MisplacedMetadata => "misplaced_metadata",
    }
}

impl Counter {
    pub const PREFIX: &'static str = "alpn_filter.";
}

impl Decision {
    /// The counters a decision increments (before the hostcall is made).
    pub fn counters(&self) -> impl Iterator<Item = Counter> {
        let counters: [Option<Counter>; 3] = match self {
            Decision::Override { protocol, source, policy: (_, policy_source), .. } => [
                Some(match protocol {
                    // Never chosen (no policy yields HTTP/1.0); counted with 1.1.
                    UpstreamProtocol::Http10 | UpstreamProtocol::Http11 => Counter::OverrideHttp11,
                    UpstreamProtocol::Http2 => Counter::OverrideHttp2,
                }),
                (*source == ListSource::ClusterMetadata).then_some(Counter::OverrideFromClusterMetadata),
                Some(match policy_source {
                    PolicySource::ClusterMetadata => Counter::ProtocolFromClusterMetadata,
                    PolicySource::ClusterRule => Counter::ProtocolFromClusterRule,
                    PolicySource::Default => Counter::ProtocolFromDefault,
                }),
            ],
            Decision::Skip(reason) => [
                Some(match reason {
                    SkipReason::NoCluster => Counter::SkippedNoCluster,
                    SkipReason::OptOut => Counter::SkippedOptOut,
                    SkipReason::InvalidMetadata(_) => Counter::SkippedInvalidMetadata,
                    SkipReason::UnknownProtocol(_) => Counter::SkippedUnknownProtocol,
                    SkipReason::NoListForProtocol(_) => Counter::SkippedNoAlpnForProtocol,
                }),
                None,
                None,
            ],
        };
        counters.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::{list, metadata, s, strukt};
    use crate::metadata::{FILTER_NAMESPACE, ISTIO_NAMESPACE};
    use proptest::prelude::*;

    /// A request's facts, recording which were asked for.
    #[derive(Default)]
    struct Facts {
        metadata: Option<Vec<u8>>,
        name: Option<String>,
        protocol: Option<String>,
        asked: Vec<&'static str>,
    }

    impl Facts {
        fn new(metadata: &[u8], protocol: &str) -> Self {
            Facts {
                metadata: (!metadata.is_empty()).then(|| metadata.to_vec()),
                name: Some("mesh_http".into()),
                protocol: Some(protocol.into()),
                asked: Vec::new(),
            }
        }
        fn named(mut self, name: &str) -> Self {
            self.name = Some(name.into());
            self
        }
    }

    impl RequestFacts for Facts {
        fn cluster_metadata(&mut self) -> Option<Vec<u8>> {
            self.asked.push("metadata");
            self.metadata.clone()
        }
        fn cluster_name(&mut self) -> Option<String> {
            self.asked.push("name");
            self.name.clone()
        }
        fn request_protocol(&mut self) -> Option<String> {
            self.asked.push("protocol");
            self.protocol.clone()
        }
    }

    /// The configuration with metadata read on every request.
    fn every_request(mut config: AlpnConfig) -> AlpnConfig {
        config.cluster_metadata_refresh_ms = 0;
        config
    }

    fn decide(config: &AlpnConfig, facts: &mut Facts) -> Decision {
        Decider::new(config.clone()).decide(facts)
    }

    fn applied(d: &Decision) -> Option<(UpstreamProtocol, String, ListSource)> {
        match d {
            Decision::Override { protocol, alpn, source, .. } => {
                Some((*protocol, alpn.envoy_value().to_string(), *source))
            }
            Decision::Skip(_) => None,
        }
    }

    fn counters(d: &Decision) -> Vec<Counter> {
        d.counters().collect()
    }

    const H11: &str = "istio-http/1.1,istio,http/1.1";
    const H2: &str = "istio-h2,istio,h2";

    #[test]
    fn an_undeclared_cluster_gets_the_http11_list_whatever_the_downstream_speaks() {
        // Envoy's default cluster codec is HTTP/1.1: offering the h2 list to
        // an h2c request would make the server negotiate h2 (the bug).
        let config = AlpnConfig::default();
        for proto in ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"] {
            let mut facts = Facts::new(&[], proto);
            let d = decide(&config, &mut facts);
            assert_eq!(applied(&d), Some((UpstreamProtocol::Http11, H11.into(), ListSource::PluginConfig)), "{proto}");
            assert_eq!(counters(&d), [Counter::OverrideHttp11, Counter::ProtocolFromDefault]);
            // Not the protocol: the name (to remember the cluster by) and its metadata.
            assert_eq!(facts.asked, ["name", "metadata"], "{proto}");
        }
    }

    #[test]
    fn native_protocol_table_for_every_policy() {
        let cases: &[(&str, &str, &str)] = &[
            ("HTTP11", "HTTP/1.0", H11),
            ("HTTP11", "HTTP/2", H11),
            ("HTTP2", "HTTP/1.0", H2),
            ("HTTP2", "HTTP/1.1", H2),
            ("AUTO", "HTTP/1.1", H2),
            ("AUTO", "HTTP/1.0", H2),
            ("USE_DOWNSTREAM", "HTTP/1.0", H11),
            ("USE_DOWNSTREAM", "HTTP/1.1", H11),
            ("USE_DOWNSTREAM", "HTTP/2", H2),
            ("USE_DOWNSTREAM", "HTTP/3", H2),
        ];
        for (policy, proto, expected) in cases {
            let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s(policy))]))]);
            let mut facts = Facts::new(&md, proto);
            let d = decide(&AlpnConfig::default(), &mut facts);
            assert_eq!(applied(&d).map(|a| a.1), Some(expected.to_string()), "{policy} {proto}");
            assert!(counters(&d).contains(&Counter::ProtocolFromClusterMetadata));
            assert_eq!(facts.asked.contains(&"protocol"), *policy == "USE_DOWNSTREAM", "{policy}");
        }
    }

    #[test]
    fn name_rules_then_default_and_the_name_is_read_only_when_rules_exist() {
        let config = AlpnConfig::parse(
            br#"{"default_upstream_protocol":"USE_DOWNSTREAM",
                 "cluster_upstream_protocols":[{"cluster":"grpc-*","upstream_protocol":"HTTP2"}]}"#,
        )
        .unwrap();
        let mut facts = Facts::new(&[], "HTTP/1.1").named("grpc-api");
        let d = decide(&config, &mut facts);
        assert_eq!(applied(&d).map(|a| a.1), Some(H2.into()));
        assert!(counters(&d).contains(&Counter::ProtocolFromClusterRule));
        let mut facts = Facts::new(&[], "HTTP/2").named("web");
        let d = decide(&config, &mut facts);
        assert_eq!(applied(&d).map(|a| a.1), Some(H2.into()));
        assert!(counters(&d).contains(&Counter::ProtocolFromDefault));
        // Metadata wins over a rule.
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP11"))]))]);
        let mut facts = Facts::new(&md, "HTTP/2").named("grpc-api");
        assert_eq!(applied(&decide(&config, &mut facts)).map(|a| a.1), Some(H11.into()));
        assert_eq!(facts.asked, ["name", "metadata"]);
        // Reading metadata on every request: no rules, a cluster with
        // metadata costs one read; without metadata the name is read once
        // for both the cluster's existence and its rule.
        let md = metadata(&[("envoy.lb", strukt(&[("canary", s("true"))]))]);
        let mut facts = Facts::new(&md, "HTTP/2");
        decide(&every_request(AlpnConfig::default()), &mut facts);
        assert_eq!(facts.asked, ["metadata"]);
        let mut facts = Facts::new(&[], "HTTP/1.1").named("grpc-api");
        let d = decide(&every_request(config), &mut facts);
        assert_eq!(applied(&d).map(|a| a.1), Some(H2.into()));
        assert_eq!(facts.asked, ["metadata", "name"]);
    }

    #[test]
    fn opt_out_wins_over_everything_even_an_invalid_block() {
        for block in [list(&["x", "h2"]), s("a,,b")] {
            let md = metadata(&[
                (ISTIO_NAMESPACE, strukt(&[("alpn_override", s("false"))])),
                (FILTER_NAMESPACE, strukt(&[("alpn", block)])),
            ]);
            let d = decide(&AlpnConfig::default(), &mut Facts::new(&md, "HTTP/2"));
            assert_eq!(d, Decision::Skip(SkipReason::OptOut));
            assert_eq!(counters(&d), [Counter::SkippedOptOut]);
        }
    }

    #[test]
    fn cluster_list_wins_over_config_and_is_counted() {
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpn", list(&["istio-http/1.0", "http/1.1"]))]))]);
        let d = decide(&AlpnConfig::default(), &mut Facts::new(&md, "HTTP/1.1"));
        assert_eq!(
            applied(&d),
            Some((UpstreamProtocol::Http11, "istio-http/1.0,http/1.1".into(), ListSource::ClusterMetadata))
        );
        assert_eq!(
            counters(&d),
            [Counter::OverrideHttp11, Counter::OverrideFromClusterMetadata, Counter::ProtocolFromDefault]
        );
    }

    #[test]
    fn invalid_metadata_unknown_protocol_and_missing_cluster_skip() {
        let config = AlpnConfig::default();
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpn", s("a,,b"))]))]);
        assert!(matches!(
            decide(&config, &mut Facts::new(&md, "HTTP/1.1")),
            Decision::Skip(SkipReason::InvalidMetadata(_))
        ));
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("USE_DOWNSTREAM"))]))]);
        assert!(matches!(
            decide(&config, &mut Facts::new(&md, "SPDY/3")),
            Decision::Skip(SkipReason::UnknownProtocol(p)) if p == "SPDY/3"
        ));
        let mut none = Facts { name: None, ..Facts::default() };
        assert_eq!(decide(&config, &mut none), Decision::Skip(SkipReason::NoCluster));
    }

    #[test]
    fn a_protocol_without_a_list_is_left_alone() {
        let config = AlpnConfig::parse(
            br#"{"alpn_override":[{"upstream_protocol":"HTTP2","alpn_override":["istio-h2","h2"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            decide(&config, &mut Facts::new(&[], "HTTP/1.1")),
            Decision::Skip(SkipReason::NoListForProtocol(UpstreamProtocol::Http11))
        );
    }

    #[test]
    fn read_on_every_request_the_cache_follows_metadata_changes_and_stays_bounded() {
        let mut decider = Decider::new(every_request(AlpnConfig::default()));
        let h2 = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP2"))]))]);
        let h1 = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP11"))]))]);
        // Same cluster name, metadata changed by xDS between requests.
        assert_eq!(applied(&decider.decide(&mut Facts::new(&h2, "HTTP/1.1"))).map(|a| a.1), Some(H2.into()));
        assert_eq!(applied(&decider.decide(&mut Facts::new(&h1, "HTTP/1.1"))).map(|a| a.1), Some(H11.into()));
        assert_eq!(applied(&decider.decide(&mut Facts::new(&h2, "HTTP/1.1"))).map(|a| a.1), Some(H2.into()));
        for i in 0..(MAX_CACHED * 2) {
            let md = metadata(&[("other", strukt(&[("n", s(&i.to_string()))]))]);
            decider.decide(&mut Facts::new(&md, "HTTP/1.1"));
            assert!(decider.policies.len() <= MAX_CACHED);
        }
    }

    #[test]
    fn a_cluster_is_remembered_by_name_until_the_refresh() {
        let mut decider = Decider::new(AlpnConfig::default());
        assert_eq!(decider.refresh_period_ms(), 1000);
        let h2 = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP2"))]))]);
        let h1 = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP11"))]))]);
        let opt_out = metadata(&[(ISTIO_NAMESPACE, strukt(&[("alpn_override", s("false"))]))]);
        let mut first = Facts::new(&h2, "HTTP/1.1");
        assert_eq!(applied(&decider.decide(&mut first)).map(|a| a.1), Some(H2.into()));
        assert_eq!(first.asked, ["name", "metadata"]);
        // xDS changed the cluster's metadata: until the refresh the
        // remembered policy applies, and only the name is read.
        for changed in [&h1, &opt_out] {
            let mut facts = Facts::new(changed, "HTTP/1.1");
            assert_eq!(applied(&decider.decide(&mut facts)).map(|a| a.1), Some(H2.into()));
            assert_eq!(facts.asked, ["name"]);
        }
        // Another cluster is its own entry.
        let mut other = Facts::new(&h1, "HTTP/1.1").named("other");
        assert_eq!(applied(&decider.decide(&mut other)).map(|a| a.1), Some(H11.into()));
        decider.refresh();
        let mut facts = Facts::new(&opt_out, "HTTP/1.1");
        assert_eq!(decider.decide(&mut facts), Decision::Skip(SkipReason::OptOut));
        assert_eq!(facts.asked, ["name", "metadata"]);
        // A cluster without metadata is remembered too; a route without a
        // cluster costs the name read alone.
        let mut bare = Facts::new(&[], "HTTP/1.1").named("bare");
        decider.decide(&mut bare);
        let mut bare = Facts::new(&h2, "HTTP/1.1").named("bare");
        assert_eq!(applied(&decider.decide(&mut bare)).map(|a| a.1), Some(H11.into()));
        assert_eq!(bare.asked, ["name"]);
        let mut none = Facts { name: None, ..Facts::new(&h2, "HTTP/1.1") };
        assert_eq!(decider.decide(&mut none), Decision::Skip(SkipReason::NoCluster));
        assert_eq!(none.asked, ["name"]);
        // Protocol-following clusters still read the request's protocol each time.
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("USE_DOWNSTREAM"))]))]);
        for (proto, expected) in [("HTTP/2", H2), ("HTTP/1.1", H11)] {
            let mut facts = Facts::new(&md, proto).named("follows");
            assert_eq!(applied(&decider.decide(&mut facts)).map(|a| a.1), Some(expected.into()), "{proto}");
            assert_eq!(facts.asked.last(), Some(&"protocol"));
        }
        for i in 0..(MAX_CACHED * 2) {
            decider.decide(&mut Facts::new(&h1, "HTTP/1.1").named(&format!("c{i}")));
            assert!(decider.clusters.len() <= filter_common::clusters::MAX_CLUSTERS);
        }
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
            let d = decide(&AlpnConfig::default(), &mut Facts::new(&md, &proto));
            if let Decision::Override { alpn, .. } = d {
                prop_assert!(crate::alpn::AlpnList::from_comma_separated(alpn.envoy_value()).is_ok());
            }
        }
    }
}
