#!/usr/bin/env bash
# rustfmt's check, then clippy for the wasm target, with the workspace lints
# that deny unwrap, expect, panic and unchecked indexing in the filter code,
# then for the native crates; warnings are errors.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

load_toolchain_env
cd "$ROOT"

# rustup's clippy, installed if missing (with a time limit).
rustup_clippy_ready() {
    cargo clippy --version >/dev/null 2>&1 && return 0
    command -v rustup >/dev/null 2>&1 || return 1
    info "installing rustup's clippy component (at most 90 s)"
    timeout -k 5 90 rustup component add clippy >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1
}

# rustup's rustfmt, installed if missing (with a time limit).
rustup_fmt_ready() {
    cargo fmt --version >/dev/null 2>&1 && return 0
    command -v rustup >/dev/null 2>&1 || return 1
    info "installing rustup's rustfmt component (at most 90 s)"
    timeout -k 5 90 rustup component add rustfmt >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1
}

step "rustfmt check (rustfmt.toml)"
rustup_fmt_ready || die "rustfmt is not installed and could not be added (rustup component add rustfmt)"
cargo fmt --all -- --check || die "unformatted files above: run cargo fmt --all"
info "rustfmt: clean"

step "clippy for wasm32-unknown-unknown ($WASM_ROUTE toolchain)"
export WASM_TARGET_DIR="$ROOT/target/wasm-$WASM_ROUTE-clippy"
pkgs=(-p proto -p filter-common -p wasm-host -p alpn-decision -p alpn-filter -p peer-exchange -p peer-exchange-filter)
if [ "$WASM_BUILD_STD" = 1 ]; then
    wasm_cargo "$WASM_CLIPPY" clippy --release --locked "${pkgs[@]}" -- -D warnings
else
    rustup_clippy_ready || die "clippy is not installed for rustup's toolchain and could not be added"
    wasm_cargo cargo clippy --release --locked "${pkgs[@]}" -- -D warnings
fi
info "clippy: clean"

step "clippy for the native crates (harness, tests, unit tests)"
unset WASM_TARGET_DIR
if rustup_clippy_ready; then
    cargo clippy --locked --workspace --all-targets -- -D warnings
elif [ -n "${WASM_CLIPPY:-}" ]; then
    env PATH="/usr/bin:/bin:$PATH" CARGO="$WASM_CARGO" RUSTC="$WASM_RUSTC" \
        "$WASM_CLIPPY" clippy --locked --workspace --all-targets -- -D warnings
else
    die "no clippy for the native crates (neither rustup's nor Debian's)"
fi
info "clippy: clean"

# The dynamic-module measurement (bench/dynamic-module: its own workspace,
# not shipped, not in the default build) must keep building.
step "the dynamic-module measurement crate (built and linted, not shipped)"
dm_manifest="$ROOT/bench/dynamic-module/Cargo.toml"
dm_target="$ROOT/target/dynamic-module"
if rustup_clippy_ready; then
    cargo fmt --manifest-path "$dm_manifest" -- --check || die "unformatted files above: run cargo fmt --manifest-path bench/dynamic-module/Cargo.toml"
    cargo clippy --locked --manifest-path "$dm_manifest" --target-dir "$dm_target" -- -D warnings
else
    env PATH="/usr/bin:/bin:$PATH" CARGO="$WASM_CARGO" RUSTC="$WASM_RUSTC" \
        "$WASM_CLIPPY" clippy --locked --manifest-path "$dm_manifest" --target-dir "$dm_target" -- -D warnings
fi
info "bench/dynamic-module: clean"
