//! The per-connection exchange state machine (sans-IO).
//!
//! Two halves, one per direction:
//! - **outgoing**: our prefix rides on the first bytes we send — always for
//!   the client ([`Sending::WithFirstBytes`]), and for the server only in
//!   answer to a client whose complete prefix arrived before the first byte
//!   the server sends ([`Sending::InAnswer`]);
//! - **incoming**: the peer's prefix is read from the head of what it sends,
//!   held (Envoy keeps the bytes while we return `Pause`) until complete, then
//!   stripped.
//!
//! Neither half waits for the other: there is no extra round trip. The glue
//! passes in how many bytes Envoy holds and a reader for them, and carries out
//! the returned [`Step`]; every exit of the incoming half yields an
//! [`Outcome`] that names its counter.

use crate::codec::{decode_header, Header, HEADER_LEN};
use std::fmt;
use std::rc::Rc;

use crate::identity::Verification;
use crate::peers::{Decoded, StoredPeer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incoming {
    /// Waiting for the 8-byte initial header.
    ReadingInitialHeader,
    /// Header read; waiting for `data_size` payload bytes.
    ReadingProxyHeader { data_size: u32 },
    /// Exchange over (peer found, or given up): everything passes.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    Pending,
    Done,
}

/// When our prefix may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sending {
    /// With the first bytes we send (the client role: it only reaches
    /// upstreams that take part).
    WithFirstBytes,
    /// Only in answer: with the first bytes we send if the peer's complete
    /// prefix arrived before them, otherwise never on this connection (the
    /// server role). A server cannot tell a client that exchanges from one
    /// that does not — wasm cannot read the negotiated ALPN, and Istio's TCP
    /// chain accepts clients that offer only `istio` — so only a client that
    /// has sent a prefix is known to strip ours. A server-first app's banner
    /// therefore reaches every client byte-exact, without a prefix in front.
    InAnswer,
}

/// What goes in front of the bytes we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OurPrefix {
    /// Prepend our prefix.
    Send,
    /// Nothing to add (already sent, not taking part, or the peer has shown
    /// it does not speak the exchange).
    Skip,
    /// [`Sending::InAnswer`]: these bytes came before the peer's complete
    /// prefix (a server-first app), so this connection gets none of ours.
    Withheld,
}

/// What the glue does with the incoming bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Let the bytes through as they are.
    Continue,
    /// Keep the bytes in Envoy (`Pause`); more are needed.
    Hold,
    /// Remove the first `n` bytes (the peer's prefix) and let the rest through.
    Strip(usize),
    /// Close the connection.
    Close,
}

/// How the exchange on a connection ended (or did not start).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    PeerFound(Rc<StoredPeer>),
    /// Pass-through; the peer is recorded as not found.
    NotFound(NotFound),
    /// The connection is closed; the peer is recorded as not found.
    Rejected(Rejected),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotFound {
    /// This connection does not take part (see `participation`).
    NotParticipating,
    /// The first bytes are not the magic.
    WrongMagic,
    /// The first bytes are an HTTP/1 response, not the magic (an HTTP
    /// server answered: a sign the connection reached an HTTP chain).
    HttpResponse,
    /// The payload is not an `Any(Struct)`.
    BadPayload(String),
    /// A well-formed payload without `x-envoy-peer-metadata` (stripped).
    NoPeerMetadata,
    /// The peer half-closed with a partial prefix.
    HalfClosedMidPrefix,
    /// The peer half-closed without sending anything.
    EndedBeforePrefix,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    DataSizeTooLarge { data_size: u32, max: u32 },
    Timeout,
    BufferReadFailed,
}

// Log lines say what happened in words (Display, not Debug: deriving
// Debug output into the module costs ~15 KB of formatting code).
impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFound::NotParticipating => f.write_str("the connection does not take part"),
            NotFound::WrongMagic => f.write_str("the first bytes are not the exchange's magic"),
            NotFound::HttpResponse => f.write_str("the first bytes are an HTTP response, not the exchange's magic"),
            NotFound::BadPayload(e) => write!(f, "bad payload: {e}"),
            NotFound::NoPeerMetadata => f.write_str("the payload carries no peer metadata"),
            NotFound::HalfClosedMidPrefix => f.write_str("half-closed in the middle of the prefix"),
            NotFound::EndedBeforePrefix => f.write_str("ended before any prefix"),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::DataSizeTooLarge { data_size, max } => {
                write!(f, "announced payload of {data_size} bytes, over the limit of {max}")
            }
            Rejected::Timeout => f.write_str("the exchange timed out"),
            Rejected::BufferReadFailed => f.write_str("cannot read the connection's buffer"),
        }
    }
}

/// Payload bytes taken with the header in the first read.
const FIRST_READ_PAYLOAD: usize = 4096;

