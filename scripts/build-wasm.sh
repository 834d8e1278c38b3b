#!/usr/bin/env bash
# Builds both filters as release .wasm into dist/, shrinks them with
# binaryen's wasm-opt, and prints their sizes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

load_toolchain_env
step "building the filters for wasm32-unknown-unknown ($WASM_ROUTE toolchain)"
(cd "$ROOT" && wasm_cargo "$WASM_CARGO" build --release --locked -p alpn-filter -p peer-exchange-filter -p empty-filter)
apt_install binaryen
command -v wasm-opt >/dev/null 2>&1 || die "wasm-opt is not available after installing binaryen"
mkdir -p "$DIST_DIR"
# empty_filter.wasm is the benchmark's floor (bench/empty-filter), not shipped;
# it goes through the same wasm-opt pass so the floor stays comparable.
# The features are the ones rustc's wasm32 target emits (binaryen 108 would
# otherwise refuse them); -Oz: smallest code. A function with one caller is
# inlined only when under 100 bytes: -Oz otherwise folds whole call trees
# into functions of 26 KB, and V8 compiling those keeps ~6 MiB more of
# Envoy's heap per process (docs/performance.md, "Memory per proxy").
for name in alpn_filter peer_exchange_filter empty_filter; do
    wasm-opt -Oz --one-caller-inline-max-function-size=100 \
        --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue \
        "$ROOT/target/wasm-$WASM_ROUTE/wasm32-unknown-unknown/release/$name.wasm" -o "$DIST_DIR/$name.wasm" ||
        die "wasm-opt could not optimise $name.wasm"
    size="$(stat -c %s "$DIST_DIR/$name.wasm")"
    info "$(printf '%-26s %8d bytes' "dist/$name.wasm" "$size")"
    # The bound on what we ship: a size past it means something large came in.
    [ "$name" = empty_filter ] || [ "$size" -lt 294912 ] || die "dist/$name.wasm is $size bytes, over the 288 KiB bound"
done
