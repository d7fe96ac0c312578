//! The `doorzet.v1` gRPC contract, compiled once from `proto/doorzet/v1/*.proto`, and the
//! conversions between its messages and the domain types.
//!
//! # Layout
//! - [`v1`]: generated messages, clients and servers.
//! - [`convert`]: pb ↔ domain conversions whose errors name the field.
//! - [`codec`]: the protobuf codec, with decoding failures as `INVALID_ARGUMENT`.
//! - [`append`]: `AuditLog.Append`'s request, its entries kept as their encoded bytes.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors that server reflection serves.

/// Generated code for the `doorzet.v1` package.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("doorzet.v1");
    pub use crate::append::AppendRequest;
}

pub mod append;

pub mod codec;
pub mod convert;

/// Encoded `FileDescriptorSet` of `doorzet.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("doorzet_v1");
