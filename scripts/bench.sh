#!/usr/bin/env bash
# Benchmark: the same two Envoys with no filter, Envoy's native
# set_filter_state, an empty wasm filter (the platform's floor) and our
# filters, rounds alternating in one run; prints throughput and each Envoy's
# CPU time per request / connection (see integration-tests/src/bin/bench/).
#   ./scripts/bench.sh [rounds] [seconds per run]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build-wasm.sh"
step "load generators"
apt_install wrk nghttp2-client
command -v wrk >/dev/null 2>&1 || die "wrk is not available after installing it"
command -v h2load >/dev/null 2>&1 || die "h2load is not available after installing nghttp2-client"
info "$(wrk --version 2>&1 | head -n1), $(h2load --version 2>&1 | head -n1)"
step "benchmark (release build of the harness)"
native_cargo run --locked --release --quiet -p integration-tests --bin bench -- "$@"
