//! A recording fake of Envoy's side of the proxy-wasm ABI, for native unit
//! tests of the glue (the code between Envoy and the pure logic).
//!
//! Natively, [`crate::abi`] resolves to the functions in [`abi`] here
//! instead of the wasm imports, so every wrapper of this crate — and every
//! filter callback above them — runs unchanged against a [`FakeHost`]: one
//! per test thread, set up with [`install`] and inspected with [`with`].
//! It answers as Envoy does where the filters depend on it: a missing
//! property is `NotFound`; `set_buffer_bytes` replaces a range (start 0,
//! size 0 prepends); `replace_header_map_value` replaces every value;
//! foreign functions answer unparsable arguments with `BadArgument`, and an
//! unknown name with `NotFound`. Any call can be made to fail with a chosen
//! status ([`FakeHost::failing`]), and every call is recorded in order
//! ([`FakeHost::calls`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use proto::wasm::DeclarePropertyArguments;

/// proxy-wasm statuses the fake returns.
pub mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const INTERNAL_FAILURE: u32 = 10;
}

/// Buffer and map numbers, as the ABI numbers them.
pub const DOWNSTREAM_DATA: u32 = 2;
pub const UPSTREAM_DATA: u32 = 3;
pub const PLUGIN_CONFIGURATION: u32 = 7;
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const RESPONSE_TRAILERS: u32 = 3;

/// Envoy's side, as one test sets it up and then reads it back.
#[derive(Debug)]
pub struct FakeHost {
    /// Properties the filters read, by dotted path (`xds.cluster_name`).
    pub properties: HashMap<String, Vec<u8>>,
    /// Filter state the filters set with `set_property`, by key (`upstream_peer`).
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// `set_envoy_filter_state` calls: (path, value).
    pub envoy_filter_state: Vec<(String, String)>,
    /// `declare_property` calls, decoded.
    pub declared: Vec<DeclarePropertyArguments>,
    /// Foreign functions this Envoy has.
    pub foreign_functions: Vec<&'static str>,
    /// Buffers by type: network data both ways, the plugin configuration.
    pub buffers: HashMap<u32, Vec<u8>>,
    /// Header maps by type, in order, lowercase names.
    pub headers: HashMap<u32, Vec<(String, Vec<u8>)>>,
    /// Counters by id: (name, value); as in Envoy, a name defined twice has two ids.
    pub metrics: Vec<(String, i64)>,
    /// Log lines: (proxy-wasm level, message).
    pub logs: Vec<(u32, String)>,
    /// The log level `get_log_level` answers (default: debug).
    pub log_level: u32,
    pub now_nanos: u64,
    pub tick_period_ms: Option<u32>,
    pub effective_context: Option<u32>,
    /// `close_stream` calls, by stream type.
    pub closed: Vec<u32>,
    /// ABI functions (by name without `proxy_`, e.g. `set_buffer_bytes`)
    /// that fail with the given status.
    pub failing: HashMap<&'static str, u32>,
    /// Every call, in order: `get_property xds.cluster_name`, ...
    pub calls: Vec<String>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            properties: HashMap::new(),
            filter_state: BTreeMap::new(),
            envoy_filter_state: Vec::new(),
            declared: Vec::new(),
            foreign_functions: vec!["declare_property", "set_envoy_filter_state"],
            buffers: HashMap::new(),
            headers: HashMap::new(),
            metrics: Vec::new(),
            logs: Vec::new(),
            log_level: 1,
            now_nanos: 0,
            tick_period_ms: None,
            effective_context: None,
            closed: Vec::new(),
            failing: HashMap::new(),
            calls: Vec::new(),
        }
    }
}

impl FakeHost {
    /// Sets a property (dotted path).
    pub fn property(&mut self, path: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        self.properties.insert(path.to_string(), value.into());
        self
    }

    /// A counter's value by its full name (0 if never incremented; `None` if not defined).
    pub fn counter(&self, name: &str) -> Option<i64> {
        self.counters().get(name).copied()
    }

    /// Every counter's value by full name (the ids of one name are one stat).
    pub fn counters(&self) -> BTreeMap<String, i64> {
        let mut counters = BTreeMap::new();
        for (name, value) in &self.metrics {
            *counters.entry(name.clone()).or_insert(0) += value;
        }
        counters
    }

    /// The counters incremented at least once, by full name.
    pub fn counted(&self) -> BTreeMap<String, i64> {
        self.counters().into_iter().filter(|(_, v)| *v != 0).collect()
    }

    /// A header's values in a map.
    pub fn header(&self, map: u32, name: &str) -> Vec<Vec<u8>> {
        let pairs = self.headers.get(&map).map(Vec::as_slice).unwrap_or_default();
        pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }

    /// Log lines containing `text`.
    pub fn logged(&self, text: &str) -> Vec<&str> {
        self.logs.iter().filter(|(_, line)| line.contains(text)).map(|(_, line)| line.as_str()).collect()
    }

