//! Every state a mesh passes through while docs/deployment.md's procedure
//! runs, forward and back: what istiod's flags are and which of
//! `deploy/istio/`'s files are applied. A rollback step returns to the
//! state before the step it undoes, so the distinct states are these.

use super::plugins::{manifests_of, Plugin};
use super::sidecar::Istiod;

pub const SERVERS: &str = "deploy/istio/peer-exchange-servers.yaml";
pub const CLIENTS: &str = "deploy/istio/peer-exchange-clients.yaml";
pub const ALPN: &str = "deploy/istio/alpn.yaml";

/// One state of the mesh.
#[derive(Clone, Copy, Debug)]
pub struct State {
    /// Short and stable: names log lines and paths.
    pub name: &'static str,
    /// Where it sits in the procedure, in the docs' words.
    pub step: &'static str,
    pub istiod: Istiod,
    pub applied: &'static [&'static str],
}

impl State {
    /// The applied files' WasmPlugins, in the order they were applied.
    pub fn plugins(&self) -> Vec<Plugin> {
        manifests_of(self.applied)
    }
}

/// Procedure on Istio's own proxies (which have Istio's filters), in order;
/// the rollback runs the same states backwards.
pub const ISTIO_PROXIES: [State; 5] = [
    State {
        name: "before",
        step: "before step 3 and after the last rollback step: istiod's defaults, nothing applied",
        istiod: Istiod::DEFAULTS,
        applied: &[],
    },
    State {
        name: "servers",
        step: "after step 3 (the server roles) and after rollback step 3 (alpn.yaml deleted)",
        istiod: Istiod::DEFAULTS,
        applied: &[SERVERS],
    },
    State {
        name: "alpn",
        step: "after step 4 (alpn.yaml, beside Istio's istio.alpn) and after rollback step 2 (istiod's flags back on)",
        istiod: Istiod::DEFAULTS,
        applied: &[SERVERS, ALPN],
    },
    State {
        name: "flags-off",
        step: "after step 5 (istiod's flags off) and after rollback step 1 (the client roles deleted)",
        istiod: Istiod::FLAGS_OFF,
        applied: &[SERVERS, ALPN],
    },
    State {
        name: "clients",
        step: "after step 6 (the client roles): the end state",
        istiod: Istiod::FLAGS_OFF,
        applied: &[SERVERS, ALPN, CLIENTS],
    },
];

/// Procedure on stock Envoy proxies (no Istio filters, so istiod's flags are
/// off before they join): the state they start in; then the same
/// "flags-off" and "clients" states as above.
pub const STOCK_PROXIES_BEFORE: State = State {
    name: "stock-before",
    step: "stock Envoy proxies before: flags off, nothing applied (a port without a protocol name gets no HTTP chain)",
    istiod: Istiod::FLAGS_OFF,
    applied: &[],
};
