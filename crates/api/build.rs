//! Compiles the etcd v3 protos in `proto/` with protox (pure Rust, no system
//! `protoc`) and generates prost messages plus tonic servers and clients.

const PROTO_DIR: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/mvccpb.proto",
    "proto/authpb.proto",
    "proto/etcdserverpb.proto",
    "proto/v3lockpb.proto",
    "proto/v3electionpb.proto",
    "proto/oxcdimportpb.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, [PROTO_DIR])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
