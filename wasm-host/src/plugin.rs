//! Our own proxy-wasm entry points, instead of the SDK's dispatcher.
//!
//! Envoy enters the VM only for the callbacks a module exports
//! (proxy-wasm-cpp-host skips a missing `proxy_on_*`). The SDK exports all
//! of them, so an SDK filter is entered for every callback of every stream
//! whatever it does there — for an HTTP request: context create, request
//! headers, response headers, each body chunk, log, done, delete; for a
//! connection: context create, new connection, each data chunk, both
//! closes, log, done, delete. A module made with [`plugin_exports!`]
//! exports context create, configure and delete, plus only the callbacks
//! it names. Measured, those extra entries are cheap: a filter whose one
//! callback does nothing costs what the SDK's empty filter costs, so the
//! floor is Envoy creating and deleting a wasm context per stream
//! (docs/performance.md). The reason to own the entry points is the SDK's
//! hostcalls, which `panic!` on statuses they do not expect (see the crate
//! docs), and its dispatcher's code size.
//!
//! Several plugins (root contexts, each with its own configuration) can
//! share one VM, so each stream is made by its root's [`Plugin`] when it is
//! created, and dropped when it is deleted. A stream is held in an
//! `Rc<RefCell<_>>`: a callback runs without the registry borrowed, so a
//! hostcall that makes Envoy call back into the VM (closing a connection)
//! finds the registry free.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::thread::LocalKey;

/// What a callback tells Envoy (proxy-wasm `Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// One configured plugin (a root context) and the streams it makes.
pub trait Plugin: Sized + 'static {
    type Stream: Stream + 'static;

    /// Builds the plugin from its configuration; `None` refuses it (the
    /// plugin has logged why).
    fn configure(configuration_size: usize) -> Option<Self>;

    /// A new connection or request of this plugin.
    fn stream(plugin: &Rc<Self>, context_id: u32) -> Self::Stream;

    /// The root's timer (`set_tick_period_millis`), if `tick` is exported.
    fn on_tick(&self) {}
}

/// What a stream does. Each method answers the callback of the same name,
/// and is only ever called when [`plugin_exports!`] names it.
pub trait Stream {
    fn on_request_headers(&mut self) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self) -> Action {
        Action::Continue
    }
    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_upstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    /// A request's log phase, before its deletion: Envoy's final headers,
    /// trailers and sizes are still readable (at deletion they are gone).
    fn on_log(&mut self) {}
    /// The stream is gone (always delivered; for a connection, right after
    /// the downstream close, which is why no close callback is exported).
    fn on_delete(&mut self) {}
}

/// Which plugin each root is, and each live stream.
pub struct Registry<P: Plugin> {
    roots: HashMap<u32, Rc<P>>,
    streams: HashMap<u32, Rc<RefCell<P::Stream>>>,
}

impl<P: Plugin> Default for Registry<P> {
    fn default() -> Self {
        Registry { roots: HashMap::new(), streams: HashMap::new() }
    }
}

impl<P: Plugin> Registry<P> {
    pub fn root(&self, root_id: u32) -> Option<Rc<P>> {
        self.roots.get(&root_id).cloned()
    }

    /// A root's configured plugin; a new configuration replaces the old one
    /// for streams created after it.
    pub fn configured(&mut self, root_id: u32, plugin: P) {
        self.roots.insert(root_id, Rc::new(plugin));
    }

    pub fn add_stream(&mut self, context_id: u32, stream: P::Stream) {
        self.streams.insert(context_id, Rc::new(RefCell::new(stream)));
    }

    pub fn stream(&self, context_id: u32) -> Option<Rc<RefCell<P::Stream>>> {
        self.streams.get(&context_id).cloned()
    }

    /// A stream or a root is gone; the stream, if it was one, is returned
    /// so that it can be told outside the registry's borrow.
    pub fn remove(&mut self, context_id: u32) -> Option<Rc<RefCell<P::Stream>>> {
        let stream = self.streams.remove(&context_id);
        if stream.is_none() {
            self.roots.remove(&context_id);
        }
        stream
    }

    /// Streams currently alive (for tests).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

/// The registry of a module, as [`plugin_exports!`] declares it.
pub type Registered<P> = LocalKey<RefCell<Registry<P>>>;

/// `proxy_on_context_create`: a stream of a configured root gets its state.
pub fn create<P: Plugin>(registry: &'static Registered<P>, context_id: u32, root_id: u32) {
    if root_id == 0 {
        return; // a root: known once configured
    }
    let Some(plugin) = registry.with(|r| r.try_borrow().ok().and_then(|r| r.root(root_id))) else {
        return;
    };
    let stream = P::stream(&plugin, context_id);
    registry.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.add_stream(context_id, stream);
        }
    });
}

