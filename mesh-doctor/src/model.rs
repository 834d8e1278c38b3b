//! One Envoy's configuration, from whichever form it came in, reduced to
//! what the checks read: the node, the listeners' chains with their filters
//! (ECDS references resolved), the clusters and their endpoints, the stats
//! tags.

use std::collections::BTreeMap;

use serde_json::Value;

/// Where a configuration came from, and what it holds.
#[derive(Debug, Default)]
pub struct Proxy {
    /// The file name or address it was read from.
    pub source: String,
    pub node: Value,
    pub listeners: Vec<Value>,
    pub clusters: Vec<Value>,
    /// ECDS filter configurations by name (a config dump's `EcdsConfigDump`).
    pub ecds: BTreeMap<String, Value>,
    /// Endpoints by cluster name (a config dump's `EndpointsConfigDump`).
    pub endpoints: BTreeMap<String, Vec<Value>>,
    pub stats_tags: Vec<String>,
}

const BOOTSTRAP_DUMP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
const LISTENERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
const CLUSTERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const ECDS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.EcdsConfigDump";
const ENDPOINTS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump";

impl Proxy {
    /// A bootstrap (`static_resources`), or a config dump (`configs`: from
    /// Envoy's admin `/config_dump` or `istioctl proxy-config all -o json`).
    pub fn from_value(source: &str, value: &Value) -> Result<Proxy, String> {
        let mut proxy = Proxy { source: source.to_string(), ..Proxy::default() };
        if let Some(configs) = value.get("configs").and_then(Value::as_array) {
            let mut dynamic_listeners = false;
            let mut dynamic_clusters = false;
            for config in configs {
                match config["@type"].as_str().unwrap_or_default() {
                    BOOTSTRAP_DUMP => proxy.read_bootstrap(&config["bootstrap"], false),
                    LISTENERS_DUMP => {
                        dynamic_listeners = true;
                        for l in array(&config["static_listeners"]) {
                            proxy.listeners.push(l["listener"].clone());
                        }
                        for l in array(&config["dynamic_listeners"]) {
                            let state =
                                if l["active_state"].is_object() { &l["active_state"] } else { &l["warming_state"] };
                            if state["listener"].is_object() {
                                proxy.listeners.push(state["listener"].clone());
                            }
                        }
                    }
                    CLUSTERS_DUMP => {
                        dynamic_clusters = true;
                        for key in ["static_clusters", "dynamic_active_clusters", "dynamic_warming_clusters"] {
                            for c in array(&config[key]) {
                                proxy.clusters.push(c["cluster"].clone());
                            }
                        }
                    }
                    ECDS_DUMP => {
                        for f in array(&config["ecds_filters"]) {
                            let filter = &f["ecds_filter"];
                            if let Some(name) = filter["name"].as_str() {
                                proxy.ecds.insert(name.to_string(), filter["typed_config"].clone());
                            }
                        }
                    }
                    ENDPOINTS_DUMP => {
                        for key in ["static_endpoint_configs", "dynamic_endpoint_configs"] {
                            for e in array(&config[key]) {
                                let assignment = &e["endpoint_config"];
                                proxy.add_endpoints(assignment);
                            }
                        }
                    }
                    _ => {}
                }
            }
            // The bootstrap's static resources are in the listener and
            // cluster dumps too; only without those are they read from it.
            if !dynamic_listeners || !dynamic_clusters {
                let bootstrap = configs.iter().find(|c| c["@type"] == BOOTSTRAP_DUMP).map(|c| &c["bootstrap"]);
                if let Some(bootstrap) = bootstrap {
                    if !dynamic_listeners {
                        proxy.listeners.extend(array(&bootstrap["static_resources"]["listeners"]).cloned());
                    }
                    if !dynamic_clusters {
                        proxy.clusters.extend(array(&bootstrap["static_resources"]["clusters"]).cloned());
                    }
                }
            }
        } else if value.get("static_resources").is_some() || value.get("node").is_some() {
            proxy.read_bootstrap(value, true);
        } else {
            return Err("neither an Envoy bootstrap (static_resources, node) nor a config dump (configs)".into());
        }
        let clusters = proxy.clusters.clone();
        for cluster in &clusters {
            proxy.add_endpoints(&cluster["load_assignment"]);
        }
        Ok(proxy)
    }

    fn read_bootstrap(&mut self, bootstrap: &Value, with_resources: bool) {
        self.node = bootstrap["node"].clone();
        self.stats_tags = array(&bootstrap["stats_config"]["stats_tags"])
            .filter_map(|t| t["tag_name"].as_str().map(str::to_string))
            .collect();
        if with_resources {
            self.listeners.extend(array(&bootstrap["static_resources"]["listeners"]).cloned());
            self.clusters.extend(array(&bootstrap["static_resources"]["clusters"]).cloned());
        }
    }

