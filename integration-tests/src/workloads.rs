//! The workload metadata of the two Envoys (the node sections of
//! envoy-configs/server.yaml and client.yaml), written out by hand from
//! Istio's rules: what each sends on the wire, and what its peer stores.

use crate::wire::V;

/// One Envoy's workload.
pub struct Workload {
    pub node_id: &'static str,
    /// The UPPERCASE string fields native's write of the node metadata sends.
    pub wire_fields: &'static [(&'static str, &'static str)],
    /// The labels sent by default (normalised `app` and `version`).
    pub wire_labels: [(&'static str, &'static str); 4],
    /// A label only sent when named in `additional_labels`.
    pub team: &'static str,
    /// What a peer stores in filter state: native's lowercase schema, plus
    /// our `source` and the identity check's `service_account` and `verified`.
    pub stored: &'static [(&'static str, &'static str)],
}

/// A Deployment with every field in its node metadata but the region and
/// zone (from the node locality).
pub const SERVER: Workload = Workload {
    node_id: "sidecar~10.1.0.2~server-7d4b9c-abcde.server-ns~server-ns.svc.cluster.local",
    wire_fields: &[
        ("NAME", "server-7d4b9c-abcde"),
        ("NAMESPACE", "server-ns"),
        ("WORKLOAD_NAME", "server"),
        ("CLUSTER_ID", "Kubernetes"),
        ("IDENTITY", "spiffe://cluster.local/ns/server-ns/sa/server"),
        ("OWNER", "kubernetes://apis/apps/v1/namespaces/server-ns/deployments/server"),
        ("REGION", "region-a"),
        ("AVAILABILITY_ZONE", "zone-a1"),
    ],
    wire_labels: [
        ("service.istio.io/canonical-name", "server"),
        ("service.istio.io/canonical-revision", "v1"),
        ("app", "server"),
        ("version", "v1"),
    ],
    team: "blue",
    stored: &[
        ("type", "deployment"),
        ("workload", "server"),
        ("name", "server-7d4b9c-abcde"),
        ("cluster", "Kubernetes"),
        ("namespace", "server-ns"),
        ("service", "server"),
        ("revision", "v1"),
        ("app", "server"),
        ("version", "v1"),
        ("identity", "spiffe://cluster.local/ns/server-ns/sa/server"),
        ("region", "region-a"),
        ("availability_zone", "zone-a1"),
        ("source", "exchange"),
        // The identity check (default `enforce`): consistent with the certificate.
        ("service_account", "server"),
        ("verified", "true"),
    ],
};

/// A StatefulSet (so no OWNER is sent and no `type` stored) with both
/// `app.kubernetes.io/name` and a plain `app` label, and no region or zone
/// but a node locality.
pub const CLIENT: Workload = Workload {
    node_id: "sidecar~10.1.0.1~client-5f6d8e-fghij.client-ns~client-ns.svc.cluster.local",
    wire_fields: &[
        ("NAME", "client-5f6d8e-fghij"),
        ("NAMESPACE", "client-ns"),
        ("WORKLOAD_NAME", "client"),
        ("CLUSTER_ID", "Kubernetes"),
        ("IDENTITY", "spiffe://cluster.local/ns/client-ns/sa/client"),
        ("REGION", "region-a"),
        ("AVAILABILITY_ZONE", "zone-a2"),
    ],
    wire_labels: [
        ("service.istio.io/canonical-name", "client"),
        ("service.istio.io/canonical-revision", "v2"),
        ("app", "client-app"),
        ("version", "v2"),
    ],
    team: "red",
    stored: &[
        ("workload", "client"),
        ("name", "client-5f6d8e-fghij"),
        ("cluster", "Kubernetes"),
        ("namespace", "client-ns"),
        ("service", "client"),
        ("revision", "v2"),
        ("app", "client-app"),
        ("version", "v2"),
        ("identity", "spiffe://cluster.local/ns/client-ns/sa/client"),
        ("region", "region-a"),
        ("availability_zone", "zone-a2"),
        ("source", "exchange"),
        ("service_account", "client"),
        ("verified", "true"),
    ],
};

