//! The filters' counters by typed name: prefixes and names come from the
//! filter crates, so no test spells a stat.

use alpn_decision::decision::Counter as AlpnCounter;
use peer_exchange::config::{stat_prefix, Role, Transport};
use peer_exchange::exchange::Counter as ExchangeCounter;
use peer_exchange::http::HttpCounter;

use crate::envoy::Admin;

/// Envoy's prefix for stats a wasm plugin defines.
pub const WASM_PREFIX: &str = "wasmcustom.";

pub fn alpn(envoy: &Admin, counter: AlpnCounter) -> u64 {
    envoy.counter(&format!("{WASM_PREFIX}{}{}", AlpnCounter::PREFIX, counter.name()))
}

/// The TCP exchange's counter of `role` (the client Envoy runs the client role).
pub fn exchange(envoy: &Admin, role: Role, counter: ExchangeCounter) -> u64 {
    envoy.counter(&format!("{WASM_PREFIX}{}{}", stat_prefix(Transport::Tcp, role), counter.name()))
}

/// The HTTP exchange's counter of `role`.
pub fn http_exchange(envoy: &Admin, role: Role, counter: HttpCounter) -> u64 {
    envoy.counter(&format!("{WASM_PREFIX}{}{}", stat_prefix(Transport::Http, role), counter.name()))
}

/// Waits until the TCP exchange's counter reaches `value` (or the timeout); its last value.
pub fn wait_exchange(
    envoy: &Admin,
    role: Role,
    counter: ExchangeCounter,
    value: u64,
    timeout: std::time::Duration,
) -> u64 {
    envoy.wait_counter(&format!("{WASM_PREFIX}{}{}", stat_prefix(Transport::Tcp, role), counter.name()), value, timeout)
}

/// One series of a `/stats/prometheus` scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Envoy's `/stats/prometheus`, parsed: every sample line (comments skipped).
pub fn prometheus(envoy: &Admin) -> Vec<Sample> {
    let (status, text) = envoy.admin_get("/stats/prometheus").unwrap_or_else(|e| panic!("{}: scrape: {e}", envoy.name));
    assert_eq!(status, 200, "{}: /stats/prometheus", envoy.name);
    parse_prometheus(&text)
}

/// Parses Prometheus' text format as Envoy writes it: `name{k="v",...} value`
/// or `name value`, label values with `\\`, `\"` and `\n` escapes.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => {
                let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
                out.push(Sample { name: name.into(), labels: Default::default(), value: parse_value(value) });
                continue;
            }
        };
        let mut labels = std::collections::BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            match chars.peek() {
                Some('}') => {
                    chars.next();
                    break;
                }
                Some(',') => {
                    chars.next();
                }
                Some(_) => {}
                None => panic!("unterminated labels in {line:?}"),
            }
            if chars.peek() == Some(&'}') {
                continue;
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "label {key} of {line:?} is not quoted");
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("bad escape in {line:?}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated value in {line:?}"),
                }
            }
            labels.insert(key, value);
        }
        let value: String = chars.collect();
        out.push(Sample { name: name.into(), labels, value: parse_value(value.trim()) });
    }
    out
}

fn parse_value(text: &str) -> f64 {
    text.parse().unwrap_or_else(|_| panic!("bad sample value {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoys_prometheus_text() {
        let text = "# TYPE a counter\na{x=\"1\",y=\"q\\\"u,o\"} 2\nb 3.5\nc_bucket{le=\"+Inf\"} 4\nd{} 1\n";
        let samples = parse_prometheus(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["y"], "q\"u,o");
        assert_eq!(samples[0].value, 2.0);
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("b", 3.5));
        assert_eq!(samples[2].labels["le"], "+Inf");
        assert!(samples[3].labels.is_empty());
    }
}
