//! The workload metadata of the two Envoys, as written in the node sections
//! of envoy-configs/server.yaml and client.yaml.

/// Istio's string fields, in the order Istio lists them.
pub struct Workload {
    pub node_id: &'static str,
    pub fields: [(&'static str, &'static str); 8],
    /// The labels Istio sends by default.
    pub labels: [(&'static str, &'static str); 4],
    /// A label only sent when named in `additional_labels`.
    pub team: &'static str,
}

pub const SERVER: Workload = Workload {
    node_id: "sidecar~10.1.0.2~server-7d4b9c-abcde.server-ns~server-ns.svc.cluster.local",
    fields: [
        ("NAME", "server-7d4b9c-abcde"),
        ("NAMESPACE", "server-ns"),
        ("WORKLOAD_NAME", "server"),
        ("CLUSTER_ID", "Kubernetes"),
        ("IDENTITY", "spiffe://cluster.local/ns/server-ns/sa/server"),
        ("OWNER", "kubernetes://apis/apps/v1/namespaces/server-ns/deployments/server"),
        ("REGION", "region-a"),
        ("AVAILABILITY_ZONE", "zone-a1"),
    ],
    labels: [
        ("service.istio.io/canonical-name", "server"),
        ("service.istio.io/canonical-revision", "v1"),
        ("app", "server"),
        ("version", "v1"),
    ],
    team: "blue",
};

pub const CLIENT: Workload = Workload {
    node_id: "sidecar~10.1.0.1~client-5f6d8e-fghij.client-ns~client-ns.svc.cluster.local",
    fields: [
        ("NAME", "client-5f6d8e-fghij"),
        ("NAMESPACE", "client-ns"),
        ("WORKLOAD_NAME", "client"),
        ("CLUSTER_ID", "Kubernetes"),
        ("IDENTITY", "spiffe://cluster.local/ns/client-ns/sa/client"),
        ("OWNER", "kubernetes://apis/apps/v1/namespaces/client-ns/deployments/client"),
        ("REGION", "region-a"),
        ("AVAILABILITY_ZONE", "zone-a2"),
    ],
    labels: [
        ("service.istio.io/canonical-name", "client"),
        ("service.istio.io/canonical-revision", "v2"),
        ("app", "client"),
        ("version", "v2"),
    ],
    team: "red",
};

/// Istio's sentinel peer id for "decidedly unknown".
pub const PEER_UNKNOWN: &str = "envoy.wasm.metadata_exchange.peer_unknown";

impl Workload {
    /// Checks a peer struct as access logs print it (`{"@type":..,"value":{..}}`
    /// or the bare struct): exactly Istio's fields and default labels, nothing else.
    pub fn assert_is(&self, logged: &serde_json::Value, what: &str) {
        let value = if logged.get("@type").is_some() { &logged["value"] } else { logged };
        let object = value.as_object().unwrap_or_else(|| panic!("{what}: no peer struct in {logged}"));
        for (k, v) in self.fields {
            assert_eq!(value[k], v, "{what}: field {k} in {value}");
        }
        for (k, v) in self.labels {
            assert_eq!(value["LABELS"][k], v, "{what}: label {k} in {value}");
        }
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected: Vec<&str> = self.fields.iter().map(|(k, _)| *k).chain(["LABELS"]).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{what}: only Istio's fields are exchanged (no PLATFORM_METADATA)");
        assert_eq!(value["LABELS"].as_object().map(|l| l.len()), Some(4), "{what}: only the default labels: {value}");
    }
}
