#!/usr/bin/env python3
"""Writes a .wasm module as an OCI image layout in Istio's wasm image format.

The image is the one deploy/wasm.Dockerfile builds (Istio's "compat"
variant): one gzip'd tar layer holding `plugin.wasm`, an OCI image config
whose rootfs lists the layer's uncompressed digest, and a manifest; the
layout's index.json names it with a tag. Timestamps and owners are fixed, so
the same module always gives the same digests.

usage: oci-image.py <module.wasm> <layout-dir> <tag>
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    module_path, layout, tag = sys.argv[1:]
    with open(module_path, "rb") as f:
        module = f.read()
    if module[:4] != b"\0asm":
        sys.exit(f"{module_path} is not a wasm module")

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o644, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    tar_data = tar_bytes.getvalue()
    layer_data = gzip.compress(tar_data, mtime=0)

    os.makedirs(layout, exist_ok=True)
    layer_digest, layer_size = blob(layout, layer_data)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_data).hexdigest()]},
        "history": [{"created_by": "COPY plugin.wasm ./"}],
    }
    config_digest, config_size = blob(layout, canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = blob(layout, canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical(index))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    print(f"{layout}: {tag} {manifest_digest} (plugin.wasm {len(module)} bytes)")


if __name__ == "__main__":
    main()
