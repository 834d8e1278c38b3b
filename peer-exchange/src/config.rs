//! Plugin configuration (JSON), validated once at configure time.
//!
//! ```json
//! {
//!   "role": "client",
//!   "node_id": "sidecar~10.0.0.1~app.ns~ns.svc.cluster.local",
//!   "metadata": {"NAME": "app-1", "NAMESPACE": "ns", "LABELS": {"app": "app"}},
//!   "additional_labels": ["team"],
//!   "max_peer_metadata_bytes": 65536,
//!   "exchange_timeout_ms": 10000,
//!   "identity_check": "enforce",
//!   "peer_json": true,
//!   "upstream": {"peer_identity_prefix": "spiffe://", "cluster_metadata_refresh_ms": 1000}
//! }
//! ```
//! Only `role` is required. `peer_json: true` also stores the peer as JSON
//! text (`wasm.downstream_peer_json` / `wasm.upstream_peer_json`, a string),
//! which access logs print at the cost of a string copy
//! (`%FILTER_STATE(wasm.downstream_peer_json:PLAIN)%`); printing the stored
//! Struct converts it to JSON on every log line. `identity_check` (`enforce`, `annotate`, `off`)
//! says what a peer's claim is worth against its certificate ([`crate::identity`]). `node_id` and `metadata` override what Envoy's
//! node says (and go through the same normalisation as the node's values:
//! only Istio's fields, the labels native derives `app`/`version`/canonical
//! names from, and `additional_labels` are sent); `upstream` is for the
//! client role only, `downstream` for the server role.
//! `upstream.cluster_metadata_refresh_ms` says how long the client remembers
//! what a cluster's metadata says about the exchange, by the cluster's name
//! (`0`: it reads the metadata for every connection or request), so a
//! metadata change made by xDS applies within that long.
//!
//! The HTTP form (root id [`HTTP_ROOT_ID`]) takes the same fields, except
//! `exchange_timeout_ms` (a request has no exchange to wait for), plus
//! `upstream.istio_service_clusters` and `downstream.peer_identity_prefix`,
//! and native's method lists for its direction ([`Method`]):
//! `upstream_discovery` / `upstream_propagation` (client),
//! `downstream_discovery` / `downstream_propagation` (server); its
//! `max_peer_metadata_bytes` defaults to 8 KiB.
//!
//! `istio_metrics` (both forms, both roles; off unless present) reports
//! Istio's standard metrics for each request or connection
//! ([`crate::istio_stats`]); `{"max_label_sets": 1000}` caps the distinct
//! label sets one VM defines (the default).

use std::collections::BTreeMap;
use std::fmt;

use filter_common::clusters;
use filter_common::schema::{self, Fields, Json, ReadJson};
/// A configuration error: the field and the reason (shared with alpn-filter).
pub use filter_common::ConfigError;

use alpn_decision::config::AlpnConfig;

use crate::identity::IdentityCheck;
use crate::workload::{LABELS_FIELD, WORKLOAD_FIELDS};

pub const DEFAULT_MAX_PEER_METADATA_BYTES: u32 = 64 * 1024;
/// For the header form: a real workload's metadata is a few hundred bytes,
/// and Envoy refuses requests whose headers pass 60 KiB anyway.
pub const DEFAULT_MAX_PEER_METADATA_HEADER_BYTES: u32 = 8 * 1024;
/// The plugin root id that selects the HTTP (header) form of the exchange.
pub const HTTP_ROOT_ID: &str = "peer_exchange_http";

/// Which form of the exchange a plugin runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The `istio-peer-exchange` prefix, as a network filter.
    Tcp,
    /// `x-envoy-peer-metadata` headers, as an HTTP filter.
    Http,
}

impl Transport {
    /// The form a plugin's root id selects.
    pub fn for_root_id(root_id: &str) -> Transport {
        if root_id == HTTP_ROOT_ID {
            Transport::Http
        } else {
            Transport::Tcp
        }
    }
}
pub const DEFAULT_EXCHANGE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_PEER_IDENTITY_PREFIX: &str = "spiffe://";
/// Default cap on the label sets one VM defines, per form and role (`istio_metrics.max_label_sets`).
pub const DEFAULT_MAX_LABEL_SETS: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Inbound: reads the peer's prefix from downstream, sends ours upstream-to-downstream.
    Server,
    /// Outbound: sends our prefix with the app's first bytes, reads the peer's from upstream.
    Client,
}

