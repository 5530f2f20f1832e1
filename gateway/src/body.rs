//! A request body that fails when the client pauses longer than the body-read timeout between
//! chunks. Unlike tower-http's `TimeoutBody`, the timer is armed only when the body is actually
//! waiting for the client, so the common case (a body already buffered, or none) costs no
//! timer registration per request.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Sleep, sleep};

/// The client paused longer than `--body-read-timeout` in the middle of its body.
#[derive(Debug, thiserror::Error)]
#[error("no body data received for {0:?} (--body-read-timeout)")]
pub struct BodyStalled(Duration);

/// The incoming body type every handler sees.
pub type Body = IdleTimeout<Incoming>;

pin_project! {
    pub struct IdleTimeout<B> {
        #[pin]
        body: B,
        #[pin]
        sleep: Option<Sleep>,
        timeout: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(body: B, timeout: Duration) -> Self {
        Self { body, sleep: None, timeout }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            this.sleep.set(None);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep(*this.timeout)));
        }
        let sleep = this.sleep.as_pin_mut().expect("armed above");
        ready!(sleep.poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyStalled(*this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
