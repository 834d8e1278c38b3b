//! A filter's counter list, declared once: names and positions, no
//! hostcall (the host layer defines them in Envoy and increments them).

/// A counter list the `counters!` macro declares.
pub trait CounterSet: Copy + 'static {
    /// Every counter, in defining order.
    const ALL: &'static [Self];
    /// The stat name, after the filter's prefix.
    fn name(self) -> &'static str;
    /// Position in [`Self::ALL`].
    fn index(self) -> usize;
}

/// Declares a filter's counters once: an enum whose variants name them,
/// with `ALL` (the defining order), `name()` (the stat name after the
/// filter's prefix) and `index()` (the position in `ALL`), also as
/// [`CounterSet`], which a host's typed counter table takes.
///
/// ```
/// filter_common::counters! {
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

        impl $crate::counters::CounterSet for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn name(self) -> &'static str {
                $name::name(self)
            }
            fn index(self) -> usize {
                $name::index(self)
            }
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