/// The exchange state of one connection.
#[derive(Debug)]
pub struct Exchange {
    participating: Option<bool>,
    incoming: Incoming,
    outgoing: Outgoing,
    /// The peer has shown it does not speak the exchange: send it nothing.
    suppress_outgoing: bool,
    /// The peer's complete prefix has arrived (and was stripped).
    peer_prefix_received: bool,
    /// Our prefix went out.
    prefix_sent: bool,
    sending: Sending,
    max_data_size: u32,
    /// When the first byte of a still-incomplete prefix was held (ms).
    holding_since: Option<u64>,
}

impl Exchange {
    pub fn new(max_data_size: u32, sending: Sending) -> Self {
        Exchange {
            participating: None,
            incoming: Incoming::ReadingInitialHeader,
            outgoing: Outgoing::Pending,
            suppress_outgoing: false,
            peer_prefix_received: false,
            prefix_sent: false,
            sending,
            max_data_size,
            holding_since: None,
        }
    }

    /// Whether [`Exchange::set_participation`] has been called.
    pub fn participation_decided(&self) -> bool {
        self.participating.is_some()
    }

    /// Leaves a connection without an upstream connection of its own alone:
    /// a pass-through both ways that records nothing (the HTTP form, if
    /// any, records the peer of its requests).
    pub fn stay_out(&mut self) -> Option<Event> {
        if self.participating.is_some() {
            return None;
        }
        self.participating = Some(false);
        self.incoming = Incoming::Done;
        self.outgoing = Outgoing::Done;
        Some(Event::NoUpstream)
    }

    /// Records whether this connection takes part. A connection that does not
    /// is a pass-through both ways, and its peer is not found.
    pub fn set_participation(&mut self, participating: bool) -> Option<Event> {
        if self.participating.is_some() {
            return None;
        }
        self.participating = Some(participating);
        if participating {
            Some(Event::Participating)
        } else {
            self.incoming = Incoming::Done;
            self.outgoing = Outgoing::Done;
            Some(Event::Ended(Outcome::NotFound(NotFound::NotParticipating)))
        }
    }

    /// Called with the bytes we send: whether our prefix goes in front of them.
    pub fn on_outgoing_data(&mut self) -> OurPrefix {
        if self.participating != Some(true) || self.outgoing == Outgoing::Done {
            return OurPrefix::Skip;
        }
        self.outgoing = Outgoing::Done;
        if self.suppress_outgoing {
            return OurPrefix::Skip;
        }
        let answer = match self.sending {
            Sending::WithFirstBytes => OurPrefix::Send,
            Sending::InAnswer if self.peer_prefix_received => OurPrefix::Send,
            Sending::InAnswer => OurPrefix::Withheld,
        };
        self.prefix_sent = answer == OurPrefix::Send;
        answer
    }

    /// Whether our prefix went out on this connection.
    pub fn prefix_sent(&self) -> bool {
        self.prefix_sent
    }

    /// Whether the incoming half still has work to do.
    pub fn incoming_done(&self) -> bool {
        self.incoming == Incoming::Done
    }

    /// When the held partial prefix started: the exchange timeout runs from
    /// here. `None` for a connection that has sent nothing (idle connections
    /// get no deadline) and once the exchange is over.
    pub fn holding_since(&self) -> Option<u64> {
        self.holding_since
    }

    /// Handles the peer's bytes. `available` is what Envoy holds (everything
    /// since the stream began while we hold); `read(start, len)` returns those
    /// bytes (`None` if the host fails); `now()` is asked only when a partial
    /// prefix starts being held. One read in the common case (the whole
    /// prefix in the first chunk): at most `8 + max_data_size` bytes from the
    /// head; then the payload goes through `decode` (the VM's
    /// [`PeerDecoder`](crate::peers::PeerDecoder), with the peer's certificate).
    pub fn on_incoming_data(
        &mut self,
        available: usize,
        end_of_stream: bool,
        now: &mut dyn FnMut() -> u64,
        read: &mut dyn FnMut(usize, usize) -> Option<Vec<u8>>,
        decode: &mut dyn FnMut(&[u8]) -> Decoded,
    ) -> (Step, Option<Outcome>) {
        if self.participating != Some(true) {
            return (Step::Continue, None);
        }
        let (step, outcome) = self.advance(available, end_of_stream, read, decode);
        match step {
            Step::Hold => {
                if self.holding_since.is_none() && available > 0 {
                    self.holding_since = Some(now());
                }
            }
            _ => {
                if self.incoming == Incoming::Done {
                    self.holding_since = None;
                }
            }
        }
        (step, outcome)
    }

