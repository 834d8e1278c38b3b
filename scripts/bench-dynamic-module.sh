#!/usr/bin/env bash
# The dynamic-module measurement (docs/dynamic-modules.md): builds
# bench/dynamic-module (a native shared library for Envoy 1.40's
# dynamic-module ABI; not shipped, not in the default build or the test
# command), then runs only the benchmark's dynamic-module scenarios, where
# it sits beside the empty wasm filter and alpn-filter in one run.
#   ./scripts/bench-dynamic-module.sh [rounds] [seconds per run]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
load_toolchain_env
step "the dynamic module (native, release)"
target="$ROOT/target/dynamic-module"
native_cargo build --locked --release --manifest-path "$ROOT/bench/dynamic-module/Cargo.toml" --target-dir "$target" ||
    die "bench/dynamic-module does not build"
module="$target/release/libbench_dynamic_module.so"
[ -f "$module" ] || die "$module was not built"
info "$module ($(stat -c %s "$module") bytes)"
BENCH_DYNAMIC_MODULE="$target/release" BENCH_ONLY=dynamic "$ROOT/scripts/bench.sh" "$@"
