//! The HTTP form's header codec. Oracles: base64 round-trips any bytes; an
//! accepted value re-encodes to a value that decodes the same; no input
//! panics the header decoder or the header finder.
#![no_main]

use filters_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use peer_exchange::headers::{decode_base64, decode_metadata_header, encode_base64, PeerHeaders};
use peer_exchange::identity::IdentityCheck;
use peer_exchange::peers::PeerDecoder;

fuzz_target!(|data: &[u8]| {
    assert_eq!(decode_base64(encode_base64(data).as_bytes()).as_deref(), Some(data));
    if let Some(bytes) = decode_base64(data) {
        assert_eq!(decode_base64(encode_base64(&bytes).as_bytes()), Some(bytes));
    }
    let _ = decode_metadata_header(data, 8192);

    // Header pairs as Envoy hands them over, then the server's decode.
    let mut input = Input::new(data);
    let mut pairs = Vec::new();
    for _ in 0..input.byte() % 6 {
        pairs.push((input.slice(), input.slice()));
    }
    let found = PeerHeaders::find(pairs.iter().copied());
    let mut peers = PeerDecoder::new(Vec::new(), IdentityCheck::Enforce);
    let san = String::from_utf8_lossy(input.rest()).into_owned();
    let _ = peers.decode_peer_headers(&found, 8192, Some(&san));
});
