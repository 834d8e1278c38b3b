//! Properties (Envoy's attributes: `xds.*`, `connection.*`, `upstream.*`,
//! and our `wasm.*` filter state) and the foreign functions that declare
//! properties and set Envoy's own filter state.

use std::ptr::{null, null_mut};

use proto::prost::Message;
use proto::wasm::{DeclarePropertyArguments, LifeSpan, WasmType};

use crate::abi::{self, owned_bytes};
use crate::error::{status, HostError, HostResult};

/// Envoy's property path encoding: the segments joined by NUL bytes.
fn encode_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

/// Reads a property (`xds.cluster_metadata`, `upstream.tls_version`, ...).
/// `Ok(None)` when Envoy does not have it.
pub fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let path = encode_path(path);
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: plain ABI call with valid pointers to locals.
    let raw = unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status(raw) {
        // SAFETY: the call returned Ok.
        Ok(()) => Ok(unsafe { owned_bytes(data, size) }),
        Err(HostError::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a property as UTF-8 text; `None` when absent or not text.
pub fn get_property_string(path: &[&str]) -> HostResult<Option<String>> {
    Ok(get_property(path)?.and_then(|bytes| String::from_utf8(bytes).ok()))
}

/// Reads an integer property (Envoy sends 8 little-endian bytes:
/// `response.code`, `request.duration` in ns, sizes); `None` when absent,
/// unreadable or not 8 bytes.
pub fn get_property_u64(path: &[&str]) -> Option<u64> {
    let bytes = get_property(path).ok().flatten()?;
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(bytes.as_slice()).ok()?))
}

/// Sets filter state `wasm.<name>` (Envoy adds the `wasm.` prefix).
pub fn set_property(name: &str, value: &[u8]) -> HostResult<()> {
    let path = encode_path(&[name]);
    // SAFETY: plain ABI call with valid pointers.
    status(unsafe { abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Calls one of Envoy's foreign functions.
pub(crate) fn call_foreign_function(name: &str, arguments: &[u8]) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let args_ptr = if arguments.is_empty() { null() } else { arguments.as_ptr() };
    // SAFETY: plain ABI call with valid pointers.
    let raw = unsafe {
        abi::proxy_call_foreign_function(name.as_ptr(), name.len(), args_ptr, arguments.len(), &mut data, &mut size)
    };
    status(raw)?;
    // SAFETY: the call returned Ok.
    Ok(unsafe { owned_bytes(data, size) })
}

/// How a declared property is typed, for [`declare_property`].
#[derive(Clone, Copy, Debug)]
pub enum PropertyType {
    String,
    /// A serialized `google.protobuf.Struct` (printed as JSON by access logs).
    Struct,
}

/// How long a property set with [`set_property`] lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// One HTTP request (an HTTP filter's peer: each request has its own).
    Request,
    /// The downstream connection (a network filter's peer).
    Connection,
}

/// Declares `wasm.<name>` with a type and a lifespan, so that access logs
/// (`%FILTER_STATE(wasm.<name>)%`) can print it.
pub fn declare_property(name: &str, ty: PropertyType, span: Span) -> HostResult<()> {
    let (wasm_type, schema) = match ty {
        PropertyType::String => (WasmType::String, Vec::new()),
        PropertyType::Struct => (WasmType::Protobuf, proto::STRUCT_TYPE_URL.as_bytes().to_vec()),
    };
    let args = DeclarePropertyArguments {
        name: name.to_string(),
        readonly: false,
        r#type: wasm_type as i32,
        schema,
        span: match span {
            Span::Request => LifeSpan::DownstreamRequest,
            Span::Connection => LifeSpan::DownstreamConnection,
        } as i32,
    };
    call_foreign_function("declare_property", &args.encode_to_vec()).map(|_| ())
}

/// Sets one of Envoy's own filter-state objects for the current request.
pub fn set_envoy_filter_state(path: &str, value: &str) -> HostResult<()> {
    call_foreign_function("set_envoy_filter_state", &set_envoy_filter_state_arguments(path, value)).map(|_| ())
}

/// `SetEnvoyFilterStateArguments { path, value, span: DownstreamRequest }`
/// in protobuf, written with prost's field encoders straight from the
/// borrowed strings (this runs per request in alpn-filter; the generated
/// message would copy both into Strings first). A request span: a
/// connection span would stick to the downstream connection and silently
/// win over later requests' values.
fn set_envoy_filter_state_arguments(path: &str, value: &str) -> Vec<u8> {
    use proto::prost::encoding::{encode_key, encode_varint, WireType};
    let mut out = Vec::with_capacity(path.len() + value.len() + 10);
    for (tag, text) in [(1, path), (2, value)] {
        if text.is_empty() {
            continue; // proto3 leaves default values out
        }
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(text.len() as u64, &mut out);
        out.extend_from_slice(text.as_bytes());
    }
    encode_key(3, WireType::Varint, &mut out);
    encode_varint(LifeSpan::DownstreamRequest as u64, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_arguments_are_what_prost_would_encode() {
        use proto::wasm::SetEnvoyFilterStateArguments;
        for (path, value) in [
            ("envoy.network.application_protocols", "istio-http/1.1,istio,http/1.1".to_string()),
            ("", String::new()),
            ("p", "x".repeat(127)),
            ("p", "x".repeat(128)),
            ("p", "x".repeat(70_000)),
        ] {
            let expected = SetEnvoyFilterStateArguments {
                path: path.to_string(),
                value: value.clone(),
                span: LifeSpan::DownstreamRequest as i32,
            }
            .encode_to_vec();
            assert_eq!(set_envoy_filter_state_arguments(path, &value), expected, "{path} / {} bytes", value.len());
        }
    }

    #[test]
    fn property_paths_are_nul_separated() {
        assert_eq!(encode_path(&["xds", "cluster_name"]), b"xds\0cluster_name".to_vec());
        assert_eq!(encode_path(&["upstream_peer"]), b"upstream_peer".to_vec());
        assert!(encode_path(&[]).is_empty());
    }
}
