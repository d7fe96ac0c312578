//! The node's gRPC services.
//!
//! # Layout
//! - [`partner_node`]: `PartnerNode` on the mesh listener.
//! - [`node_admin`]: `NodeAdmin` on the local listener.

pub mod node_admin;
pub mod partner_node;