    fn add_endpoints(&mut self, assignment: &Value) {
        let Some(name) = assignment["cluster_name"].as_str() else { return };
        let lb_endpoints: Vec<Value> =
            array(&assignment["endpoints"]).flat_map(|e| array(&e["lb_endpoints"]).cloned()).collect();
        if !lb_endpoints.is_empty() {
            self.endpoints.entry(name.to_string()).or_default().extend(lb_endpoints);
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&Value> {
        self.clusters.iter().find(|c| c["name"] == name)
    }

    /// Whether istiod wrote this configuration (pilot-agent's node metadata).
    pub fn is_istio(&self) -> bool {
        self.node["metadata"]["ISTIO_VERSION"].is_string()
    }

    /// Every filter chain: (listener name, chain).
    pub fn chains(&self) -> Vec<Chain<'_>> {
        let mut out = Vec::new();
        for listener in &self.listeners {
            let name = listener["name"].as_str().unwrap_or("(unnamed)");
            let chains = array(&listener["filter_chains"]).chain(std::iter::once(&listener["default_filter_chain"]));
            for (index, chain) in chains.enumerate() {
                if chain.is_object() {
                    out.push(Chain { listener: name, listener_value: listener, chain, index, proxy: self });
                }
            }
        }
        out
    }

    /// A filter's effective configuration: its `typed_config`, or the ECDS
    /// resource its `config_discovery` names.
    pub fn filter_config<'a>(&'a self, filter: &'a Value) -> &'a Value {
        if filter["config_discovery"].is_object() {
            if let Some(config) = filter["name"].as_str().and_then(|n| self.ecds.get(n)) {
                return config;
            }
        }
        &filter["typed_config"]
    }
}

pub fn array(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// One filter chain of a listener.
#[derive(Clone, Copy)]
pub struct Chain<'a> {
    pub listener: &'a str,
    pub listener_value: &'a Value,
    pub chain: &'a Value,
    /// Its position in the listener (the default chain comes last).
    pub index: usize,
    pub proxy: &'a Proxy,
}

impl<'a> Chain<'a> {
    /// `listener <name>, chain <name>` (or its position).
    pub fn location(&self) -> String {
        match self.chain["name"].as_str() {
            Some(name) => format!("listener {}, chain {name}", self.listener),
            None => format!("listener {}, chain #{}", self.listener, self.index + 1),
        }
    }

    /// The chain's name (or its position), without the listener.
    pub fn name(&self) -> String {
        self.chain["name"].as_str().map_or_else(|| format!("#{}", self.index + 1), str::to_string)
    }

    pub fn network_filters(&self) -> Vec<Filter<'a>> {
        array(&self.chain["filters"]).map(|f| Filter::new(self.proxy, f)).collect()
    }

    /// The HTTP filters of the chain's HTTP connection manager, if it has one.
    pub fn http_filters(&self) -> Option<Vec<Filter<'a>>> {
        let hcm = self.network_filters().into_iter().find(|f| f.kind == Kind::Hcm)?;
        Some(array(&hcm.config["http_filters"]).map(|f| Filter::new(self.proxy, f)).collect())
    }

    /// The cluster its `tcp_proxy` sends to.
    pub fn tcp_proxy_cluster(&self) -> Option<&'a str> {
        let proxy = self.network_filters().into_iter().find(|f| f.kind == Kind::TcpProxy)?;
        proxy.config["cluster"].as_str()
    }

    pub fn application_protocols(&self) -> Vec<&'a str> {
        array(&self.chain["filter_chain_match"]["application_protocols"]).filter_map(Value::as_str).collect()
    }

    pub fn server_names(&self) -> Vec<&'a str> {
        array(&self.chain["filter_chain_match"]["server_names"]).filter_map(Value::as_str).collect()
    }

    pub fn destination_port(&self) -> Option<u64> {
        self.chain["filter_chain_match"]["destination_port"].as_u64()
    }

    /// The chain's downstream TLS context, if it terminates TLS.
    pub fn downstream_tls(&self) -> Option<&'a Value> {
        let socket = &self.chain["transport_socket"];
        (socket["typed_config"]["@type"].as_str()?.ends_with("DownstreamTlsContext")).then_some(&socket["typed_config"])
    }

    /// The exchange roles on this chain.
    pub fn exchange_roles(&self) -> Vec<(Filter<'a>, Exchange)> {
        let mut out: Vec<(Filter<'a>, Exchange)> = Vec::new();
        for f in self.network_filters().into_iter().chain(self.http_filters().unwrap_or_default()) {
            if let Kind::Exchange(e) = f.kind {
                out.push((f, e));
            }
        }
        out
    }
}

/// What a filter is, as far as the checks care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exchange(Exchange),
    /// alpn-filter.
    Alpn,
    /// Istio's own exchange: the TCP listener or cluster filter, or the HTTP `peer_metadata`.
    NativeExchange,
    /// Istio's own `istio.alpn`.
    NativeAlpn,
    /// istio-agent's stand-in for a WasmPlugin whose image it could not fetch.
    WasmFallback {
        deny: bool,
    },
    Hcm,
    TcpProxy,
    Other,
}

/// One of our exchange's plugins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub http: bool,
    pub server: bool,
}

