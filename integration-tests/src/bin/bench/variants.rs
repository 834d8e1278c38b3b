//! A/B runs: builds of our filters loaded into the templates' benchmark
//! slots, next to the shipped filters, measured in the same run.
//!
//! `BENCH_VARIANT_ALPN=<alpn-filter build>` loads that build in the HTTP
//! slot (the empty filter otherwise), `BENCH_VARIANT_EXCHANGE=<peer-exchange
//! build>` in the TCP slot of both Envoys, each with the shipped plugin
//! configuration (the TCP slot's cluster is marked as a mesh upstream and
//! both of its sides log quietly, like the quiet exchange row). That row is
//! then the variant, and "Δ floor" reads shipped build − variant.
//! `BENCH_VARIANT_HTTP_EXCHANGE=<peer-exchange build>` loads that build in
//! both roles of the HTTP exchange slot (a copy of the quiet exchange path:
//! client listener and cluster, and the server chain its SNI picks). The
//! slots differ a little by themselves: an A/A run (the shipped build as
//! the variant) gives that bias.

use std::collections::BTreeMap;
use std::path::Path;

/// The HTTP exchange slot's client listener and the server chain it reaches.
pub const HTTP_EXCHANGE_SLOT_LISTENER: &str = "outbound_http_exchange_slot";
pub const HTTP_EXCHANGE_SLOT_CHAIN: &str = "inbound-http11-exchange-slot";

pub struct Variants {
    pub alpn: Option<String>,
    pub exchange: Option<String>,
    pub http_exchange: Option<String>,
}

impl Variants {
    pub fn from_env() -> Variants {
        let build = |name: &str| {
            let path = std::env::var(name).ok().filter(|p| !p.is_empty())?;
            let path = std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{name}={path}: {e}"));
            Some(path.display().to_string())
        };
        let variants = Variants {
            alpn: build("BENCH_VARIANT_ALPN"),
            exchange: build("BENCH_VARIANT_EXCHANGE"),
            http_exchange: build("BENCH_VARIANT_HTTP_EXCHANGE"),
        };
        // The HTTP exchange's A/B rows leave out the HTTP slot's row.
        assert!(
            variants.alpn.is_none() || variants.http_exchange.is_none(),
            "BENCH_VARIANT_ALPN and BENCH_VARIANT_HTTP_EXCHANGE both set: run them one at a time"
        );
        variants
    }

    /// The slot placeholders of each Envoy (client, server) that load the
    /// variants; the templates' defaults for the rest.
    pub fn vars(&self, alpn_config: &str, quiet: [&str; 2]) -> [BTreeMap<String, String>; 2] {
        let mut vars: [BTreeMap<String, String>; 2] = Default::default();
        let mut set = |side: usize, pairs: &[(&str, &str)]| {
            vars[side].extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        };
        if let Some(build) = &self.alpn {
            set(0, &[("HTTP_SLOT_WASM", build), ("HTTP_SLOT_ROOT_ID", "alpn"), ("HTTP_SLOT_CONFIG", alpn_config)]);
        }
        if let Some(build) = &self.exchange {
            for (side, config) in quiet.into_iter().enumerate() {
                set(
                    side,
                    &[("TCP_SLOT_WASM", build), ("TCP_SLOT_ROOT_ID", "peer_exchange"), ("TCP_SLOT_CONFIG", config)],
                );
            }
        }
        if let Some(build) = &self.http_exchange {
            for side in 0..2 {
                set(side, &[("HTTP_EXCHANGE_SLOT_WASM", build)]);
            }
        }
        vars
    }

    /// A slot's row label: the variant's file, or what the slot holds by default.
    pub fn label(variant: &Option<String>, default: &str) -> String {
        match variant {
            Some(path) => {
                let file = Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned());
                format!("variant {}", file.unwrap_or_default())
            }
            None => default.to_string(),
        }
    }

    /// What the Δ column means in an A/B run (instead of the targets).
    pub fn a_b_note(row: &str) -> Vec<(String, String)> {
        vec![(
            "A/B".into(),
            format!("Δ on the \"{row}\" row = the shipped build − the variant (an A/A run gives the slots' own bias)"),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_sets_its_slots_placeholders_and_nothing_else() {
        let none = Variants { alpn: None, exchange: None, http_exchange: None };
        assert_eq!(none.vars("{}", ["c", "s"]), [BTreeMap::new(), BTreeMap::new()]);
        let all = Variants {
            alpn: Some("/a.wasm".into()),
            exchange: Some("/x.wasm".into()),
            http_exchange: Some("/h.wasm".into()),
        };
        let [client, server] = all.vars("{alpn}", ["{client}", "{server}"]);
        assert_eq!(client["HTTP_SLOT_WASM"], "/a.wasm");
        assert_eq!((client["HTTP_SLOT_ROOT_ID"].as_str(), client["HTTP_SLOT_CONFIG"].as_str()), ("alpn", "{alpn}"));
        assert_eq!((client["TCP_SLOT_WASM"].as_str(), client["TCP_SLOT_CONFIG"].as_str()), ("/x.wasm", "{client}"));
        assert_eq!((server["TCP_SLOT_WASM"].as_str(), server["TCP_SLOT_CONFIG"].as_str()), ("/x.wasm", "{server}"));
        assert_eq!(
            (client["HTTP_EXCHANGE_SLOT_WASM"].as_str(), server["HTTP_EXCHANGE_SLOT_WASM"].as_str()),
            ("/h.wasm", "/h.wasm")
        );
        assert!(!server.contains_key("HTTP_SLOT_WASM"), "the server has no HTTP slot");
        assert_eq!(Variants::label(&all.alpn, "empty"), "variant a.wasm");
        assert_eq!(Variants::label(&None, "empty"), "empty");
    }

    /// Every slot placeholder this module sets is one the templates use, so
    /// a template change that drops a slot fails here, not mid-benchmark.
    #[test]
    fn the_templates_have_every_slot() {
        let all = Variants { alpn: Some("a".into()), exchange: Some("x".into()), http_exchange: Some("h".into()) };
        let configs = integration_tests::paths::envoy_configs();
        for (vars, file) in all.vars("", ["", ""]).iter().zip(["client.yaml", "server.yaml"]) {
            let template = std::fs::read_to_string(configs.join(file)).expect("template");
            let used = integration_tests::envoy::placeholders(&template);
            for name in vars.keys() {
                assert!(used.iter().any(|u| u == name), "{file} has no ${{{name}}}");
            }
        }
    }
}
