//! Counters: the `counters!` macro that declares a filter's list, and
//! [`Counters`], defined once per VM and incremented by index.

use std::cell::RefCell;

use crate::abi;
use crate::error::status;

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
    static DEFINED: RefCell<Vec<(String, u32)>> = const { RefCell::new(Vec::new()) };
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

/// Declares a filter's counters once: an enum whose variants name them,
/// with `ALL` (the defining order), `name()` (the stat name after the
/// filter's prefix) and `index()` (the position in `ALL`, what
/// [`Counters::inc`] takes).
///
/// ```
/// wasm_host::counters! {
///     /// What the example counts.
///     pub enum Counter {
///         /// A peer was stored.
///         MetadataReceived => "metadata_received",
///         HeaderNotFound => "header_not_found",
///     }
/// }
/// assert_eq!(Counter::ALL.len(), 2);
/// assert_eq!(Counter::HeaderNotFound.name(), "header_not_found");
/// assert_eq!(Counter::HeaderNotFound.index(), 1);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $stat:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every counter, in defining order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stat name, after the filter's prefix.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $stat,)+
                }
            }

            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// A new VM (the fake host's install): nothing defined yet.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn forget_defined() {
    DEFINED.with(|d| d.borrow_mut().clear());
}

/// A fixed list of counters, defined once per VM and incremented by index.
/// A counter that could not be defined is skipped (and logged once).
pub struct Counters {
    ids: Vec<Option<u32>>,
}

impl Counters {
    /// Defines `<prefix><name>` for every name, in order.
    pub fn define<'a>(prefix: &str, names: impl IntoIterator<Item = &'a str>) -> Counters {
        let ids = names
            .into_iter()
            .map(|name| {
                let full = format!("{prefix}{name}");
                if let Some(id) =
                    DEFINED.with(|d| d.try_borrow().ok()?.iter().find(|(n, _)| *n == full).map(|(_, id)| *id))
                {
                    return Some(id);
                }
                let mut id: u32 = 0;
                // SAFETY: plain ABI call with valid pointers.
                let raw = unsafe { abi::proxy_define_metric(METRIC_COUNTER, full.as_ptr(), full.len(), &mut id) };
                match status(raw) {
                    Ok(()) => {
                        DEFINED.with(|d| d.try_borrow_mut().map(|mut d| d.push((full, id))).ok());
                        Some(id)
                    }
                    Err(e) => {
                        log::warn!("cannot define counter {full}: {e}");
                        None
                    }
                }
            })
            .collect();
        Counters { ids }
    }

    /// Adds one to the counter at `index` (the position in the defining list).
    pub fn inc(&self, index: usize) {
        if let Some(Some(id)) = self.ids.get(index) {
            // SAFETY: plain ABI call. A failure only loses one count.
            let _ = unsafe { abi::proxy_increment_metric(*id, 1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeHost};

    #[test]
    fn a_name_is_defined_once_per_vm_and_every_plugin_counts_into_it() {
        fake::install(FakeHost::default());
        let first = Counters::define("vm_test.", ["a", "b"]);
        let reconfigured = Counters::define("vm_test.", ["b", "a", "c"]);
        first.inc(0);
        reconfigured.inc(1);
        reconfigured.inc(2);
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
