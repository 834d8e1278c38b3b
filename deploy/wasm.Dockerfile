# Istio's wasm image format ("compat" variant): an image with one layer that
# holds the module as /plugin.wasm. Build one image per filter:
#
#   docker build -f deploy/wasm.Dockerfile --build-arg MODULE=dist/peer_exchange_filter.wasm \
#       -t registry.example.com/mesh/peer-exchange-filter:0.1.0 .
#   docker build -f deploy/wasm.Dockerfile --build-arg MODULE=dist/alpn_filter.wasm \
#       -t registry.example.com/mesh/alpn-filter:0.1.0 .
#
# Without Docker, scripts/package-oci.sh writes the same image as an OCI image
# layout (dist/oci/), ready for `skopeo copy` / `crane push` / `oras cp`.
FROM scratch
ARG MODULE
COPY ${MODULE} ./plugin.wasm