impl Role {
    /// By its configuration name ([`Role::name`]).
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::Server, Role::Client].into_iter().find(|role| role.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }

    /// Where the peer's metadata is stored in filter state (Istio's names).
    pub fn peer_key(self) -> &'static str {
        match self {
            Role::Server => filter_common::istio::peer::DOWNSTREAM,
            Role::Client => filter_common::istio::peer::UPSTREAM,
        }
    }

    /// Where the peer is stored as JSON text (`peer_json: true`; ours, not Istio's).
    pub fn peer_json_key(self) -> &'static str {
        match self {
            Role::Server => "downstream_peer_json",
            Role::Client => "upstream_peer_json",
        }
    }

    pub fn peer_id_key(self) -> &'static str {
        match self {
            Role::Server => "downstream_peer_id",
            Role::Client => "upstream_peer_id",
        }
    }
}

/// How the HTTP form finds a peer or sends ours (native's `DiscoveryMethod`
/// and `PropagationMethod`, written as native's JSON: `{"istio_headers": {}}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `x-envoy-peer-metadata` / `x-envoy-peer-metadata-id`.
    IstioHeaders,
    /// W3C `baggage` (found: downstream only, as native; sent: both ways).
    Baggage,
    /// The upstream host's `istio.workload` endpoint metadata (found:
    /// upstream only). Native's `workload_discovery` reads Istio's WDS, which
    /// stock Envoy lacks; this is the endpoint metadata native's stats fall
    /// back to.
    EndpointMetadata,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::IstioHeaders, Method::Baggage, Method::EndpointMetadata];

    pub fn name(self) -> &'static str {
        match self {
            Method::IstioHeaders => "istio_headers",
            Method::Baggage => "baggage",
            Method::EndpointMetadata => "endpoint_metadata",
        }
    }
}

/// The HTTP form's methods, per role: which `discovery` methods it may
/// use, which `propagation` ones.
fn allowed(role: Role, discovery: bool) -> &'static [Method] {
    match (role, discovery) {
        (Role::Client, true) => &[Method::IstioHeaders, Method::EndpointMetadata],
        (Role::Server, true) => &[Method::IstioHeaders, Method::Baggage],
        (_, false) => &[Method::IstioHeaders, Method::Baggage],
    }
}

/// A list of methods: `[{"istio_headers": {}}, {"baggage": {}}]`, each at
/// most once, each allowed for the role; a method takes no options.
fn read_methods(value: Json, field: &str, allowed: &[Method]) -> Result<Vec<Method>, ConfigError> {
    let names = allowed.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ");
    let mut methods: Vec<Method> = Vec::new();
    for (i, item) in value.into_array(field)?.into_iter().enumerate() {
        let path = format!("{field}[{i}]");
        let mut entries = item.into_fields(&path)?.into_entries();
        let (name, options) = match (entries.pop(), entries.is_empty()) {
            (Some(entry), true) => entry,
            _ => return Err(err(&path, format!("must name one method: {{\"<method>\": {{}}}}, one of {names}"))),
        };
        let method = Method::ALL
            .into_iter()
            .find(|m| m.name() == name && allowed.contains(m))
            .ok_or_else(|| err(&path, format!("`{name}` is not a method here; expected one of {names}")))?;
        options.into_fields(&format!("{path}.{name}"))?.finish()?;
        if methods.contains(&method) {
            return Err(err(&path, format!("`{name}` is listed twice")));
        }
        methods.push(method);
    }
    Ok(methods)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub transport: Transport,
    pub role: Role,
    pub node_id: Option<String>,
    /// Overrides of Istio's string fields.
    pub fields: BTreeMap<String, String>,
    /// Overrides of labels.
    pub labels: BTreeMap<String, String>,
    pub additional_labels: Vec<String>,
    pub max_peer_metadata_bytes: u32,
    /// 0 disables the exchange timeout.
    pub exchange_timeout_ms: u64,
    /// The certificate URI SAN prefix that makes a peer a mesh workload.
    pub peer_identity_prefix: String,
    /// HTTP client: istiod's `istio.services` cluster mark counts as a mesh upstream.
    pub istio_service_clusters: bool,
    /// What a claim that disagrees with the peer's certificate is worth.
    pub identity_check: IdentityCheck,
    /// Also store the peer as JSON text, for access logs.
    pub peer_json: bool,
    /// Client: how long a cluster's metadata verdict is remembered by the
    /// cluster's name; 0 = read it for every connection or request.
    pub cluster_metadata_refresh_ms: u32,
    /// HTTP form: how the peer is found, in order (the first that finds it
    /// wins): `upstream_discovery` (client) or `downstream_discovery`
    /// (server). Default: `istio_headers`.
    pub discovery: Vec<Method>,
    /// HTTP form: how ours is sent: `upstream_propagation` (client, on
    /// requests) or `downstream_propagation` (server, on responses).
    /// Default: `istio_headers`.
    pub propagation: Vec<Method>,
    /// HTTP client: alpn-filter's rule applied in this filter (`alpn`:
    /// alpn-filter's plugin configuration), so a client that needs both
    /// pays one wasm filter per request, not two.
    pub alpn: Option<AlpnConfig>,
    /// Istio's standard metrics (`istio_metrics`); `None`: off.
    pub istio_metrics: Option<MetricsConfig>,
}

