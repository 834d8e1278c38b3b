//! The one place where the filters meet Envoy: the hostcalls they make and
//! the entry points Envoy calls ([`plugin`]).
//!
//! The filters do not use the proxy-wasm SDK. Its wrappers (`set_property`,
//! `get_buffer`, `set_downstream_data`, `close_downstream`, ...) `panic!` on
//! any host status they do not expect, and a panic kills the VM — and with it
//! every later connection on the listener. So the calls the filters need are
//! declared here against the raw ABI, every status is returned as a
//! [`HostError`] (callers decide what a failure means; nothing here
//! panics), and [`plugin`] exports only the callbacks a filter names. The
//! SDK's vocabulary is kept (`Action`, `on_request_headers`, ...).

mod abi;
pub mod clusters;
mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
pub mod host;
mod logging;
mod metrics;
pub mod plugin;
mod properties;
mod streams;
mod vm;

pub use clusters::{by_cluster, read_cluster_metadata, start_cluster_refresh};
pub use error::{HostError, HostResult};
pub use logging::init_logging;
pub use metrics::{add_to_metric, define_metric, record_metric, Counters};
pub use properties::{
    declare_property, get_property, get_property_string, get_property_u64, set_envoy_filter_state, set_property,
    PropertyType, Span,
};
pub use streams::{
    close, get_buffer, get_headers, now_millis, plugin_configuration, remove_header, replace_header, set_buffer,
    set_effective_context, set_tick_period_millis, Direction, HeaderMap, HeaderPairs,
};
pub use vm::PerVm;
