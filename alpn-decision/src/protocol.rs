//! Which HTTP protocol a cluster's codec speaks upstream, so the ALPN list we
//! offer matches it.
//!
//! Envoy picks the upstream codec from the cluster's `HttpProtocolOptions`
//! (`upstreamHttpProtocol`), and Istio's native filter offers the list of
//! that protocol. A list for another protocol breaks the request: an
//! HTTP/1.1-only cluster offering the h2 list lets a mesh server negotiate
//! `h2` and then receive HTTP/1.1 bytes (503). Wasm cannot read protocol
//! options, so a cluster's policy is declared: in its metadata, by a plugin
//! config rule on its name, or by the plugin config's default.

use std::fmt;

use crate::alpn::UpstreamProtocol;

/// A cluster's upstream protocol policy, in Envoy's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolPolicy {
    /// `explicit_http_config: http_protocol_options`, or no protocol options
    /// at all (Envoy's default): always HTTP/1.1.
    Http1,
    /// `explicit_http_config: http2_protocol_options`: always HTTP/2.
    Http2,
    /// `use_downstream_protocol_config`: HTTP/1.0 and HTTP/1.1 go up as
    /// HTTP/1.1, HTTP/2 as HTTP/2, HTTP/3 as HTTP/2 (without h3 options).
    UseDownstream,
    /// `auto_config`: Envoy offers h2 first, so Istio offers the h2 list.
    Auto,
}

impl ProtocolPolicy {
    /// The shipped default for clusters declared nowhere: Envoy's default
    /// codec (a cluster without protocol options speaks HTTP/1.1), the most
    /// common hand-written cluster and Istio's default for `http` ports. It
    /// also works for `auto_config` clusters (they follow the negotiated
    /// `http/1.1`), so only HTTP/2-only and use-downstream clusters need a
    /// declaration.
    pub const DEFAULT: ProtocolPolicy = ProtocolPolicy::Http1;

    pub const NAMES: &'static str = "HTTP11, HTTP2, USE_DOWNSTREAM or AUTO (HTTP10 = HTTP11; 0, 1, 2 as in Istio)";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            // Envoy has no HTTP/1.0 upstream codec: an HTTP/1 cluster speaks 1.1.
            "HTTP10" | "HTTP11" => Some(Self::Http1),
            "HTTP2" => Some(Self::Http2),
            "USE_DOWNSTREAM" => Some(Self::UseDownstream),
            "AUTO" => Some(Self::Auto),
            _ => None,
        }
    }

    /// Istio's enum numbers (HTTP10 = 0, HTTP11 = 1, HTTP2 = 2).
    pub fn from_number(n: f64) -> Option<Self> {
        if n == 0.0 || n == 1.0 {
            Some(Self::Http1)
        } else if n == 2.0 {
            Some(Self::Http2)
        } else {
            None
        }
    }

    /// Whether [`ProtocolPolicy::upstream_protocol`] needs the downstream protocol.
    pub fn follows_downstream(self) -> bool {
        self == Self::UseDownstream
    }

    /// The protocol the cluster's codec speaks for a request that came in as
    /// `downstream` (Envoy's `request.protocol`). `None`: not knowable
    /// (an unknown downstream protocol under `UseDownstream`).
    pub fn upstream_protocol(self, downstream: Option<&str>) -> Option<UpstreamProtocol> {
        match self {
            Self::Http1 => Some(UpstreamProtocol::Http11),
            Self::Http2 | Self::Auto => Some(UpstreamProtocol::Http2),
            Self::UseDownstream => match downstream? {
                "HTTP/1.0" | "HTTP/1.1" => Some(UpstreamProtocol::Http11),
                // HTTP/3 goes up as HTTP/2 unless the cluster has h3 options,
                // which have no Istio list anyway.
                "HTTP/2" | "HTTP/3" => Some(UpstreamProtocol::Http2),
                _ => None,
            },
        }
    }
}

impl fmt::Display for ProtocolPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP11",
            Self::Http2 => "HTTP2",
            Self::UseDownstream => "USE_DOWNSTREAM",
            Self::Auto => "AUTO",
        })
    }
}

/// A cluster name pattern: exact, or with `*` standing for any run of
/// characters (`outbound|*|grpc-*`). Control planes generate names, so a
/// pattern names a family of clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPattern(String);

