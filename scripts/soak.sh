#!/usr/bin/env bash
# Soak: 500 concurrent churning connections (TCP through the exchange, HTTP
# through alpn-filter) for [minutes] (default 30); prints each Envoy's RSS
# and the counters every minute, then RSS growth, errors and whether every
# byte came back (see integration-tests/src/bin/soak.rs). Not part of CI.
#   ./scripts/soak.sh [minutes]
#   ./scripts/soak.sh reconfig [updates]   # listeners and clusters replaced under traffic
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build-wasm.sh"
load_toolchain_env
step "soak (release build of the harness)"
# The run holds 500+ sockets per process and more inside each Envoy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
native_cargo run --locked --release --quiet -p integration-tests --bin soak -- "$@"
