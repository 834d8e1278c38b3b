//! The exchange's HTTP form (Istio's `istio_headers`): our workload in
//! request/response headers between mesh peers.
//!
//! - `x-envoy-peer-metadata`: standard base64 (RFC 4648 §4, `+/`, padded)
//!   of the deterministic serialisation of the wire workload Struct (the
//!   same Struct the TCP payload carries, without the Any and outer Struct).
//! - `x-envoy-peer-metadata-id`: the node id, as is.
//!
//! Reading takes the first value of each (native's rule), accepts missing
//! padding (native strips up to two `=`), and rejects anything else that is
//! not base64 — native turns invalid base64 into an all-empty peer; we say
//! "peer not found" instead.

use std::fmt;

use proto::prost::Message;
use proto::prost_types::Struct;

pub use crate::metadata::{PEER_METADATA_ID_KEY as ID_HEADER, PEER_METADATA_KEY as METADATA_HEADER};

/// The header value for our wire workload Struct.
pub fn encode_metadata_header(wire: &Struct) -> String {
    encode_base64(&wire.encode_to_vec())
}

/// The two exchange headers as found in a header map (first values only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerHeaders<'a> {
    pub metadata: Option<&'a [u8]>,
    pub id: Option<&'a [u8]>,
}

impl<'a> PeerHeaders<'a> {
    /// Picks the exchange headers out of a map's (lowercase name, value) pairs.
    pub fn find(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> PeerHeaders<'a> {
        let mut found = PeerHeaders::default();
        for (name, value) in pairs {
            if name == METADATA_HEADER.as_bytes() {
                found.metadata.get_or_insert(value);
            } else if name == ID_HEADER.as_bytes() {
                found.id.get_or_insert(value);
            }
        }
        found
    }

    /// Either header is there.
    pub fn any(&self) -> bool {
        self.metadata.is_some() || self.id.is_some()
    }
}

/// Why a metadata header value was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Longer than the configured limit (in header bytes).
    TooLarge {
        len: usize,
        max: usize,
    },
    NotBase64,
    NotStruct(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooLarge { len, max } => {
                write!(f, "metadata header of {len} bytes is over the limit of {max}")
            }
            HeaderError::NotBase64 => f.write_str("metadata header is not base64"),
            HeaderError::NotStruct(e) => write!(f, "metadata header is not a protobuf Struct: {e}"),
        }
    }
}

/// The header value's limit for `max_payload` bytes of decoded Struct.
pub fn max_header_len(max_payload: usize) -> usize {
    max_payload.div_ceil(3).saturating_mul(4)
}

/// Decodes a metadata header value into the peer's wire Struct.
pub fn decode_metadata_header(value: &[u8], max_payload: usize) -> Result<Struct, HeaderError> {
    let max = max_header_len(max_payload);
    if value.len() > max {
        return Err(HeaderError::TooLarge { len: value.len(), max });
    }
    let bytes = decode_base64(value).ok_or(HeaderError::NotBase64)?;
    Struct::decode(bytes.as_slice()).map_err(|e| HeaderError::NotStruct(e.to_string()))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let symbol = |index: u32| char::from(ALPHABET.get((index & 63) as usize).copied().unwrap_or(b'A'));
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Standard base64; up to two trailing `=` are optional, bits left over
/// in the last symbol must be zero (so each byte string has one encoding).
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let unpadded = match text {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => text,
    };
    let padding = text.len() - unpadded.len();
    let complete = match padding {
        0 => unpadded.len() % 4 != 1,
        // "x=" or "xy==" closes a 4-symbol group exactly.
        _ => text.len() % 4 == 0 && unpadded.len() % 4 == 4 - padding,
    };
    if !complete {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    for chunk in unpadded.chunks(4) {
        let mut n: u32 = 0;
        for &c in chunk {
            n = (n << 6) | sextet(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]),
            3 => {
                if n & 0b11 != 0 {
                    return None;
                }
                out.extend_from_slice(&[(n >> 10) as u8, (n >> 2) as u8]);
            }
            2 => {
                if n & 0b1111 != 0 {
                    return None;
                }
                out.push((n >> 4) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proto::prost_types::{value::Kind, Value};

    #[test]
    fn rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode_base64(plain.as_bytes()), encoded);
            assert_eq!(decode_base64(encoded.as_bytes()).as_deref(), Some(plain.as_bytes()));
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(decode_base64(unpadded.as_bytes()).as_deref(), Some(plain.as_bytes()), "{unpadded}");
        }
        assert_eq!(encode_base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn invalid_base64_is_refused() {
        for bad in ["Zg=", "Z", "Zm9v!", "Zh==", "Zm9=", "Zm9vY===", "=", "==", "Zg==Zg==", "Zm 9v", "Zm9v\n"] {
            assert_eq!(decode_base64(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn header_value_round_trips_and_limits() {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let wire = Struct { fields: [("NAME".to_string(), s("a")), ("NAMESPACE".to_string(), s("ns"))].into() };
        let value = encode_metadata_header(&wire);
        assert_eq!(decode_metadata_header(value.as_bytes(), 4096), Ok(wire.clone()));
        let len = wire.encoded_len();
        assert!(decode_metadata_header(value.as_bytes(), len).is_ok(), "exactly at the limit");
        assert!(matches!(decode_metadata_header(value.as_bytes(), len - 3), Err(HeaderError::TooLarge { .. })));
        assert_eq!(decode_metadata_header(b"@@@@", 4096), Err(HeaderError::NotBase64));
        assert!(matches!(decode_metadata_header(b"/w==", 4096), Err(HeaderError::NotStruct(_))));
        // Valid base64 of nothing is an empty Struct: a peer that says nothing.
        assert_eq!(decode_metadata_header(b"", 4096), Ok(Struct::default()));
    }

    #[test]
    fn the_first_value_of_each_header_wins() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = [
            ("x-envoy-peer-metadata-id", "id-1"),
            ("x-envoy-peer-metadata", "first"),
            ("x-envoy-peer-metadata", "second"),
            ("x-envoy-peer-metadata-id", "id-2"),
            ("x-other", "z"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        let found = PeerHeaders::find(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(found, PeerHeaders { metadata: Some(b"first"), id: Some(b"id-1") });
        assert!(found.any());
        assert!(!PeerHeaders::find([]).any());
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = encode_base64(&bytes);
            prop_assert_eq!(decode_base64(text.as_bytes()), Some(bytes));
        }

        #[test]
        fn accepted_text_is_canonical(text in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Whatever is accepted re-encodes to the same text, padding aside.
            if let Some(bytes) = decode_base64(&text) {
                let again = encode_base64(&bytes);
                let text = String::from_utf8_lossy(&text).into_owned();
                prop_assert_eq!(again.trim_end_matches('='), text.trim_end_matches('='));
            }
        }

        #[test]
        fn any_header_value_never_panics(value in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_metadata_header(&value, 256);
        }
    }
}
