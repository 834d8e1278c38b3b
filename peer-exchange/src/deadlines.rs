//! Exchange deadlines of the connections that hold a partial prefix, shared
//! by the VM's root context (which ticks) and its connections.

use std::collections::HashMap;

/// Deadlines by connection context id.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// A hash map: the module already carries one (a `BTreeMap<u32, _>`
    /// would be another few KB of code for the same job).
    by_context: HashMap<u32, u64>,
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
}
