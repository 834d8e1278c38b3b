//! The one place where the filters meet Envoy: the hostcalls they make and
//! the entry points Envoy calls ([`plugin`]).
//!
//! The filters do not use the proxy-wasm SDK. Its wrappers (`set_property`,
//! `get_buffer`, `set_downstream_data`, `close_downstream`, ...) `panic!` on
//! any host status they do not expect, and a panic kills the VM — and with it
//! every later connection on the listener; and its dispatcher exports every
//! callback, so Envoy enters the VM for all of them on every stream. So the
//! calls the filters need are declared here against the raw ABI, every status
//! is returned as a [`HostError`] (callers decide what a failure means;
//! nothing here panics), and [`plugin`] exports only the callbacks a filter
//! names.

pub mod clusters;
pub mod host;
pub mod json;
pub mod markers;
pub mod plugin;

use std::fmt;
use std::ptr::{null, null_mut};

use proto::prost::Message;
use proto::wasm::{DeclarePropertyArguments, LifeSpan, WasmType};

/// A plugin configuration (or metadata) error, the one shape both filters
/// refuse a configuration with: the field (empty when the whole input is at
/// fault) and the reason. Shown as `field: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError { field: field.into(), reason: reason.to_string() }
    }

    /// An input that is not JSON at all.
    pub fn invalid_json(e: impl fmt::Display) -> Self {
        ConfigError::new("", format!("invalid JSON: {e}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// A proxy-wasm status other than `Ok`, as the host returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    pub const NOT_FOUND: HostError = HostError(1);
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => "status",
        };
        write!(f, "{name}({})", self.0)
    }
}

pub type HostResult<T> = Result<T, HostError>;

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

mod abi {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
        pub fn proxy_call_foreign_function(
            function_name_data: *const u8,
            function_name_size: usize,
            arguments_data: *const u8,
            arguments_size: usize,
            results_data: *mut *mut u8,
            results_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
        pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    }
}

fn status(raw: u32) -> HostResult<()> {
    if raw == 0 {
        Ok(())
    } else {
        Err(HostError(raw))
    }
}

