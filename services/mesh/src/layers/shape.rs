//! Refuses, before any other work, what is not a gRPC call of the shape this server serves: a
//! request without a `:path` of the form `/package.Service/Method`, a message larger than the
//! limit (`RESOURCE_EXHAUSTED`, read from the length prefix before the message is buffered, with
//! the limit in [`MESSAGE_LIMIT_KEY`] so that a client can send smaller messages), and a body that
//! ends inside a message (`INVALID_ARGUMENT`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::future::{Either, Ready, ready};
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

/// Size of a gRPC message prefix: one flag byte and a four-byte big-endian length.
const PREFIX: usize = 5;

/// Metadata of the `RESOURCE_EXHAUSTED` that refuses an oversized message: the server's limit in
/// bytes (a message's length without its gRPC prefix).
pub const MESSAGE_LIMIT_KEY: &str = "doorzet-max-message-bytes";

/// The limit a refusal of an oversized message names, read from its [`MESSAGE_LIMIT_KEY`]; `None`
/// for any other status (a quota's `RESOURCE_EXHAUSTED` among them).
pub fn message_limit(status: &Status) -> Option<usize> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    status
        .metadata()
        .get(MESSAGE_LIMIT_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn oversized(len: usize, max: usize) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "message of {len} bytes is larger than the limit of {max} bytes"
    ));
    status.metadata_mut().insert(MESSAGE_LIMIT_KEY, max.into());
    status
}

/// Wraps services in [`Shape`].
#[derive(Debug, Clone, Copy)]
pub struct ShapeLayer {
    max_message_bytes: usize,
}

impl ShapeLayer {
    /// Makes a layer that admits messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl<S> tower_layer::Layer<S> for ShapeLayer {
    type Service = Shape<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shape {
            inner,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// Service that checks a request's path and bounds its messages.
#[derive(Debug, Clone)]
pub struct Shape<S> {
    inner: S,
    max_message_bytes: usize,
}

/// Returns true when `uri` has a path of the form `/package.Service/Method`.
fn is_grpc_path(uri: &http::Uri) -> bool {
    let Some(path) = uri.path_and_query().map(|p| p.path()) else {
        return false;
    };
    match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
        Some((service, method)) => {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        }
        None => false,
    }
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for Shape<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if !is_grpc_path(req.uri()) {
            tracing::debug!("request without a gRPC :path refused");
            let status =
                Status::invalid_argument(":path must be of the form /package.Service/Method");
            return Either::Left(ready(Ok(status.into_http())));
        }
        let max = self.max_message_bytes;
        let req = req.map(|body| tonic::body::Body::new(Bounded::new(body, max)));
        Either::Right(self.inner.call(req))
    }
}

pin_project_lite::pin_project! {
    /// A request body that follows the gRPC message prefixes as the bytes pass and fails the
    /// stream as soon as one declares a message over the limit.
    pub struct Bounded<B> {
        #[pin]
        inner: B,
        max: usize,
        // Prefix bytes seen of the current message's prefix.
        prefix: [u8; PREFIX],
        prefix_len: usize,
        // Bytes of the current message still to come.
        remaining: usize,
        failed: bool,
    }
}

impl<B> Bounded<B> {
    /// Wraps `inner`, admitting messages of at most `max` bytes.
    pub fn new(inner: B, max: usize) -> Self {
        Self {
            inner,
            max,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            failed: false,
        }
    }
}