/// `proxy_on_configure`; the plugin is built outside the registry's borrow
/// (reading the configuration is a hostcall).
pub fn configure<P: Plugin>(registry: &'static Registered<P>, root_id: u32, configuration_size: usize) -> bool {
    let Some(plugin) = P::configure(configuration_size) else {
        return false;
    };
    registry.with(|r| match r.try_borrow_mut() {
        Ok(mut r) => {
            r.configured(root_id, plugin);
            true
        }
        Err(_) => false,
    })
}

/// A stream callback: runs with the registry free; a stream already in a
/// callback (re-entered through a hostcall) or unknown continues untouched.
pub fn on_stream<P: Plugin>(
    registry: &'static Registered<P>,
    context_id: u32,
    callback: impl FnOnce(&mut P::Stream) -> Action,
) -> u32 {
    let Some(stream) = registry.with(|r| r.try_borrow().ok().and_then(|r| r.stream(context_id))) else {
        return Action::Continue as u32;
    };
    let Ok(mut stream) = stream.try_borrow_mut() else {
        return Action::Continue as u32;
    };
    callback(&mut stream) as u32
}

/// `proxy_on_tick` of a root.
pub fn on_tick<P: Plugin>(registry: &'static Registered<P>, root_id: u32) {
    if let Some(plugin) = registry.with(|r| r.try_borrow().ok().and_then(|r| r.root(root_id))) {
        plugin.on_tick();
    }
}

/// `proxy_on_delete`.
pub fn delete<P: Plugin>(registry: &'static Registered<P>, context_id: u32) {
    let removed = registry.with(|r| r.try_borrow_mut().ok().and_then(|mut r| r.remove(context_id)));
    if let Some(stream) = removed {
        if let Ok(mut stream) = stream.try_borrow_mut() {
            stream.on_delete();
        }
    }
}

