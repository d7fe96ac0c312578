//! `PartnerNode` on the mesh listener. Every RPC answers `UNIMPLEMENTED` until the consent-rules
//! issue fills in mandates, facts and notifications; the route exists so the coordinator and
//! reflection see the whole contract now.

use doorzet_proto::v1::partner_node_server;

/// The `PartnerNode` service.
#[derive(Debug, Clone, Default)]
pub struct PartnerNodeService;

impl partner_node_server::PartnerNode for PartnerNodeService {}
