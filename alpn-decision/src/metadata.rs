//! What a cluster's metadata says about its ALPN.
//!
//! ```yaml
//! metadata:
//!   filter_metadata:
//!     istio:
//!       alpn_override: "false"        # Istio's opt-out: leave this cluster's ALPN alone
//!     istio.alpn:                     # this filter's own keys (the filter's name)
//!       upstream_protocol: HTTP2      # the cluster's codec: HTTP11, HTTP2, USE_DOWNSTREAM or AUTO
//!       alpn: [istio-h2, h2]          # one list for every protocol (or "istio-h2,h2")
//!       alpn_override:                # per protocol, same shape as the plugin config
//!         - upstream_protocol: HTTP11
//!           alpn_override: [istio-http/1.1, http/1.1]
//! ```

use filter_common::schema::{self, Json, ReadJson};
use proto::core::Metadata;
use proto::prost::Message;
use proto::prost_types::value::Kind;

use crate::alpn::{AlpnList, UpstreamProtocol};
use crate::config::{protocol_index, validate_protocol_lists, ConfigError, ProtocolName, RawProtocolAlpn};
use crate::protocol::ProtocolPolicy;

/// Istio's namespace, holding the `alpn_override: "false"` opt-out, and
/// this filter's (the filter's name, as Envoy recommends).
pub use filter_common::istio::{ALPN_NAMESPACE as FILTER_NAMESPACE, NAMESPACE as ISTIO_NAMESPACE};

/// The ALPN policy of one cluster, read from its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// `istio.alpn_override` is `"false"`: do not touch this cluster's ALPN.
    pub opt_out: bool,
    /// The cluster's protocol policy, when its metadata declares one.
    pub protocol: Option<ProtocolPolicy>,
    /// One list for every protocol.
    pub alpn: Option<AlpnList>,
    /// Per-protocol lists; an explicitly empty entry means "no override".
    per_protocol: [Option<Option<AlpnList>>; 3],
}

impl ClusterPolicy {
    /// The cluster's own list for `protocol`: `Some(None)` when the cluster
    /// explicitly asks for no override, `None` when it says nothing.
    pub fn alpn_for(&self, protocol: UpstreamProtocol) -> Option<Option<&AlpnList>> {
        if let Some(Some(entry)) = self.per_protocol.get(protocol_index(protocol)) {
            return Some(entry.as_ref());
        }
        self.alpn.as_ref().map(Some)
    }
}

/// Decodes `xds.cluster_metadata` (a serialized `envoy.config.core.v3.Metadata`).
pub fn cluster_policy(metadata: &[u8]) -> Result<ClusterPolicy, ConfigError> {
    let metadata =
        Metadata::decode(metadata).map_err(|e| ConfigError::new("cluster metadata", format!("cannot decode: {e}")))?;
    policy_from_metadata(&metadata)
}

