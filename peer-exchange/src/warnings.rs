//! Mistakes in how the exchange is deployed that only the running filter
//! can see, each logged once (not per connection or request) with its fix:
//! the words here are the ones docs/troubleshooting.md quotes.

use crate::workload::Workload;

/// Every warning, with its `<placeholders>`: docs/troubleshooting.md
/// quotes each of these verbatim (a test holds it to that).
pub const NODE_METADATA_MISSING: &str = "peer-exchange-filter: the node metadata has no <fields>: peers will \
     store only what this workload's certificate proves and Istio's metrics will say unknown; set \
     node.metadata NAMESPACE and WORKLOAD_NAME (and NAME, LABELS: docs/configuration.md, \"What is sent\")";
pub const MESH_UPSTREAM_NOT_MARKED: &str = "peer-exchange-filter: cluster <cluster>: the upstream presents a mesh \
     identity (<identity>) but the cluster is not marked as a mesh upstream, so the exchange sends it nothing \
     and its peer is not found; if it runs the exchange's server role, add filter_metadata: \
     {istio.peer_exchange: {enabled: true}} to the cluster";
pub const UPSTREAM_HANDSHAKE_FAILED: &str = "peer-exchange-filter: cluster <cluster>: the TLS handshake with the \
     mesh upstream failed (<reason>): its Envoy closes connections whose ALPN none of its filter chains serves; \
     the cluster must offer istio-peer-exchange first (alpn_protocols: [istio-peer-exchange, istio])";
pub const UPSTREAM_ANSWERED_HTTP: &str = "peer-exchange-filter: cluster <cluster>: the upstream answered our \
     prefix with an HTTP response: its Envoy serves this cluster's ALPN with an HTTP chain, which reads the \
     prefix as a request; the cluster must offer istio-peer-exchange first (alpn_protocols: \
     [istio-peer-exchange, istio])";

pub const ALL: [&str; 4] =
    [NODE_METADATA_MISSING, MESH_UPSTREAM_NOT_MARKED, UPSTREAM_HANDSHAKE_FAILED, UPSTREAM_ANSWERED_HTTP];

/// `template` with each `(placeholder, value)` filled in.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_string(), |text, (placeholder, value)| text.replace(placeholder, value))
}

/// The warning for a node whose metadata lacks what the exchange sends
/// about this workload (`None`: nothing missing).
pub fn workload_gaps(workload: &Workload) -> Option<String> {
    let missing = workload.missing_identity();
    (!missing.is_empty()).then(|| fill(NODE_METADATA_MISSING, &[("<fields>", &missing.join(" or "))]))
}

/// Clusters a warning was logged for, per kind of warning: each once per
/// VM (the set starts over past its bound, so at worst once more).
#[derive(Debug)]
pub struct Warned(filter_common::bounded::BoundedMap<(usize, String), ()>);

impl Default for Warned {
    fn default() -> Self {
        Warned(filter_common::bounded::BoundedMap::new(512))
    }
}

impl Warned {
    /// True the first time the warning counted by counter `index` is asked for `cluster`.
    pub fn first_time(&mut self, index: usize, cluster: &str) -> bool {
        let key = (index, cluster.to_string());
        if self.0.get(&key).is_some() {
            return false;
        }
        self.0.insert(key, ());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cluster_is_warned_once_per_kind() {
        let mut warned = Warned::default();
        assert!(warned.first_time(1, "a"));
        assert!(!warned.first_time(1, "a"));
        assert!(warned.first_time(2, "a"));
        assert!(warned.first_time(1, "b"));
    }

    #[test]
    fn a_node_without_namespace_or_workload_name_is_named() {
        let complete = Workload { namespace: "ns".into(), workload: "w".into(), ..Workload::default() };
        assert_eq!(workload_gaps(&complete), None);
        let warning = workload_gaps(&Workload::default()).expect("a warning");
        assert!(warning.contains("no NAMESPACE or WORKLOAD_NAME"), "{warning}");
        assert!(warning.contains("set node.metadata NAMESPACE and WORKLOAD_NAME"), "{warning}");
    }
}
