//! What every filter crate shares and no hostcall needs: the pure
//! foundation under the filters' logic crates (`alpn-decision`,
//! `peer-exchange`) and the host layer (`wasm-host`).
//!
//! - [`schema`]: configuration JSON read with serde_json as a strict
//!   schema, errors naming the field ([`ConfigError`]);
//! - [`bounded`]: the one cache shape (a map that starts over when full);
//! - [`counters`]: a filter's counter list (`counters!`);
//! - [`clusters`]: answers remembered by cluster name for a refresh period;
//! - [`ReadOnce`]: a fact read from the host at most once, when asked;
//! - [`istio`]: Istio's vocabulary — metadata namespaces and keys, and the
//!   places users misplace markers.

pub mod bounded;
pub mod clusters;
pub mod counters;
mod error;
pub mod istio;
mod read_once;
pub mod schema;

pub use error::ConfigError;
pub use read_once::ReadOnce;
