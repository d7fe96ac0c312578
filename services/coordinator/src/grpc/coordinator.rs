//! `Coordinator`: the escalation ladder. Every RPC answers `UNIMPLEMENTED` until the ladder issue
//! fills this service in; the route exists so clients and reflection see the whole contract now.

use doorzet_proto::v1::coordinator_server;

/// The `Coordinator` service.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorService;

impl coordinator_server::Coordinator for CoordinatorService {}
