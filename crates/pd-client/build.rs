//! Compiles the `.proto` subset in `proto/` with `protox` (a pure-Rust protobuf
//! compiler), so building this crate needs no system `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let files = ["proto/pdpb.proto", "proto/metapb.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // The server side is compiled too: the crate's tests run an in-process PD.
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
