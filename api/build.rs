//! Compiles the protobuf definitions with protox (pure Rust), so building
//! Shoal needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/shoal/v1/objects.proto",
        "proto/shoal/v1/control.proto",
        "proto/shoal/v1/dispatcher.proto",
        "proto/shoal/v1/raft.proto",
        "proto/shoal/v1/ca.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Deterministic maps: equal objects encode to equal bytes.
        .btree_map(".")
        // The Raft log carries StoreBatch through openraft's serde bounds.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
