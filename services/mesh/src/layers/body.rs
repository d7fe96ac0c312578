//! A response body that reports how its gRPC stream ended: the status in its trailers, or in the
//! headers of a trailers-only answer, or that it was cut off before either. Metrics, spans and the
//! connection's activity record the final status, not the one the headers promised.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// How a response stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ended with this gRPC status.
    Status(Code),
    /// It ended (or was dropped) without a status: the client went away or the transport failed.
    Aborted,
}

impl Outcome {
    /// Returns the metric and span label: the numeric code, or `aborted`.
    pub fn label(self) -> &'static str {
        const CODES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        match self {
            Self::Status(code) => CODES.get(code as usize).copied().unwrap_or("2"),
            Self::Aborted => "aborted",
        }
    }
}

/// Reads the `grpc-status` of a header or trailer map.
fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

type Report = Box<dyn FnOnce(Outcome) + Send + Sync>;

pin_project_lite::pin_project! {
    /// Wraps a response body and calls a function once, with the stream's [`Outcome`], when the
    /// body ends or is dropped.
    pub struct Finished<B> {
        #[pin]
        inner: B,
        reporter: Reporter,
    }
}

struct Reporter {
    status: Option<Code>,
    report: Option<Report>,
}

impl Reporter {
    fn finish(&mut self) {
        if let Some(report) = self.report.take() {
            report(self.status.map_or(Outcome::Aborted, Outcome::Status));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> Finished<B> {
    /// Wraps the body of `response`, taking a trailers-only status from its headers.
    pub fn wrap(
        response: http::Response<B>,
        report: impl FnOnce(Outcome) + Send + Sync + 'static,
    ) -> http::Response<Finished<B>> {
        let status = status_of(response.headers());
        response.map(|inner| Finished {
            inner,
            reporter: Reporter {
                status,
                report: Some(Box::new(report)),
            },
        })
    }
}

impl<B: Body> Body for Finished<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.reporter.status = Some(code);
                    this.reporter.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.reporter.status = None;
                this.reporter.finish();
            }
            Poll::Ready(None) => this.reporter.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps `response`'s body in [`Finished`] and boxes it back into a tonic body.
pub fn on_finish(
    response: http::Response<tonic::body::Body>,
    report: impl FnOnce(Outcome) + Send + Sync + 'static,
) -> http::Response<tonic::body::Body> {
    Finished::wrap(response, report).map(tonic::body::Body::new)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;

    fn recorder() -> (
        Arc<Mutex<Vec<Outcome>>>,
        impl FnOnce(Outcome) + Send + Sync + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |outcome| sink.lock().unwrap().push(outcome))
    }

    #[tokio::test]
    async fn reports_the_trailers_status_not_the_headers() {
        // A streaming answer: headers say nothing, the trailers carry NOT_FOUND.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let (seen, report) = recorder();
        let response = on_finish(http::Response::new(tonic::body::Body::new(body)), report);
        let _ = response.into_body().collect().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Status(Code::NotFound)]);
    }

    #[tokio::test]
    async fn trailers_only_answer_and_a_dropped_stream_are_reported_once() {
        let (seen, report) = recorder();
        let response = on_finish(tonic::Status::unauthenticated("no").into_http(), report);
        let _ = response.into_body().collect().await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Outcome::Status(Code::Unauthenticated)]
        );

        let (seen, report) = recorder();
        let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<Frame<bytes::Bytes>, tonic::Status>,
        >());
        drop(on_finish(
            http::Response::new(tonic::body::Body::new(body)),
            report,
        ));
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Aborted]);
        assert_eq!(Outcome::Aborted.label(), "aborted");
        assert_eq!(Outcome::Status(Code::Unauthenticated).label(), "16");
    }
}
