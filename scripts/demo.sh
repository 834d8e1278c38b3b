#!/usr/bin/env bash
# The main job: builds the filters, starts a server Envoy and a client Envoy
# locally with real backends, sends traffic through them, prints what each
# filter did, and stops everything.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build-wasm.sh"
step "running the two-Envoy demo"
native_cargo run --locked --quiet -p integration-tests --bin demo