impl ClusterPattern {
    pub fn new(pattern: &str) -> Option<Self> {
        (!pattern.is_empty()).then(|| ClusterPattern(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_matches(&self.0, name)
    }
}

/// `*`-only glob, linear in practice: the classic greedy match with one
/// backtrack point (no recursion, no allocation).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// A plugin-config rule: clusters whose name matches get this policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRule {
    pub cluster: ClusterPattern,
    pub policy: ProtocolPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_policy_gives_the_protocol_envoys_codec_speaks() {
        use UpstreamProtocol::{Http11, Http2};
        let table: &[(ProtocolPolicy, &str, Option<UpstreamProtocol>)] = &[
            (ProtocolPolicy::Http1, "HTTP/1.0", Some(Http11)),
            (ProtocolPolicy::Http1, "HTTP/1.1", Some(Http11)),
            (ProtocolPolicy::Http1, "HTTP/2", Some(Http11)),
            (ProtocolPolicy::Http2, "HTTP/1.0", Some(Http2)),
            (ProtocolPolicy::Http2, "HTTP/1.1", Some(Http2)),
            (ProtocolPolicy::Auto, "HTTP/1.1", Some(Http2)),
            (ProtocolPolicy::Auto, "HTTP/2", Some(Http2)),
            (ProtocolPolicy::UseDownstream, "HTTP/1.0", Some(Http11)),
            (ProtocolPolicy::UseDownstream, "HTTP/1.1", Some(Http11)),
            (ProtocolPolicy::UseDownstream, "HTTP/2", Some(Http2)),
            (ProtocolPolicy::UseDownstream, "HTTP/3", Some(Http2)),
            (ProtocolPolicy::UseDownstream, "SPDY", None),
        ];
        for (policy, downstream, expected) in table {
            assert_eq!(policy.upstream_protocol(Some(downstream)), *expected, "{policy} / {downstream}");
        }
        assert_eq!(ProtocolPolicy::UseDownstream.upstream_protocol(None), None);
        assert_eq!(ProtocolPolicy::Http2.upstream_protocol(None), Some(Http2));
        // The HTTP/1.0 list is never chosen, as in native.
        for policy in
            [ProtocolPolicy::Http1, ProtocolPolicy::Http2, ProtocolPolicy::UseDownstream, ProtocolPolicy::Auto]
        {
            assert_ne!(policy.upstream_protocol(Some("HTTP/1.0")), Some(UpstreamProtocol::Http10));
        }
    }

    #[test]
    fn names_and_istio_numbers() {
        assert_eq!(ProtocolPolicy::from_name("HTTP10"), Some(ProtocolPolicy::Http1));
        assert_eq!(ProtocolPolicy::from_name("HTTP11"), Some(ProtocolPolicy::Http1));
        assert_eq!(ProtocolPolicy::from_name("HTTP2"), Some(ProtocolPolicy::Http2));
        assert_eq!(ProtocolPolicy::from_name("USE_DOWNSTREAM"), Some(ProtocolPolicy::UseDownstream));
        assert_eq!(ProtocolPolicy::from_name("AUTO"), Some(ProtocolPolicy::Auto));
        assert_eq!(ProtocolPolicy::from_name("http2"), None);
        assert_eq!(ProtocolPolicy::from_number(1.0), Some(ProtocolPolicy::Http1));
        assert_eq!(ProtocolPolicy::from_number(2.0), Some(ProtocolPolicy::Http2));
        assert_eq!(ProtocolPolicy::from_number(3.0), None);
        assert_eq!(ProtocolPolicy::DEFAULT, ProtocolPolicy::Http1);
    }

    #[test]
    fn cluster_patterns() {
        let p = |s: &str| ClusterPattern::new(s).unwrap();
        assert!(p("mesh_http").matches("mesh_http"));
        assert!(!p("mesh_http").matches("mesh_http2"));
        assert!(p("mesh_*").matches("mesh_http2"));
        assert!(p("outbound|*|grpc-*").matches("outbound|8080|grpc-api.ns.svc.cluster.local"));
        assert!(!p("outbound|*|grpc-*").matches("outbound|8080||api.ns.svc.cluster.local"));
        assert!(p("*").matches(""));
        assert!(p("*a*b").matches("xxaxxb"));
        assert!(!p("*a*b").matches("xxaxxbc"));
        assert!(p("a**").matches("a"));
        assert!(ClusterPattern::new("").is_none());
    }

    fn naive(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| naive(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && naive(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_naive_matcher(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
            prop_assert_eq!(glob_matches(&p, &t), naive(p.as_bytes(), t.as_bytes()));
        }
    }
}