/// Follows the message boundaries through one chunk; returns the refusal when a prefix declares a
/// message over `max`.
fn follow(
    chunk: &Bytes,
    max: usize,
    prefix: &mut [u8; PREFIX],
    prefix_len: &mut usize,
    remaining: &mut usize,
) -> Result<(), Status> {
    let mut rest = chunk.clone();
    while rest.has_remaining() {
        if *remaining > 0 {
            let skip = (*remaining).min(rest.remaining());
            rest.advance(skip);
            *remaining -= skip;
            continue;
        }
        let take = (PREFIX - *prefix_len).min(rest.remaining());
        rest.copy_to_slice(&mut prefix[*prefix_len..*prefix_len + take]);
        *prefix_len += take;
        if *prefix_len == PREFIX {
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if len > max {
                return Err(oversized(len, max));
            }
            *prefix_len = 0;
            *remaining = len;
        }
    }
    Ok(())
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes, Error = Status>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        let verdict = match &polled {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(chunk) => follow(
                    chunk,
                    *this.max,
                    this.prefix,
                    this.prefix_len,
                    this.remaining,
                ),
                None => Ok(()),
            },
            None if *this.prefix_len > 0 || *this.remaining > 0 => Err(Status::invalid_argument(
                "request body ends inside a message",
            )),
            _ => Ok(()),
        };
        match verdict {
            Ok(()) => Poll::Ready(polled),
            Err(status) => {
                *this.failed = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    use super::*;

    fn framed(lengths: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &len in lengths {
            out.push(0);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, len));
        }
        out
    }

    async fn run(bytes: Vec<u8>, chunk: usize, max: usize) -> Result<usize, Status> {
        let chunks: Vec<Result<Frame<Bytes>, Status>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let collected = Bounded::new(body, max).collect().await?;
        Ok(collected.to_bytes().len())
    }

    #[tokio::test]
    async fn refuses_an_oversized_message_with_resource_exhausted_naming_the_limit() {
        let err = run(framed(&[10, 2000]), 3, 1024).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("limit of 1024 bytes"),
            "{}",
            err.message()
        );
        assert_eq!(message_limit(&err), Some(1024));
        assert_eq!(
            run(framed(&[10, 1024]), 3, 1024).await.unwrap(),
            10 + 1024 + 10
        );
    }

    #[test]
    fn only_an_oversized_message_names_a_limit() {
        assert_eq!(message_limit(&oversized(20, 10)), Some(10));
        let quota = Status::resource_exhausted("over the quota");
        assert_eq!(message_limit(&quota), None);
        let mut other = Status::invalid_argument("bad");
        other.metadata_mut().insert(MESSAGE_LIMIT_KEY, 10.into());
        assert_eq!(message_limit(&other), None);
        let mut garbled = oversized(20, 10);
        garbled
            .metadata_mut()
            .insert(MESSAGE_LIMIT_KEY, "ten".parse().unwrap());
        assert_eq!(message_limit(&garbled), None);
    }

    #[tokio::test]
    async fn refuses_a_body_that_ends_inside_a_message() {
        let mut bytes = framed(&[10]);
        bytes.truncate(8);
        let err = run(bytes, 4, 1024).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn only_service_and_method_paths_are_grpc() {
        for good in ["/doorzet.v1.Directory/ListMembers", "/a/b"] {
            assert!(is_grpc_path(&good.parse().unwrap()), "{good}");
        }
        for bad in ["/", "/a", "/a/", "//b", "/a/b/c", "*"] {
            assert!(!is_grpc_path(&bad.parse().unwrap()), "{bad}");
        }
        // What h2 builds from a request with neither :authority nor :path.
        let empty = http::Uri::from_parts(http::uri::Parts::default()).unwrap();
        assert!(!is_grpc_path(&empty));
    }

    proptest! {
        // Any split of any sequence of messages: admitted exactly when every message fits.
        #[test]
        fn follows_message_boundaries_across_any_chunking(
            lengths in proptest::collection::vec(0usize..300, 0..6),
            chunk in 1usize..64,
            max in 0usize..300,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let bytes = framed(&lengths);
            let total = bytes.len();
            let result = rt.block_on(run(bytes, chunk, max));
            if lengths.iter().all(|&l| l <= max) {
                prop_assert_eq!(result.unwrap(), total);
            } else {
                prop_assert_eq!(result.unwrap_err().code(), tonic::Code::ResourceExhausted);
            }
        }
    }
}
