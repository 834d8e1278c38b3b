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

# The end-to-end suite on one Envoy (ENVOY_BIN, or the default in .venv),
# with a hard limit so a wedged run fails instead of hanging CI. Arguments
# go to the test binaries (the matrix's --skip list).
e2e() {
    timeout -k 30 1500 bash -c "$(declare -f native_cargo load_toolchain_env die); TOOLCHAIN_ENV='$TOOLCHAIN_ENV'; native_cargo test --locked -p integration-tests -- $*"
}

# Slow tests whose subject does not depend on the Envoy version, run on the
# default Envoy only (every other test runs on every version): the label-set
# cap under thousands of claimed workloads and the sanitising of hostile
# claims (our pure rules and Envoy's tag regexes, which these versions share).
ONE_VERSION_TESTS=(
    thousands_of_claimed_workloads_stay_within_the_cap
    no_claim_makes_a_metric_family_and_every_request_is_counted_somewhere
)
matrix_skips() {
    local name
    for name in "${ONE_VERSION_TESTS[@]}"; do printf -- '--skip %s ' "$name"; done
}

if [ -n "${ENVOY_BIN:-}" ]; then
    step "end-to-end tests on ENVOY_BIN=$ENVOY_BIN (real .wasm, real mTLS)"
    e2e || die "end-to-end tests failed on $ENVOY_BIN (exit $?); each failing test prints its Envoys' logs above"
    info "the version matrix ($ENVOY_MATRIX_VERSIONS) and the docker-compose test (the official Envoy image) are not run: ENVOY_BIN selects one Envoy"
else
    step "end-to-end tests (real Envoy $ENVOY_VERSION, real .wasm, real mTLS)"
    e2e || die "end-to-end tests failed on Envoy $ENVOY_VERSION (exit $?); each failing test prints its Envoys' logs above"
    # docker-compose under a real Docker engine (a hard limit on top of its
    # steps' own).
    timeout -k 60 2400 "$ROOT/scripts/compose-test.sh" || die "the docker-compose test failed (exit $?; output above)"
    results=("Envoy $ENVOY_VERSION: passed")
    failed=""
    for version in $ENVOY_MATRIX_VERSIONS; do
        step "end-to-end tests on Envoy $version"
        info "run on Envoy $ENVOY_VERSION only (their subject does not depend on the version): ${ONE_VERSION_TESTS[*]}"
        started=$SECONDS
        if ENVOY_BIN="$(envoy_matrix_venv "$version")/bin/envoy" e2e $(matrix_skips); then
            results+=("Envoy $version: passed ($((SECONDS - started)) s)")
        else
            results+=("Envoy $version: FAILED ($((SECONDS - started)) s)")
            failed="$failed $version"
        fi
    done
    step "end-to-end suite by Envoy version"
    for line in "${results[@]}"; do info "$line"; done
    [ -z "$failed" ] || die "end-to-end tests failed on Envoy$failed (their logs are above)"
fi

step "all tests passed"
