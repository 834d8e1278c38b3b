//! alpn-filter's plugin configuration and cluster metadata parsers. Oracle:
//! every list they accept is one Envoy accepts (checked independently:
//! Envoy aborts on an empty element).
#![no_main]

use alpn_decision::alpn::UpstreamProtocol;
use alpn_decision::config::AlpnConfig;
use alpn_decision::metadata::cluster_policy;
use filters_fuzz::envoy_accepts_alpn_value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = AlpnConfig::parse(data) {
        for protocol in UpstreamProtocol::ALL {
            if let Some(list) = config.alpn_for(protocol) {
                assert!(envoy_accepts_alpn_value(&list.envoy_value()), "{list:?}");
            }
        }
    }
    if let Ok(policy) = cluster_policy(data) {
        for protocol in UpstreamProtocol::ALL {
            if let Some(Some(list)) = policy.alpn_for(protocol) {
                assert!(envoy_accepts_alpn_value(&list.envoy_value()), "{list:?}");
            }
        }
    }
});
