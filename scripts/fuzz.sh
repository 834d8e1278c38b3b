#!/usr/bin/env bash
# Fuzzes the filters' pure logic (fuzz/, cargo-fuzz with libFuzzer).
#   ./scripts/fuzz.sh [seconds per target]   the long run (default 60), two
#                                            targets at a time; new inputs go to
#                                            the git-ignored fuzz/corpus-local/
#   ./scripts/fuzz.sh --runs N               a smoke: N executions per target
#                                            from the stored corpus (test.sh)
#   ./scripts/fuzz.sh --merge                after a long run: adds to the stored
#                                            corpus the fewest local inputs that
#                                            reach code it does not (libFuzzer
#                                            -merge=1, edges only)
# A crash stops with the target's name; libFuzzer leaves the input in
# fuzz/artifacts/<target>/ (replay: cargo fuzz run <target> <file>).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
load_toolchain_env

seconds=60 runs="" merge=""
case "${1:-}" in
    --runs) runs="${2:?--runs needs a number}" ;;
    --merge) merge=1 ;;
    "") ;;
    *) seconds="$1" ;;
esac

step "cargo-fuzz"
if ! native_cargo fuzz --version >/dev/null 2>&1; then
    info "installing cargo-fuzz from crates.io (at most 300 s)"
    timeout -k 10 300 bash -c "$(declare -f native_cargo load_toolchain_env die); TOOLCHAIN_ENV='$TOOLCHAIN_ENV'; native_cargo install --locked cargo-fuzz" >/dev/null ||
        die "could not install cargo-fuzz (cargo install --locked cargo-fuzz)"
fi
info "$(native_cargo fuzz --version)"

# The fuzzed crates are the pure ones (filter-common, alpn-decision,
# peer-exchange), which have no unsafe code (all of it is in wasm-host, which
# no target links): no sanitizer (-s none), which lets the stable toolchain
# build libFuzzer's instrumentation with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
step "building the fuzz targets"
(cd fuzz && native_cargo fuzz build -s none) || die "the fuzz targets do not build"
mapfile -t targets < <(cd fuzz && native_cargo fuzz list)
[ "${#targets[@]}" -gt 0 ] || die "no fuzz targets found"

# One target: a writable corpus dir first (an absolute path: libFuzzer adds
# new inputs there), then the stored corpus, read-only.
fuzz_one() {
    local target="$1" work="$2"; shift 2
    mkdir -p "$work"
    (cd fuzz && native_cargo fuzz run -s none "$target" "$work" "corpus/$target" -- "$@") >"$work.log" 2>&1
}

summary() {
    local target="$1" log="$2"
    local done
    done=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n1 || true)
    info "$target: ${done:-$(grep -Eo '#[0-9]+.*exec/s: [0-9]+' "$log" | tail -n1)}"
}

if [ -n "$runs" ]; then
    step "fuzz smoke: $runs executions per target"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for target in "${targets[@]}"; do
        if ! fuzz_one "$target" "$tmp/$target" -runs="$runs"; then
            tail -n 40 "$tmp/$target.log"
            die "fuzz target $target failed (input kept in fuzz/artifacts/$target/)"
        fi
        summary "$target" "$tmp/$target.log"
    done
    exit 0
fi

if [ -n "$merge" ]; then
    step "adding fuzz/corpus-local's new coverage to the stored corpus"
    for target in "${targets[@]}"; do
        stored="$ROOT/fuzz/corpus/$target" merged="$ROOT/fuzz/corpus/$target.merged"
        # What is stored stays (the hand-made seeds among it); libFuzzer adds
        # only local inputs that reach something new.
        local_inputs="$ROOT/fuzz/corpus-local/$target"
        [ -d "$local_inputs" ] || { info "$target: no local corpus"; continue; }
        rm -rf "$merged" && cp -r "$stored" "$merged"
        (cd fuzz && native_cargo fuzz run -s none "$target" "$merged" "$local_inputs" -- -merge=1 -use_counters=0 -use_cmp=0 -use_value_profile=0) \
            >"$merged.log" 2>&1 || { tail -n 20 "$merged.log"; die "merging $target failed"; }
        info "$target: $(find "$stored" -type f | wc -l) stored -> $(find "$merged" -type f | wc -l)"
        rm -rf "$stored" "$merged.log" && mv "$merged" "$stored"
    done
    exit 0
fi

step "fuzzing ${#targets[@]} targets for $seconds s each, two at a time"
mkdir -p fuzz/corpus-local
status=0
pids=()
for target in "${targets[@]}"; do
    fuzz_one "$target" "$ROOT/fuzz/corpus-local/$target" -max_total_time="$seconds" &
    pids+=("$!:$target")
    if [ "${#pids[@]}" -ge 2 ]; then
        entry="${pids[0]}"; pids=("${pids[@]:1}")
        wait "${entry%%:*}" || { status=1; info "FAILED: ${entry#*:} (see fuzz/corpus-local/${entry#*:}.log)"; }
    fi
done
for entry in "${pids[@]}"; do
    wait "${entry%%:*}" || { status=1; info "FAILED: ${entry#*:} (see fuzz/corpus-local/${entry#*:}.log)"; }
done
step "results"
for target in "${targets[@]}"; do
    summary "$target" "fuzz/corpus-local/$target.log"
    info "  corpus: $(find "fuzz/corpus-local/$target" -type f | wc -l) new inputs, $(find "fuzz/corpus/$target" -type f | wc -l) stored"
done
[ "$status" = 0 ] || die "a fuzz target crashed; inputs in fuzz/artifacts/"
step "no crash"
