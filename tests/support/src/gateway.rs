//! A REST gateway in process, beside one node of a [`TestMesh`], on a real socket.

use std::net::SocketAddr;

use doorzet_gateway::config::{
    ConsoleConfig, CoordinatorLink, GatewayConfig, HttpLimits, NodeLink, WebhookConfig,
};
use doorzet_mesh::config::{Listen, Telemetry};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::TestMesh;
use crate::pki::TestOrg;

/// A running gateway; it stops when dropped.
pub struct TestGateway {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The organisation it serves.
    pub org: TestOrg,
    /// Its admin listener (metrics, probes).
    pub admin: std::net::SocketAddr,
    _stop: DropGuard,
}

impl TestGateway {
    /// Starts a gateway beside node `i` (its local listener and the coordinator) with `limits`.
    pub async fn start(mesh: &TestMesh, i: usize, limits: HttpLimits) -> Self {
        Self::start_with(mesh, i, limits, None).await
    }

    /// As [`TestGateway::start`], with webhooks.
    pub async fn start_with(
        mesh: &TestMesh,
        i: usize,
        limits: HttpLimits,
        webhooks: Option<WebhookConfig>,
    ) -> Self {
        let console = ConsoleConfig {
            enabled: true,
            dev_sign_in: true,
            secure_cookie: false,
            oidc: None,
        };
        Self::start_with_console(mesh, i, limits, webhooks, |_| console).await
    }

    /// As [`TestGateway::start_with`], with the console's sign-in made from the gateway's base URL
    /// (for a callback address).
    pub async fn start_with_console(
        mesh: &TestMesh,
        i: usize,
        limits: HttpLimits,
        webhooks: Option<WebhookConfig>,
        console: impl FnOnce(&str) -> ConsoleConfig,
    ) -> Self {
        Self::launch(mesh, i, true, limits, webhooks, console).await
    }

    /// A gateway of member `i` that reaches only the coordinator (as a ZVH may run it, with no node
    /// of its own behind it).
    pub async fn start_without_node(mesh: &TestMesh, i: usize) -> Self {
        let console = ConsoleConfig {
            enabled: true,
            dev_sign_in: true,
            secure_cookie: false,
            oidc: None,
        };
        Self::launch(mesh, i, false, HttpLimits::default(), None, |_| console).await
    }

    async fn launch(
        mesh: &TestMesh,
        i: usize,
        with_node: bool,
        limits: HttpLimits,
        webhooks: Option<WebhookConfig>,
        console: impl FnOnce(&str) -> ConsoleConfig,
    ) -> Self {
        let node = &mesh.nodes[i];
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
        let listeners = doorzet_gateway::Listeners {
            http: tokio::net::TcpListener::bind(loopback).await.expect("bind"),
            admin: tokio::net::TcpListener::bind(loopback).await.expect("bind"),
        };
        let base = format!("http://{}", listeners.http.local_addr().expect("addr"));
        let admin = listeners.admin.local_addr().expect("addr");
        let config = GatewayConfig {
            org: node.org.org,
            tls: node.org.tls.clone(),
            http: Listen { listen: loopback },
            admin: Listen { listen: loopback },
            node: with_node.then(|| NodeLink {
                endpoint: node.local_endpoint.clone(),
            }),
            coordinator: Some(CoordinatorLink {
                endpoint: mesh.coordinator.endpoint.clone(),
                org: mesh.coordinator.org.org,
            }),
            webhooks,
            console: console(&base),
            limits,
            telemetry: Telemetry::default(),
        };
        let stop = CancellationToken::new();
        tokio::spawn(doorzet_gateway::serve(listeners, config, stop.clone()));
        Self {
            base,
            org: node.org.clone(),
            admin,
            _stop: stop.drop_guard(),
        }
    }

    /// The URL of `path` under `/api/v1`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// A token of the gateway's organisation.
    pub fn token(&self, sub: &str, role: &str) -> String {
        self.org.token(sub, role)
    }
}
