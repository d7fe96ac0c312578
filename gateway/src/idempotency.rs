//! `Idempotency-Key` for the POSTs whose gRPC call has no request id of its own (the node's cases,
//! facts, consents, legal bases and links): the gateway keeps the answer to a keyed request for a
//! day and replays it to a retry that carries the same token, key, path and body. A retry while
//! the first is still in flight, or the same key with another body, is 409. Answers other than
//! success are not kept, so a retry after a refusal or an outage is tried again.
//!
//! Entries are bound to the exact token (its SHA-256), not to claims the gateway has not
//! verified, so nobody can read another caller's answer by naming the same key; a retry with a
//! renewed token is a new request. The cache lives in memory and is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::error::Problem;

/// How long an answer is kept for retries.
const KEEP: Duration = Duration::from_secs(24 * 3600);

enum Entry {
    InFlight {
        body: [u8; 32],
    },
    Done {
        body: [u8; 32],
        answer: Kept,
        at: Instant,
    },
}

#[derive(Clone)]
struct Kept {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// The kept answers, shared by all requests.
#[derive(Clone)]
pub struct Replays {
    inner: Arc<Mutex<Inner>>,
    max_body_bytes: usize,
}

struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    order: VecDeque<([u8; 32], Instant)>,
    capacity: usize,
}

impl Replays {
    /// A cache of at most `capacity` answers; request bodies over `max_body_bytes` are refused.
    pub fn new(capacity: usize, max_body_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                capacity,
            })),
            max_body_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn evict(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front().copied() {
            let expired = now.duration_since(at) > KEEP;
            if !expired && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            if matches!(self.entries.get(&key), Some(Entry::Done { at: done, .. }) if *done == at) {
                self.entries.remove(&key);
            }
        }
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn conflict(detail: &str) -> Response {
    Problem::new(Code::AlreadyExists, detail).into_response()
}

/// Replays kept answers to keyed POSTs, and keeps new successful ones.
pub async fn replay(State(replays): State<Replays>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get("idempotency-key").cloned() else {
        return next.run(request).await;
    };
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, replays.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(Code::ResourceExhausted, "body: too large")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .into_response();
        }
    };
    let id = sha256(&[&token, key.as_bytes(), path.as_bytes()]);
    let body_hash = sha256(&[&body]);
    {
        let now = Instant::now();
        let mut inner = replays.lock();
        inner.evict(now);
        match inner.entries.get(&id) {
            Some(Entry::Done { body, answer, .. }) if *body == body_hash => {
                let mut response =
                    (answer.status, answer.headers.clone(), answer.body.clone()).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Some(Entry::InFlight { body }) if *body == body_hash => {
                return conflict(
                    "Idempotency-Key: a request with this key is still in progress; retry",
                );
            }
            Some(_) => {
                return conflict("Idempotency-Key: already used for a different request");
            }
            None => {
                inner
                    .entries
                    .insert(id, Entry::InFlight { body: body_hash });
            }
        }
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if !response.status().is_success() {
        replays.lock().entries.remove(&id);
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        replays.lock().entries.remove(&id);
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut headers = HeaderMap::new();
    for name in [http::header::CONTENT_TYPE, http::header::LOCATION] {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    let at = Instant::now();
    let mut inner = replays.lock();
    inner.entries.insert(
        id,
        Entry::Done {
            body: body_hash,
            answer: Kept {
                status: parts.status,
                headers,
                body: bytes.clone(),
            },
            at,
        },
    );
    inner.order.push_back((id, at));
    drop(inner);
    Response::from_parts(parts, Body::from(bytes))
}
