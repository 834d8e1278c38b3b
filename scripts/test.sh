#!/usr/bin/env bash
# The test command: sets everything up, builds the filters, runs clippy for
# the wasm target, the native unit tests, and the end-to-end tests against
# real Envoys. .ci/run calls exactly this.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh" --tests
"$ROOT/scripts/build-wasm.sh"
"$ROOT/scripts/lint.sh"

load_toolchain_env

step "unit tests (native: codecs, state machines, decisions, configs)"
native_cargo test --locked --workspace --exclude integration-tests

# A smoke of every fuzz target (a fixed number of executions from the
# stored corpus): a broken target or a crash on known inputs fails CI.
"$ROOT/scripts/fuzz.sh" --runs 20000

step "end-to-end tests (real Envoy $ENVOY_VERSION, real .wasm, real mTLS)"
# A hard limit, so a wedged run fails instead of hanging CI.
timeout -k 30 1500 bash -c "$(declare -f native_cargo load_toolchain_env die); TOOLCHAIN_ENV='$TOOLCHAIN_ENV'; native_cargo test --locked -p integration-tests" ||
    die "end-to-end tests failed (exit $?); each failing test prints its Envoys' logs above"

step "all tests passed"
