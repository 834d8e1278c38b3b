//! The exchange's plugin configuration, both forms. Oracles: an
//! accepted configuration has a usable limit, and what it makes us send
//! is a frame we can decode back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_exchange::codec::encode_frame;
use peer_exchange::config::{Config, Transport};
use peer_exchange::metadata::{decode_payload, encode_payload};
use peer_exchange::workload::NodeMetadata;

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Tcp, Transport::Http] {
        let Ok(config) = Config::parse(data, transport) else { continue };
        assert!(config.max_peer_metadata_bytes > 0);
        let workload = NodeMetadata::default().workload(&config.fields, &config.labels, &config.additional_labels);
        let payload = encode_payload(&workload.to_wire(), config.node_id.as_deref().unwrap_or(""));
        if encode_frame(&payload).is_some() {
            assert!(decode_payload(&payload).is_ok_and(|p| p.is_some()), "what we send decodes");
        }
    }
});
