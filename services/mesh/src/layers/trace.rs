//! One tracing span per request, named after the RPC and parented on the W3C `traceparent` the
//! caller sent in its gRPC metadata, so a trace follows an escalation across organisations. The span
//! names come from the contract (anything else is `unknown`), and its status is the stream's final
//! one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::body::{Outcome, on_finish};
use super::rpc_labels;
use crate::telemetry::HeaderExtractor;

/// Wraps services in [`Trace`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower_layer::Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

/// Service that runs each request inside its own span.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Trace<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = rpc_labels(req.uri().path());
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            peer.org = tracing::field::Empty,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let finished = span.clone();
        Box::pin(
            async move {
                let response = fut.await?;
                Ok(on_finish(response, move |outcome: Outcome| {
                    finished.record("rpc.grpc.status_code", outcome.label());
                }))
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
    use tower::{Layer, ServiceExt};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    /// The trace the handler ran in, and the `traceparent` an outgoing call would carry.
    type Seen = (TraceId, Option<String>);

    #[tokio::test]
    async fn request_span_continues_the_callers_w3c_trace_and_clients_pass_it_on() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
        let inner = {
            let seen = seen.clone();
            tower::service_fn(move |_req: http::Request<()>| {
                let trace_id = tracing::Span::current()
                    .context()
                    .span()
                    .span_context()
                    .trace_id();
                // An outgoing call made while handling carries the same trace.
                let outgoing = crate::telemetry::propagate(tonic::Request::new(())).unwrap();
                let header = outgoing
                    .metadata()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                *seen.lock().unwrap() = Some((trace_id, header));
                std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                    tonic::body::Body::empty(),
                )))
            })
        };
        let mut request = http::Request::new(());
        *request.uri_mut() = "/doorzet.v1.Directory/ListMembers".parse().unwrap();
        request.headers_mut().insert(
            "traceparent",
            format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        TraceLayer.layer(inner).oneshot(request).await.unwrap();

        let (trace_id, header) = seen.lock().unwrap().clone().unwrap();
        assert_eq!(trace_id, TraceId::from_hex(TRACE_ID).unwrap());
        let header = header.expect("outgoing traceparent");
        assert!(header.contains(TRACE_ID), "{header}");
    }
}
