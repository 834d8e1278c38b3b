//! What both forms write into filter state for the peer: the stored peer
//! and its id, the "not found" marker, the declarations that let access logs
//! print them, and our own workload (read from Envoy's node) that both send.

use proto::prost::Message;
use wasm_host::{PropertyType, Span};

use peer_exchange::config::{Config, Role};
use peer_exchange::identity::{mark_not_checked, IdentityCheck};
use peer_exchange::istio_stats::WorkloadLabels;
use peer_exchange::peers::StoredPeer;
use peer_exchange::workload::{Locality, NodeMetadata, PeerSource, Workload, SOURCE_LABELS, WORKLOAD_FIELDS};
use peer_exchange::workload::{CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL};

/// Filter-state key of the "peer not found" marker (`wasm.peer_not_found`).
pub(crate) const PEER_NOT_FOUND_KEY: &str = "peer_not_found";
/// Istio's sentinel peer id when the peer is decidedly unknown.
const PEER_UNKNOWN_ID: &str = "envoy.wasm.metadata_exchange.peer_unknown";

/// Declares the filter-state keys we set, so access logs print them.
pub(crate) fn declare_peer_properties(config: &Config, span: Span) {
    let role = config.role;
    let json = config.peer_json.then_some((role.peer_json_key(), PropertyType::String));
    for (name, ty) in [
        (role.peer_key(), PropertyType::Struct),
        (role.peer_id_key(), PropertyType::String),
        (PEER_NOT_FOUND_KEY, PropertyType::String),
    ]
    .into_iter()
    .chain(json)
    {
        if let Err(e) = wasm_host::declare_property(name, ty, span) {
            log::warn!("peer-exchange-filter: cannot declare wasm.{name} ({e}); access logs may not print it");
        }
    }
}

/// Stores a found peer (and its id) for the current connection or request,
/// as the identity check decided.
pub(crate) fn store_peer(config: &Config, peer: &StoredPeer, what: &str, context_id: u32) {
    let role = config.role;
    log::debug!(
        "peer-exchange-filter: {what} {context_id}: peer \"{}\" claims {}/{} as \"{}\", identity check: {}",
        peer.id.as_deref().unwrap_or(""),
        peer.namespace,
        peer.name,
        peer.identity,
        peer.verification.map_or_else(|| "off".to_string(), |v| v.to_string()),
    );
    let Some(stored) = &peer.stored else {
        mark_peer_not_found(role);
        return;
    };
    set_peer_state(config, stored, &peer.json);
    if let Some(id) = &peer.id {
        set_state(role.peer_id_key(), id.as_bytes());
    }
}

/// Our workload, read once per VM from Envoy's node (only the keys native
/// reads), with the configuration's overrides, through native's normalisation.
pub(crate) fn local_workload(config: &Config) -> (Workload, String, WorkloadLabels) {
    let property = |path: &[&str]| wasm_host::get_property_string(path).ok().flatten().unwrap_or_default();
    let node_id = config.node_id.clone().unwrap_or_else(|| property(&["xds", "node", "id"]));
    let mut node = NodeMetadata {
        locality: Locality {
            region: property(&["xds", "node", "locality", "region"]),
            zone: property(&["xds", "node", "locality", "zone"]),
        },
        ..NodeMetadata::default()
    };
    for field in WORKLOAD_FIELDS {
        node.fields.insert(field.to_string(), property(&["xds", "node", "metadata", field]));
    }
    let labels = SOURCE_LABELS.iter().copied().chain(config.additional_labels.iter().map(String::as_str));
    for label in labels {
        node.labels.insert(label.to_string(), property(&["xds", "node", "metadata", "LABELS", label]));
    }
    let local = local_labels(&node, config);
    (node.workload(&config.fields, &config.labels, &config.additional_labels), node_id, local)
}

/// Our own labels for Istio's metrics: the node's raw values (native reads
/// `WORKLOAD_NAME`, `NAMESPACE`, `CLUSTER_ID` and the `app`, `version` and
/// canonical labels as they are, without the fallbacks the exchange's
/// payload gets), the configuration's overrides first.
fn local_labels(node: &NodeMetadata, config: &Config) -> WorkloadLabels {
    let field = |key: &str| config.fields.get(key).or_else(|| node.fields.get(key)).cloned().unwrap_or_default();
    let label = |key: &str| config.labels.get(key).or_else(|| node.labels.get(key)).cloned().unwrap_or_default();
    WorkloadLabels {
        workload: field("WORKLOAD_NAME"),
        namespace: field("NAMESPACE"),
        canonical_service: label(CANONICAL_NAME_LABEL),
        canonical_revision: label(CANONICAL_REVISION_LABEL),
        app: label("app"),
        version: label("version"),
        cluster: field("CLUSTER_ID"),
        identity: String::new(),
    }
}

/// Records the peer as not found: Istio's unknown id and our marker.
pub(crate) fn mark_peer_not_found(role: Role) {
    set_state(role.peer_id_key(), PEER_UNKNOWN_ID.as_bytes());
    set_state(PEER_NOT_FOUND_KEY, b"true");
}

/// Stores a peer from Istio's endpoint metadata (the control plane's word,
/// not the peer's: marked as not checked against a certificate).
pub(crate) fn store_endpoint_peer(config: &Config, workload: &Workload) -> WorkloadLabels {
    let mut stored = workload.to_peer_struct(PeerSource::EndpointMetadata);
    let labels = WorkloadLabels::from_stored(&stored);
    if config.identity_check != IdentityCheck::Off {
        mark_not_checked(&mut stored);
    }
    let json = if config.peer_json { filter_common::schema::struct_text(&stored) } else { String::new() };
    set_peer_state(config, &stored.encode_to_vec(), &json);
    labels
}

/// Stores a peer's serialized Struct and, with `peer_json`, its JSON text.
pub(crate) fn set_peer_state(config: &Config, stored: &[u8], json: &str) {
    set_state(config.role.peer_key(), stored);
    if config.peer_json {
        set_state(config.role.peer_json_key(), json.as_bytes());
    }
}

/// Sets filter state `wasm.<key>`; a refusal loses only that value.
fn set_state(key: &str, value: &[u8]) {
    if let Err(e) = wasm_host::set_property(key, value) {
        log::warn!("peer-exchange-filter: cannot set wasm.{key}: {e}");
    }
}
