//! The WasmPlugins of `deploy/istio/` read as istiod reads them, and where
//! istiod puts each (`pilot/pkg/model/extensions.go`: which plugins reach a
//! chain by `type`, `match.mode` and `match.ports`; the listener builders:
//! phase by phase between Istio's own filters, by priority within a phase).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::paths;

/// A WasmPlugin's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginType {
    Http,
    Network,
}

/// Where a chain sits (istiod's listener class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    SidecarInbound,
    SidecarOutbound,
    /// istiod treats a gateway as a client for `match.mode`
    /// (`workloadModeForListenerClass`, pilot/pkg/model/extensions.go).
    Gateway,
}

/// A WasmPlugin's `phase`, in the order istiod appends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Authn,
    Authz,
    Stats,
    Unspecified,
}

/// One WasmPlugin of `deploy/istio/`, as istiod reads it.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// `<namespace>.<name>`: the filter's name in Envoy.
    pub name: String,
    pub kind: PluginType,
    /// `match[].mode` (None: any), `match[].ports`.
    pub modes: Vec<(Option<Class>, Vec<u16>)>,
    pub phase: Phase,
    pub priority: i64,
    /// `pluginName`: the Envoy root id.
    pub root_id: String,
    /// `pluginConfig`, as the JSON text istiod hands the plugin.
    pub configuration: String,
    /// Envoy's `failure_policy` for the plugin's `failStrategy`.
    pub failure_policy: &'static str,
    /// The OCI image (`url`), to tell which of our modules it is.
    pub url: String,
    /// Whether `selector` or `targetRefs` narrow which proxies get it.
    pub scoped: bool,
    /// The file of `deploy/istio/` it comes from.
    pub file: &'static str,
}

impl Plugin {
    /// Which module the plugin's image carries (by its image name).
    pub fn module(&self) -> std::path::PathBuf {
        if self.url.contains("alpn-filter") {
            paths::alpn_filter_wasm()
        } else if self.url.contains("peer-exchange-filter") {
            paths::peer_exchange_filter_wasm()
        } else {
            panic!("{}: no module of ours is in {}", self.name, self.url)
        }
    }

    /// A resourceVersion of its own, as the API server gives each object.
    fn resource_version(&self) -> String {
        let hash = self.name.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        (hash % 1_000_000_000).to_string()
    }

    fn applies(&self, kind: PluginType, class: Class, port: u16) -> bool {
        // CLIENT selects sidecar outbound and gateways, SERVER sidecar inbound.
        let mode_class = |m: Class| match class {
            Class::Gateway => m == Class::SidecarOutbound,
            class => m == class,
        };
        self.kind == kind
            && (self.modes.is_empty()
                || self
                    .modes
                    .iter()
                    .any(|(mode, ports)| mode.is_none_or(mode_class) && (ports.is_empty() || ports.contains(&port))))
    }

    /// The Envoy filter istiod builds for it (inlined: Istio hands it over by ECDS).
    pub fn filter(&self) -> Value {
        let type_url = match self.kind {
            PluginType::Http => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            PluginType::Network => "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        };
        json!({
            "name": self.name,
            "typed_config": {
                "@type": type_url,
                "config": {
                    "name": self.name,
                    "root_id": self.root_id,
                    "failure_policy": self.failure_policy,
                    "vm_config": {
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": self.module().display().to_string() } },
                        // istiod puts each WasmPlugin's resourceVersion here
                        // (buildVMConfig); Envoy's VM key includes it, so two
                        // plugins of one image never share a VM.
                        "environment_variables": { "key_values": { "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": self.resource_version() } },
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.configuration,
                    },
                },
            },
        })
    }
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ManifestMetadata,
    spec: serde_yaml::Value,
}

#[derive(Deserialize)]
struct ManifestMetadata {
    name: String,
    namespace: String,
}

/// The files of `deploy/istio/`, in the order a user applies them.
pub const MANIFESTS: [&str; 3] =
    ["deploy/istio/peer-exchange-servers.yaml", "deploy/istio/peer-exchange-clients.yaml", "deploy/istio/alpn.yaml"];

/// Every WasmPlugin of [`MANIFESTS`], in file order (istiod orders plugins
/// of equal priority by creation time: the order they are applied).
pub fn manifests() -> Vec<Plugin> {
    manifests_of(&MANIFESTS)
}

/// The WasmPlugins of `files` (some of [`MANIFESTS`]), in file order.
pub fn manifests_of(files: &[&'static str]) -> Vec<Plugin> {
    files.iter().flat_map(|file| parse(file)).collect()
}

fn parse(file: &'static str) -> Vec<Plugin> {
    let path = paths::workspace_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let m = Manifest::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!((m.api_version.as_str(), m.kind.as_str()), ("extensions.istio.io/v1alpha1", "WasmPlugin"));
            plugin(m, file)
        })
        .collect()
}

fn plugin(m: Manifest, file: &'static str) -> Plugin {
    let spec = &m.spec;
    let name = format!("{}.{}", m.metadata.namespace, m.metadata.name);
    let text = |key: &str| spec[key].as_str().unwrap_or_default().to_string();
    let kind = match text("type").as_str() {
        "NETWORK" => PluginType::Network,
        // UNSPECIFIED_PLUGIN_TYPE is HTTP (filterChainTypeFromPluginType).
        _ => PluginType::Http,
    };
    let modes = spec["match"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|selector| {
            let mode = match selector["mode"].as_str() {
                Some("CLIENT") => Some(Class::SidecarOutbound),
                Some("SERVER") => Some(Class::SidecarInbound),
                _ => None,
            };
            let ports = selector["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["number"].as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect();
            (mode, ports)
        })
        .collect();
    let phase = match text("phase").as_str() {
        "AUTHN" => Phase::Authn,
        "AUTHZ" => Phase::Authz,
        "STATS" => Phase::Stats,
        _ => Phase::Unspecified,
    };
    let failure_policy = match text("failStrategy").as_str() {
        "FAIL_OPEN" => "FAIL_OPEN",
        "FAIL_RELOAD" => "FAIL_RELOAD",
        // FAIL_CLOSE, and Envoy's default when istiod sets nothing.
        _ => "FAIL_CLOSED",
    };
    // istiod: protomarshal.ToJSON of the pluginConfig Struct.
    let configuration = serde_json::to_value(&spec["pluginConfig"]).expect("pluginConfig as JSON");
    Plugin {
        name,
        kind,
        modes,
        phase,
        priority: spec["priority"].as_i64().unwrap_or(0),
        root_id: text("pluginName"),
        configuration: if configuration.is_null() { String::new() } else { configuration.to_string() },
        failure_policy,
        url: text("url"),
        scoped: !spec["selector"].is_null() || !spec["targetRefs"].is_null() || !spec["targetRef"].is_null(),
        file,
    }
}

/// The plugins of `phase` istiod puts on a chain, highest priority first
/// (ties keep manifest order: istiod's sort is stable over creation time).
pub fn placed(plugins: &[Plugin], kind: PluginType, class: Class, port: u16, phase: Phase) -> Vec<&Plugin> {
    let mut found: Vec<&Plugin> = plugins.iter().filter(|p| p.phase == phase && p.applies(kind, class, port)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.priority));
    found
}
