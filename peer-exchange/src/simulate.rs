//! Envoy's side of the incoming half, simulated for tests and fuzzing: bytes
//! accumulate while the exchange holds them and are released (or stripped)
//! when it lets them through, as Envoy's buffer does.

use crate::exchange::{Exchange, Outcome, Step};
use crate::peers::Decoded;

/// What the application behind the filter received, and what happened.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Bytes passed on, in order.
    pub delivered: Vec<u8>,
    /// Every outcome the exchange reported.
    pub outcomes: Vec<Outcome>,
    /// The exchange asked for the connection to be closed.
    pub closed: bool,
    /// Bytes still held when the chunks ran out.
    pub held: Vec<u8>,
}

/// Feeds `chunks` (with end of stream on the last one if `end_at_last`)
/// through `exchange`; the clock reads the chunk's index.
pub fn deliver(
    exchange: &mut Exchange,
    chunks: &[&[u8]],
    end_at_last: bool,
    decode: &mut dyn FnMut(&[u8]) -> Decoded,
) -> Delivery {
    let mut out = Delivery::default();
    for (i, chunk) in chunks.iter().enumerate() {
        out.held.extend_from_slice(chunk);
        let end_of_stream = end_at_last && i + 1 == chunks.len();
        let snapshot = out.held.clone();
        let mut read = |start: usize, len: usize| snapshot.get(start..start.checked_add(len)?).map(<[u8]>::to_vec);
        let mut now = || i as u64;
        let (step, outcome) = exchange.on_incoming_data(out.held.len(), end_of_stream, &mut now, &mut read, decode);
        out.outcomes.extend(outcome);
        match step {
            Step::Hold => {}
            Step::Continue => out.delivered.append(&mut out.held),
            Step::Strip(n) => {
                out.held.drain(..n.min(out.held.len()));
                out.delivered.append(&mut out.held);
            }
            Step::Close => {
                out.closed = true;
                return out;
            }
        }
    }
    out
}
