//! A fact read from the host at most once, and only when asked.

/// A value read at most once, on first use. `std::cell::OnceCell` would
/// read the same, but its `get_or_init` carries a panic path for reentrant
/// initialisation (which a filter must not have, even unreachable) and cost
/// the exchange's module ~740 bytes more than this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOnce<T>(Option<T>);

impl<T> ReadOnce<T> {
    /// Not read yet.
    pub const fn new() -> ReadOnce<T> {
        ReadOnce(None)
    }

    /// The value, read with `read` the first time.
    pub fn get_or_read(&mut self, read: impl FnOnce() -> T) -> &T {
        self.0.get_or_insert_with(read)
    }

    /// The value if already read.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<T> From<T> for ReadOnce<T> {
    /// Already known.
    fn from(value: T) -> ReadOnce<T> {
        ReadOnce(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_once_and_only_when_asked() {
        let mut reads = 0;
        let mut fact: ReadOnce<Option<&str>> = ReadOnce::new();
        assert_eq!(fact.get(), None);
        for _ in 0..3 {
            let value = *fact.get_or_read(|| {
                reads += 1;
                None
            });
            assert_eq!(value, None);
        }
        assert_eq!((reads, fact.get()), (1, Some(&None)));
        assert_eq!(ReadOnce::from(7).get(), Some(&7));
    }
}
