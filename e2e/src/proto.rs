//! Generated PD protocol subset (see `proto/`).

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

/// PD metadata messages.
pub mod metapb {
    tonic::include_proto!("metapb");
}

/// PD service.
pub mod pdpb {
    tonic::include_proto!("pdpb");
}
