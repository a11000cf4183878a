//! Generates the gRPC service (server and client) from `proto/layerd/v1/layerd.proto` when
//! the `grpc` feature is on; needs `protoc` (Debian/Fedora: protobuf-compiler).

fn main() {
    println!("cargo:rerun-if-changed=proto/layerd/v1/layerd.proto");
    #[cfg(feature = "grpc")]
    if let Err(e) = tonic_prost_build::configure().compile_protos(&["proto/layerd/v1/layerd.proto"], &["proto"]) {
        eprintln!("generating the gRPC code from proto/layerd/v1/layerd.proto (is protoc installed?): {e}");
        std::process::exit(1);
    }
}
