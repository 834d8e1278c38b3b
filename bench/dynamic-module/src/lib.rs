//! Measurement only, not shipped: what the same work costs as an Envoy
//! dynamic module (a native shared library with Envoy's C ABI) instead of
//! a wasm module. `filter_name` selects the filter:
//!
//! - `empty` (HTTP or network): every hook returns `Continue` — the
//!   dynamic-module floor, to set beside the empty wasm filter;
//! - `alpn` (HTTP): alpn-filter's decision on the same path — the route
//!   cluster's name, its `istio.alpn_override` and `istio.alpn.upstream_protocol`
//!   (remembered by cluster name per worker, as alpn-filter remembers
//!   them), and `envoy.network.application_protocols` set to Istio's list.
//!
//! Hooks run on Envoy's worker threads; nothing here is shared between
//! them but the configuration, which is read-only after it is made.

mod abi;
mod alpn;

use std::os::raw::{c_char, c_void};

use abi::{EnvoyPtr, ModuleBuffer, CONTINUE};

/// What a filter configuration runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Empty,
    Alpn,
}

/// A configuration: the filter it makes (never null: a pointer Envoy keeps).
struct Config {
    kind: Kind,
}

static EMPTY: Config = Config { kind: Kind::Empty };
static ALPN: Config = Config { kind: Kind::Alpn };

fn config_for(name: ModuleBuffer) -> *const Config {
    // SAFETY: Envoy passes a valid view of the filter's name for this call.
    let name = unsafe { std::slice::from_raw_parts(name.ptr, name.len) };
    match name {
        b"empty" => &EMPTY,
        b"alpn" => &ALPN,
        _ => std::ptr::null(),
    }
}

/// Our ABI version string. Envoy 1.40 compares it with its own and only
/// warns on a difference; ours names the header it was written from.
static ABI_VERSION: &[u8] = b"bench-dynamic-module (Envoy 1.40 abi.h)\0";

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

// ---- HTTP filter ----

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: EnvoyPtr,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: `filter` is one of our static configurations (filter_new).
    if unsafe { (*filter.cast::<Config>()).kind } == Kind::Alpn {
        alpn::on_request(filter_envoy);
    }
    CONTINUE
}

macro_rules! continue_hooks {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name($($arg: $ty),*) -> u32 {
                $(let _ = $arg;)*
                CONTINUE
            }
        )*
    };
}

macro_rules! void_hooks {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name($($arg: $ty),*) {
                $(let _ = $arg;)*
            }
        )*
    };
}

continue_hooks! {
    envoy_dynamic_module_on_http_filter_request_body(e: EnvoyPtr, f: *const c_void, end: bool);
    envoy_dynamic_module_on_http_filter_request_trailers(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_http_filter_response_headers(e: EnvoyPtr, f: *const c_void, end: bool);
    envoy_dynamic_module_on_http_filter_response_body(e: EnvoyPtr, f: *const c_void, end: bool);
    envoy_dynamic_module_on_http_filter_response_trailers(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_http_filter_local_reply(e: EnvoyPtr, f: *const c_void, code: u32);
    envoy_dynamic_module_on_network_filter_new_connection(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_network_filter_read(e: EnvoyPtr, f: *const c_void, len: usize, end: bool);
    envoy_dynamic_module_on_network_filter_write(e: EnvoyPtr, f: *const c_void, len: usize, end: bool);
}

void_hooks! {
    envoy_dynamic_module_on_http_filter_stream_complete(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_http_filter_destroy(f: *const c_void);
    envoy_dynamic_module_on_http_filter_scheduled(e: EnvoyPtr, f: *const c_void, id: u64);
    envoy_dynamic_module_on_http_filter_config_scheduled(e: EnvoyPtr, c: *const c_void, id: u64);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_http_filter_per_route_config_destroy(c: *const c_void);
    envoy_dynamic_module_on_network_filter_config_destroy(c: *const c_void);
    envoy_dynamic_module_on_network_filter_destroy(f: *const c_void);
    envoy_dynamic_module_on_network_filter_event(e: EnvoyPtr, f: *const c_void, event: u32);
    envoy_dynamic_module_on_network_filter_above_write_buffer_high_watermark(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_network_filter_below_write_buffer_low_watermark(e: EnvoyPtr, f: *const c_void);
    envoy_dynamic_module_on_network_filter_scheduled(e: EnvoyPtr, f: *const c_void, id: u64);
    envoy_dynamic_module_on_network_filter_config_scheduled(e: EnvoyPtr, c: *const c_void, id: u64);
}

// Callouts and streams this module never starts: Envoy resolves these hooks
// when it loads a configuration, so they must exist; none is ever called.
void_hooks! {
    envoy_dynamic_module_on_http_filter_http_callout_done();
    envoy_dynamic_module_on_http_filter_http_stream_headers();
    envoy_dynamic_module_on_http_filter_http_stream_data();
    envoy_dynamic_module_on_http_filter_http_stream_trailers();
    envoy_dynamic_module_on_http_filter_http_stream_complete();
    envoy_dynamic_module_on_http_filter_http_stream_reset();
    envoy_dynamic_module_on_http_filter_config_http_callout_done();
    envoy_dynamic_module_on_http_filter_config_http_stream_headers();
    envoy_dynamic_module_on_http_filter_config_http_stream_data();
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers();
    envoy_dynamic_module_on_http_filter_config_http_stream_complete();
    envoy_dynamic_module_on_http_filter_config_http_stream_reset();
    envoy_dynamic_module_on_network_filter_http_callout_done();
}

/// No per-route configuration (never asked for: no route sets one).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: ModuleBuffer,
    _config: ModuleBuffer,
) -> *const c_void {
    std::ptr::null()
}

// ---- Configurations and filters, both kinds made the same way ----

/// A configuration is one of our statics (by filter name; NULL refuses an
/// unknown name), and a filter is its configuration: no per-request or
/// per-connection allocation.
macro_rules! config_and_filter_hooks {
    ($($config_new:ident, $filter_new:ident;)*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $config_new(_config_envoy: EnvoyPtr, name: ModuleBuffer, _config: ModuleBuffer) -> *const c_void {
                config_for(name).cast()
            }

            #[no_mangle]
            pub extern "C" fn $filter_new(config: *const c_void, _filter_envoy: EnvoyPtr) -> *const c_void {
                config
            }
        )*
    };
}

config_and_filter_hooks! {
    envoy_dynamic_module_on_http_filter_config_new, envoy_dynamic_module_on_http_filter_new;
    envoy_dynamic_module_on_network_filter_config_new, envoy_dynamic_module_on_network_filter_new;
}