/// Takes ownership of a buffer the host allocated through the SDK's
/// `proxy_on_memory_allocate` export.
///
/// # Safety
/// `data`/`size` must come from a hostcall that just returned Ok.
unsafe fn owned_bytes(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        // SAFETY: the host allocated exactly `size` bytes with the SDK allocator.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

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

/// `answer` for the current stream's cluster, remembered by the cluster's
/// name in `clusters` (see [`clusters`]). With remembering off, or no
/// readable name, `answer` runs and no name is read (or kept).
pub fn by_cluster<V: Clone>(clusters: &std::cell::RefCell<clusters::ByCluster<V>>, answer: impl FnOnce() -> V) -> V {
    let enabled = clusters.try_borrow().is_ok_and(|c| c.enabled());
    if !enabled {
        return answer();
    }
    let Ok(Some(name)) = get_property_string(&["xds", "cluster_name"]) else {
        return answer();
    };
    if let Some(known) = clusters.try_borrow().ok().and_then(|c| c.get(&name)) {
        return known;
    }
    // Not borrowed while `answer` makes its hostcalls.
    let value = answer();
    if let Ok(mut clusters) = clusters.try_borrow_mut() {
        clusters.insert(name, value.clone());
    }
    value
}

/// Reads the stream's cluster metadata (`xds.cluster_metadata`; `None`
/// when Envoy has none) and reports a marker written where `filter` does
/// not read it (see [`markers`]): a warning naming the cluster and one
/// call of `count`, once per distinct metadata.
pub fn read_cluster_metadata(
    filter: &str,
    reports: &std::cell::RefCell<markers::Reports>,
    markers: &[markers::Marker],
    count: impl Fn(),
) -> Option<Vec<u8>> {
    let metadata = get_property(&["xds", "cluster_metadata"]).unwrap_or_else(|e| {
        log::warn!("{filter}: cannot read xds.cluster_metadata: {e}");
        None
    })?;
    let misplaced = reports.try_borrow_mut().map(|mut r| r.first_time(&metadata, markers)).unwrap_or_default();
    if !misplaced.is_empty() {
        let cluster = get_property_string(&["xds", "cluster_name"]).ok().flatten().unwrap_or_default();
        for found in &misplaced {
            log::warn!("{filter}: cluster {cluster}: {found}");
        }
        count();
    }
    Some(metadata)
}

/// Sets filter state `wasm.<name>` (Envoy adds the `wasm.` prefix).
pub fn set_property(name: &str, value: &[u8]) -> HostResult<()> {
    let path = encode_path(&[name]);
    // SAFETY: plain ABI call with valid pointers.
    status(unsafe { abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Calls one of Envoy's foreign functions.
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> HostResult<Option<Vec<u8>>> {
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
}

impl HeaderMap {
    fn raw(self) -> u32 {
        match self {
            HeaderMap::RequestHeaders => 0,
            HeaderMap::ResponseHeaders => 2,
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

/// Releases held downstream bytes without new data. Envoy only implements
/// this for the downstream (read) direction.
pub fn resume(direction: Direction) -> HostResult<()> {
    // SAFETY: plain ABI call.
    status(unsafe { abi::proxy_continue_stream(direction.raw()) })
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

/// Starts the root timer that empties a [`clusters::ByCluster`] every
/// `refresh_ms` (the plugin calls [`clusters::ByCluster::refresh`] from
/// its tick); nothing to start for 0. A plugin whose timer Envoy refuses
/// should refuse its configuration: a remembered cluster would never be
/// read again.
pub fn start_cluster_refresh(refresh_ms: u32) -> HostResult<()> {
    if refresh_ms == 0 {
        return Ok(());
    }
    set_tick_period_millis(refresh_ms)
}

/// Sets the root context's tick period (0 stops ticking).
pub fn set_tick_period_millis(period: u32) -> HostResult<()> {
    // SAFETY: plain ABI call.
    status(unsafe { abi::proxy_set_tick_period_milliseconds(period) })
}

/// proxy-wasm `BufferType::PluginConfiguration`.
const PLUGIN_CONFIGURATION_BUFFER: u32 = 7;
/// proxy-wasm `MetricType::Counter`.
const METRIC_COUNTER: u32 = 0;

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

/// Declares a filter's counters once: an enum whose variants name them,
/// with `ALL` (the defining order), `name()` (the stat name after the
/// filter's prefix) and `index()` (the position in `ALL`, what
/// [`Counters::inc`] takes).
///
/// ```
/// wasm_host::counters! {
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

/// A fixed list of counters, defined once per VM and incremented by index.
/// A counter that could not be defined is skipped (and logged once).
pub struct Counters {
    ids: Vec<Option<u32>>,
}

impl Counters {
    /// Defines `<prefix><name>` for every name, in order.
    pub fn define<'a>(prefix: &str, names: impl IntoIterator<Item = &'a str>) -> Counters {
        let ids = names
            .into_iter()
            .map(|name| {
                let full = format!("{prefix}{name}");
                let mut id: u32 = 0;
                // SAFETY: plain ABI call with valid pointers.
                let raw = unsafe { abi::proxy_define_metric(METRIC_COUNTER, full.as_ptr(), full.len(), &mut id) };
                match status(raw) {
                    Ok(()) => Some(id),
                    Err(e) => {
                        log::warn!("cannot define counter {full}: {e}");
                        None
                    }
                }
            })
            .collect();
        Counters { ids }
    }

    /// Adds one to the counter at `index` (the position in the defining list).
    pub fn inc(&self, index: usize) {
        if let Some(Some(id)) = self.ids.get(index) {
            // SAFETY: plain ABI call. A failure only loses one count.
            let _ = unsafe { abi::proxy_increment_metric(*id, 1) };
        }
    }
}

/// proxy-wasm log levels (`LogLevel`), as the log hostcalls number them.
mod log_level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// Our logger: the SDK's calls the log hostcall with `unwrap()`, so a
/// refused log line would panic and kill the VM. Ours drops it instead.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => log_level::TRACE,
            log::Level::Debug => log_level::DEBUG,
            log::Level::Info => log_level::INFO,
            log::Level::Warn => log_level::WARN,
            log::Level::Error => log_level::ERROR,
        };
        let message = record.args().to_string();
        // SAFETY: plain ABI call with a valid buffer. A failure loses the line.
        let _ = unsafe { abi::proxy_log(level, message.as_ptr(), message.len()) };
    }

    fn flush(&self) {}
}

/// Installs our logger at Envoy's current wasm log level, so debug lines
/// are not even formatted unless Envoy runs with debug logging.
pub fn init_logging() {
    let mut level: u32 = log_level::INFO;
    // SAFETY: plain ABI call with a valid pointer to a local.
    if unsafe { abi::proxy_get_log_level(&mut level) } != 0 {
        level = log_level::INFO;
    }
    let filter = match level {
        log_level::TRACE => log::LevelFilter::Trace,
        log_level::DEBUG => log::LevelFilter::Debug,
        log_level::INFO => log::LevelFilter::Info,
        log_level::WARN => log::LevelFilter::Warn,
        log_level::ERROR => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    };
    // Already installed on a reconfigure: only the level changes.
    if log::set_logger(&LOGGER).is_ok() {
        // A panic should never happen (clippy denies the usual causes); if
        // one does, its message reaches Envoy's log before the VM aborts.
        std::panic::set_hook(Box::new(|info| log::error!("panic in the wasm filter: {info}")));
    }
    log::set_max_level(filter);
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
