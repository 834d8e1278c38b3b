//! Counters: the `counters!` macro that declares a filter's list, and
//! [`Counters`], defined once per VM and incremented by index.

use crate::abi;
use crate::error::status;

/// proxy-wasm `MetricType::Counter`.
const METRIC_COUNTER: u32 = 0;

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
                let mut id: u32 = 0;
                // SAFETY: plain ABI call with valid pointers.
                let raw = unsafe { abi::proxy_define_metric(METRIC_COUNTER, full.as_ptr(), full.len(), &mut id) };
                match status(raw) {
                    Ok(()) => Some(id),
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
