//! The exchange frame, as a pure decoder over the head of a byte stream.
//!
//! ```text
//! magic     u32 big-endian = 0x3D230467
//! data_size u32 big-endian = length of the payload
//! payload   google.protobuf.Any(Struct), data_size bytes
//! ```

/// Istio's `MetadataExchangeInitialHeader::magic_number`.
pub const MAGIC: u32 = 0x3D23_0467;
/// magic + data_size.
pub const HEADER_LEN: usize = 8;

/// What the first bytes of a stream say about the initial header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// Fewer than 8 bytes, all matching the magic so far.
    Incomplete,
    /// The bytes stopped matching the magic: this stream carries no exchange.
    NotMagic,
    Complete {
        data_size: u32,
    },
}

/// Reads the initial header from the first `min(len, 8)` bytes of a stream.
/// Decides [`Header::NotMagic`] from the first byte that differs, so a peer
/// that sends no prefix is never held back waiting for 8 bytes.
pub fn decode_header(head: &[u8]) -> Header {
    let magic = MAGIC.to_be_bytes();
    let seen = head.iter().take(magic.len());
    if seen.zip(magic.iter()).any(|(a, b)| a != b) {
        return Header::NotMagic;
    }
    match head.get(..HEADER_LEN) {
        Some(&[_, _, _, _, a, b, c, d]) => Header::Complete { data_size: u32::from_be_bytes([a, b, c, d]) },
        _ => Header::Incomplete,
    }
}

/// The whole prefix for a payload: header followed by the payload.
/// `None` when the payload does not fit a u32 length.
pub fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    let data_size = u32::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&data_size.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_is_magic_then_big_endian_size() {
        let frame = encode_frame(b"abc").unwrap();
        assert_eq!(frame, [0x3D, 0x23, 0x04, 0x67, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(decode_header(&frame), Header::Complete { data_size: 3 });
    }

    #[test]
    fn partial_magic_waits_and_a_wrong_byte_decides_at_once() {
        assert_eq!(decode_header(&[]), Header::Incomplete);
        assert_eq!(decode_header(&[0x3D]), Header::Incomplete);
        assert_eq!(decode_header(&[0x3D, 0x23, 0x04, 0x67, 0]), Header::Incomplete);
        assert_eq!(decode_header(b"G"), Header::NotMagic);
        assert_eq!(decode_header(&[0x3D, 0x24]), Header::NotMagic);
        assert_eq!(decode_header(&[0x3D, 0x23, 0x04, 0x68, 0, 0, 0, 0]), Header::NotMagic);
    }

    #[test]
    fn data_size_is_read_whole() {
        let head = [0x3D, 0x23, 0x04, 0x67, 0xFF, 0xFF, 0xFF, 0xFF, 9, 9];
        assert_eq!(decode_header(&head), Header::Complete { data_size: u32::MAX });
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decode_header(&bytes);
        }

        #[test]
        fn every_prefix_of_a_frame_is_incomplete_until_eight_bytes(size in any::<u32>(), cut in 0usize..8) {
            let mut head = MAGIC.to_be_bytes().to_vec();
            head.extend_from_slice(&size.to_be_bytes());
            prop_assert_eq!(decode_header(&head[..cut]), Header::Incomplete);
            prop_assert_eq!(decode_header(&head), Header::Complete { data_size: size });
        }
    }
}
