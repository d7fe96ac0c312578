//! The identity layer: runs [`Verifier::authenticate`] once per request and puts the resulting
//! [`Caller`] in the request extensions, or answers with the mapped status without calling the
//! handler.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use super::metrics::PeerKindSlot;
use crate::identity::{Caller, Verifier};

/// Wraps services in [`Identify`].
#[derive(Debug, Clone)]
pub struct IdentityLayer {
    verifier: Arc<Verifier>,
}

impl IdentityLayer {
    /// Makes the layer for one listener.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower_layer::Layer<S> for IdentityLayer {
    type Service = Identify<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Identify {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// Service that authenticates each request before passing it on.
#[derive(Debug, Clone)]
pub struct Identify<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Identify<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.verifier.authenticate(&mut req) {
            Ok(caller) => {
                tracing::Span::current().record("peer.org", caller.org.as_str());
                if let Some(slot) = req.extensions().get::<PeerKindSlot>() {
                    slot.set(caller.kind_label());
                }
                req.extensions_mut().insert::<Caller>(caller);
                Either::Right(self.inner.call(req))
            }
            Err(err) => {
                // A stranger can make this repeat at will: it must cost no more than a debug line.
                tracing::debug!(error = %err, "request refused");
                Either::Left(ready(Ok(tonic::Status::from(err).into_http())))
            }
        }
    }
}
