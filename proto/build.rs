//! Compiles every `proto/brine/v1/*.proto` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto/brine/v1");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    let descriptors = protox::compile(&files, ["proto"])?;
    // The same descriptors, encoded, for gRPC server reflection: generic clients discover the
    // services without the .proto files.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("brine_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // No generated `connect` helpers: clients build their own TLS channel, and
    // `MinionLinkService.Connect` would clash with one.
    tonic_prost_build::configure()
        .build_transport(false)
        // Small stream buffers: a master holds a stream per host (src/codec.rs).
        .codec_path("crate::codec::CompactCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
