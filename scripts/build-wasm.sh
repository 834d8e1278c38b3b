#!/usr/bin/env bash
# Builds both filters as release .wasm into dist/ and prints their sizes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

load_toolchain_env
step "building the filters for wasm32-unknown-unknown ($WASM_ROUTE toolchain)"
(cd "$ROOT" && wasm_cargo "$WASM_CARGO" build --release --locked -p alpn-filter -p peer-exchange-filter -p empty-filter)
mkdir -p "$DIST_DIR"
# empty_filter.wasm is the benchmark's floor (bench/empty-filter), not shipped.
for name in alpn_filter peer_exchange_filter empty_filter; do
    cp "$ROOT/target/wasm-$WASM_ROUTE/wasm32-unknown-unknown/release/$name.wasm" "$DIST_DIR/$name.wasm"
    info "$(printf '%-26s %8d bytes' "dist/$name.wasm" "$(stat -c %s "$DIST_DIR/$name.wasm")")"
done