    fn advance(
        &mut self,
        available: usize,
        end_of_stream: bool,
        read: &mut dyn FnMut(usize, usize) -> Option<Vec<u8>>,
        decode: &mut dyn FnMut(&[u8]) -> Decoded,
    ) -> (Step, Option<Outcome>) {
        // Bytes already read from the head of the stream in this call.
        let mut head: Vec<u8> = Vec::new();
        if self.incoming == Incoming::ReadingInitialHeader {
            if available == 0 {
                if end_of_stream {
                    self.suppress_outgoing = true;
                    return self.give_up(NotFound::EndedBeforePrefix);
                }
                return (Step::Continue, None);
            }
            // Enough for a typical prefix (a few hundred bytes) in one read,
            // without copying a large first chunk of app data into the VM;
            // a larger payload is read on its own below.
            let want = available.min(HEADER_LEN + FIRST_READ_PAYLOAD.min(self.max_data_size as usize));
            let Some(bytes) = read(0, want) else {
                return self.reject(Rejected::BufferReadFailed);
            };
            head = bytes;
            match decode_header(&head) {
                Header::NotMagic => {
                    self.suppress_outgoing = true;
                    let reason =
                        if head.starts_with(b"HTTP/1.") { NotFound::HttpResponse } else { NotFound::WrongMagic };
                    return self.give_up(reason);
                }
                Header::Incomplete => return self.wait(end_of_stream),
                Header::Complete { data_size } => {
                    if data_size > self.max_data_size {
                        return self.reject(Rejected::DataSizeTooLarge { data_size, max: self.max_data_size });
                    }
                    self.incoming = Incoming::ReadingProxyHeader { data_size };
                }
            }
        }
        if let Incoming::ReadingProxyHeader { data_size } = self.incoming {
            let data_size = data_size as usize;
            let total = HEADER_LEN.saturating_add(data_size);
            if available < total {
                return self.wait(end_of_stream);
            }
            let read_later;
            let payload: &[u8] = match head.get(HEADER_LEN..total) {
                Some(payload) => payload,
                None => match read(HEADER_LEN, data_size) {
                    Some(payload) if payload.len() == data_size => {
                        read_later = payload;
                        &read_later
                    }
                    _ => return self.reject(Rejected::BufferReadFailed),
                },
            };
            self.incoming = Incoming::Done;
            self.peer_prefix_received = true;
            return match decode(payload) {
                Ok(Some(peer)) => (Step::Strip(total), Some(Outcome::PeerFound(peer))),
                Ok(None) => (Step::Strip(total), Some(Outcome::NotFound(NotFound::NoPeerMetadata))),
                Err(e) => {
                    self.suppress_outgoing = true;
                    (Step::Continue, Some(Outcome::NotFound(NotFound::BadPayload(e.to_string()))))
                }
            };
        }
        (Step::Continue, None)
    }

    fn wait(&mut self, end_of_stream: bool) -> (Step, Option<Outcome>) {
        if end_of_stream {
            // Nothing more will come: hand over what is held rather than hang.
            // A peer that never completed a prefix is not known to speak the
            // exchange: like a wrong magic, it gets nothing from us.
            self.suppress_outgoing = true;
            self.give_up(NotFound::HalfClosedMidPrefix)
        } else {
            (Step::Hold, None)
        }
    }

    fn give_up(&mut self, reason: NotFound) -> (Step, Option<Outcome>) {
        self.incoming = Incoming::Done;
        (Step::Continue, Some(Outcome::NotFound(reason)))
    }

    fn reject(&mut self, reason: Rejected) -> (Step, Option<Outcome>) {
        self.incoming = Incoming::Done;
        self.outgoing = Outgoing::Done;
        (Step::Close, Some(Outcome::Rejected(reason)))
    }
}

