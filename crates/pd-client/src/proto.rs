//! Generated protobuf and gRPC code for the `.proto` subset in `proto/`.
//! Private: nothing here is part of the public API.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    dead_code,
    unreachable_pub
)]
pub(crate) mod metapb {
    tonic::include_proto!("metapb");
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    dead_code,
    unreachable_pub
)]
pub(crate) mod pdpb {
    tonic::include_proto!("pdpb");
}
