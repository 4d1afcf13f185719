//! Graceful drain (SIGTERM, SIGINT): new requests get 503 + Retry-After and
//! `/health` turns 503, so a load balancer or Kubernetes takes the replica out,
//! while the requests in flight finish (up to `--drain-seconds`).
//!
//! A request is in flight from the moment the gate lets it through until its
//! response body is dropped: a stream counts until its last event is sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::app::AppState;
use crate::error::ApiError;

/// Seconds a refused client is told to wait: a draining replica does not come
/// back soon, so a client without a load balancer should not hammer it.
const RETRY_AFTER_SECS: u32 = 5;

/// The drain state shared by the gate and `serve`.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: Arc<AtomicUsize>,
}

impl Drain {
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        while self.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn enter(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.in_flight.clone())
    }
}

/// One request in flight; dropping it ends it.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's [`InFlight`] until the body is dropped.
struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// 503 for a request that arrives while the server drains.
pub fn draining_error() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the server is shutting down; retry on another replica".into(),
        kind: "unavailable_error",
        param: None,
        code: Some("draining"),
        retry_after: Some(RETRY_AFTER_SECS),
    }
}

/// Paths a prober or scraper reads while draining: they are neither refused nor counted.
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// Middleware over every route: refuses new requests while draining, and
/// counts the others in flight until their response body is done.
pub async fn gate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let drain = st.drain();
    // Counted before the check, so a drain that starts in between still waits for it.
    let in_flight = drain.enter();
    if drain.is_draining() {
        return draining_error().into_response();
    }
    let (parts, body) = next.run(req).await.into_parts();
    Response::from_parts(
        parts,
        Body::new(Guarded {
            inner: body,
            _in_flight: in_flight,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_counts_until_dropped() {
        let d = Drain::default();
        let a = d.enter();
        let b = d.enter();
        assert_eq!(d.in_flight(), 2);
        drop(a);
        assert_eq!(d.in_flight(), 1);
        let idle = tokio::time::timeout(Duration::from_millis(100), d.idle()).await;
        assert!(idle.is_err(), "idle while a request is in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), d.idle())
            .await
            .expect("idle once every request is done");
        assert!(!d.is_draining());
        d.start();
        assert!(d.is_draining());
    }
}