filter_common::counters! {
    /// Every counter the filter keeps, declared in one list: Istio's five, then ours.
    pub enum Counter {
        AlpnProtocolFound => "alpn_protocol_found",
        AlpnProtocolNotFound => "alpn_protocol_not_found",
        InitialHeaderNotFound => "initial_header_not_found",
        HeaderNotFound => "header_not_found",
        MetadataAdded => "metadata_added",
        MetadataReceived => "metadata_received",
        DataSizeTooLarge => "data_size_too_large",
        ExchangeTimeout => "exchange_timeout",
        HalfClosedMidPrefix => "half_closed_mid_prefix",
        EndedBeforePrefix => "ended_before_prefix",
        BufferError => "buffer_error",
        PeerMetadataMissing => "peer_metadata_missing",
        PeerFromEndpointMetadata => "peer_from_endpoint_metadata",
        EndpointMetadataInvalid => "endpoint_metadata_invalid",
        /// The peer's claim agrees with its certificate.
        PeerIdentityVerified => "peer_identity_verified",
        /// The peer's claim disagrees with its certificate.
        PeerIdentityMismatch => "peer_identity_mismatch",
        /// The peer has no certificate to check its claim against.
        PeerIdentityNoCertificate => "peer_identity_no_certificate",
        /// Not an outcome: the client read a cluster's metadata (once per
        /// cluster per `cluster_metadata_refresh_ms`, or per connection with 0).
        ClusterMetadataRead => "cluster_metadata_read",
        /// The connection has no upstream connection of its own (the filter
        /// sits in front of an HTTP connection manager): left alone, nothing
        /// recorded.
        NoUpstreamConnection => "no_upstream_connection",
        /// Not an outcome: a cluster's metadata carries `istio.peer_exchange`
        /// in a place the client does not read (once per distinct metadata).
        MisplacedMetadata => "misplaced_metadata",
        /// The server's app wrote before the client's complete prefix arrived
        /// (a server-first protocol): no prefix of ours on that connection.
        PrefixWithheld => "prefix_withheld_server_first",
        /// Not an outcome: the node's metadata lacks what the exchange
        /// sends about this workload (counted once per configuration).
        NodeMetadataMissing => "node_metadata_missing",
        /// Client: the upstream presents a mesh identity on a cluster not
        /// marked as a mesh upstream (nothing sent; warned once per cluster).
        MeshUpstreamNotMarked => "mesh_upstream_not_marked",
        /// Client: the TLS handshake with a mesh-marked upstream failed
        /// (its Envoy serves no chain for the ALPN offered; warned once per cluster).
        UpstreamHandshakeFailed => "upstream_handshake_failed",
        /// Client: the upstream answered our prefix with an HTTP response
        /// (an HTTP chain took the connection; warned once per cluster).
        UpstreamAnsweredHttp => "upstream_answered_http",
        /// `istio_metrics`: a new label set past `max_label_sets` (or one Envoy
        /// refused to define): that request or connection is not in Istio's metrics.
        IstioMetricsOverflow => "istio_metrics_overflow",
    }
}

impl Counter {
    /// What the identity check found.
    pub fn for_verification(verification: Verification) -> Counter {
        match verification {
            Verification::Verified => Counter::PeerIdentityVerified,
            Verification::Mismatch(_) => Counter::PeerIdentityMismatch,
            Verification::NoCertificate => Counter::PeerIdentityNoCertificate,
        }
    }
}

/// Everything the glue counts about a connection. Each event names its
/// counters here, so `filter.rs` increments only what an event says.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The connection takes part (native's `alpn_protocol_found`).
    Participating,
    /// Our prefix went out on the first bytes we sent.
    PrefixSent,
    /// The first bytes we sent came before the peer's prefix: none of ours.
    PrefixWithheld,
    /// The host refused to remove the peer's prefix; the connection is closed.
    StripFailed,
    /// The incoming half ended (or never started).
    Ended(Outcome),
    /// No upstream connection of its own: stayed out, recorded nothing.
    NoUpstream,
    /// A client without an exchanged peer stored the endpoint's `istio.workload`.
    PeerFromEndpointMetadata,
    /// The endpoint's `istio.workload` was there but unusable.
    EndpointMetadataInvalid,
}

impl Event {
    /// The counters this event increments (at most two).
    pub fn counters(&self) -> impl Iterator<Item = Counter> {
        let counters: [Option<Counter>; 2] = match self {
            Event::Participating => [Some(Counter::AlpnProtocolFound), None],
            Event::NoUpstream => [Some(Counter::NoUpstreamConnection), None],
            Event::PrefixSent => [Some(Counter::MetadataAdded), None],
            Event::PrefixWithheld => [Some(Counter::PrefixWithheld), None],
            Event::StripFailed => [Some(Counter::BufferError), None],
            Event::Ended(outcome) => [Some(outcome.counter()), outcome.identity_counter()],
            Event::PeerFromEndpointMetadata => [Some(Counter::PeerFromEndpointMetadata), None],
            Event::EndpointMetadataInvalid => [Some(Counter::EndpointMetadataInvalid), None],
        };
        counters.into_iter().flatten()
    }
}

impl Outcome {
    /// What the identity check found, for a found peer that was checked.
    fn identity_counter(&self) -> Option<Counter> {
        match self {
            Outcome::PeerFound(peer) => peer.verification.map(Counter::for_verification),
            _ => None,
        }
    }

