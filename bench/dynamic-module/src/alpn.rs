//! alpn-filter's decision as a dynamic module, for its cost only: Istio's
//! list for the protocol the route's cluster declares (`istio.alpn`
//! `upstream_protocol`: `HTTP2` gets `istio-h2`, anything else
//! `istio-http/1.1`), nothing for `istio.alpn_override: "false"`; each
//! cluster's answer remembered by its name on each worker.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::abi::{self, EnvoyBuffer, EnvoyPtr, ModuleBuffer, METADATA_SOURCE_CLUSTER};

const APPLICATION_PROTOCOLS: ModuleBuffer = ModuleBuffer::of("envoy.network.application_protocols");
const HTTP11: &str = "istio-http/1.1,istio,http/1.1";
const H2: &str = "istio-h2,istio,h2";

thread_local! {
    /// Cluster name → the list to set (`None`: the cluster opted out).
    static BY_CLUSTER: RefCell<HashMap<Vec<u8>, Option<&'static str>>> = RefCell::new(HashMap::new());
}

/// A string in the route cluster's metadata.
fn cluster_string(filter: EnvoyPtr, namespace: &'static str, key: &'static str) -> Option<Vec<u8>> {
    let mut value = EnvoyBuffer::empty();
    let len: *mut usize = &mut value.len;
    // SAFETY: both out-pointers point into `value` (see `abi`), alive for the call.
    let found = unsafe {
        abi::envoy_dynamic_module_callback_http_get_metadata_string(
            filter,
            METADATA_SOURCE_CLUSTER,
            ModuleBuffer::of(namespace),
            ModuleBuffer::of(key),
            &mut value,
            len,
        )
    };
    // SAFETY: filled by Envoy during this hook.
    found.then(|| unsafe { value.bytes() }.map(<[u8]>::to_vec)).flatten()
}

fn decide(filter: EnvoyPtr) -> Option<&'static str> {
    if cluster_string(filter, "istio", "alpn_override").as_deref() == Some(b"false") {
        return None;
    }
    match cluster_string(filter, "istio.alpn", "upstream_protocol").as_deref() {
        Some(b"HTTP2") => Some(H2),
        _ => Some(HTTP11),
    }
}

pub fn on_request(filter: EnvoyPtr) {
    let mut name = EnvoyBuffer::empty();
    // SAFETY: `name` is alive for the call.
    if !unsafe { abi::envoy_dynamic_module_callback_http_get_cluster_name(filter, &mut name) } {
        return;
    }
    // SAFETY: filled by Envoy during this hook.
    let Some(name) = (unsafe { name.bytes() }) else { return };
    let known = BY_CLUSTER.with(|c| c.borrow().get(name).copied());
    let list = match known {
        Some(list) => list,
        None => {
            let list = decide(filter);
            BY_CLUSTER.with(|c| c.borrow_mut().insert(name.to_vec(), list));
            list
        }
    };
    if let Some(list) = list {
        let value = ModuleBuffer { ptr: list.as_ptr(), len: list.len() };
        // SAFETY: plain call with views alive for its duration.
        unsafe { abi::envoy_dynamic_module_callback_http_set_filter_state_typed(filter, APPLICATION_PROTOCOLS, value) };
    }
}