/// Istio's ingress gateway (a Deployment in the root namespace).
pub const GATEWAY: Workload = Workload {
    node_id: "router~10.1.0.9~istio-ingressgateway-6c8d7f-klmno.istio-system~istio-system.svc.cluster.local",
    wire_fields: &[
        ("NAME", "istio-ingressgateway-6c8d7f-klmno"),
        ("NAMESPACE", "istio-system"),
        ("WORKLOAD_NAME", "istio-ingressgateway"),
        ("CLUSTER_ID", "Kubernetes"),
        ("OWNER", "kubernetes://apis/apps/v1/namespaces/istio-system/deployments/istio-ingressgateway"),
    ],
    wire_labels: [
        ("service.istio.io/canonical-name", "istio-ingressgateway"),
        ("service.istio.io/canonical-revision", "latest"),
        ("app", "istio-ingressgateway"),
        ("version", "v1"),
    ],
    team: "",
    stored: &[
        ("type", "deployment"),
        ("workload", "istio-ingressgateway"),
        ("name", "istio-ingressgateway-6c8d7f-klmno"),
        ("cluster", "Kubernetes"),
        ("namespace", "istio-system"),
        ("service", "istio-ingressgateway"),
        ("revision", "latest"),
        ("app", "istio-ingressgateway"),
        ("version", "v1"),
        ("source", "exchange"),
        ("identity", "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"),
        ("service_account", "istio-ingressgateway-service-account"),
        ("verified", "true"),
    ],
};

/// Istio's sentinel peer id for "decidedly unknown".
pub const PEER_UNKNOWN: &str = "envoy.wasm.metadata_exchange.peer_unknown";

/// The peer struct in an access-log value: the JSON text of
/// `%FILTER_STATE(wasm.*_peer_json:PLAIN)%` (parsed; text that is not JSON
/// fails the test), the typed Struct of `%FILTER_STATE(wasm.*_peer)%`
/// (`{"@type":..,"value":{..}}`), or the bare struct. Anything else (null
/// when nothing is stored) is returned as it is.
pub fn peer_struct(logged: &serde_json::Value) -> serde_json::Value {
    match logged {
        serde_json::Value::String(text) => {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("the logged peer is not JSON text ({e}): {text:?}"))
        }
        _ if logged.get("@type").is_some() => logged["value"].clone(),
        _ => logged.clone(),
    }
}

/// Stored-peer fields that are JSON booleans (`"true"`/`"false"` in expectations).
const BOOL_FIELDS: [&str; 1] = ["verified"];

/// The server as a client stores it from istiod's endpoint metadata
/// (`istio.workload` on the upstream host): what it says, unverified.
pub const SERVER_FROM_ENDPOINT_METADATA: &[(&str, &str)] = &[
    ("workload", "server"),
    ("namespace", "server-ns"),
    ("service", "server"),
    ("revision", "v1"),
    ("cluster", "Kubernetes"),
    ("source", "endpoint_metadata"),
    ("verified", "false"),
    ("unverified_reason", "not_checked"),
];

/// Checks that a logged peer struct has exactly `expected` as its fields.
pub fn assert_stored(logged: &serde_json::Value, expected: &[(&str, &str)], what: &str) {
    let value = peer_struct(logged);
    let object = value.as_object().unwrap_or_else(|| panic!("{what}: no peer struct in {logged}"));
    for (k, v) in expected {
        let want = if BOOL_FIELDS.contains(k) {
            serde_json::Value::Bool(*v == "true")
        } else {
            serde_json::Value::String(v.to_string())
        };
        assert_eq!(value[*k], want, "{what}: field {k} in {value}");
    }
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected_keys: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    expected_keys.sort_unstable();
    assert_eq!(keys, expected_keys, "{what}: native's schema exactly (no PLATFORM_METADATA, no other labels)");
}

impl Workload {
    /// Istio's UPPERCASE wire Struct for this workload, built from the spec
    /// (with the `team` label when it is named in `additional_labels`).
    pub fn wire_metadata(&self, with_team: bool) -> Vec<(&'static str, V<'static>)> {
        let mut labels: Vec<(&str, V<'_>)> = self.wire_labels.iter().map(|(k, v)| (*k, V::Str(v))).collect();
        if with_team {
            labels.push(("team", V::Str(self.team)));
        }
        let mut fields: Vec<(&str, V<'_>)> = self.wire_fields.iter().map(|(k, v)| (*k, V::Str(v))).collect();
        fields.push(("LABELS", V::Struct(labels)));
        fields
    }

    /// Checks a peer struct as access logs print it.
    pub fn assert_is(&self, logged: &serde_json::Value, what: &str) {
        assert_stored(logged, self.stored, what);
    }

    /// Checks the UPPERCASE struct this workload sent on the wire (as JSON).
    pub fn assert_sent(&self, wire: &serde_json::Value, what: &str) {
        let mut expected: serde_json::Map<String, serde_json::Value> =
            self.wire_fields.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let labels = self.wire_labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        expected.insert("LABELS".into(), serde_json::Value::Object(labels));
        assert_eq!(wire, &serde_json::Value::Object(expected), "{what}");
    }
}
