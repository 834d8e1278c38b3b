//! The deployment: backends, a server (inbound) Envoy and a client (outbound)
//! Envoy with the real filters, over mTLS with a per-run PKI. Every port is
//! chosen at run time, so several meshes can run at once on one machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::backends::Backends;
use crate::envoy::{Envoy, Launch};
use crate::paths;
use crate::pki::Pki;
use crate::target::Target;

/// Plugin configurations (JSON) of the three filter instances.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    pub alpn_config: String,
    pub server_exchange_config: String,
    pub client_exchange_config: String,
    /// The HTTP form of the exchange (root id `peer_exchange_http`).
    pub server_http_exchange_config: String,
    pub client_http_exchange_config: String,
    /// Envoy's `wasm` log level (the filters log each decision at debug).
    pub wasm_log_level: String,
    /// Placeholder values that replace the defaults, per Envoy (the
    /// benchmark loads the builds under A/B into its slots this way).
    pub client_vars: BTreeMap<String, String>,
    pub server_vars: BTreeMap<String, String>,
}

/// alpn-filter's configuration in the tests and in docker-compose: Istio's
/// lists, and name rules declaring two of the protocol-matrix clusters.
pub const ALPN_CONFIG: &str = r#"{"cluster_upstream_protocols":[{"cluster":"mesh_http_explicit_*","upstream_protocol":"HTTP11"},{"cluster":"mesh_http_use_downstream","upstream_protocol":"USE_DOWNSTREAM"}]}"#;

/// The HTTP exchange's configurations in the tests and in docker-compose.
pub const HTTP_SERVER_CONFIG: &str = r#"{"role":"server","peer_json":true}"#;
pub const HTTP_CLIENT_CONFIG: &str = r#"{"role":"client","peer_json":true}"#;

/// The exchange timeout the tests' deployment uses (short, to test it).
pub const TEST_EXCHANGE_TIMEOUT_MS: u64 = 1500;

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            alpn_config: ALPN_CONFIG.into(),
            server_exchange_config: format!(
                r#"{{"role":"server","peer_json":true,"exchange_timeout_ms":{TEST_EXCHANGE_TIMEOUT_MS}}}"#
            ),
            client_exchange_config: format!(
                r#"{{"role":"client","peer_json":true,"exchange_timeout_ms":{TEST_EXCHANGE_TIMEOUT_MS}}}"#
            ),
            server_http_exchange_config: HTTP_SERVER_CONFIG.into(),
            client_http_exchange_config: HTTP_CLIENT_CONFIG.into(),
            wasm_log_level: "debug".into(),
            client_vars: BTreeMap::new(),
            server_vars: BTreeMap::new(),
        }
    }
}

// Declaration order is drop order: Envoys stop before their backends, and
// the temporary directory goes last.
/// Tests reach it through `target`, like any deployment; the rest is the
/// processes it owns.
pub struct Mesh {
    pub target: Target,
    pub client: Envoy,
    pub server: Envoy,
    pub backends: Backends,
    dir: tempfile::TempDir,
}

