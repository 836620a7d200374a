//! Compiles the etcd v3 protos in `proto/` with protox (pure Rust, no system
//! `protoc`) and generates prost messages plus tonic servers and clients, and writes the
//! compiled descriptors (`FILE_DESCRIPTOR_SET`).

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
    // The descriptors themselves, for what maps messages by name (the server's JSON gateway).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("etcd_descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::EtcdCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
