#!/usr/bin/env bash
# Benchmark: throughput of the same Envoys with and without the filters, in
# one run, as ratios (see integration-tests/src/bin/bench.rs).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build-wasm.sh"
step "benchmark (release build of the load generator)"
cargo run --locked --release --quiet -p integration-tests --bin bench -- "$@"