/// What every plugin does first when it configures: our logger at Envoy's
/// level, the host check (`filter` refuses to load on an Envoy lacking one
/// of `foreign_functions`), and the configuration bytes. `None` (with the
/// reason logged under `filter`'s name) refuses the configuration.
pub fn configuration(filter: &str, foreign_functions: &[&'static str], size: usize) -> Option<Vec<u8>> {
    crate::init_logging();
    if !crate::host::check_logged(filter, foreign_functions) {
        return None;
    }
    crate::plugin_configuration(size)
        .map_err(|e| log::error!("{filter}: cannot read the plugin configuration ({e}), refusing it"))
        .ok()
}

/// A configuration the filter cannot use, refused with its reason logged.
pub fn refuse<T>(filter: &str, parsed: Result<T, filter_common::ConfigError>) -> Option<T> {
    parsed.map_err(|e| log::error!("{filter}: invalid plugin configuration, refusing it: {e}")).ok()
}

/// `proxy_on_memory_allocate`: the host asks for room for data it returns
/// (property values, buffers). Taken back by the hostcall wrappers as a
/// `Vec` of exactly this size.
pub fn allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

/// Exports a [`Plugin`]'s proxy-wasm entry points: context create,
/// configure, delete and the memory allocator always; of `request_headers`,
/// `response_headers`, `downstream_data`,
/// `upstream_data`, `log` and `tick`, only those named (Envoy enters the VM
/// for an exported callback even when it does nothing). Use once, in the filter's cdylib, on wasm32 only.
#[macro_export]
macro_rules! plugin_exports {
    ($plugin:ty; $($callback:ident),* $(,)?) => {
        thread_local! {
            static REGISTRY: ::std::cell::RefCell<$crate::plugin::Registry<$plugin>> =
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
            $crate::plugin::create::<$plugin>(&REGISTRY, context_id, root_id)
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_configure(root_id: u32, configuration_size: usize) -> u32 {
            u32::from($crate::plugin::configure::<$plugin>(&REGISTRY, root_id, configuration_size))
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_delete(context_id: u32) {
            $crate::plugin::delete::<$plugin>(&REGISTRY, context_id)
        }

        $( $crate::__plugin_export!($plugin, $callback); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_export {
    ($plugin:ty, request_headers) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: u32, _end_of_stream: u32) -> u32 {
            use $crate::plugin::Stream as _;
            $crate::plugin::on_stream::<$plugin>(&REGISTRY, context_id, |s| s.on_request_headers())
        }
    };
    ($plugin:ty, response_headers) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: u32, _end_of_stream: u32) -> u32 {
            use $crate::plugin::Stream as _;
            $crate::plugin::on_stream::<$plugin>(&REGISTRY, context_id, |s| s.on_response_headers())
        }
    };
    ($plugin:ty, downstream_data) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_downstream_data(context_id: u32, data_size: usize, end_of_stream: u32) -> u32 {
            use $crate::plugin::Stream as _;
            $crate::plugin::on_stream::<$plugin>(&REGISTRY, context_id, |s| {
                s.on_downstream_data(data_size, end_of_stream != 0)
            })
        }
    };
    ($plugin:ty, upstream_data) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_upstream_data(context_id: u32, data_size: usize, end_of_stream: u32) -> u32 {
            use $crate::plugin::Stream as _;
            $crate::plugin::on_stream::<$plugin>(&REGISTRY, context_id, |s| {
                s.on_upstream_data(data_size, end_of_stream != 0)
            })
        }
    };
    ($plugin:ty, log) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_log(context_id: u32) {
            use $crate::plugin::Stream as _;
            $crate::plugin::on_stream::<$plugin>(&REGISTRY, context_id, |s| {
                s.on_log();
                $crate::plugin::Action::Continue
            });
        }
    };
    ($plugin:ty, tick) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_tick(root_id: u32) {
            $crate::plugin::on_tick::<$plugin>(&REGISTRY, root_id)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin whose streams record what happened to them.
    struct Named(&'static str);
    struct Seen {
        plugin: &'static str,
        log: Rc<RefCell<Vec<String>>>,
    }

    thread_local! {
        static LOG: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
        static TEST_REGISTRY: RefCell<Registry<Named>> = RefCell::new(Registry::default());
    }

    impl Plugin for Named {
        type Stream = Seen;
        fn configure(_size: usize) -> Option<Self> {
            None // roots are configured with `Registry::configured` here
        }
        fn stream(plugin: &Rc<Self>, context_id: u32) -> Seen {
            let log = LOG.with(Rc::clone);
            log.borrow_mut().push(format!("create {context_id} of {}", plugin.0));
            Seen { plugin: plugin.0, log }
        }
    }

    impl Stream for Seen {
        fn on_request_headers(&mut self) -> Action {
            self.log.borrow_mut().push(format!("headers of {}", self.plugin));
            // Re-entering this stream (as a hostcall could) is refused
            // without panicking; the registry itself is free.
            assert_eq!(on_stream::<Named>(&TEST_REGISTRY, 2, |s| s.on_request_headers()), 0);
            Action::Pause
        }
        fn on_delete(&mut self) {
            self.log.borrow_mut().push(format!("delete of {}", self.plugin));
        }
    }

    #[test]
    fn streams_belong_to_their_root_and_end_with_delete() {
        let registry = &TEST_REGISTRY;
        create::<Named>(registry, 1, 0);
        create::<Named>(registry, 9, 1); // the root is not configured yet: no stream
        registry.with_borrow_mut(|r| r.configured(1, Named("first")));
        create::<Named>(registry, 3, 0);
        registry.with_borrow_mut(|r| r.configured(3, Named("second")));
        create::<Named>(registry, 2, 1);
        create::<Named>(registry, 4, 3);
        assert_eq!(on_stream::<Named>(registry, 2, |s| s.on_request_headers()), Action::Pause as u32);
        assert_eq!(on_stream::<Named>(registry, 9, |s| s.on_request_headers()), 0, "unknown: continue");
        delete::<Named>(registry, 2);
        delete::<Named>(registry, 4);
        delete::<Named>(registry, 9);
        assert_eq!(registry.with_borrow(Registry::streams), 0, "no per-stream state outlives its stream");
        // A deleted root's plugin makes no more streams.
        delete::<Named>(registry, 3);
        create::<Named>(registry, 5, 3);
        assert_eq!(registry.with_borrow(Registry::streams), 0);
        let log = LOG.with(|l| l.borrow().clone());
        assert_eq!(
            log,
            ["create 2 of first", "create 4 of second", "headers of first", "delete of first", "delete of second"]
        );
    }

    #[test]
    fn allocations_are_vecs_of_the_asked_size() {
        let pointer = allocate(16);
        assert!(!pointer.is_null());
        // SAFETY: `allocate` made exactly this Vec.
        drop(unsafe { Vec::from_raw_parts(pointer, 0, 16) });
    }
}
