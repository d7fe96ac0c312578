//! Compiles `doorzet/v1/*.proto` with protox (pure Rust, no protoc) and writes the descriptor set
//! that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=doorzet");
    let files = [
        "common",
        "partner_node",
        "node_admin",
        "coordinator",
        "directory",
        "audit_log",
    ]
    .map(|name| format!("doorzet/v1/{name}.proto"));
    let fds = protox::compile(&files, ["."])?; // well-known types are bundled
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("doorzet_v1.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        // Undecodable requests are the caller's fault: INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        // Written by hand (src/append.rs): the same bytes on the wire, each entry kept encoded.
        .extern_path(".doorzet.v1.AppendRequest", "crate::append::AppendRequest")
        .compile_fds(fds)?;
    Ok(())
}
