//! The current stream: a network connection's buffers (read, edit, close),
//! an HTTP stream's header maps, the plugin configuration buffer, the
//! clock and the root's timer, and acting on another context from a timer.

use std::ptr::null_mut;

use crate::abi::{self, owned_bytes};
use crate::error::{status, HostError, HostResult};

/// The two directions of a network filter (proxy-wasm `StreamType` / `BufferType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bytes read from the downstream connection (towards the upstream).
    Downstream,
    /// Bytes read from the upstream connection (towards the downstream).
    Upstream,
}

impl Direction {
    // StreamType and BufferType share these numbers for network streams;
    // 0 and 1 are the HTTP ones and silently do nothing on a network filter.
    fn raw(self) -> u32 {
        match self {
            Direction::Downstream => 2,
            Direction::Upstream => 3,
        }
    }
}

/// Length of the data buffer of one direction of a network stream, as given
/// to the callback (`data_size`), is passed in by the SDK; this reads bytes.
pub fn get_buffer(direction: Direction, start: usize, max_size: usize) -> HostResult<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: plain ABI call with valid pointers to locals.
    let raw = unsafe { abi::proxy_get_buffer_bytes(direction.raw(), start, max_size, &mut data, &mut size) };
    match status(raw) {
        // SAFETY: the call returned Ok.
        Ok(()) => Ok(unsafe { owned_bytes(data, size) }.unwrap_or_default()),
        Err(HostError::NOT_FOUND) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Replaces `size` bytes at `start` of the buffer with `value`
/// (`start = 0, size = 0` prepends; `value = []` removes).
pub fn set_buffer(direction: Direction, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
    // SAFETY: plain ABI call with valid pointers.
    status(unsafe { abi::proxy_set_buffer_bytes(direction.raw(), start, size, value.as_ptr(), value.len()) })
}

/// Closes one side of the current connection.
pub fn close(direction: Direction) -> HostResult<()> {
    // SAFETY: plain ABI call.
    status(unsafe { abi::proxy_close_stream(direction.raw()) })
}

/// An HTTP header map of the current stream (proxy-wasm `MapType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMap {
    RequestHeaders,
    ResponseHeaders,
    ResponseTrailers,
}

impl HeaderMap {
    fn raw(self) -> u32 {
        match self {
            HeaderMap::RequestHeaders => 0,
            HeaderMap::ResponseHeaders => 2,
            HeaderMap::ResponseTrailers => 3,
        }
    }
}

/// All headers of a map in one hostcall, in Envoy's order (names are
/// lowercase). Empty when the map is not available in this callback.
pub fn get_headers(map: HeaderMap) -> HostResult<HeaderPairs> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: plain ABI call with valid pointers to locals.
    let raw = unsafe { abi::proxy_get_header_map_pairs(map.raw(), &mut data, &mut size) };
    match status(raw) {
        // SAFETY: the call returned Ok.
        Ok(()) => Ok(HeaderPairs { bytes: unsafe { owned_bytes(data, size) }.unwrap_or_default() }),
        Err(HostError::NOT_FOUND) => Ok(HeaderPairs { bytes: Vec::new() }),
        Err(e) => Err(e),
    }
}

/// Sets a header, replacing every value it had (adds it if absent).
pub fn replace_header(map: HeaderMap, name: &str, value: &[u8]) -> HostResult<()> {
    // SAFETY: plain ABI call with valid pointers.
    status(unsafe {
        abi::proxy_replace_header_map_value(map.raw(), name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Removes every value of a header.
pub fn remove_header(map: HeaderMap, name: &str) -> HostResult<()> {
    // SAFETY: plain ABI call with valid pointers.
    status(unsafe { abi::proxy_remove_header_map_value(map.raw(), name.as_ptr(), name.len()) })
}

/// A header map as the host serialised it, read in place (no copy per
/// header): the proxy-wasm pairs encoding — a u32 count, a (name size,
/// value size) u32 pair per entry, then each name and value followed by a
/// NUL, all little-endian. Whatever does not fit that shape ends the list.
pub struct HeaderPairs {
    bytes: Vec<u8>,
}

impl HeaderPairs {
    /// (name, value) of each header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let bytes = self.bytes.as_slice();
        let u32_at = move |at: usize| -> Option<usize> {
            let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            Some(u32::from_le_bytes(b) as usize)
        };
        let count = u32_at(0).unwrap_or(0);
        // The sizes table must fit before the data starts.
        let data = count.checked_mul(8).and_then(|n| n.checked_add(4)).filter(|start| *start <= bytes.len());
        let count = if data.is_some() { count } else { 0 };
        let mut at = data.unwrap_or(0);
        (0..count).map_while(move |i| {
            let (name_len, value_len) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
            let name_end = at.checked_add(name_len)?;
            let value_start = name_end.checked_add(1)?;
            let value_end = value_start.checked_add(value_len)?;
            let pair = (bytes.get(at..name_end)?, bytes.get(value_start..value_end)?);
            at = value_end.saturating_add(1);
            Some(pair)
        })
    }
}

/// Makes later hostcalls act on another context (from `on_tick`).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: plain ABI call.
    status(unsafe { abi::proxy_set_effective_context(context_id) })
}

/// Host wall-clock time in milliseconds.
pub fn now_millis() -> HostResult<u64> {
    let mut nanos: u64 = 0;
    // SAFETY: plain ABI call with a valid pointer to a local.
    status(unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos / 1_000_000)
}

/// Sets the root context's tick period (0 stops ticking).
pub fn set_tick_period_millis(period: u32) -> HostResult<()> {
    // SAFETY: plain ABI call.
    status(unsafe { abi::proxy_set_tick_period_milliseconds(period) })
}

/// proxy-wasm `BufferType::PluginConfiguration`.
const PLUGIN_CONFIGURATION_BUFFER: u32 = 7;

/// The plugin configuration bytes (`size` as given to `on_configure`). A
/// host failure is an error, never an empty configuration (which would be
/// taken for "use the defaults").
pub fn plugin_configuration(size: usize) -> HostResult<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    // SAFETY: plain ABI call with valid pointers to locals.
    let raw = unsafe { abi::proxy_get_buffer_bytes(PLUGIN_CONFIGURATION_BUFFER, 0, size, &mut data, &mut len) };
    match status(raw) {
        // SAFETY: the call returned Ok.
        Ok(()) => Ok(unsafe { owned_bytes(data, len) }.unwrap_or_default()),
        // No configuration at all.
        Err(HostError::NOT_FOUND) if size == 0 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (entries.len() as u32).to_le_bytes().to_vec();
        for (k, v) in entries {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in entries {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn header_pairs_decode_and_truncation_never_panics() {
        let entries = [(":path", "/a"), ("x-envoy-peer-metadata", "Q0E="), ("empty", "")];
        let parse = |bytes: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
            HeaderPairs { bytes: bytes.to_vec() }.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
        };
        let bytes = pairs(&entries);
        let parsed = parse(&bytes);
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            entries.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        assert_eq!(parsed, expected);
        for cut in 0..bytes.len() {
            let partial = parse(&bytes[..cut]);
            assert!(partial.len() < entries.len() || cut + 1 == bytes.len(), "cut {cut}");
        }
        assert!(parse(&[0xff, 0xff, 0xff, 0xff]).is_empty());
    }
}
