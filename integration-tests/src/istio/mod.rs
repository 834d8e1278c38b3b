//! What istiod builds for the proxies of a mesh that runs our WasmPlugins
//! (`deploy/istio/`), written as stock Envoy configurations of the same
//! shape, and the states docs/deployment.md's procedure passes through:
//!
//! - [`plugins`]: the manifests as istiod reads them, and where it places each;
//! - [`sidecar`]: the server sidecar, client sidecar and gateway istiod
//!   writes (each shape names the istiod function it follows), under either
//!   setting of istiod's two flags;
//! - [`rollout`]: every state of the procedure and its rollback;
//! - [`traffic`]: one state's three proxies, and every kind of traffic
//!   through every path to the server.

pub mod plugins;
pub mod rollout;
pub mod sidecar;
pub mod traffic;

pub use plugins::{manifests, manifests_of, placed, Class, Phase, Plugin, PluginType, MANIFESTS};
