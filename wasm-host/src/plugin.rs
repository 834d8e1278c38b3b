//! Our own proxy-wasm entry points for an HTTP filter that acts on request
//! headers only (alpn-filter), instead of the SDK's dispatcher.
//!
//! Envoy enters the VM only for the callbacks a module exports
//! (proxy-wasm-cpp-host skips a missing `proxy_on_*`). The SDK exports all
//! of them, so an SDK filter is entered on every request for context
//! create, request headers, response headers, each response body chunk,
//! log, done and delete — whatever it does there. That is most of what the
//! benchmark's "empty wasm filter" floor costs. A module made with
//! [`request_headers_filter!`] exports only context create, configure,
//! request headers and delete: three VM entries per request.
//!
//! Several plugins (root contexts, each with its own configuration) can
//! share one VM, so each stream is tied to its root when it is created and
//! forgotten when it is deleted.

use std::collections::HashMap;
use std::rc::Rc;

/// A filter that does its work in `on_request_headers`.
pub trait RequestHeadersFilter: Sized + 'static {
    /// Builds the filter of one plugin from its configuration; `None`
    /// refuses the configuration (the filter has logged why).
    fn configure(configuration_size: usize) -> Option<Self>;

    /// Runs for each request; the request's stream is the current context.
    fn on_request_headers(&self);
}

/// Which filter (root) each context belongs to.
pub struct Registry<F> {
    roots: HashMap<u32, Rc<F>>,
    streams: HashMap<u32, Rc<F>>,
}

impl<F> Default for Registry<F> {
    fn default() -> Self {
        Registry { roots: HashMap::new(), streams: HashMap::new() }
    }
}

impl<F> Registry<F> {
    /// `proxy_on_context_create`: a stream (`root_id != 0`) takes its root's
    /// filter; a root is known once configured.
    pub fn create(&mut self, context_id: u32, root_id: u32) {
        if root_id == 0 {
            return;
        }
        if let Some(filter) = self.roots.get(&root_id) {
            self.streams.insert(context_id, Rc::clone(filter));
        }
    }

    /// A root's configured filter; a new configuration replaces the old one
    /// for streams created after it.
    pub fn configured(&mut self, root_id: u32, filter: F) {
        self.roots.insert(root_id, Rc::new(filter));
    }

    /// The filter of a stream, if its root was configured.
    pub fn filter(&self, context_id: u32) -> Option<Rc<F>> {
        self.streams.get(&context_id).cloned()
    }

    /// `proxy_on_delete`: a stream or a root is gone.
    pub fn delete(&mut self, context_id: u32) {
        if self.streams.remove(&context_id).is_none() {
            self.roots.remove(&context_id);
        }
    }

    /// Streams currently known (for tests).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

/// `proxy_on_memory_allocate`: the host asks for room for data it returns
/// (property values, buffers). Released by the hostcall wrappers, which take
/// it back as a `Vec` of exactly this size.
pub fn allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

/// Exports the proxy-wasm entry points of a [`RequestHeadersFilter`]. Use
/// once, in the filter's cdylib, on wasm32 only.
#[macro_export]
macro_rules! request_headers_filter {
    ($filter:ty) => {
        thread_local! {
            static REGISTRY: ::std::cell::RefCell<$crate::plugin::Registry<$filter>> =
                ::std::cell::RefCell::new($crate::plugin::Registry::default());
        }

        #[no_mangle]
        pub extern "C" fn proxy_abi_version_0_2_1() {}

        #[no_mangle]
        pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
            $crate::plugin::allocate(size)
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_context_create(context_id: u32, root_id: u32) {
            REGISTRY.with(|r| {
                if let Ok(mut r) = r.try_borrow_mut() {
                    r.create(context_id, root_id)
                }
            })
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_configure(root_id: u32, configuration_size: usize) -> u32 {
            // Built outside the registry's borrow: reading the configuration
            // is a hostcall, and the host may call back to allocate.
            let Some(filter) = <$filter as $crate::plugin::RequestHeadersFilter>::configure(configuration_size) else {
                return 0;
            };
            REGISTRY.with(|r| match r.try_borrow_mut() {
                Ok(mut r) => {
                    r.configured(root_id, filter);
                    1
                }
                Err(_) => 0,
            })
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: u32, _end_of_stream: u32) -> u32 {
            let filter = REGISTRY.with(|r| r.try_borrow().ok().and_then(|r| r.filter(context_id)));
            if let Some(filter) = filter {
                <$filter as $crate::plugin::RequestHeadersFilter>::on_request_headers(&filter);
            }
            0 // Continue
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_delete(context_id: u32) {
            REGISTRY.with(|r| {
                if let Ok(mut r) = r.try_borrow_mut() {
                    r.delete(context_id)
                }
            })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_follow_their_root_and_are_forgotten_on_delete() {
        let mut registry: Registry<&str> = Registry::default();
        registry.create(1, 0); // a root, not configured yet
        registry.create(2, 1);
        assert!(registry.filter(2).is_none(), "a stream of an unconfigured root has no filter");
        registry.configured(1, "first");
        registry.create(3, 0);
        registry.configured(3, "second");
        registry.create(4, 1);
        registry.create(5, 3);
        assert_eq!(registry.filter(4).as_deref(), Some(&"first"));
        assert_eq!(registry.filter(5).as_deref(), Some(&"second"));
        // Reconfiguring a root changes later streams, not live ones.
        registry.configured(1, "first, again");
        registry.create(6, 1);
        assert_eq!(registry.filter(4).as_deref(), Some(&"first"));
        assert_eq!(registry.filter(6).as_deref(), Some(&"first, again"));
        for id in [2, 4, 5, 6] {
            registry.delete(id);
        }
        assert_eq!(registry.streams(), 0, "no per-request state outlives its request");
        // A deleted root keeps serving the streams it already has.
        registry.create(7, 3);
        registry.delete(3);
        assert_eq!(registry.filter(7).as_deref(), Some(&"second"));
        registry.create(8, 3);
        assert!(registry.filter(8).is_none());
    }

    #[test]
    fn allocations_are_vecs_of_the_asked_size() {
        let pointer = allocate(16);
        assert!(!pointer.is_null());
        // SAFETY: `allocate` made exactly this Vec.
        drop(unsafe { Vec::from_raw_parts(pointer, 0, 16) });
    }
}
