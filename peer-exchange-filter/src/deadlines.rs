//! Exchange deadlines of the connections that hold a partial prefix, shared
//! by the VM's root context (which ticks) and its connections.

use std::collections::BTreeMap;

/// The root context's tick: it flushes the VM's counters (every
/// `flush_ms`) and, with an exchange timeout, closes stalled connections —
/// a tenth of the timeout (at least 10 ms) keeps the close within ~10% of
/// the configured time.
pub fn tick_period_ms(exchange_timeout_ms: u64, flush_ms: u32) -> u32 {
    if exchange_timeout_ms == 0 {
        return flush_ms;
    }
    u32::try_from(exchange_timeout_ms / 10).unwrap_or(u32::MAX).clamp(10.min(flush_ms), flush_ms)
}

/// Deadlines by connection context id.
#[derive(Debug, Default)]
pub struct Deadlines {
    by_context: BTreeMap<u32, u64>,
}

impl Deadlines {
    /// Arms (or keeps) the deadline of a connection.
    pub fn arm(&mut self, context_id: u32, deadline_ms: u64) {
        self.by_context.entry(context_id).or_insert(deadline_ms);
    }

    pub fn disarm(&mut self, context_id: u32) {
        self.by_context.remove(&context_id);
    }

    /// Removes and returns the connections whose deadline has passed.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<u32> {
        let expired: Vec<u32> =
            self.by_context.iter().filter(|(_, deadline)| **deadline <= now_ms).map(|(id, _)| *id).collect();
        for id in &expired {
            self.by_context.remove(id);
        }
        expired
    }

    pub fn is_empty(&self) -> bool {
        self.by_context.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_deadlines_are_taken_once() {
        let mut d = Deadlines::default();
        d.arm(1, 100);
        d.arm(2, 200);
        d.arm(1, 999); // re-arming keeps the first deadline
        assert!(d.take_expired(99).is_empty());
        assert_eq!(d.take_expired(150), vec![1]);
        assert_eq!(d.take_expired(150), Vec::<u32>::new());
        d.disarm(2);
        assert!(d.is_empty());
    }

    #[test]
    fn the_tick_serves_the_timeout_and_the_counters() {
        assert_eq!(tick_period_ms(0, 100), 100, "no timeout: the counters' period");
        assert_eq!(tick_period_ms(1500, 100), 100, "a long timeout: never slower than the counters");
        assert_eq!(tick_period_ms(500, 100), 50);
        assert_eq!(tick_period_ms(20, 100), 10, "at least 10 ms");
        assert_eq!(tick_period_ms(u64::MAX, 100), 100);
    }
}
