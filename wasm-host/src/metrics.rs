//! Metrics: [`Counters`], a filter's counter list (declared with
//! `filter_common::counters!`) defined once per VM and incremented by name,
//! and the calls for metrics whose names the caller builds.

use filter_common::counters::CounterSet;

use crate::abi;
use crate::error::status;
use crate::vm::PerVm;

thread_local! {
    /// Every counter this VM has defined, by full name. Envoy's
    /// `defineMetric` hands out a new id, and keeps one more entry in the
    /// VM's metric map, on every call, even for a name it already has
    /// (`Context::defineMetric` in Envoy's `source/extensions/common/wasm/context.cc`);
    /// the map lives as long as the VM. A plugin configuration is replaced
    /// on every xDS update that touches its listener, so defining per
    /// configuration would grow the VM by every counter on every update.
    /// Each name is defined once per VM; later plugins reuse its id. (A
    /// list: read at configure time only, and a map type of its own would
    /// cost the module ~3 KB.)
    static DEFINED: PerVm<Vec<(String, u32)>> = const { PerVm::new(Vec::new()) };
}

/// proxy-wasm `MetricType::Counter`.
const METRIC_COUNTER: u32 = 0;
/// proxy-wasm `MetricType::Histogram`.
const METRIC_HISTOGRAM: u32 = 2;

/// A metric whose name the caller builds (labels in the name): defined by
/// the caller once per VM and name (see [`DEFINED`] for why), then
/// [`add_to_metric`] / [`record_metric`] by id.
pub fn define_metric(histogram: bool, name: &str) -> crate::HostResult<u32> {
    let kind = if histogram { METRIC_HISTOGRAM } else { METRIC_COUNTER };
    let mut id: u32 = 0;
    // SAFETY: plain ABI call with valid pointers.
    status(unsafe { abi::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `delta` to a counter. A failure only loses that count.
pub fn add_to_metric(id: u32, delta: u64) {
    // SAFETY: plain ABI call.
    let _ = unsafe { abi::proxy_increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX)) };
}

/// Records one value in a histogram. A failure only loses that value.
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain ABI call.
    let _ = unsafe { abi::proxy_record_metric(id, value) };
}

/// Defines `<prefix><name>` once per VM (not generic: one copy in the
/// module whatever the counter lists).
fn define_counter(prefix: &str, name: &str) -> Option<u32> {
    let full = format!("{prefix}{name}");
    if let Some(id) = DEFINED.with(|d| d.with(|d| d.iter().find(|(n, _)| *n == full).map(|(_, id)| *id))).flatten() {
        return Some(id);
    }
    let mut id: u32 = 0;
    // SAFETY: plain ABI call with valid pointers.
    let raw = unsafe { abi::proxy_define_metric(METRIC_COUNTER, full.as_ptr(), full.len(), &mut id) };
    match status(raw) {
        Ok(()) => {
            DEFINED.with(|d| d.with(|d| d.push((full, id))));
            Some(id)
        }
        Err(e) => {
            log::warn!("cannot define counter {full}: {e}");
            None
        }
    }
}

/// A filter's counter list, defined once per VM and incremented by the
/// list's own variants. A counter that could not be defined is skipped (and
/// logged once).
pub struct Counters<C> {
    ids: Vec<Option<u32>>,
    list: std::marker::PhantomData<C>,
}

impl<C: CounterSet> Counters<C> {
    /// Defines `<prefix><name>` for every counter of the list, in order.
    pub fn define(prefix: &str) -> Counters<C> {
        let ids = C::ALL.iter().map(|counter| define_counter(prefix, counter.name())).collect();
        Counters { ids, list: std::marker::PhantomData }
    }

    /// Adds one to `counter`.
    pub fn inc(&self, counter: C) {
        if let Some(Some(id)) = self.ids.get(counter.index()) {
            // SAFETY: plain ABI call. A failure only loses one count.
            let _ = unsafe { abi::proxy_increment_metric(*id, 1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeHost};

    filter_common::counters! {
        enum First {
            A => "a",
            B => "b",
        }
    }

    filter_common::counters! {
        enum Reconfigured {
            B => "b",
            A => "a",
            C => "c",
        }
    }

    #[test]
    fn a_name_is_defined_once_per_vm_and_every_plugin_counts_into_it() {
        fake::install(FakeHost::default());
        let first = Counters::<First>::define("vm_test.");
        let reconfigured = Counters::<Reconfigured>::define("vm_test.");
        first.inc(First::A);
        reconfigured.inc(Reconfigured::A);
        reconfigured.inc(Reconfigured::C);
        fake::with(|h| {
            assert_eq!(
                h.called("define_metric"),
                ["define_metric vm_test.a", "define_metric vm_test.b", "define_metric vm_test.c"]
            );
            assert_eq!(
                (h.counter("vm_test.a"), h.counter("vm_test.b"), h.counter("vm_test.c")),
                (Some(2), Some(0), Some(1))
            );
        });
    }
}
