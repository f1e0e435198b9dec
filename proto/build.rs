//! Compiles the .proto files with protox (pure Rust), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/raft.proto", "proto/node.proto", "proto/device.proto", "proto/realtime.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Messages that carry key material print without it (`Debug` by hand in lib.rs).
    tonic_prost_build::configure()
        .skip_debug([".berqenas.node.v1.DataKey", ".berqenas.node.v1.ClusterBackupKey"])
        .compile_fds(fds)?;
    Ok(())
}
