#!/usr/bin/env bash
# Clippy for the wasm target, with the workspace lints that deny unwrap,
# expect, panic and unchecked indexing in the filter code; warnings are errors.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

load_toolchain_env
step "clippy for wasm32-unknown-unknown ($WASM_ROUTE toolchain)"
cd "$ROOT"
export WASM_TARGET_DIR="$ROOT/target/wasm-$WASM_ROUTE-clippy"
pkgs=(-p proto -p wasm-host -p alpn-filter -p peer-exchange-filter)
if [ "$WASM_BUILD_STD" = 1 ]; then
    wasm_cargo "$WASM_CLIPPY" clippy --release --locked "${pkgs[@]}" -- -D warnings
else
    wasm_cargo cargo clippy --release --locked "${pkgs[@]}" -- -D warnings
fi
info "clippy: clean"

step "clippy for the native crates (harness, tests, unit tests)"
unset WASM_TARGET_DIR
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --locked --workspace --all-targets -- -D warnings
else
    env PATH="/usr/bin:/bin:$PATH" CARGO="$WASM_CARGO" RUSTC="$WASM_RUSTC" \
        "$WASM_CLIPPY" clippy --locked --workspace --all-targets -- -D warnings
fi
info "clippy: clean"