    pub fn counter(&self) -> Counter {
        match self {
            Outcome::PeerFound(_) => Counter::MetadataReceived,
            Outcome::NotFound(NotFound::NotParticipating) => Counter::AlpnProtocolNotFound,
            Outcome::NotFound(NotFound::WrongMagic | NotFound::HttpResponse) => Counter::InitialHeaderNotFound,
            Outcome::NotFound(NotFound::BadPayload(_)) => Counter::HeaderNotFound,
            Outcome::NotFound(NotFound::NoPeerMetadata) => Counter::PeerMetadataMissing,
            Outcome::NotFound(NotFound::HalfClosedMidPrefix) => Counter::HalfClosedMidPrefix,
            Outcome::NotFound(NotFound::EndedBeforePrefix) => Counter::EndedBeforePrefix,
            Outcome::Rejected(Rejected::DataSizeTooLarge { .. }) => Counter::DataSizeTooLarge,
            Outcome::Rejected(Rejected::Timeout) => Counter::ExchangeTimeout,
            Outcome::Rejected(Rejected::BufferReadFailed) => Counter::BufferError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame;
    use crate::identity::IdentityCheck;
    use crate::metadata::encode_payload;
    use crate::peers::PeerDecoder;
    use crate::workload::Workload;
    use proptest::prelude::*;
    use proto::prost::Message;
    use proto::prost_types::{value::Kind, Struct, Value};

    const MAX: u32 = 4096;

    fn prefix() -> Vec<u8> {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let node = Struct {
            fields: [("NAME".to_string(), s("client-pod")), ("NAMESPACE".to_string(), s("ns"))].into_iter().collect(),
        };
        encode_frame(&encode_payload(&Workload::read(&node, &[], None).to_wire(), "client-id")).unwrap()
    }

    /// Simulates Envoy ([`crate::simulate`]). Returns (bytes delivered to
    /// the app, outcomes, closed).
    fn run(chunks: &[Vec<u8>], end_at_last: bool) -> (Vec<u8>, Vec<Outcome>, bool) {
        let mut ex = Exchange::new(MAX, Sending::WithFirstBytes);
        assert_eq!(ex.set_participation(true), Some(Event::Participating));
        let mut out = Exchange::new(MAX, Sending::WithFirstBytes);
        assert_eq!(out.stay_out(), Some(Event::NoUpstream));
        assert_eq!(out.set_participation(true), None, "decided once");
        assert!(out.on_outgoing_data() == OurPrefix::Skip && out.incoming_done(), "a pass-through both ways");
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let d = crate::simulate::deliver(&mut ex, &chunks, end_at_last, &mut decoder());
        (d.delivered, d.outcomes, d.closed)
    }

    /// The VM's decoder as the TCP layer uses it, without identity checks.
    fn decoder() -> impl FnMut(&[u8]) -> Decoded {
        let mut peers = PeerDecoder::new(vec![], IdentityCheck::Off);
        move |payload| peers.decode(payload, None)
    }

    fn found(outcomes: &[Outcome]) -> Option<&Rc<StoredPeer>> {
        outcomes.iter().find_map(|o| match o {
            Outcome::PeerFound(p) => Some(p),
            _ => None,
        })
    }

    #[test]
    fn prefix_and_data_in_one_chunk_is_stripped() {
        let mut bytes = prefix();
        bytes.extend_from_slice(b"hello");
        let (delivered, outcomes, closed) = run(&[bytes], false);
        assert_eq!(delivered, b"hello");
        assert!(!closed);
        assert_eq!(found(&outcomes).unwrap().id.as_deref(), Some("client-id"));
        assert_eq!(outcomes.len(), 1);
    }

    #[test]
    fn prefix_one_byte_at_a_time() {
        let mut bytes = prefix();
        bytes.extend_from_slice(b"app data");
        let chunks: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
        let (delivered, outcomes, _) = run(&chunks, false);
        assert_eq!(delivered, b"app data");
        assert!(found(&outcomes).is_some());
    }

    #[test]
    fn a_short_first_chunk_without_magic_is_not_held() {
        let (delivered, outcomes, _) = run(&[b"G".to_vec()], false);
        assert_eq!(delivered, b"G");
        assert_eq!(outcomes, vec![Outcome::NotFound(NotFound::WrongMagic)]);
    }

    #[test]
    fn wrong_magic_passes_everything_through_and_suppresses_our_prefix() {
        let mut ex = Exchange::new(MAX, Sending::WithFirstBytes);
        ex.set_participation(true);
        let data = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        let mut read = |s: usize, l: usize| data.get(s..s + l).map(<[u8]>::to_vec);
        let (step, outcome) = ex.on_incoming_data(data.len(), false, &mut || 0, &mut read, &mut decoder());
        assert_eq!(step, Step::Continue);
        assert_eq!(outcome.unwrap().counter(), Counter::InitialHeaderNotFound);
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Skip, "a peer without the protocol gets no prefix");
        // Later data is not inspected again.
        let mut never = |_: usize, _: usize| -> Option<Vec<u8>> { panic!("read after done") };
        assert_eq!(ex.on_incoming_data(10, false, &mut || 1, &mut never, &mut decoder()), (Step::Continue, None));
    }

    #[test]
    fn an_http_response_where_the_prefix_belongs_is_told_apart() {
        let (delivered, outcomes, _) = run(&[b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()], false);
        assert_eq!(delivered, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(outcomes, vec![Outcome::NotFound(NotFound::HttpResponse)]);
        assert_eq!(outcomes[0].counter(), Counter::InitialHeaderNotFound, "native's counter still counts it");
    }

    #[test]
    fn bad_payload_passes_through_untouched() {
        let mut bytes = encode_frame(&[0xff, 0xff, 0xff]).unwrap();
        bytes.extend_from_slice(b"rest");
        let (delivered, outcomes, closed) = run(&[bytes.clone()], false);
        assert_eq!(delivered, bytes);
        assert!(!closed);
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].counter(), Counter::HeaderNotFound);
    }