fn vars(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// The configuration of the chains whose logs do not print the peer (the
/// benchmark's quiet rows): the same, without `peer_json`.
pub fn without_peer_json(plugin_config: &str) -> String {
    let mut config: serde_json::Value = serde_json::from_str(plugin_config).expect("plugin configuration is JSON");
    if let Some(fields) = config.as_object_mut() {
        fields.remove("peer_json");
    }
    config.to_string()
}

/// A plugin configuration with Istio's standard metrics on
/// (`"istio_metrics": <metrics>`, a JSON object such as `{}`).
pub fn with_istio_metrics(plugin_config: &str, metrics: &str) -> String {
    let mut config: serde_json::Value = serde_json::from_str(plugin_config).expect("plugin configuration is JSON");
    config["istio_metrics"] = serde_json::from_str(metrics).expect("istio_metrics is JSON");
    config.to_string()
}

/// Every exchange configuration of `options` with Istio's standard metrics on.
pub fn with_istio_metrics_everywhere(options: MeshOptions, metrics: &str) -> MeshOptions {
    MeshOptions {
        server_exchange_config: with_istio_metrics(&options.server_exchange_config, metrics),
        client_exchange_config: with_istio_metrics(&options.client_exchange_config, metrics),
        server_http_exchange_config: with_istio_metrics(&options.server_http_exchange_config, metrics),
        client_http_exchange_config: with_istio_metrics(&options.client_http_exchange_config, metrics),
        ..options
    }
}

/// Values both templates share.
fn common_vars(dir: &Path, pki: &Pki, plugin_config: &str, http_config: &str) -> BTreeMap<String, String> {
    for config in [plugin_config, http_config] {
        assert!(!config.contains('\''), "plugin configurations are single-quoted in YAML: no ' allowed");
    }
    vars(&[
        ("BIND_ADDRESS", "127.0.0.1".into()),
        ("ADMIN_ADDRESS", "127.0.0.1".into()),
        ("ADMIN_PORT", "0".into()),
        ("CERT_DIR", pki.dir.display().to_string()),
        ("LOG_DIR", dir.display().to_string()),
        ("PEER_EXCHANGE_WASM", paths::peer_exchange_filter_wasm().display().to_string()),
        // The benchmark's slots: the empty filter, the shipped exchange.
        ("TCP_SLOT_WASM", paths::empty_filter_wasm().display().to_string()),
        ("TCP_SLOT_ROOT_ID", "empty".into()),
        ("TCP_SLOT_CONFIG", "network".into()),
        ("HTTP_EXCHANGE_SLOT_WASM", paths::peer_exchange_filter_wasm().display().to_string()),
        ("PEER_EXCHANGE_CONFIG", plugin_config.to_string()),
        ("PEER_EXCHANGE_QUIET_CONFIG", without_peer_json(plugin_config)),
        ("PEER_EXCHANGE_HTTP_CONFIG", http_config.to_string()),
        // Envoy's default; the metrics tests flush more often.
        ("STATS_FLUSH_INTERVAL", "5s".into()),
    ])
}

/// The HTTP exchange client's configuration with alpn-filter's rule built
/// in (`alpn`: the given alpn-filter configuration, but its refresh period,
/// which the built-in rule takes from the exchange's). A configuration that
/// is not a JSON object is returned as is: the tests of refused
/// configurations pass such text on purpose.
pub fn with_alpn(http_client_config: &str, alpn_config: &str) -> String {
    let Ok(serde_json::Value::Object(mut config)) = serde_json::from_str(http_client_config) else {
        return http_client_config.to_string();
    };
    let mut alpn = match serde_json::from_str(alpn_config) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    alpn.remove("cluster_metadata_refresh_ms");
    config.insert("alpn".into(), serde_json::Value::Object(alpn));
    serde_json::Value::Object(config).to_string()
}

/// Values of the server template.
pub fn server_vars(dir: &Path, pki: &Pki, backends: &Backends, options: &MeshOptions) -> BTreeMap<String, String> {
    let mut v = common_vars(dir, pki, &options.server_exchange_config, &options.server_http_exchange_config);
    v.extend(vars(&[
        ("INBOUND_PORT", "0".into()),
        ("ECHO_HOST", backends.echo.ip().to_string()),
        ("ECHO_PORT", backends.echo.port().to_string()),
        ("BANNER_HOST", backends.banner.ip().to_string()),
        ("BANNER_PORT", backends.banner.port().to_string()),
        ("HTTP_BACKEND_HOST", backends.http.ip().to_string()),
        ("HTTP_BACKEND_PORT", backends.http.port().to_string()),
    ]));
    v.extend(options.server_vars.clone());
    v
}

/// Values of the client template.
pub fn client_vars(
    dir: &Path,
    pki: &Pki,
    backends: &Backends,
    server: SocketAddr,
    options: &MeshOptions,
) -> BTreeMap<String, String> {
    assert!(!options.alpn_config.contains('\''), "plugin configurations are single-quoted in YAML: no ' allowed");
    let mut v = common_vars(dir, pki, &options.client_exchange_config, &options.client_http_exchange_config);
    v.extend(vars(&[
        ("ALPN_WASM", paths::alpn_filter_wasm().display().to_string()),
        ("ALPN_CONFIG", options.alpn_config.to_string()),
        ("PEER_EXCHANGE_HTTP_ALPN_CONFIG", with_alpn(&options.client_http_exchange_config, &options.alpn_config)),
        ("HTTP_PORT", "0".into()),
        ("HTTP_EXCHANGE_PORT", "0".into()),
        ("HTTP_BACKEND_HOST", backends.http.ip().to_string()),
        ("HTTP_BACKEND_PORT", backends.http.port().to_string()),
        ("HTTP_BASELINE_PORT", "0".into()),
        ("TCP_BASELINE_PORT", "0".into()),
        ("TCP_ECHO_PORT", "0".into()),
        ("TCP_BANNER_PORT", "0".into()),
        ("TCP_RECORDER_PORT", "0".into()),
        ("TCP_PLAIN_PORT", "0".into()),
        ("TCP_PLAIN_MARKED_PORT", "0".into()),
        ("SERVER_HOST", server.ip().to_string()),
        ("SERVER_PORT", server.port().to_string()),
        ("PLAIN_HTTPS_HOST", backends.plain_https.ip().to_string()),
        ("PLAIN_HTTPS_PORT", backends.plain_https.port().to_string()),
        ("PLAIN_TLS_HOST", backends.plain_tls.ip().to_string()),
        ("PLAIN_TLS_PORT", backends.plain_tls.port().to_string()),
        ("MESH_RECORDER_HOST", backends.mesh_recorder.ip().to_string()),
        ("MESH_RECORDER_PORT", backends.mesh_recorder.port().to_string()),
        ("HTTP_SLOT_WASM", paths::empty_filter_wasm().display().to_string()),
        ("HTTP_SLOT_ROOT_ID", "empty".into()),
        ("HTTP_SLOT_CONFIG", "http".into()),
    ]));
    v.extend(options.client_vars.clone());
    v
}

impl Mesh {
    pub fn start() -> Mesh {
        Self::start_with(MeshOptions::default())
    }

    pub fn start_with(options: MeshOptions) -> Mesh {
        let dir = tempfile::Builder::new().prefix("mesh-").tempdir().expect("temp dir");
        let pki = Pki::generate(&dir.path().join("certs"));
        let backends = Backends::start(&pki);
        let server_vars = server_vars(dir.path(), &pki, &backends, &options);
        let launch = |name, template, vars| Launch {
            name,
            template,
            vars,
            dir: dir.path(),
            wasm_log_level: &options.wasm_log_level,
        };
        let server = Envoy::start(&launch("server", "server.yaml", &server_vars)).unwrap_or_else(|e| panic!("{e}"));
        let server_addr = SocketAddr::from(([127, 0, 0, 1], server.listener_port("inbound_mtls")));
        let client_vars = client_vars(dir.path(), &pki, &backends, server_addr, &options);
        let client = Envoy::start(&launch("client", "client.yaml", &client_vars)).unwrap_or_else(|e| panic!("{e}"));
        let target = Target::loopback(client.admin.clone(), server.admin.clone(), pki, dir.path());
        Mesh { target, client, server, backends, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `MESH_TARGET=external`: the deployment the `MESH_*` variables describe
/// (see [`crate::target`]); else a fresh local mesh, kept running as long as
/// the returned target.
pub fn target_from_env() -> Target {
    match std::env::var("MESH_TARGET").as_deref() {
        Ok("external") => Target::from_variables(),
        Ok("local") | Err(_) => {
            let mesh = Arc::new(Mesh::start());
            mesh.target.clone().keeping(mesh.clone())
        }
        Ok(other) => panic!("MESH_TARGET must be 'external' or 'local', not {other:?}"),
    }
}

pub const SERVER_TCP_LOG: &str = "server-tcp-access.log";
pub const SERVER_HTTP_LOG: &str = "server-http-access.log";
pub const CLIENT_TCP_LOG: &str = "client-tcp-access.log";
pub const CLIENT_HTTP_LOG: &str = "client-http-access.log";