/// A network, HTTP or cluster filter.
#[derive(Clone, Copy)]
pub struct Filter<'a> {
    pub name: &'a str,
    /// The effective typed config (ECDS resolved; a `TypedStruct` unwrapped to its `value`).
    pub config: &'a Value,
    pub type_url: &'a str,
    pub kind: Kind,
}

const WASM_TYPES: [&str; 2] = [
    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
];

impl<'a> Filter<'a> {
    pub fn new(proxy: &'a Proxy, filter: &'a Value) -> Filter<'a> {
        let typed = proxy.filter_config(filter);
        let (type_url, config) = match typed["@type"].as_str().unwrap_or_default() {
            t if t.ends_with("udpa.type.v1.TypedStruct") || t.ends_with("xds.type.v3.TypedStruct") => {
                (typed["type_url"].as_str().unwrap_or_default(), &typed["value"])
            }
            t => (t, typed),
        };
        let name = filter["name"].as_str().unwrap_or_default();
        let kind = classify(name, type_url, config);
        Filter { name, config, type_url, kind }
    }

    pub fn is_wasm(&self) -> bool {
        WASM_TYPES.contains(&self.type_url)
    }

    /// A wasm filter's plugin configuration (the JSON text it is handed).
    pub fn plugin_configuration(&self) -> Option<&'a str> {
        let configuration = &self.config["config"]["configuration"];
        configuration["value"].as_str().or_else(|| configuration.as_str())
    }

    pub fn root_id(&self) -> &'a str {
        self.config["config"]["root_id"].as_str().unwrap_or_default()
    }

    /// `failure_policy`, if set (Envoy's default without it: fail closed).
    pub fn failure_policy(&self) -> Option<&'a str> {
        self.config["config"]["failure_policy"].as_str()
    }
}

fn classify(name: &str, type_url: &str, config: &Value) -> Kind {
    let lower = type_url.to_ascii_lowercase();
    // (Not the HBONE `network_filters.peer_metadata` of waypoints: it does not exchange on mTLS connections.)
    let hbone = lower.contains("network_filters.peer_metadata");
    if !hbone
        && (lower.contains("metadataexchange")
            || lower.contains("metadata_exchange")
            || lower.contains("peer_metadata"))
    {
        return Kind::NativeExchange;
    }
    if lower.contains("filter.http.alpn") || lower.contains("filters.http.alpn") {
        return Kind::NativeAlpn;
    }
    if type_url.ends_with("http_connection_manager.v3.HttpConnectionManager") {
        return Kind::Hcm;
    }
    if type_url.ends_with("tcp_proxy.v3.TcpProxy") {
        return Kind::TcpProxy;
    }
    if type_url.ends_with("rbac.v3.RBAC") {
        let prefix =
            config["rules_stat_prefix"].as_str().or_else(|| config["stat_prefix"].as_str()).unwrap_or_default();
        return match prefix {
            "wasm-default-deny" => Kind::WasmFallback { deny: true },
            "wasm-default-allow" => Kind::WasmFallback { deny: false },
            _ => Kind::Other,
        };
    }
    if WASM_TYPES.contains(&type_url) {
        let http = type_url.contains(".http.");
        let configuration = &config["config"]["configuration"];
        let text = configuration["value"].as_str().or_else(|| configuration.as_str()).unwrap_or_default();
        let json: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if let Some(role) = json["role"].as_str() {
            return Kind::Exchange(Exchange { http, server: role == "server" });
        }
        let root_id = config["config"]["root_id"].as_str().unwrap_or_default();
        let code = config["config"]["vm_config"]["code"]["local"]["filename"].as_str().unwrap_or_default();
        let alpn_keys = ["alpn_override", "default_upstream_protocol", "cluster_upstream_protocols"];
        if http
            && (root_id == "alpn"
                || code.contains("alpn_filter")
                || name.contains("alpn")
                || alpn_keys.iter().any(|k| json.get(k).is_some()))
        {
            return Kind::Alpn;
        }
        return Kind::Other;
    }
    // Native filters configured by name only (older Istio, or a TypedStruct without a URL).
    match name {
        "istio.metadata_exchange" => Kind::NativeExchange,
        "istio.alpn" => Kind::NativeAlpn,
        _ => Kind::Other,
    }
}

/// A cluster's upstream TLS contexts: its `transport_socket`, and each of its
/// `transport_socket_matches` (with the match's criteria).
pub fn upstream_tls(cluster: &Value) -> Vec<(Option<&Value>, &Value)> {
    let mut out = Vec::new();
    let is_tls =
        |socket: &Value| socket["typed_config"]["@type"].as_str().is_some_and(|t| t.ends_with("UpstreamTlsContext"));
    if is_tls(&cluster["transport_socket"]) {
        out.push((None, &cluster["transport_socket"]["typed_config"]));
    }
    for m in array(&cluster["transport_socket_matches"]) {
        if is_tls(&m["transport_socket"]) {
            out.push((Some(&m["match"]), &m["transport_socket"]["typed_config"]));
        }
    }
    out
}

pub fn alpn_list(tls: &Value) -> Vec<&str> {
    array(&tls["common_tls_context"]["alpn_protocols"]).filter_map(Value::as_str).collect()
}
