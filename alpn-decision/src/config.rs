//! Plugin configuration: Istio's `istio.alpn` filter config, in JSON.
//!
//! ```json
//! {"alpn_override": [
//!   {"upstream_protocol": "HTTP10", "alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
//!   {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
//!   {"upstream_protocol": "HTTP2",  "alpn_override": ["istio-h2", "istio", "h2"]}
//! ]}
//! ```
//!
//! No configuration (or `{}`) means Istio's default map. When `alpn_override`
//! is given, a protocol it does not list, or lists with an empty list, gets no
//! override — as in Istio.
//!
//! Which list a request gets follows the protocol its cluster's codec speaks
//! (see [`crate::protocol`]); clusters whose metadata does not say are
//! declared here:
//!
//! ```json
//! {"default_upstream_protocol": "HTTP11",
//!  "cluster_upstream_protocols": [{"cluster": "outbound|*|grpc-*", "upstream_protocol": "HTTP2"}]}
//! ```
//!
//! What a cluster's metadata says is remembered per cluster name for
//! `cluster_metadata_refresh_ms` (default 1000; 0 reads it on every
//! request), so a metadata change made by xDS applies within that long:
//!
//! ```json
//! {"cluster_metadata_refresh_ms": 1000}
//! ```

use filter_common::clusters;
use filter_common::schema::{self, Json, ReadJson};
/// A configuration (or metadata) error: the field and the reason (shared with peer-exchange-filter).
pub use filter_common::ConfigError;

use crate::alpn::{AlpnError, AlpnList, UpstreamProtocol};
use crate::protocol::{ClusterPattern, ClusterRule, ProtocolPolicy};

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlpnConfig {
    /// Indexed by [`protocol_index`]; `None` = leave that protocol's ALPN alone.
    lists: [Option<AlpnList>; 3],
    /// The policy of clusters that neither metadata nor a rule declares.
    pub default_policy: ProtocolPolicy,
    /// Name rules, first match wins.
    pub cluster_rules: Vec<ClusterRule>,
    /// How long a cluster's decoded metadata is used for that cluster's
    /// requests before it is read again; 0 = read on every request.
    pub cluster_metadata_refresh_ms: u32,
    /// Also store the list offered as `wasm.upstream_alpn`, for access logs.
    pub record_alpn: bool,
}

pub(crate) fn protocol_index(protocol: UpstreamProtocol) -> usize {
    match protocol {
        UpstreamProtocol::Http10 => 0,
        UpstreamProtocol::Http11 => 1,
        UpstreamProtocol::Http2 => 2,
    }
}

impl Default for AlpnConfig {
    /// Istio's default map.
    fn default() -> Self {
        AlpnConfig {
            lists: UpstreamProtocol::ALL.map(|p| Some(p.istio_default_alpn())),
            default_policy: ProtocolPolicy::DEFAULT,
            cluster_rules: Vec::new(),
            cluster_metadata_refresh_ms: clusters::DEFAULT_REFRESH_MS,
            record_alpn: false,
        }
    }
}

/// One entry of Istio's `alpn_override` list; shared with cluster metadata.
pub(crate) struct RawProtocolAlpn {
    upstream_protocol: ProtocolName,
    alpn_override: Vec<String>,
}

impl RawProtocolAlpn {
    pub(crate) fn protocol(&self) -> Result<UpstreamProtocol, ConfigError> {
        self.upstream_protocol.resolve("upstream_protocol")
    }

    /// Reads a JSON list of `{upstream_protocol, alpn_override}` objects.
    pub(crate) fn read_list(value: Json, field: &str) -> Result<Vec<RawProtocolAlpn>, ConfigError> {
        let items = value.into_array(field)?;
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let mut fields = item.into_fields(&format!("{field}[{i}]"))?;
            let upstream_protocol =
                ProtocolName::read(fields.require("upstream_protocol")?, &fields.path("upstream_protocol"))?;
            let alpn_override = match fields.take("alpn_override") {
                Some(list) => list.into_strings(&fields.path("alpn_override"))?,
                None => Vec::new(),
            };
            fields.finish()?;
            entries.push(RawProtocolAlpn { upstream_protocol, alpn_override });
        }
        Ok(entries)
    }
}

/// Istio's enum by name (`"HTTP11"`) or by number (`1`), as proto3 JSON allows.
pub(crate) enum ProtocolName {
    Name(String),
    Number(f64),
}

impl ProtocolName {
    pub(crate) fn read(value: Json, field: &str) -> Result<ProtocolName, ConfigError> {
        match value {
            Json::String(name) => Ok(ProtocolName::Name(name)),
            Json::Number(n) => Ok(ProtocolName::Number(n.as_f64().unwrap_or(f64::NAN))),
            other => Err(ConfigError::new(field, format!("must be a protocol name or number, not {}", other.kind()))),
        }
    }

