//! Connection admission for one listener. A stranger can open connections without credentials, so
//! each listener caps the connections it holds open and the TLS handshakes in progress; beyond a
//! cap a new connection is closed at once while established callers keep working. A handshake, and
//! then the first authenticated request, must come within `limits.handshake_timeout`; a connection
//! with no request in flight for `limits.idle_timeout` is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::coalesce::WriteYield;
use crate::config::Limits;
use crate::identity::ListenerKind;
use crate::layers::body::on_finish;
use crate::layers::metrics::Metrics;
use crate::log_throttle::Throttle;
use crate::tls::ReloadingTls;

/// What the server knows about the connection a request came in on; in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    tls: TlsConnectInfo<TcpConnectInfo>,
    activity: Arc<Activity>,
    peer: Arc<std::sync::OnceLock<PeerCertificate>>,
}

/// What the peer's leaf certificate says: its organisation and the certificate's SHA-256 (hex),
/// or why it says nothing usable.
pub type PeerCertificate = Result<(doorzet_domain::Oin, String), crate::IdentityError>;

impl ConnInfo {
    /// Returns the peer's certificate chain, leaf first, when it presented one.
    pub fn peer_certs(&self) -> Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>> {
        self.tls.peer_certs()
    }

    /// Reads the peer's leaf certificate once per connection (every request on it would otherwise
    /// parse the certificate and hash it again).
    pub fn peer_certificate(&self) -> &PeerCertificate {
        self.peer.get_or_init(|| {
            let certs = self
                .peer_certs()
                .ok_or(crate::IdentityError::NoCertificate)?;
            let leaf = certs.first().ok_or(crate::IdentityError::NoCertificate)?;
            Ok((
                crate::identity::oin_from_certificate(leaf)?,
                crate::identity::certificate_sha256(leaf),
            ))
        })
    }
}

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    has_started: AtomicBool,
    last_end: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            opened: now,
            in_flight: AtomicUsize::new(0),
            has_started: AtomicBool::new(false),
            last_end: Mutex::new(now),
        })
    }

    fn begin(self: &Arc<Self>) -> RequestInFlight {
        self.has_started.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestInFlight(self.clone())
    }

    /// Returns when the connection may be closed, or `None` while a request is in flight.
    fn closes_at(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.has_started.load(Ordering::Relaxed) {
            return Some(self.opened + first_request);
        }
        Some(*self.last_end.lock().unwrap_or_else(|e| e.into_inner()) + idle)
    }
}

struct RequestInFlight(Arc<Activity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot under the listener's connection cap, counted in the open-connections gauge until dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Metrics,
    listener: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.listener);
    }
}

/// An accepted TLS connection that closes itself when it has been idle too long.
pub struct GuardedStream {
    inner: TlsStream<TcpStream>,
    activity: Arc<Activity>,
    timer: Pin<Box<Sleep>>,
    first_request: Duration,
    idle: Duration,
    metrics: Metrics,
    listener: &'static str,
    _slot: Slot,
    /// Coalesces the connection's writes (see [`crate::coalesce`]).
    write_yield: WriteYield,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream").finish_non_exhaustive()
    }
}

impl GuardedStream {
    /// Fails the read side once the connection's idle deadline has passed with nothing in flight;
    /// the HTTP/2 server then closes the connection.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.activity.closes_at(self.first_request, self.idle) {
                Some(at) if at <= now => {
                    self.metrics.connection_idle_closed(self.listener);
                    tracing::debug!(listener = self.listener, "closing an idle connection");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
                }
                Some(at) => self.timer.as_mut().reset(at),
                None => self.timer.as_mut().reset(now + self.idle),
            }
        }
        Ok(())
    }
}

impl Connected for GuardedStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tls: self.inner.connect_info(),
            activity: self.activity.clone(),
            peer: Arc::default(),
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check_idle(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.write_yield.poll_before_write(cx));
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    // Not vectored (the default `poll_write_vectored` goes through `poll_write`), so that h2 copies
    // payloads up to 1 KiB into its buffer (see `crate::coalesce`).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx));
        this.write_yield.flushed();
        Poll::Ready(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn listener_label(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Mesh => "mesh",
        ListenerKind::Local => "local",
    }
}