/// `istio_metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `max_label_sets`: the cap on the label sets a VM defines.
    pub max_label_sets: u32,
    /// `tcp_reporting_ms`: how often an open connection's bytes are
    /// reported (native's `tcp_reporting_duration`, 5 s); 0: at its close only.
    pub tcp_reporting_ms: u32,
}

/// Native's `tcp_reporting_duration` default.
pub const DEFAULT_TCP_REPORTING_MS: u32 = 5_000;

/// `upstream` / `downstream`: `peer_identity_prefix`, and (upstream only)
/// `istio_service_clusters` and `cluster_metadata_refresh_ms`.
struct RawSide {
    field: &'static str,
    peer_identity_prefix: Option<String>,
    istio_service_clusters: Option<bool>,
    cluster_metadata_refresh_ms: Option<u32>,
}

impl RawSide {
    fn read(value: Json, field: &'static str, upstream: bool) -> Result<RawSide, ConfigError> {
        let mut fields = value.into_fields(field)?;
        let peer_identity_prefix = optional_string(&mut fields, "peer_identity_prefix")?;
        let mut istio_service_clusters = None;
        let mut cluster_metadata_refresh_ms = None;
        if upstream {
            if let Some(v) = fields.take("istio_service_clusters") {
                istio_service_clusters = Some(v.into_bool(&fields.path("istio_service_clusters"))?);
            }
            if let Some(v) = fields.take("cluster_metadata_refresh_ms") {
                let field = fields.path("cluster_metadata_refresh_ms");
                cluster_metadata_refresh_ms = Some(clusters::read_refresh_ms(v, &field)?);
            }
        }
        fields.finish()?;
        Ok(RawSide { field, peer_identity_prefix, istio_service_clusters, cluster_metadata_refresh_ms })
    }

    /// The side the role reads (`upstream`: client, `downstream`: server,
    /// the HTTP form's only), refusing the other.
    fn of_role(
        role: Role,
        transport: Transport,
        upstream: Option<RawSide>,
        downstream: Option<RawSide>,
    ) -> Result<Option<RawSide>, ConfigError> {
        let side = match (role, upstream, downstream) {
            (Role::Server, Some(_), _) => return Err(err("upstream", "only applies to role \"client\"")),
            (Role::Client, _, Some(_)) => return Err(err("downstream", "only applies to role \"server\"")),
            (Role::Server, None, Some(_)) if transport == Transport::Tcp => {
                return Err(err("downstream", "only applies to the HTTP exchange"))
            }
            (_, up, down) => up.or(down),
        };
        match side {
            Some(RawSide { field, istio_service_clusters: Some(_), .. }) if transport == Transport::Tcp => {
                Err(err(&format!("{field}.istio_service_clusters"), "only applies to the HTTP exchange"))
            }
            side => Ok(side),
        }
    }
}

/// Overrides of Istio's string fields, and of labels.
type Overrides = (BTreeMap<String, String>, BTreeMap<String, String>);