    pub(crate) fn resolve(&self, field: &str) -> Result<UpstreamProtocol, ConfigError> {
        let found = match self {
            ProtocolName::Name(name) => UpstreamProtocol::from_config_name(name),
            ProtocolName::Number(n) if *n == 0.0 => Some(UpstreamProtocol::Http10),
            ProtocolName::Number(n) if *n == 1.0 => Some(UpstreamProtocol::Http11),
            ProtocolName::Number(n) if *n == 2.0 => Some(UpstreamProtocol::Http2),
            ProtocolName::Number(_) => None,
        };
        found.ok_or_else(|| ConfigError::new(field, "must be one of HTTP10, HTTP11, HTTP2"))
    }

    /// As a cluster's protocol policy (which also knows `USE_DOWNSTREAM`, `AUTO`).
    pub(crate) fn resolve_policy(&self, field: &str) -> Result<ProtocolPolicy, ConfigError> {
        let found = match self {
            ProtocolName::Name(name) => ProtocolPolicy::from_name(name),
            ProtocolName::Number(n) => ProtocolPolicy::from_number(*n),
        };
        found.ok_or_else(|| ConfigError::new(field, format!("must be one of {}", ProtocolPolicy::NAMES)))
    }
}

/// Validates an `alpn_override` list (from config or from cluster metadata)
/// into per-protocol lists. `field` names the list in error messages.
pub(crate) fn validate_protocol_lists(
    entries: &[RawProtocolAlpn],
    field: &str,
) -> Result<[Option<AlpnList>; 3], ConfigError> {
    let mut seen = [false; 3];
    let mut lists: [Option<AlpnList>; 3] = [None, None, None];
    for (i, entry) in entries.iter().enumerate() {
        let protocol = entry.upstream_protocol.resolve(&format!("{field}[{i}].upstream_protocol"))?;
        let index = protocol_index(protocol);
        if let Some(seen) = seen.get_mut(index) {
            if *seen {
                return Err(ConfigError::new(
                    format!("{field}[{i}].upstream_protocol"),
                    format!("{protocol} is listed twice"),
                ));
            }
            *seen = true;
        }
        if entry.alpn_override.is_empty() {
            continue;
        }
        let list = AlpnList::new(entry.alpn_override.iter().cloned())
            .map_err(|e: AlpnError| ConfigError::new(format!("{field}[{i}].alpn_override"), e))?;
        if let Some(slot) = lists.get_mut(index) {
            *slot = Some(list);
        }
    }
    Ok(lists)
}