/// Accepts connections on `listener` under the caps of `limits`, completes their TLS handshakes
/// and yields them to the HTTP/2 server, until `shutdown`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    kind: ListenerKind,
    limits: &Limits,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<GuardedStream, io::Error>> {
    static ACCEPT_FAILED: Throttle = Throttle::per(Duration::from_secs(10));
    static AT_CAP: Throttle = Throttle::per(Duration::from_secs(10));
    let label = listener_label(kind);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let (handshake_timeout, idle) = (limits.handshake_timeout, limits.idle_timeout);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    if let Some(suppressed) = ACCEPT_FAILED.allow() {
                        tracing::warn!(listener = label, error = %e, suppressed, "accept failed");
                    }
                    // Out of file handles: wait for some to be given back instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permits = connections
                .clone()
                .try_acquire_owned()
                .map_err(|_| "connection_cap")
                .and_then(|c| {
                    let h = handshakes
                        .clone()
                        .try_acquire_owned()
                        .map_err(|_| "handshake_cap")?;
                    Ok((c, h))
                });
            let (connection, handshake) = match permits {
                Ok(pair) => pair,
                Err(reason) => {
                    metrics.connection_refused(label, reason);
                    if let Some(suppressed) = AT_CAP.allow() {
                        tracing::warn!(
                            listener = label,
                            reason,
                            suppressed,
                            "new connection refused: listener at its cap"
                        );
                    }
                    continue; // dropping `tcp` closes it
                }
            };
            let _ = tcp.set_nodelay(true);
            metrics.connection_opened(label);
            let slot = Slot {
                _permit: connection,
                metrics: metrics.clone(),
                listener: label,
            };
            let config = match kind {
                ListenerKind::Mesh => tls.mesh_server(),
                ListenerKind::Local => tls.local_server(),
            };
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let handshake_started = Instant::now();
                let result = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
                drop(handshake);
                match result {
                    Ok(Ok(stream)) => {
                        let first_request = handshake_timeout
                            .saturating_sub(handshake_started.elapsed())
                            .max(Duration::from_millis(100));
                        let activity = Activity::new();
                        let guarded = GuardedStream {
                            inner: stream,
                            timer: Box::pin(tokio::time::sleep_until(
                                activity.opened + first_request,
                            )),
                            activity,
                            first_request,
                            idle,
                            metrics,
                            listener: label,
                            _slot: slot,
                            write_yield: WriteYield::default(),
                        };
                        let _ = tx.send(Ok(guarded)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.connection_refused(label, "handshake_failed");
                        tracing::debug!(listener = label, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        metrics.connection_refused(label, "handshake_timeout");
                        tracing::debug!(listener = label, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Wraps services in [`TrackActivity`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivityLayer;

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = TrackActivity<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TrackActivity { inner }
    }
}

/// Service that marks a request in flight on its connection until its response stream ends, so
/// the idle timeout never cuts a live call.
#[derive(Debug, Clone)]
pub struct TrackActivity<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for TrackActivity<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let in_flight = req
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.activity.begin());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            Ok(match in_flight {
                Some(in_flight) => on_finish(response, move |_| drop(in_flight)),
                None => response,
            })
        })
    }
}

/// File handles a process needs besides its connections: database, certificate files, logs,
/// the admin listener and outgoing channels.
const FILES_BESIDES_CONNECTIONS: u64 = 256;

/// Makes sure the process may open enough files for `listeners` listeners at `limits`: raises the
/// soft `RLIMIT_NOFILE` up to the hard limit when it is lower than needed, and warns when even
/// that is not enough. Returns the soft limit in force.
pub fn ensure_file_limit(limits: &Limits, listeners: usize) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = limits.max_connections as u64 * listeners as u64 + FILES_BESIDES_CONNECTIONS;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let mut soft_now = soft;
    if soft < needed {
        let raised = needed.min(hard);
        if raised > soft && setrlimit(Resource::RLIMIT_NOFILE, raised, hard).is_ok() {
            soft_now = raised;
        }
    }
    if soft_now < needed {
        tracing::warn!(
            file_limit = soft_now,
            needed,
            max_connections = limits.max_connections,
            listeners,
            "the open-file limit is below what the connection caps need; raise LimitNOFILE or lower limits.max_connections"
        );
    }
    soft_now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_closes_only_when_nothing_is_in_flight_for_the_idle_time() {
        let first = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let activity = Activity::new();
        assert_eq!(
            activity.closes_at(first, idle),
            Some(activity.opened + first)
        );

        let call = activity.begin();
        assert_eq!(activity.closes_at(first, idle), None);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            activity.closes_at(first, idle),
            None,
            "a long call keeps it open"
        );
        drop(call);
        assert_eq!(activity.closes_at(first, idle), Some(Instant::now() + idle));
    }
}