    #[test]
    fn a_payload_beyond_the_first_read_is_read_on_its_own() {
        let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
        let big = "x".repeat(FIRST_READ_PAYLOAD * 2);
        let node = Struct { fields: [("NAME".to_string(), s("big")), ("CLUSTER_ID".to_string(), s(&big))].into() };
        let mut bytes = encode_frame(&encode_payload(&Workload::read(&node, &[], None).to_wire(), "id")).unwrap();
        let prefix_len = bytes.len();
        bytes.extend_from_slice(b"after");
        let mut ex = Exchange::new(64 * 1024, Sending::WithFirstBytes);
        ex.set_participation(true);
        let mut reads = Vec::new();
        let mut read = |start: usize, len: usize| {
            reads.push((start, len));
            bytes.get(start..start + len).map(<[u8]>::to_vec)
        };
        let (step, outcome) = ex.on_incoming_data(prefix_len + 5, false, &mut || 0, &mut read, &mut decoder());
        assert_eq!(step, Step::Strip(prefix_len));
        assert!(matches!(outcome, Some(Outcome::PeerFound(ref p)) if p.name == "big"));
        assert_eq!(reads, [(0, HEADER_LEN + FIRST_READ_PAYLOAD), (HEADER_LEN, prefix_len - HEADER_LEN)]);
    }