impl AlpnConfig {
    /// Parses and validates the plugin configuration (empty = Istio's defaults).
    pub fn parse(bytes: &[u8]) -> Result<AlpnConfig, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(AlpnConfig::default());
        }
        AlpnConfig::from_json(schema::parse(bytes)?, "")
    }

    /// The configuration from an already parsed JSON object; `path` names it
    /// in errors (empty for a whole plugin configuration; `alpn` inside the
    /// exchange's HTTP client).
    pub fn from_json(value: Json, path: &str) -> Result<AlpnConfig, ConfigError> {
        let mut fields = value.into_fields(path)?;
        let mut config = AlpnConfig::default();
        if let Some(list) = fields.take("alpn_override") {
            let field = fields.path("alpn_override");
            let entries = RawProtocolAlpn::read_list(list, &field)?;
            config.lists = validate_protocol_lists(&entries, &field)?;
        }
        if let Some(policy) = fields.take("default_upstream_protocol") {
            let field = fields.path("default_upstream_protocol");
            config.default_policy = ProtocolName::read(policy, &field)?.resolve_policy(&field)?;
        }
        let field = fields.path("cluster_upstream_protocols");
        let rules = fields.take("cluster_upstream_protocols").map(|v| v.into_array(&field));
        for (i, rule) in rules.transpose()?.unwrap_or_default().into_iter().enumerate() {
            let mut rule = rule.into_fields(&format!("{field}[{i}]"))?;
            let cluster = rule.require("cluster")?.into_string(&rule.path("cluster"))?;
            let cluster =
                ClusterPattern::new(&cluster).ok_or_else(|| ConfigError::new(rule.path("cluster"), "is empty"))?;
            let field = rule.path("upstream_protocol");
            let policy = ProtocolName::read(rule.require("upstream_protocol")?, &field)?.resolve_policy(&field)?;
            rule.finish()?;
            config.cluster_rules.push(ClusterRule { cluster, policy });
        }
        if let Some(refresh) = fields.take("cluster_metadata_refresh_ms") {
            let field = fields.path("cluster_metadata_refresh_ms");
            config.cluster_metadata_refresh_ms = clusters::read_refresh_ms(refresh, &field)?;
        }
        if let Some(record) = fields.take("record_alpn") {
            config.record_alpn = record.into_bool(&fields.path("record_alpn"))?;
        }
        fields.finish()?;
        Ok(config)
    }

    /// The policy a rule gives this cluster name, if any rule matches.
    pub fn rule_for(&self, cluster_name: &str) -> Option<ProtocolPolicy> {
        self.cluster_rules.iter().find(|r| r.cluster.matches(cluster_name)).map(|r| r.policy)
    }

    /// The configured list for a protocol; `None` means no override.
    pub fn alpn_for(&self, protocol: UpstreamProtocol) -> Option<&AlpnList> {
        self.lists.get(protocol_index(protocol)).and_then(Option::as_ref)
    }

    /// Lists that offer the real token of the other codec (`h2` for
    /// HTTP/1.x, `http/1.1` or `http/1.0` for HTTP/2) and none of their own:
    /// a mesh server negotiates that token and speaks the other protocol
    /// than ours, which breaks the request. Reported as warnings at configure
    /// time. A list with no real token at all is fine: the server negotiates
    /// none and detects the protocol from the first bytes (Envoy's AUTO codec).
    pub fn warnings(&self) -> Vec<String> {
        UpstreamProtocol::ALL
            .into_iter()
            .filter_map(|p| {
                let list = self.alpn_for(p)?;
                let is_h2 = p == UpstreamProtocol::Http2;
                let offered = list.tokens().find(|t| speaks_h2(t) == Some(!is_h2))?;
                (!list.tokens().any(|t| speaks_h2(t) == Some(is_h2))).then(|| {
                    format!(
                        "alpn_override for {p} ({}) offers \"{offered}\" and no {p} token: a server negotiating \
                         \"{offered}\" speaks another protocol than the cluster; end the list with \"{}\"",
                        list.envoy_value(),
                        p.plain_alpn()
                    )
                })
            })
            .collect()
    }
}