/// `metadata`: overrides of Istio's string fields, and of labels (`LABELS`).
fn read_metadata(value: Option<Json>) -> Result<Overrides, ConfigError> {
    let mut fields = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let metadata = value.map(|v| v.into_fields("metadata")).transpose()?;
    for (key, value) in metadata.map(Fields::into_entries).unwrap_or_default() {
        if key == LABELS_FIELD {
            for (label, value) in value.into_fields("metadata.LABELS")?.into_entries() {
                let value = value.into_string(&format!("metadata.LABELS.{label}"))?;
                labels.insert(label, value);
            }
        } else if WORKLOAD_FIELDS.contains(&key.as_str()) {
            let value = value.into_string(&format!("metadata.{key}"))?;
            fields.insert(key, value);
        } else {
            return Err(err(
                &format!("metadata.{key}"),
                format!("unknown field; expected one of {}, {LABELS_FIELD}", WORKLOAD_FIELDS.join(", ")),
            ));
        }
    }
    Ok((fields, labels))
}

/// `additional_labels`: label names, none empty.
fn read_additional_labels(value: Option<Json>) -> Result<Vec<String>, ConfigError> {
    let labels = match value {
        Some(list) => list.into_strings("additional_labels")?,
        None => Vec::new(),
    };
    if let Some((i, _)) = labels.iter().enumerate().find(|(_, l)| l.is_empty()) {
        return Err(err(&format!("additional_labels[{i}]"), "must not be empty"));
    }
    Ok(labels)
}

/// `max_peer_metadata_bytes`: the form's default, never 0.
fn read_max_peer_metadata_bytes(value: Option<Json>, transport: Transport) -> Result<u32, ConfigError> {
    let max = match value {
        Some(n) => u32::try_from(n.into_integer("max_peer_metadata_bytes", u32::MAX.into())?).unwrap_or(u32::MAX),
        None => match transport {
            Transport::Tcp => DEFAULT_MAX_PEER_METADATA_BYTES,
            Transport::Http => DEFAULT_MAX_PEER_METADATA_HEADER_BYTES,
        },
    };
    if max == 0 {
        return Err(err("max_peer_metadata_bytes", "must be greater than 0"));
    }
    Ok(max)
}

/// `exchange_timeout_ms`: the TCP form's only.
fn read_exchange_timeout_ms(value: Option<Json>, transport: Transport) -> Result<u64, ConfigError> {
    match value {
        Some(_) if transport == Transport::Http => Err(err("exchange_timeout_ms", "only applies to the TCP exchange")),
        Some(n) => n.into_integer("exchange_timeout_ms", u32::MAX.into()),
        None => Ok(DEFAULT_EXCHANGE_TIMEOUT_MS),
    }
}

/// The HTTP form's discovery (or propagation) methods under native's names;
/// only the role's own direction applies.
fn read_role_methods(
    raw: &mut Fields,
    role: Role,
    transport: Transport,
    discovery: bool,
) -> Result<Vec<Method>, ConfigError> {
    let (ours, other) = match (role, discovery) {
        (Role::Client, true) => ("upstream_discovery", "downstream_discovery"),
        (Role::Client, false) => ("upstream_propagation", "downstream_propagation"),
        (Role::Server, true) => ("downstream_discovery", "upstream_discovery"),
        (Role::Server, false) => ("downstream_propagation", "upstream_propagation"),
    };
    if raw.take(other).is_some() {
        let role = role.name();
        return Err(err(other, format!("does not apply to role \"{role}\" (it uses `{ours}`)")));
    }
    match raw.take(ours) {
        Some(_) if transport == Transport::Tcp => Err(err(ours, "only applies to the HTTP exchange")),
        Some(list) => read_methods(list, ours, allowed(role, discovery)),
        None => Ok(vec![Method::IstioHeaders]),
    }
}

/// `alpn`: alpn-filter's configuration, for the HTTP client only.
fn read_alpn(value: Option<Json>, role: Role, transport: Transport) -> Result<Option<AlpnConfig>, ConfigError> {
    match (value, role, transport) {
        (None, _, _) => Ok(None),
        (Some(value), Role::Client, Transport::Http) => {
            // One refresh for both rules: the exchange's.
            if matches!(&value, Json::Object(entries) if entries.contains_key("cluster_metadata_refresh_ms")) {
                return Err(err(
                    "alpn.cluster_metadata_refresh_ms",
                    "set upstream.cluster_metadata_refresh_ms instead: the built-in ALPN rule follows it",
                ));
            }
            AlpnConfig::from_json(value, "alpn").map(Some)
        }
        (Some(_), _, _) => Err(err("alpn", "only applies to the HTTP exchange's role \"client\"")),
    }
}

