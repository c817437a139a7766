//! The gRPC example's generated code is committed, so that building it needs no
//! `protoc`. This test generates it again from `proto/counter.proto` with a
//! pure-Rust protobuf compiler (protox) feeding tonic's prost builder, and fails if
//! the committed file is stale. `TSS_REGENERATE=1 cargo test --test grpc_codegen`
//! rewrites it.

use std::path::Path;

#[test]
fn committed_grpc_code_matches_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let descriptors = protox::compile([root.join("proto/counter.proto")], [root.join("proto")])
        .expect("the proto compiles");
    let out = std::env::temp_dir().join(format!("tss-grpc-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&out).unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(&out)
        .compile_fds(descriptors)
        .expect("tonic-prost-build generates the code");
    let generated = std::fs::read_to_string(out.join("counter.v1.rs")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    let committed_path = root.join("examples/grpc/counter.v1.rs");
    if std::env::var_os("TSS_REGENERATE").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "examples/grpc/counter.v1.rs is stale: run `TSS_REGENERATE=1 cargo test --test grpc_codegen`"
    );
}
