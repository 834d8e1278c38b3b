//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("protos");
    let files = [
        root.join("envoy/wasm/foreign.proto"),
        root.join("envoy/config/core/v3/metadata.proto"),
        root.join("envoy/config/core/v3/build_version.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new()
        // Ordered maps: decoding and re-encoding stays deterministic.
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