fn policy_from_metadata(metadata: &Metadata) -> Result<ClusterPolicy, ConfigError> {
    let mut policy = ClusterPolicy::default();
    if let Some(istio) = metadata.filter_metadata.get(ISTIO_NAMESPACE) {
        // Istio compares with the string "false"; a boolean false is accepted too.
        policy.opt_out = match istio.fields.get(filter_common::istio::key::ALPN_OVERRIDE).and_then(|v| v.kind.as_ref())
        {
            Some(Kind::StringValue(s)) => s == "false",
            Some(Kind::BoolValue(b)) => !b,
            _ => false,
        };
        // The opt-out comes first: an invalid `istio.alpn` block on an
        // opted-out cluster is never read, so it cannot turn into a warning.
        if policy.opt_out {
            return Ok(policy);
        }
    }
    let Some(ours) = metadata.filter_metadata.get(FILTER_NAMESPACE) else {
        return Ok(policy);
    };
    let mut fields = schema::struct_json(ours).into_fields(&format!("filter_metadata.{FILTER_NAMESPACE}"))?;
    if let Some(protocol) = fields.take("upstream_protocol") {
        let field = fields.path("upstream_protocol");
        policy.protocol = Some(ProtocolName::read(protocol, &field)?.resolve_policy(&field)?);
    }
    if let Some(alpn) = fields.take("alpn") {
        let field = fields.path("alpn");
        // One list, as a list of tokens or Envoy's comma-separated string.
        let list = match alpn {
            Json::String(s) => AlpnList::from_comma_separated(&s),
            other => AlpnList::new(other.into_strings(&field)?),
        };
        policy.alpn = Some(list.map_err(|e| ConfigError::new(&field, e))?);
    }
    if let Some(list) = fields.take("alpn_override") {
        let field = fields.path("alpn_override");
        let entries = RawProtocolAlpn::read_list(list, &field)?;
        let lists = validate_protocol_lists(&entries, &field)?;
        for entry in &entries {
            if let Ok(protocol) = entry.protocol() {
                let index = protocol_index(protocol);
                if let (Some(slot), Some(list)) = (policy.per_protocol.get_mut(index), lists.get(index)) {
                    *slot = Some(list.clone());
                }
            }
        }
    }
    fields.finish()?;
    Ok(policy)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::prost_types::{Struct, Value};
    use std::collections::BTreeMap;

    pub(crate) fn s(v: &str) -> Value {
        Value { kind: Some(Kind::StringValue(v.into())) }
    }
    pub(crate) fn list(items: &[&str]) -> Value {
        Value {
            kind: Some(Kind::ListValue(proto::prost_types::ListValue { values: items.iter().map(|i| s(i)).collect() })),
        }
    }
    pub(crate) fn obj(fields: &[(&str, Value)]) -> Value {
        Value { kind: Some(Kind::StructValue(strukt(fields))) }
    }
    pub(crate) fn strukt(fields: &[(&str, Value)]) -> Struct {
        Struct { fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>() }
    }
    /// Serialized `Metadata` with the given namespaces, as Envoy returns it.
    pub(crate) fn metadata(namespaces: &[(&str, Struct)]) -> Vec<u8> {
        Metadata { filter_metadata: namespaces.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
            .encode_to_vec()
    }

    #[test]
    fn empty_metadata_says_nothing() {
        assert_eq!(cluster_policy(&[]).unwrap(), ClusterPolicy::default());
        let other = metadata(&[("envoy.lb", strukt(&[("canary", s("true"))]))]);
        assert_eq!(cluster_policy(&other).unwrap(), ClusterPolicy::default());
    }

    #[test]
    fn istio_opt_out_is_the_string_false() {
        let md = metadata(&[(ISTIO_NAMESPACE, strukt(&[("alpn_override", s("false"))]))]);
        assert!(cluster_policy(&md).unwrap().opt_out);
        let md = metadata(&[(ISTIO_NAMESPACE, strukt(&[("alpn_override", s("true"))]))]);
        assert!(!cluster_policy(&md).unwrap().opt_out);
        let md =
            metadata(&[(ISTIO_NAMESPACE, strukt(&[("alpn_override", Value { kind: Some(Kind::BoolValue(false)) })]))]);
        assert!(cluster_policy(&md).unwrap().opt_out);
    }

    #[test]
    fn the_opt_out_is_read_before_an_invalid_block() {
        let md = metadata(&[
            (ISTIO_NAMESPACE, strukt(&[("alpn_override", s("false"))])),
            (FILTER_NAMESPACE, strukt(&[("alpn", s("a,,b"))])),
        ]);
        assert!(cluster_policy(&md).unwrap().opt_out);
        // Without the opt-out the same block is an error.
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpn", s("a,,b"))]))]);
        assert!(cluster_policy(&md).is_err());
    }

    #[test]
    fn cluster_lists_per_protocol_win_over_the_single_list() {
        let md = metadata(&[(
            FILTER_NAMESPACE,
            strukt(&[
                ("upstream_protocol", s("HTTP2")),
                ("alpn", s("mesh-any,h2")),
                (
                    "alpn_override",
                    Value {
                        kind: Some(Kind::ListValue(proto::prost_types::ListValue {
                            values: vec![
                                obj(&[
                                    ("upstream_protocol", s("HTTP11")),
                                    ("alpn_override", list(&["m11", "http/1.1"])),
                                ]),
                                obj(&[("upstream_protocol", s("HTTP10")), ("alpn_override", list(&[]))]),
                            ],
                        })),
                    },
                ),
            ]),
        )]);
        let policy = cluster_policy(&md).unwrap();
        assert_eq!(policy.protocol, Some(ProtocolPolicy::Http2));
        let v = |p| policy.alpn_for(p).map(|o| o.map(|l| l.envoy_value().to_string()));
        assert_eq!(v(UpstreamProtocol::Http11), Some(Some("m11,http/1.1".to_string())));
        assert_eq!(v(UpstreamProtocol::Http10), Some(None));
        assert_eq!(v(UpstreamProtocol::Http2), Some(Some("mesh-any,h2".to_string())));
    }

    #[test]
    fn invalid_cluster_lists_are_errors_naming_the_key() {
        let bad: &[(Value, &str)] = &[
            (s(",a"), "filter_metadata.istio.alpn.alpn: element 0 is empty"),
            (s("a,"), "filter_metadata.istio.alpn.alpn: element 1 is empty"),
            (s("a, b"), "filter_metadata.istio.alpn.alpn: element 1 contains whitespace"),
            (list(&["a", ""]), "filter_metadata.istio.alpn.alpn: element 1 is empty"),
            (list(&[&"x".repeat(300)]), "filter_metadata.istio.alpn.alpn: element 0 is 300 bytes long"),
            (Value { kind: Some(Kind::NumberValue(3.0)) }, "filter_metadata.istio.alpn"),
        ];
        for (alpn, expected) in bad {
            let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpn", alpn.clone())]))]);
            let err = cluster_policy(&md).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err} / {expected}");
        }
        for (name, expected) in [("USE_DOWNSTREAM", ProtocolPolicy::UseDownstream), ("AUTO", ProtocolPolicy::Auto)] {
            let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s(name))]))]);
            assert_eq!(cluster_policy(&md).unwrap().protocol, Some(expected));
        }
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("upstream_protocol", s("HTTP9"))]))]);
        assert!(cluster_policy(&md).unwrap_err().to_string().contains("upstream_protocol"));
        let md = metadata(&[(FILTER_NAMESPACE, strukt(&[("alpm", s("h2"))]))]);
        assert!(cluster_policy(&md).unwrap_err().to_string().contains("unknown field `alpm`"));
        assert!(cluster_policy(&[0xff, 0xff, 0xff]).is_err());
    }
}