/// Whether a real protocol token means HTTP/2 (`h2`) or HTTP/1.x
/// (`http/1.1`, `http/1.0`); `None` for any other token.
fn speaks_h2(token: &str) -> Option<bool> {
    match token {
        "h2" => Some(true),
        "http/1.1" | "http/1.0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(config: &AlpnConfig, p: UpstreamProtocol) -> Option<String> {
        config.alpn_for(p).map(|l| l.envoy_value().to_string())
    }

    #[test]
    fn no_configuration_means_istio_defaults() {
        for input in ["", "  \n", "{}", r#"{"alpn_override": null}"#] {
            let config = AlpnConfig::parse(input.as_bytes()).unwrap();
            assert_eq!(config, AlpnConfig::default(), "{input:?}");
        }
        let config = AlpnConfig::default();
        assert_eq!(value(&config, UpstreamProtocol::Http2).as_deref(), Some("istio-h2,istio,h2"));
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn istio_shaped_configuration_is_accepted() {
        let config = AlpnConfig::parse(
            br#"{"alpn_override":[
                {"upstream_protocol":"HTTP11","alpn_override":["istio-http/1.1","http/1.1"]},
                {"upstream_protocol":2,"alpn_override":["istio-h2","h2"]},
                {"upstream_protocol":"HTTP10","alpn_override":[]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(value(&config, UpstreamProtocol::Http11).as_deref(), Some("istio-http/1.1,http/1.1"));
        assert_eq!(value(&config, UpstreamProtocol::Http2).as_deref(), Some("istio-h2,h2"));
        assert_eq!(value(&config, UpstreamProtocol::Http10), None);
    }

    #[test]
    fn protocols_missing_from_a_given_list_get_no_override() {
        let config =
            AlpnConfig::parse(br#"{"alpn_override":[{"upstream_protocol":"HTTP2","alpn_override":["x","h2"]}]}"#)
                .unwrap();
        assert_eq!(value(&config, UpstreamProtocol::Http10), None);
        assert_eq!(value(&config, UpstreamProtocol::Http11), None);
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"alpn_override":[{"upstream_protocol":"HTTP3","alpn_override":["a"]}]}"#,
                "alpn_override[0].upstream_protocol: must be one of HTTP10, HTTP11, HTTP2",
            ),
            (
                r#"{"alpn_override":[{"upstream_protocol":7,"alpn_override":["a"]}]}"#,
                "alpn_override[0].upstream_protocol: must be one of HTTP10, HTTP11, HTTP2",
            ),
            (
                r#"{"alpn_override":[{"upstream_protocol":"HTTP11","alpn_override":["a",""]}]}"#,
                "alpn_override[0].alpn_override: element 1 is empty",
            ),
            (
                r#"{"alpn_override":[{"upstream_protocol":"HTTP11","alpn_override":["a"]},{"upstream_protocol":"HTTP11"}]}"#,
                "alpn_override[1].upstream_protocol: HTTP11 is listed twice",
            ),
            (
                r#"{"alpn_override":[{"upstream_protocol":"HTTP2","alpn_override":["istio h2"]}]}"#,
                "alpn_override[0].alpn_override: element 0 contains whitespace, a comma or a non-printable character",
            ),
        ];
        for (input, expected) in cases {
            let err = AlpnConfig::parse(input.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), *expected, "{input}");
        }
        let err = AlpnConfig::parse(br#"{"alpn_overide":[]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `alpn_overide`"), "{err}");
        let err = AlpnConfig::parse(b"{not json").unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    }

    #[test]
    fn protocol_policy_default_and_cluster_rules() {
        let config = AlpnConfig::parse(b"{}").unwrap();
        assert_eq!(config.default_policy, ProtocolPolicy::Http1);
        assert!(config.cluster_rules.is_empty());
        let config = AlpnConfig::parse(
            br#"{"default_upstream_protocol":"USE_DOWNSTREAM","cluster_upstream_protocols":[
                {"cluster":"grpc-*","upstream_protocol":"HTTP2"},
                {"cluster":"grpc-legacy","upstream_protocol":"HTTP11"},
                {"cluster":"auto","upstream_protocol":"AUTO"}]}"#,
        )
        .unwrap();
        assert_eq!(config.default_policy, ProtocolPolicy::UseDownstream);
        assert_eq!(config.rule_for("grpc-api"), Some(ProtocolPolicy::Http2));
        assert_eq!(config.rule_for("grpc-legacy"), Some(ProtocolPolicy::Http2), "first match wins");
        assert_eq!(config.rule_for("auto"), Some(ProtocolPolicy::Auto));
        assert_eq!(config.rule_for("other"), None);
        // Istio's lists are untouched by the policy fields.
        assert_eq!(value(&config, UpstreamProtocol::Http2).as_deref(), Some("istio-h2,istio,h2"));
        let cases: &[(&str, &str)] = &[
            (r#"{"default_upstream_protocol":"HTTP3"}"#, "default_upstream_protocol: must be one of HTTP11, HTTP2"),
            (
                r#"{"cluster_upstream_protocols":[{"cluster":"","upstream_protocol":"HTTP2"}]}"#,
                "cluster_upstream_protocols[0].cluster: is empty",
            ),
            (
                r#"{"cluster_upstream_protocols":[{"cluster":"x","upstream_protocol":"h2"}]}"#,
                "cluster_upstream_protocols[0].upstream_protocol: must be one of",
            ),
        ];
        for (input, expected) in cases {
            let err = AlpnConfig::parse(input.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{input}: {err}");
        }
    }

    #[test]
    fn cluster_metadata_refresh_is_bounded() {
        assert_eq!(AlpnConfig::default().cluster_metadata_refresh_ms, clusters::DEFAULT_REFRESH_MS);
        for (input, expected) in [("0", 0), ("250", 250), ("60000", 60_000), ("6e4", 60_000)] {
            let config = AlpnConfig::parse(format!(r#"{{"cluster_metadata_refresh_ms":{input}}}"#).as_bytes()).unwrap();
            assert_eq!(config.cluster_metadata_refresh_ms, expected, "{input}");
        }
        for input in ["60001", "-1", "1.5", "\"1000\""] {
            let err =
                AlpnConfig::parse(format!(r#"{{"cluster_metadata_refresh_ms":{input}}}"#).as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "cluster_metadata_refresh_ms: must be a whole number from 0 to 60000",
                "{input}"
            );
        }
    }

    #[test]
    fn a_list_with_another_protocols_token_is_warned_about_and_one_without_any_is_not() {
        let config = AlpnConfig::parse(
            br#"{"alpn_override":[{"upstream_protocol":"HTTP2","alpn_override":["istio-h2","http/1.1"]}]}"#,
        )
        .unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("offers \"http/1.1\" and no HTTP2 token"), "{}", warnings[0]);
        // Istio's tokens without a real protocol: the server detects it.
        let detect = AlpnConfig::parse(
            br#"{"alpn_override":[{"upstream_protocol":"HTTP2","alpn_override":["istio-h2","istio"]},
                                  {"upstream_protocol":"HTTP11","alpn_override":["istio-http/1.1","istio"]}]}"#,
        )
        .unwrap();
        assert_eq!(detect.warnings(), Vec::<String>::new());
    }
}
