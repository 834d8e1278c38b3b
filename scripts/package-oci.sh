#!/usr/bin/env bash
# Builds the filters and writes each as an OCI image layout in Istio's wasm
# image format into dist/oci/<filter>/ (no Docker needed). Push with e.g.
#   skopeo copy oci:dist/oci/peer-exchange-filter:0.1.0 docker://registry.example.com/mesh/peer-exchange-filter:0.1.0
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build-wasm.sh"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
step "OCI image layouts (Istio wasm image format), tag $version"
for name in alpn-filter peer-exchange-filter; do
    rm -rf "$DIST_DIR/oci/$name"
    python3 "$ROOT/scripts/oci-image.py" "$DIST_DIR/${name//-/_}.wasm" "$DIST_DIR/oci/$name" "$version"
done
