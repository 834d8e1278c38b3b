//! The TCP exchange's incoming half over arbitrary streams, chunkings and
//! end of stream. Oracles: at most one outcome; a closed connection
//! delivered nothing; a stream whose first byte is not the magic's passes
//! through untouched; after a valid prefix the rest arrives byte-exact;
//! whatever passes is the stream or the stream minus a prefix; a server
//! answers with its prefix only a client whose complete prefix it stripped.
#![no_main]

use filters_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use peer_exchange::codec::encode_frame;
use peer_exchange::exchange::{Event, Exchange, NotFound, OurPrefix, Outcome, Sending};
use peer_exchange::identity::IdentityCheck;
use peer_exchange::metadata::encode_payload;
use peer_exchange::peers::PeerDecoder;
use peer_exchange::simulate::deliver;
use proto::prost_types::{value::Kind, Struct, Value};

const SAN: &str = "spiffe://cluster.local/ns/fuzz-ns/sa/fuzz";

fn valid_prefix() -> Vec<u8> {
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
    let wire = Struct { fields: [("NAME".to_string(), s("fuzz-0")), ("NAMESPACE".to_string(), s("fuzz-ns"))].into() };
    encode_frame(&encode_payload(&wire, "fuzz-id")).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let (end_at_last, with_prefix, with_certificate) = (mode & 1 != 0, mode & 2 != 0, mode & 4 != 0);
    let max = 16 + u32::from(input.byte()) * 64;
    let cuts: Vec<usize> = (0..input.byte() % 8).map(|_| usize::from(input.byte())).collect();
    let tail = input.rest();
    let prefix = valid_prefix();
    let stream: Vec<u8> = if with_prefix { [prefix.as_slice(), tail].concat() } else { tail.to_vec() };

    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for cut in cuts {
        let end = (start + cut).min(stream.len());
        chunks.push(&stream[start..end]);
        start = end;
    }
    chunks.push(&stream[start..]);

    let sending = if mode & 8 != 0 { Sending::InAnswer } else { Sending::WithFirstBytes };
    let mut exchange = Exchange::new(max, sending);
    assert_eq!(exchange.set_participation(true), Some(Event::Participating));
    let mut peers = PeerDecoder::new(Vec::new(), IdentityCheck::Enforce);
    let san = with_certificate.then_some(SAN);
    let d = deliver(&mut exchange, &chunks, end_at_last, &mut |payload| peers.decode(payload, san));
    let frame_stripped =
        matches!(d.outcomes.as_slice(), [Outcome::PeerFound(_) | Outcome::NotFound(NotFound::NoPeerMetadata)]);
    if sending == Sending::InAnswer && !d.closed {
        let answer = exchange.on_outgoing_data();
        assert_eq!(answer == OurPrefix::Send, frame_stripped, "{answer:?} after {:?}", d.outcomes);
    }

    assert!(d.outcomes.len() <= 1, "one outcome at most: {:?}", d.outcomes);
    if d.closed {
        assert!(d.delivered.is_empty(), "nothing passes before a close");
        return;
    }
    if end_at_last {
        assert!(d.held.is_empty(), "end of stream releases everything");
    }
    if stream.first().is_some_and(|b| *b != 0x3D) {
        assert!(d.held.is_empty());
        assert_eq!(d.delivered, stream, "not the magic: untouched");
        assert!(matches!(d.outcomes.as_slice(), [Outcome::NotFound(NotFound::WrongMagic | NotFound::HttpResponse)]));
        return;
    }
    if with_prefix && prefix.len() - 8 <= max as usize && d.held.is_empty() {
        assert_eq!(d.delivered, tail, "after a valid prefix, the rest byte-exact");
        match d.outcomes.as_slice() {
            [Outcome::PeerFound(peer)] => {
                assert_eq!(peer.stored.is_some(), with_certificate, "enforce stores nothing without a certificate");
            }
            other => panic!("a valid prefix is a found peer: {other:?}"),
        }
        return;
    }
    let whole = d.delivered.len() + d.held.len() == stream.len();
    let stripped = stream.ends_with(&d.delivered) && frame_stripped;
    assert!(whole || stripped, "only a prefix is ever removed");
});
