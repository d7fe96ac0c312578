//! A deadline per request: the server's limit, or the caller's `grpc-timeout` when that is shorter.
//! Unlike a bare `tower::timeout`, the answer is a proper gRPC `DEADLINE_EXCEEDED` that names the
//! deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Wraps services in [`Timeout`].
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// Makes a layer that gives each request at most `limit`.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> tower_layer::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

/// Service that answers `DEADLINE_EXCEEDED` when the inner service takes too long.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Timeout<S>
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
        let client = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .filter(|client| *client < self.limit);
        let limit = client.unwrap_or(self.limit);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => {
                    let whose = if client.is_some() {
                        "the caller's grpc-timeout"
                    } else {
                        "the server's limit"
                    };
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "request took longer than {whose} of {}ms",
                        limit.as_millis()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`), per
/// the gRPC over HTTP/2 protocol description. Anything else is ignored (the server's limit holds).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn answers_deadline_exceeded_naming_the_limit() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let response = TimeoutLayer::new(Duration::from_millis(20))
            .layer(slow)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("20ms"));
    }

    #[tokio::test]
    async fn honours_a_shorter_grpc_timeout_from_the_caller_but_never_a_longer_one() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let service = TimeoutLayer::new(Duration::from_secs(10)).layer(slow);
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("grpc-timeout", "30m".parse().unwrap());
        let response = service.clone().oneshot(request).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(
            status.message().contains("caller's grpc-timeout of 30ms"),
            "{}",
            status.message()
        );

        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("grpc-timeout", "99999999H".parse().unwrap());
        let response = service.oneshot(request).await.unwrap();
        assert!(tonic::Status::from_header_map(response.headers()).is_none());
    }

    #[test]
    fn grpc_timeout_values_parse_by_the_spec() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        for bad in ["", "S", "123456789S", "1s", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn grpc_timeout_parser_never_panics(value in "\\PC{0,12}") {
            let _ = parse_grpc_timeout(&value);
        }
    }
}