    #[test]
    fn a_frame_without_peer_metadata_is_stripped_and_the_peer_not_found() {
        let any = proto::prost_types::Any {
            type_url: "example.com/google.protobuf.Struct".into(),
            value: Struct::default().encode_to_vec(),
        };
        let mut bytes = encode_frame(&any.encode_to_vec()).unwrap();
        bytes.extend_from_slice(b"rest");
        let mut ex = Exchange::new(MAX, Sending::WithFirstBytes);
        ex.set_participation(true);
        let snapshot = bytes.clone();
        let mut read = |start: usize, len: usize| snapshot.get(start..start + len).map(<[u8]>::to_vec);
        let (step, outcome) = ex.on_incoming_data(bytes.len(), false, &mut || 0, &mut read, &mut decoder());
        assert_eq!(step, Step::Strip(bytes.len() - 4));
        assert_eq!(outcome, Some(Outcome::NotFound(NotFound::NoPeerMetadata)));
        assert_eq!(Outcome::NotFound(NotFound::NoPeerMetadata).counter(), Counter::PeerMetadataMissing);
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Send, "the peer speaks the exchange: it gets our prefix");
    }

    #[test]
    fn oversized_data_size_closes_without_reading_the_payload() {
        let mut bytes = crate::codec::MAGIC.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(MAX + 1).to_be_bytes());
        let (_, outcomes, closed) = run(&[bytes], false);
        assert!(closed);
        assert_eq!(outcomes, vec![Outcome::Rejected(Rejected::DataSizeTooLarge { data_size: MAX + 1, max: MAX })]);
    }

    #[test]
    fn half_close_mid_prefix_gives_up_and_delivers_what_was_held() {
        let p = prefix();
        let (delivered, outcomes, closed) = run(&[p[..5].to_vec(), p[5..12].to_vec()], true);
        assert!(!closed);
        assert_eq!(delivered, p[..12].to_vec());
        assert_eq!(outcomes, vec![Outcome::NotFound(NotFound::HalfClosedMidPrefix)]);
    }

    #[test]
    fn end_of_stream_before_any_byte() {
        let (delivered, outcomes, _) = run(&[vec![]], true);
        assert!(delivered.is_empty());
        assert_eq!(outcomes, vec![Outcome::NotFound(NotFound::EndedBeforePrefix)]);
    }

    #[test]
    fn a_peer_that_ends_without_a_complete_prefix_gets_none_of_ours() {
        let p = prefix();
        for chunks in [vec![vec![]], vec![p[..5].to_vec()], vec![p[..12].to_vec()]] {
            let mut exchange = Exchange::new(MAX, Sending::WithFirstBytes);
            exchange.set_participation(true);
            let held: Vec<u8> = chunks.concat();
            let mut read =
                |start: usize, len: usize| held.get(start..(start + len).min(held.len())).map(<[u8]>::to_vec);
            let (step, outcome) = exchange.on_incoming_data(held.len(), true, &mut || 0, &mut read, &mut decoder());
            assert_eq!(step, Step::Continue);
            assert!(matches!(outcome, Some(Outcome::NotFound(_))), "{outcome:?}");
            assert_eq!(
                exchange.on_outgoing_data(),
                OurPrefix::Skip,
                "no prefix after {} bytes then end of stream",
                held.len()
            );
        }
        // A completed prefix followed by end of stream still gets ours.
        let mut exchange = Exchange::new(MAX, Sending::WithFirstBytes);
        exchange.set_participation(true);
        let mut read = |start: usize, len: usize| p.get(start..(start + len).min(p.len())).map(<[u8]>::to_vec);
        let (_, outcome) = exchange.on_incoming_data(p.len(), true, &mut || 0, &mut read, &mut decoder());
        assert!(matches!(outcome, Some(Outcome::PeerFound(_))));
        assert_eq!(exchange.on_outgoing_data(), OurPrefix::Send);
    }

    #[test]
    fn only_a_started_prefix_runs_the_timeout_clock() {
        let mut idle = Exchange::new(MAX, Sending::WithFirstBytes);
        idle.set_participation(true);
        let mut read = |_: usize, _: usize| -> Option<Vec<u8>> { Some(vec![]) };
        assert_eq!(idle.on_incoming_data(0, false, &mut || 5, &mut read, &mut decoder()), (Step::Continue, None));
        assert_eq!(idle.holding_since(), None, "an idle connection gets no deadline, so it is never closed");

        let mut stalled = Exchange::new(MAX, Sending::WithFirstBytes);
        stalled.set_participation(true);
        let p = prefix();
        let mut read = |s: usize, l: usize| p.get(s..s + l).map(<[u8]>::to_vec);
        assert_eq!(stalled.on_incoming_data(3, false, &mut || 7, &mut read, &mut decoder()).0, Step::Hold);
        assert_eq!(stalled.on_incoming_data(10, false, &mut || 9, &mut read, &mut decoder()).0, Step::Hold);
        assert_eq!(stalled.holding_since(), Some(7), "the clock starts at the first held byte");
        assert_eq!(
            stalled.on_incoming_data(p.len(), false, &mut || 11, &mut read, &mut decoder()).0,
            Step::Strip(p.len())
        );
        assert_eq!(stalled.holding_since(), None, "a completed prefix stops the clock");
    }

    #[test]
    fn not_participating_is_a_pass_through_both_ways() {
        let mut ex = Exchange::new(MAX, Sending::WithFirstBytes);
        assert_eq!(ex.set_participation(false), Some(Event::Ended(Outcome::NotFound(NotFound::NotParticipating))));
        assert_eq!(ex.set_participation(true), None, "decided once");
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Skip);
        let p = prefix();
        let mut read = |s: usize, l: usize| p.get(s..s + l).map(<[u8]>::to_vec);
        assert_eq!(ex.on_incoming_data(p.len(), false, &mut || 0, &mut read, &mut decoder()), (Step::Continue, None));
    }

    #[test]
    fn our_prefix_goes_out_once_without_waiting_for_the_peer() {
        let mut ex = Exchange::new(MAX, Sending::WithFirstBytes);
        ex.set_participation(true);
        assert!(!ex.prefix_sent());
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Send);
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Skip);
        assert!(ex.prefix_sent());
    }

    /// A server role: `bytes` from the client, then the app's first bytes.
    fn server_answers(client_bytes: &[u8]) -> (OurPrefix, Option<Outcome>) {
        let mut ex = Exchange::new(MAX, Sending::InAnswer);
        ex.set_participation(true);
        let mut read = |s: usize, l: usize| client_bytes.get(s..(s + l).min(client_bytes.len())).map(<[u8]>::to_vec);
        let (_, outcome) = ex.on_incoming_data(client_bytes.len(), false, &mut || 0, &mut read, &mut decoder());
        (ex.on_outgoing_data(), outcome)
    }

    #[test]
    fn the_server_answers_a_complete_client_prefix_with_its_own() {
        let (ours, outcome) = server_answers(&[prefix(), b"EHLO".to_vec()].concat());
        assert!(matches!(outcome, Some(Outcome::PeerFound(_))));
        assert_eq!(ours, OurPrefix::Send);
        // A well-formed frame without peer metadata still shows the client strips frames.
        let empty = encode_frame(&encode_payload(&Struct::default(), "")).unwrap();
        assert_eq!(server_answers(&empty).0, OurPrefix::Send);
    }

    #[test]
    fn a_server_first_app_gets_no_prefix_in_front_of_its_banner_whatever_the_client_sent() {
        let p = prefix();
        // Nothing yet, or part of a prefix: the banner goes out alone.
        for client_bytes in [vec![], p[..3].to_vec(), p[..p.len() - 1].to_vec()] {
            assert_eq!(server_answers(&client_bytes).0, OurPrefix::Withheld, "after {client_bytes:?}");
        }
        // A client that has shown it does not exchange, or sent a bad payload: nothing either.
        for client_bytes in [b"QUIT".to_vec(), encode_frame(&[0xff, 0xff, 0xff]).unwrap()] {
            assert_eq!(server_answers(&client_bytes).0, OurPrefix::Skip, "after {client_bytes:?}");
        }
    }

    #[test]
    fn a_client_prefix_after_the_banner_is_still_stripped_and_stored_and_ours_never_follows() {
        let mut ex = Exchange::new(MAX, Sending::InAnswer);
        ex.set_participation(true);
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Withheld, "the banner: before any client byte");
        let bytes = [prefix(), b"EHLO".to_vec()].concat();
        let chunks = [&bytes[..5], &bytes[5..]];
        let d = crate::simulate::deliver(&mut ex, &chunks, false, &mut decoder());
        assert_eq!(d.delivered, b"EHLO");
        assert!(found(&d.outcomes).is_some(), "a native client's prefix, sent when the banner reached it");
        assert_eq!(ex.on_outgoing_data(), OurPrefix::Skip, "never later on that connection");
    }

    #[test]
    fn a_failing_host_read_closes() {
        let mut ex = Exchange::new(MAX, Sending::WithFirstBytes);
        ex.set_participation(true);
        let mut read = |_: usize, _: usize| -> Option<Vec<u8>> { None };
        let (step, outcome) = ex.on_incoming_data(4, false, &mut || 0, &mut read, &mut decoder());
        assert_eq!(step, Step::Close);
        assert_eq!(outcome.unwrap().counter(), Counter::BufferError);
    }

    #[test]
    fn every_event_names_its_counters() {
        let counters = |e: Event| e.counters().collect::<Vec<_>>();
        assert_eq!(counters(Event::Participating), [Counter::AlpnProtocolFound]);
        assert_eq!(counters(Event::PrefixSent), [Counter::MetadataAdded]);
        assert_eq!(counters(Event::PrefixWithheld), [Counter::PrefixWithheld]);
        assert_eq!(counters(Event::StripFailed), [Counter::BufferError]);
        assert_eq!(counters(Event::Ended(Outcome::Rejected(Rejected::Timeout))), [Counter::ExchangeTimeout]);
        assert_eq!(counters(Event::PeerFromEndpointMetadata), [Counter::PeerFromEndpointMetadata]);
        assert_eq!(counters(Event::EndpointMetadataInvalid), [Counter::EndpointMetadataInvalid]);
        // A found peer counts the identity check's finding with it (none when off).
        let peer = |verification| {
            Outcome::PeerFound(Rc::new(StoredPeer {
                stored: None,
                json: String::new(),
                id: None,
                namespace: String::new(),
                name: String::new(),
                identity: String::new(),
                verification,
                labels: Default::default(),
            }))
        };
        assert_eq!(counters(Event::Ended(peer(None))), [Counter::MetadataReceived]);
        assert_eq!(
            counters(Event::Ended(peer(Some(Verification::NoCertificate)))),
            [Counter::MetadataReceived, Counter::PeerIdentityNoCertificate]
        );
        assert_eq!(
            counters(Event::Ended(peer(Some(Verification::Verified)))),
            [Counter::MetadataReceived, Counter::PeerIdentityVerified]
        );
    }

    #[test]
    fn counters_are_unique_and_in_order() {
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }

    /// Splits `bytes` into chunks at arbitrary cut points.
    fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        points.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    proptest! {
        // Any chunking of a valid prefix followed by app data: the app data
        // arrives byte-exact and the peer is found.
        #[test]
        fn any_chunking_of_a_valid_prefix(data in proptest::collection::vec(any::<u8>(), 0..300),
                                          cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
            let mut bytes = prefix();
            let prefix_len = bytes.len();
            bytes.extend_from_slice(&data);
            let chunks = cut(&bytes, &cuts);
            let (delivered, outcomes, closed) = run(&chunks, false);
            prop_assert!(!closed);
            prop_assert_eq!(&delivered, &data);
            prop_assert!(found(&outcomes).is_some() || (data.is_empty() && chunks.iter().map(Vec::len).sum::<usize>() < prefix_len));
        }

        // Arbitrary junk in arbitrary chunks never panics, never loses or
        // reorders bytes: what is delivered is the input, or the input minus
        // a stripped prefix, or the connection is closed.
        #[test]
        fn arbitrary_junk(junk in proptest::collection::vec(any::<u8>(), 0..200),
                          start_with_magic in any::<bool>(),
                          cuts in proptest::collection::vec(any::<usize>(), 0..10),
                          eos in any::<bool>()) {
            let mut bytes = if start_with_magic { crate::codec::MAGIC.to_be_bytes().to_vec() } else { vec![] };
            bytes.extend_from_slice(&junk);
            let chunks = cut(&bytes, &cuts);
            let (delivered, outcomes, closed) = run(&chunks, eos);
            prop_assert!(outcomes.len() <= 1);
            if !closed {
                prop_assert!(bytes.ends_with(&delivered));
                if found(&outcomes).is_none() && (eos || !outcomes.is_empty()) {
                    prop_assert_eq!(&delivered, &bytes);
                }
            }
        }
    }
}
