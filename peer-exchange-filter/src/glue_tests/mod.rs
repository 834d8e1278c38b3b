//! The proxy-wasm layer (entry points, TCP and HTTP forms, filter-state
//! writes) against wasm-host's recording fake of Envoy: every path between
//! a callback and the hostcalls it makes, natively.

mod http;
mod metrics;
mod tcp;

use std::rc::Rc;

use wasm_host::fake::{self, FakeHost, PLUGIN_CONFIGURATION};
use wasm_host::plugin::Plugin;

use crate::plugin::{PeerContext, PeerPlugin};
use peer_exchange::codec::encode_frame;
use peer_exchange::metadata::encode_payload;
use peer_exchange::workload::NodeMetadata;

/// A workload's identity in the tests: its namespace and SPIFFE id.
pub(crate) struct Workload {
    pub name: &'static str,
    pub namespace: &'static str,
}

pub(crate) const CLIENT: Workload = Workload { name: "client-pod", namespace: "client-ns" };
pub(crate) const SERVER: Workload = Workload { name: "server-pod", namespace: "server-ns" };

impl Workload {
    pub fn spiffe(&self) -> String {
        format!("spiffe://cluster.local/ns/{}/sa/{}", self.namespace, self.name)
    }

    fn node(&self) -> NodeMetadata {
        let mut node = NodeMetadata::default();
        node.fields.insert("NAME".into(), self.name.into());
        node.fields.insert("NAMESPACE".into(), self.namespace.into());
        node.fields.insert("WORKLOAD_NAME".into(), self.name.into());
        node
    }

    /// The `x-envoy-peer-metadata` value this workload sends.
    pub fn header(&self) -> String {
        peer_exchange::headers::encode_metadata_header(
            &self.node().workload(&Default::default(), &Default::default(), &[]).to_wire(),
        )
    }

    /// The TCP prefix this workload sends.
    pub fn prefix(&self) -> Vec<u8> {
        let workload = self.node().workload(&Default::default(), &Default::default(), &[]);
        encode_frame(&encode_payload(&workload.to_wire(), &format!("{}-id", self.name))).unwrap_or_default()
    }
}

/// An Envoy running `workload` with a plugin configuration under `root_id`.
pub(crate) fn envoy(workload: &Workload, root_id: &str, config: &str) -> FakeHost {
    let mut host = FakeHost::default();
    host.buffers.insert(PLUGIN_CONFIGURATION, config.as_bytes().to_vec());
    host.property("plugin_root_id", root_id);
    host.property("xds.node.id", format!("{}-id", workload.name));
    for (field, value) in workload.node().fields {
        host.property(&format!("xds.node.metadata.{field}"), value);
    }
    host
}

/// Configures the plugin as Envoy would; `None`: refused.
pub(crate) fn configure(host: FakeHost) -> Option<Rc<PeerPlugin>> {
    let size = host.buffers.get(&PLUGIN_CONFIGURATION).map_or(0, Vec::len);
    fake::install(host);
    PeerPlugin::configure(size).map(Rc::new)
}

pub(crate) fn stream(plugin: &Rc<PeerPlugin>, context_id: u32) -> PeerContext {
    PeerPlugin::stream(plugin, context_id)
}

pub(crate) use wasm_host::fake::metadata;

/// The counters incremented, without their prefix, as (name, count).
pub(crate) fn counted(prefix: &str) -> Vec<(String, i64)> {
    fake::with(|h| {
        h.counted().into_iter().filter_map(|(name, n)| Some((name.strip_prefix(prefix)?.to_string(), n))).collect()
    })
}

pub(crate) fn names(counts: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = counts.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    v.sort();
    v
}

/// A filter-state value as text.
pub(crate) fn state(key: &str) -> Option<String> {
    fake::with(|h| h.filter_state.get(key).map(|v| String::from_utf8_lossy(v).into_owned()))
}
