//! State a module keeps for its VM's lifetime.
//!
//! In Envoy a module instance is one VM and runs on one thread, so a
//! `thread_local` already lives exactly as long as the VM. Natively, the fake
//! host's `install` starts a new VM on the same thread: a [`PerVm`] value
//! made under an earlier VM is found at its default, so no test resets
//! module state by hand.

use std::cell::{Cell, RefCell};

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static VM: Cell<u64> = const { Cell::new(0) };
}

/// The running VM (always the first one inside Envoy).
#[inline]
fn current() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        0
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        VM.with(Cell::get)
    }
}

/// The fake host's `install`: a new VM from here on.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn start_new_vm() {
    VM.with(|vm| vm.set(vm.get().wrapping_add(1)));
}

/// A value kept for the VM's lifetime; declare it in a `thread_local!`.
pub struct PerVm<T> {
    vm: Cell<u64>,
    value: RefCell<T>,
}

impl<T: Default> PerVm<T> {
    pub const fn new(value: T) -> PerVm<T> {
        PerVm { vm: Cell::new(0), value: RefCell::new(value) }
    }

    /// Runs `f` on the value; `None` if it is already borrowed (a reentrant
    /// call, which the filters never make).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut value = self.value.try_borrow_mut().ok()?;
        let vm = current();
        if self.vm.get() != vm {
            *value = T::default();
            self.vm.set(vm);
        }
        Some(f(&mut value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static KEPT: PerVm<Vec<u32>> = const { PerVm::new(Vec::new()) };
    }

    #[test]
    fn a_value_lives_as_long_as_its_vm() {
        KEPT.with(|k| k.with(|v| v.push(1)));
        KEPT.with(|k| k.with(|v| v.push(2)));
        assert_eq!(KEPT.with(|k| k.with(|v| v.clone())), Some(vec![1, 2]));
        start_new_vm();
        assert_eq!(KEPT.with(|k| k.with(|v| v.clone())), Some(vec![]));
    }
}
