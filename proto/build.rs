//! Generates the gRPC code with protox (a pure-Rust protobuf compiler), so no system `protoc`
//! is needed to build gatemend.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["gatemend/v1/link.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
