//! `mesh-doctor`: reads Envoy configurations and names every mistake in how
//! the exchange filters are deployed that it can see without traffic —
//! where, why it matters, and the fix. docs/troubleshooting.md lists every
//! finding by its id.
//!
//! - [`input`]: reading a bootstrap (YAML or JSON), an admin `/config_dump`
//!   (a file, or fetched from a live admin address), or `istioctl
//!   proxy-config all -o json` output;
//! - [`model`]: the configuration reduced to what the checks read;
//! - [`checks`]: the rules;
//! - [`finding`]: what is reported.

// The configurations are read as serde_json Values, whose `value["key"]`
// yields Null for anything missing and never panics; the rest of the
// workspace's no-panic lints hold.
#![allow(clippy::indexing_slicing)]

pub mod checks;
pub mod finding;
pub mod input;
pub mod model;

pub use checks::{check, Options};
pub use finding::{Finding, Severity, IDS};
pub use model::Proxy;

#[cfg(test)]
mod tests;
