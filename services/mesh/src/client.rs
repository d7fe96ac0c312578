//! Mutual-TLS channels to other mesh members. Each new connection takes the current client
//! certificate (so a reload reaches clients too) and checks that the server's certificate names
//! the organisation the caller expects; channels made with [`member_channel`] also check that the
//! server is a current participant of the directory and that its certificate is not revoked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use doorzet_domain::Oin;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::directory::Directory;
use crate::identity::{certificate_sha256, oin_from_certificate};
use crate::{MeshError, ReloadingTls};

/// Where a client's TLS configuration comes from.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// This organisation's certificate, following reloads.
    Reloading(Arc<ReloadingTls>),
    /// A fixed configuration (tools and tests).
    Fixed(Arc<rustls::ClientConfig>),
}

impl ClientTls {
    fn current(&self) -> Arc<rustls::ClientConfig> {
        match self {
            Self::Reloading(tls) => tls.client(),
            Self::Fixed(config) => config.clone(),
        }
    }
}

impl From<Arc<ReloadingTls>> for ClientTls {
    fn from(tls: Arc<ReloadingTls>) -> Self {
        Self::Reloading(tls)
    }
}

/// Opens a lazily connecting channel to `endpoint` (`https://host:port`). When `expect` is set, a
/// server whose certificate carries another organisation id is refused.
pub fn channel(
    tls: impl Into<ClientTls>,
    endpoint: &str,
    expect: Option<Oin>,
    request_timeout: Duration,
) -> Result<Channel, MeshError> {
    build(tls.into(), endpoint, expect, None, request_timeout)
}

/// Opens a lazily connecting channel to the mesh participant `expect` at `endpoint`. Besides the
/// organisation id, each connection checks the server against `directory`: its certificate must not
/// be revoked and, once a directory is loaded, the organisation must be a current participant.
pub fn member_channel(
    tls: impl Into<ClientTls>,
    endpoint: &str,
    expect: Oin,
    directory: Arc<Directory>,
    request_timeout: Duration,
) -> Result<Channel, MeshError> {
    build(
        tls.into(),
        endpoint,
        Some(expect),
        Some(directory),
        request_timeout,
    )
}

fn build(
    tls: ClientTls,
    endpoint: &str,
    expect: Option<Oin>,
    directory: Option<Arc<Directory>>,
    request_timeout: Duration,
) -> Result<Channel, MeshError> {
    let bad = |reason: &str| MeshError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URI"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://"));
    }
    let host = uri.host().ok_or_else(|| bad("has no host"))?;
    let port = uri.port_u16().ok_or_else(|| bad("has no port"))?;
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name =
        ServerName::try_from(bare_host.clone()).map_err(|_| bad("host is not a valid name"))?;
    // The connector does TLS itself; tonic sees plain HTTP/2 over the stream it is given.
    let inner = Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|_| bad("not a valid authority"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .tcp_nodelay(true);
    let connector = MeshConnector {
        tls,
        host: bare_host,
        port,
        server_name,
        expect,
        directory,
    };
    Ok(inner.connect_with_connector_lazy(connector))
}

#[derive(Clone)]
struct MeshConnector {
    tls: ClientTls,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    expect: Option<Oin>,
    directory: Option<Arc<Directory>>,
}

pin_project_lite::pin_project! {
    /// A client connection that fails as soon as the directory revokes the server's certificate or
    /// drops its organisation, so a live connection is not trusted longer than a new one would be.
    pub struct CheckedStream<S> {
        #[pin]
        inner: S,
        server: Option<(Oin, String, Arc<Directory>)>,
    }
}

impl<S> CheckedStream<S> {
    fn check(&self) -> std::io::Result<()> {
        let Some((org, fingerprint, directory)) = &self.server else {
            return Ok(());
        };
        let refusal = match directory.current() {
            Some(snapshot) if snapshot.is_revoked(fingerprint) => {
                format!("server certificate of {org} is revoked in the directory")
            }
            Some(snapshot) if !snapshot.is_participant(org) => {
                format!("server {org} is not a participant in the directory")
            }
            _ => return Ok(()),
        };
        // The transport error that reaches the caller no longer says why.
        static REFUSED: crate::log_throttle::Throttle =
            crate::log_throttle::Throttle::per(std::time::Duration::from_secs(60));
        if let Some(suppressed) = REFUSED.allow() {
            tracing::warn!(reason = %refusal, suppressed, "connection to a mesh server refused");
        }
        Err(std::io::Error::other(refusal))
    }
}

impl<S: tokio::io::AsyncRead> tokio::io::AsyncRead for CheckedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check()?;
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite> tokio::io::AsyncWrite for CheckedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check()?;
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

impl tower_service::Service<http::Uri> for MeshConnector {
    type Response = TokioIo<CheckedStream<tokio_rustls::client::TlsStream<TcpStream>>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect((this.host.as_str(), this.port)).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(this.tls.current());
            let stream = connector.connect(this.server_name.clone(), tcp).await?;
            let mut server = None;
            if this.expect.is_some() || this.directory.is_some() {
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .ok_or_else(|| std::io::Error::other("server sent no certificate"))?;
                let actual = oin_from_certificate(leaf).map_err(std::io::Error::other)?;
                if let Some(expected) = this.expect
                    && actual != expected
                {
                    return Err(std::io::Error::other(format!(
                        "server certificate names organisation {actual}, expected {expected}"
                    )));
                }
                if let Some(directory) = this.directory {
                    server = Some((actual, certificate_sha256(leaf), directory));
                }
            }
            let checked = CheckedStream {
                inner: stream,
                server,
            };
            checked.check()?;
            Ok(TokioIo::new(checked))
        })
    }
}