    /// Calls starting with `prefix`.
    pub fn called(&self, prefix: &str) -> Vec<&str> {
        self.calls.iter().filter(|c| c.starts_with(prefix)).map(String::as_str).collect()
    }

    fn fails(&self, call: &str) -> Option<u32> {
        self.failing.get(call).copied()
    }
}

pub mod abi;

pub use proto::metadata_bytes as metadata;

thread_local! {
    static HOST: RefCell<FakeHost> = RefCell::new(FakeHost::default());
}

/// Makes `host` this thread's Envoy, running a fresh VM (state the module
/// keeps per VM, such as its defined counters, starts over).
pub fn install(host: FakeHost) {
    HOST.with(|h| *h.borrow_mut() = host);
    crate::vm::start_new_vm();
}

/// Reads or changes this thread's Envoy (not from inside a hostcall).
pub fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Hands `bytes` back the way Envoy does: in memory the module allocated
/// (`proxy_on_memory_allocate`).
///
/// # Safety
/// The pointers must be valid for writes.
unsafe fn give(bytes: &[u8], data: *mut *mut u8, size: *mut usize) {
    let buffer = crate::plugin::allocate(bytes.len());
    // SAFETY: `allocate` returned room for `bytes.len()` bytes; the caller
    // vouches for `data` and `size`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer, bytes.len());
        *data = buffer;
        *size = bytes.len();
    }
}

/// # Safety
/// `ptr` must be valid for `len` bytes (or `len` 0).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the caller vouches for the range.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// The proxy-wasm pairs encoding of a header map.
fn encode_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Status codes, re-exported for tests that inject failures.
pub use status::{BAD_ARGUMENT, INTERNAL_FAILURE, NOT_FOUND};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, HeaderMap};

    #[test]
    fn the_wrappers_run_against_the_fake() {
        let mut host = FakeHost::default();
        host.property("xds.cluster_name", "web");
        host.buffers.insert(DOWNSTREAM_DATA, b"hello".to_vec());
        host.headers.insert(REQUEST_HEADERS, vec![(":path".into(), b"/".to_vec()), ("a".into(), b"1".to_vec())]);
        install(host);
        assert_eq!(crate::get_property_string(&["xds", "cluster_name"]), Ok(Some("web".into())));
        assert_eq!(crate::get_property(&["xds", "nothing"]), Ok(None));
        assert_eq!(crate::get_buffer(Direction::Downstream, 1, 3), Ok(b"ell".to_vec()));
        assert_eq!(crate::set_buffer(Direction::Downstream, 0, 0, b">"), Ok(()));
        assert_eq!(crate::set_buffer(Direction::Downstream, 0, 2, b""), Ok(()));
        let pairs = crate::get_headers(HeaderMap::RequestHeaders).unwrap();
        let read: Vec<(&[u8], &[u8])> = pairs.iter().collect();
        assert_eq!(read, [(b":path".as_slice(), b"/".as_slice()), (b"a", b"1")]);
        crate::replace_header(HeaderMap::RequestHeaders, "a", b"2").unwrap();
        crate::remove_header(HeaderMap::RequestHeaders, ":path").unwrap();
        crate::set_envoy_filter_state("envoy.network.application_protocols", "h2").unwrap();
        crate::set_property("upstream_peer", b"x").unwrap();
        filter_common::counters! {
            enum Counter {
                A => "a",
                B => "b",
            }
        }
        let counters = crate::Counters::<Counter>::define("p.");
        counters.inc(Counter::B);
        with(|h| {
            assert_eq!(h.buffers[&DOWNSTREAM_DATA], b"ello");
            assert_eq!(h.header(REQUEST_HEADERS, "a"), [b"2".to_vec()]);
            assert!(h.header(REQUEST_HEADERS, ":path").is_empty());
            assert_eq!(h.envoy_filter_state, [("envoy.network.application_protocols".into(), "h2".into())]);
            assert_eq!(h.filter_state["upstream_peer"], b"x");
            assert_eq!((h.counter("p.a"), h.counter("p.b")), (Some(0), Some(1)));
            assert_eq!(h.called("get_property"), ["get_property xds.cluster_name", "get_property xds.nothing"]);
        });
    }

    #[test]
    fn failures_and_missing_foreign_functions_are_what_envoy_returns() {
        let mut host = FakeHost::default();
        host.failing.insert("set_buffer_bytes", INTERNAL_FAILURE);
        host.foreign_functions = vec!["declare_property"];
        install(host);
        assert_eq!(crate::set_buffer(Direction::Upstream, 0, 0, b"x"), Err(crate::HostError(INTERNAL_FAILURE)));
        assert_eq!(
            crate::set_envoy_filter_state("p", "v"),
            Err(crate::HostError(NOT_FOUND)),
            "an Envoy without the function"
        );
        let verdict = crate::host::check(&["declare_property", "set_envoy_filter_state"]);
        assert_eq!(
            verdict,
            crate::host::Verdict::Missing { version: None, foreign_functions: vec!["set_envoy_filter_state"] }
        );
    }
}
