//! The gateway's way to the services it fronts: a channel to the organisation's node and one to
//! the coordinator, both over TLS with the organisation's certificate, channels to other members'
//! nodes for what any member may ask (their mandates), and the caller's token and idempotency key
//! taken from the HTTP request and put on the gRPC call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use doorzet_domain::Oin;
use doorzet_mesh::ReloadingTls;
use doorzet_proto::v1::{
    coordinator_client::CoordinatorClient, directory_client::DirectoryClient,
    node_admin_client::NodeAdminClient, partner_node_client::PartnerNodeClient,
};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::config::GatewayConfig;
use crate::error::{Error, Problem};

/// The services behind the gateway.
#[derive(Clone)]
pub struct Upstreams {
    node: Option<NodeAdminClient<Channel>>,
    coordinator: Option<Channel>,
    tls: Arc<ReloadingTls>,
    timeout: Duration,
    /// Other members' mesh listeners, by organisation, with the endpoint each channel was made for.
    members: Arc<Mutex<HashMap<Oin, (String, Channel)>>>,
}

impl Upstreams {
    /// Opens (lazily connecting) channels to what `config` names.
    pub fn connect(config: &GatewayConfig, tls: Arc<ReloadingTls>) -> Result<Self, Error> {
        // The upstream's own limit answers first; this only bounds a hung connection.
        let timeout = config.limits.request_timeout + Duration::from_secs(1);
        let node = config
            .node
            .as_ref()
            .map(|n| {
                doorzet_mesh::client::channel(tls.clone(), &n.endpoint, Some(config.org), timeout)
            })
            .transpose()?
            .map(NodeAdminClient::new);
        let coordinator = config
            .coordinator
            .as_ref()
            .map(|c| doorzet_mesh::client::channel(tls.clone(), &c.endpoint, Some(c.org), timeout))
            .transpose()?;
        Ok(Self {
            node,
            coordinator,
            tls,
            timeout,
            members: Arc::default(),
        })
    }

    /// Member `org`'s node at its mesh `endpoint` (as the directory lists it), reached with this
    /// organisation's certificate; a server with another organisation's certificate is refused.
    pub fn member(&self, org: Oin, endpoint: &str) -> Result<PartnerNodeClient<Channel>, Problem> {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, channel)) = members.get(&org)
            && known == endpoint
        {
            return Ok(PartnerNodeClient::new(channel.clone()));
        }
        let channel =
            doorzet_mesh::client::channel(self.tls.clone(), endpoint, Some(org), self.timeout)
                .map_err(|e| Problem::new(Code::Unavailable, e.to_string()))?;
        members.insert(org, (endpoint.to_owned(), channel.clone()));
        Ok(PartnerNodeClient::new(channel))
    }

    /// The node's local API, or 501 when this gateway does not front a node.
    pub fn node(&self) -> Result<NodeAdminClient<Channel>, Problem> {
        self.node.clone().ok_or_else(|| {
            Problem::new(
                Code::Unimplemented,
                "this gateway does not front a node ([node] is not configured)",
            )
        })
    }

    /// The coordinator, or 501 when this gateway does not reach one.
    pub fn coordinator(&self) -> Result<CoordinatorClient<Channel>, Problem> {
        self.coordinator_channel().map(CoordinatorClient::new)
    }

    /// The coordinator's directory, or 501 when this gateway does not reach one.
    pub fn directory(&self) -> Result<DirectoryClient<Channel>, Problem> {
        self.coordinator_channel().map(DirectoryClient::new)
    }

    fn coordinator_channel(&self) -> Result<Channel, Problem> {
        self.coordinator.clone().ok_or_else(|| {
            Problem::new(
                Code::Unimplemented,
                "this gateway does not reach the coordinator ([coordinator] is not configured)",
            )
        })
    }
}

/// The caller's bearer token, passed on unchanged: the node and coordinator verify it.
#[derive(Clone)]
pub struct Token(MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token given without its `Bearer ` prefix (the console's session cookie).
    pub fn bearer(token: &str) -> Result<Self, Problem> {
        MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map(Token)
            .map_err(|_| Problem::unauthenticated("the token is not valid ASCII"))
    }

    /// Wraps `message` in a gRPC request that carries the token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        request
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthenticated("Authorization: a bearer token is required"))?;
        let value = header
            .to_str()
            .ok()
            .filter(|v| {
                v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") && !v[7..].trim().is_empty()
            })
            .ok_or_else(|| Problem::unauthenticated("Authorization: must be `Bearer <token>`"))?;
        let token = format!("Bearer {}", value[7..].trim());
        MetadataValue::try_from(token)
            .map(Token)
            .map_err(|_| Problem::unauthenticated("Authorization: the token is not valid ASCII"))
    }
}

/// The `Idempotency-Key` of a POST: the gRPC call's `request_id`. Without one, a fresh key makes
/// the request a new one each time.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        Ok(Self(given_key(parts)?.unwrap_or_else(fresh_key)))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Problem> {
        Ok(given_key(parts)?.map(Self))
    }
}

fn given_key(parts: &Parts) -> Result<Option<String>, Problem> {
    let Some(value) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| {
            (1..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            Problem::invalid(
                "Idempotency-Key",
                "must be 1 to 64 of the characters A-Z a-z 0-9 . _ : -",
            )
        })
}

fn fresh_key() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| char::from(b'a' + rng.gen_range(0..26)))
        .collect::<String>()
}
