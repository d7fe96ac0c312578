//! A process-wide limit on requests in progress. Past the limit a request is refused at once with
//! `RESOURCE_EXHAUSTED` rather than queued, so an overloaded node answers fast and callers back off.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

/// Wraps services in [`Shed`].
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ShedLayer {
    /// Makes a layer that admits at most `limit` requests at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower_layer::Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
            limit: self.limit,
        }
    }
}

/// Service that refuses requests beyond the concurrency limit.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Shed<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let status = tonic::Status::resource_exhausted(format!(
                "server is at its limit of {} concurrent requests; retry with backoff",
                self.limit
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn refuses_beyond_the_limit_with_resource_exhausted_and_recovers() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let inner = {
            let gate = gate.clone();
            tower::service_fn(move |_req: http::Request<()>| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        tonic::body::Body::empty(),
                    ))
                }
            })
        };
        let service = ShedLayer::new(1).layer(inner);
        let first = tokio::spawn(service.clone().oneshot(http::Request::new(())));
        tokio::task::yield_now().await;
        let refused = service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("limit of 1"));
        gate.notify_one();
        first.await.unwrap().unwrap();
        // The permit is back: the next request is admitted.
        gate.notify_one();
        let admitted = service.oneshot(http::Request::new(())).await.unwrap();
        assert!(tonic::Status::from_header_map(admitted.headers()).is_none());
    }
}