impl MetricsConfig {
    /// `istio_metrics`: `max_label_sets` (never 0) and `tcp_reporting_ms`.
    fn read(value: Json) -> Result<MetricsConfig, ConfigError> {
        let mut fields = value.into_fields("istio_metrics")?;
        let max = match fields.take("max_label_sets") {
            Some(n) => n.into_integer("istio_metrics.max_label_sets", 1_000_000)?,
            None => DEFAULT_MAX_LABEL_SETS.into(),
        };
        let reporting = match fields.take("tcp_reporting_ms") {
            Some(n) => n.into_integer("istio_metrics.tcp_reporting_ms", 3_600_000)?,
            None => DEFAULT_TCP_REPORTING_MS.into(),
        };
        fields.finish()?;
        if max == 0 {
            return Err(err("istio_metrics.max_label_sets", "must be greater than 0"));
        }
        Ok(MetricsConfig {
            max_label_sets: u32::try_from(max).unwrap_or(u32::MAX),
            tcp_reporting_ms: u32::try_from(reporting).unwrap_or(u32::MAX),
        })
    }
}

fn optional_string(fields: &mut Fields, key: &'static str) -> Result<Option<String>, ConfigError> {
    fields.take(key).map(|v| v.into_string(&fields.path(key))).transpose()
}

/// A string naming one of a closed set of values.
fn name_of<T>(value: Json, field: &str, from_name: fn(&str) -> Option<T>, names: &str) -> Result<T, ConfigError> {
    let name = value.into_string(field)?;
    from_name(&name).ok_or_else(|| err(field, format!("unknown value `{name}`, expected one of {names}")))
}

fn err(field: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::new(field, reason)
}

impl Config {
    pub fn parse(bytes: &[u8], transport: Transport) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(err(
                "role",
                "missing: the configuration must say {\"role\": \"client\"} or {\"role\": \"server\"}",
            ));
        }
        let mut raw = schema::parse(bytes)?.into_fields("")?;
        let role = name_of(raw.require("role")?, "role", Role::from_name, "server, client")?;
        let node_id = optional_string(&mut raw, "node_id")?;
        let (fields, labels) = read_metadata(raw.take("metadata"))?;
        let additional_labels = read_additional_labels(raw.take("additional_labels"))?;
        let max_peer_metadata_bytes = read_max_peer_metadata_bytes(raw.take("max_peer_metadata_bytes"), transport)?;
        let exchange_timeout_ms = read_exchange_timeout_ms(raw.take("exchange_timeout_ms"), transport)?;
        let identity_check = match raw.take("identity_check") {
            Some(v) => name_of(v, "identity_check", IdentityCheck::from_name, IdentityCheck::NAMES)?,
            None => IdentityCheck::default(),
        };
        let peer_json = match raw.take("peer_json") {
            Some(v) => v.into_bool("peer_json")?,
            None => false,
        };
        let discovery = read_role_methods(&mut raw, role, transport, true)?;
        let propagation = read_role_methods(&mut raw, role, transport, false)?;
        let alpn = read_alpn(raw.take("alpn"), role, transport)?;
        let istio_metrics = raw.take("istio_metrics").map(MetricsConfig::read).transpose()?;
        let upstream = raw.take("upstream").map(|v| RawSide::read(v, "upstream", true)).transpose()?;
        let downstream = raw.take("downstream").map(|v| RawSide::read(v, "downstream", false)).transpose()?;
        raw.finish()?;
        let side = RawSide::of_role(role, transport, upstream, downstream)?;
        let (prefix, istio_service_clusters, refresh) = match side {
            Some(side) => (
                side.peer_identity_prefix,
                side.istio_service_clusters.unwrap_or(false),
                side.cluster_metadata_refresh_ms,
            ),
            None => (None, false, None),
        };
        // Only the client reads cluster metadata.
        let cluster_metadata_refresh_ms = match role {
            Role::Client => refresh.unwrap_or(clusters::DEFAULT_REFRESH_MS),
            Role::Server => 0,
        };
        let alpn = alpn.map(|mut alpn| {
            alpn.cluster_metadata_refresh_ms = cluster_metadata_refresh_ms;
            alpn
        });
        let peer_identity_prefix = prefix.unwrap_or_else(|| DEFAULT_PEER_IDENTITY_PREFIX.to_string());
        Ok(Config {
            transport,
            role,
            node_id,
            fields,
            labels,
            additional_labels,
            max_peer_metadata_bytes,
            exchange_timeout_ms,
            peer_identity_prefix,
            istio_service_clusters,
            identity_check,
            peer_json,
            cluster_metadata_refresh_ms,
            discovery,
            propagation,
            alpn,
            istio_metrics,
        })
    }

    /// The stat prefix: `peer_exchange.<role>.`, `peer_exchange.http_<role>.`.
    pub fn stat_prefix(&self) -> String {
        stat_prefix(self.transport, self.role)
    }
}

/// The counters' prefix of a form and role (Envoy adds `wasmcustom.`).
pub fn stat_prefix(transport: Transport, role: Role) -> String {
    match transport {
        Transport::Tcp => format!("peer_exchange.{}.", role.name()),
        Transport::Http => format!("peer_exchange.http_{}.", role.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_metrics_is_off_unless_present_and_its_cap_is_checked() {
        for transport in [Transport::Tcp, Transport::Http] {
            let parse = |json: &str| Config::parse(json.as_bytes(), transport);
            assert_eq!(parse(r#"{"role":"server"}"#).unwrap().istio_metrics, None);
            let defaults = MetricsConfig { max_label_sets: 1000, tcp_reporting_ms: 5000 };
            assert_eq!(parse(r#"{"role":"server","istio_metrics":{}}"#).unwrap().istio_metrics, Some(defaults));
            let capped =
                parse(r#"{"role":"client","istio_metrics":{"max_label_sets":5,"tcp_reporting_ms":0}}"#).unwrap();
            assert_eq!(capped.istio_metrics, Some(MetricsConfig { max_label_sets: 5, tcp_reporting_ms: 0 }));
            for (json, path) in [
                (r#"{"role":"server","istio_metrics":{"max_label_sets":0}}"#, "istio_metrics.max_label_sets"),
                (r#"{"role":"server","istio_metrics":{"max_label_sets":1000001}}"#, "istio_metrics.max_label_sets"),
                (r#"{"role":"server","istio_metrics":{"tcp_reporting_ms":3600001}}"#, "istio_metrics.tcp_reporting_ms"),
                (r#"{"role":"server","istio_metrics":{"labels":1}}"#, "istio_metrics: unknown field `labels`"),
                (r#"{"role":"server","istio_metrics":true}"#, "istio_metrics"),
            ] {
                let e = parse(json).unwrap_err().to_string();
                assert!(e.contains(path), "{json}: {e}");
            }
        }
    }

    #[test]
    fn minimal_configuration_takes_defaults() {
        let c = Config::parse(br#"{"role":"server"}"#, Transport::Tcp).unwrap();
        assert_eq!(c.role, Role::Server);
        assert_eq!(c.max_peer_metadata_bytes, DEFAULT_MAX_PEER_METADATA_BYTES);
        assert_eq!(c.exchange_timeout_ms, DEFAULT_EXCHANGE_TIMEOUT_MS);
        assert_eq!(c.peer_identity_prefix, "spiffe://");
        assert_eq!(c.identity_check, IdentityCheck::Enforce);
        assert!(!c.peer_json, "the JSON text costs a hostcall per peer: asked for, not default");
        assert_eq!(c.stat_prefix(), "peer_exchange.server.");
        for (value, mode) in
            [("enforce", IdentityCheck::Enforce), ("annotate", IdentityCheck::Annotate), ("off", IdentityCheck::Off)]
        {
            let json = format!(r#"{{"role":"client","identity_check":"{value}"}}"#);
            assert_eq!(Config::parse(json.as_bytes(), Transport::Http).unwrap().identity_check, mode);
        }
    }

    #[test]
    fn full_client_configuration() {
        let c = Config::parse(
            br#"{"role":"client","node_id":"n1","metadata":{"NAME":"a","LABELS":{"app":"x"}},
                 "additional_labels":["team","app"],"max_peer_metadata_bytes":100,"exchange_timeout_ms":0,
                 "peer_json":true,"upstream":{"peer_identity_prefix":""}}"#,
            Transport::Tcp,
        )
        .unwrap();
        assert_eq!(c.node_id.as_deref(), Some("n1"));
        assert_eq!(c.fields.get("NAME").map(String::as_str), Some("a"));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("x"));
        assert_eq!(c.additional_labels, ["team", "app"]);
        assert_eq!(c.exchange_timeout_ms, 0);
        assert_eq!(c.peer_identity_prefix, "");
        assert!(c.peer_json);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("", "role: missing"),
            (r#"{}"#, "role: is required"),
            (r#"{"role":"sidecar"}"#, "role: unknown value `sidecar`, expected one of server, client"),
            (r#"{"role":"server","metadata":{"PLATFORM_METADATA":"x"}}"#, "metadata.PLATFORM_METADATA: unknown field"),
            (r#"{"role":"server","metadata":{"NAME":1}}"#, "metadata.NAME: must be a string"),
            (r#"{"role":"server","metadata":{"LABELS":{"app":true}}}"#, "metadata.LABELS.app: must be a string"),
            (r#"{"role":"server","metadata":{"LABELS":"x"}}"#, "metadata.LABELS: must be an object"),
            (r#"{"role":"server","additional_labels":[""]}"#, "additional_labels[0]: must not be empty"),
            (r#"{"role":"server","max_peer_metadata_bytes":0}"#, "max_peer_metadata_bytes: must be greater than 0"),
            (r#"{"role":"server","max_peer_metadata_bytes":-1}"#, "max_peer_metadata_bytes: must be a whole number"),
            (r#"{"role":"server","exchange_timeout_ms":4294967296}"#, "exchange_timeout_ms: must be a whole number"),
            (r#"{"role":"server","metadata":{"NAME":"a","NAME":"b"}}"#, "invalid JSON: duplicate field `NAME`"),
            (r#"{"role":"server","upstream":{}}"#, "upstream: only applies to role \"client\""),
            (r#"{"role":"client","upstream":{"x":1}}"#, "upstream: unknown field `x`"),
            (r#"{"role":"client","timeout":1}"#, "unknown field `timeout`"),
            (r#"{"role":"client","peer_json":"yes"}"#, "peer_json: must be true or false"),
            (r#"{"role":"client","identity_check":"strict"}"#, "unknown value `strict`, expected one of enforce"),
            (r#"{"role":"client","downstream":{"istio_service_clusters":true}}"#, "downstream: unknown field"),
        ];
        for (input, expected) in cases {
            let e = Config::parse(input.as_bytes(), Transport::Tcp).unwrap_err().to_string();
            assert!(e.contains(expected), "{input}: {e}");
        }
    }

    #[test]
    fn the_client_remembers_cluster_metadata_for_a_bounded_time() {
        for transport in [Transport::Tcp, Transport::Http] {
            let client = Config::parse(br#"{"role":"client"}"#, transport).unwrap();
            assert_eq!(client.cluster_metadata_refresh_ms, clusters::DEFAULT_REFRESH_MS);
            let server = Config::parse(br#"{"role":"server"}"#, transport).unwrap();
            assert_eq!(server.cluster_metadata_refresh_ms, 0, "the server reads no cluster metadata");
            let c =
                Config::parse(br#"{"role":"client","upstream":{"cluster_metadata_refresh_ms":0}}"#, transport).unwrap();
            assert_eq!(c.cluster_metadata_refresh_ms, 0);
            let e = Config::parse(br#"{"role":"client","upstream":{"cluster_metadata_refresh_ms":60001}}"#, transport)
                .unwrap_err();
            assert_eq!(e.to_string(), "upstream.cluster_metadata_refresh_ms: must be a whole number from 0 to 60000");
        }
        let e = Config::parse(br#"{"role":"server","downstream":{"cluster_metadata_refresh_ms":5}}"#, Transport::Http)
            .unwrap_err();
        assert!(e.to_string().starts_with("downstream: unknown field"), "{e}");
    }

    #[test]
    fn the_http_form_takes_its_own_fields() {
        let c = Config::parse(
            br#"{"role":"server","downstream":{"peer_identity_prefix":"spiffe://td/"}}"#,
            Transport::Http,
        )
        .unwrap();
        assert_eq!(c.peer_identity_prefix, "spiffe://td/");
        assert_eq!(c.max_peer_metadata_bytes, DEFAULT_MAX_PEER_METADATA_HEADER_BYTES);
        assert_eq!(c.stat_prefix(), "peer_exchange.http_server.");
        let c =
            Config::parse(br#"{"role":"client","upstream":{"istio_service_clusters":true}}"#, Transport::Http).unwrap();
        assert!(c.istio_service_clusters);
        assert_eq!(c.peer_identity_prefix, "spiffe://");
        let cases: &[(&str, Transport, &str)] = &[
            (
                r#"{"role":"server","exchange_timeout_ms":5}"#,
                Transport::Http,
                "exchange_timeout_ms: only applies to the TCP",
            ),
            (r#"{"role":"client","downstream":{}}"#, Transport::Http, "downstream: only applies to role \"server\""),
            (r#"{"role":"server","downstream":{}}"#, Transport::Tcp, "downstream: only applies to the HTTP"),
            (
                r#"{"role":"client","upstream":{"istio_service_clusters":true}}"#,
                Transport::Tcp,
                "upstream.istio_service_clusters: only applies to the HTTP",
            ),
        ];
        for (input, transport, expected) in cases {
            let e = Config::parse(input.as_bytes(), *transport).unwrap_err().to_string();
            assert!(e.contains(expected), "{input}: {e}");
        }
        assert_eq!(Transport::for_root_id(HTTP_ROOT_ID), Transport::Http);
        assert_eq!(Transport::for_root_id(""), Transport::Tcp);
    }

    #[test]
    fn http_methods_take_natives_vocabulary_per_direction_and_default_to_istio_headers() {
        let c = Config::parse(br#"{"role":"client"}"#, Transport::Http).unwrap();
        assert_eq!(
            (c.discovery.as_slice(), c.propagation.as_slice()),
            (&[Method::IstioHeaders][..], &[Method::IstioHeaders][..])
        );
        let c = Config::parse(
            br#"{"role":"client","upstream_discovery":[{"istio_headers":{}},{"endpoint_metadata":{}}],
                 "upstream_propagation":[{"baggage":{}},{"istio_headers":{}}]}"#,
            Transport::Http,
        )
        .unwrap();
        assert_eq!(c.discovery, [Method::IstioHeaders, Method::EndpointMetadata]);
        assert_eq!(c.propagation, [Method::Baggage, Method::IstioHeaders]);
        let c = Config::parse(
            br#"{"role":"server","downstream_discovery":[{"baggage":{}}],"downstream_propagation":[]}"#,
            Transport::Http,
        )
        .unwrap();
        assert_eq!((c.discovery.as_slice(), c.propagation.as_slice()), (&[Method::Baggage][..], &[][..]));
    }

    #[test]
    fn http_methods_are_refused_where_they_do_not_apply() {
        for (json, transport, expected) in [
            (
                r#"{"role":"client","upstream_discovery":[{"baggage":{}}]}"#,
                Transport::Http,
                "upstream_discovery[0]: `baggage` is not a method here; expected one of istio_headers, endpoint_metadata",
            ),
            (
                r#"{"role":"server","downstream_discovery":[{"endpoint_metadata":{}}]}"#,
                Transport::Http,
                "downstream_discovery[0]: `endpoint_metadata` is not a method here; expected one of istio_headers, baggage",
            ),
            (
                r#"{"role":"client","downstream_discovery":[]}"#,
                Transport::Http,
                "downstream_discovery: does not apply to role \"client\" (it uses `upstream_discovery`)",
            ),
            (
                r#"{"role":"server","downstream_discovery":[]}"#,
                Transport::Tcp,
                "downstream_discovery: only applies to the HTTP exchange",
            ),
            (
                r#"{"role":"client","upstream_propagation":[{"istio_headers":{}},{"istio_headers":{}}]}"#,
                Transport::Http,
                "upstream_propagation[1]: `istio_headers` is listed twice",
            ),
            (
                r#"{"role":"client","upstream_propagation":[{"istio_headers":{},"baggage":{}}]}"#,
                Transport::Http,
                "upstream_propagation[0]: must name one method: {\"<method>\": {}}, one of istio_headers, baggage",
            ),
            (
                r#"{"role":"client","upstream_propagation":[{"istio_headers":{"skip_external_clusters":true}}]}"#,
                Transport::Http,
                "upstream_propagation[0].istio_headers: unknown field `skip_external_clusters`, expected one of ",
            ),
        ] {
            let e = Config::parse(json.as_bytes(), transport).unwrap_err().to_string();
            assert_eq!(e, expected, "{json}");
        }
    }
}
