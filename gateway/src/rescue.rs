//! The rescue layer (linkerd's `ServerRescue`): every error that reaches the top of the stack
//! becomes its JSON answer here, through the one status mapping in `error.rs`.

use crate::{ApiError, Resp};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower::{Layer, Service};

#[derive(Clone)]
pub(crate) struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

#[derive(Clone)]
pub(crate) struct Rescue<S> {
    inner: S,
}

impl<S, R> Service<R> for Rescue<S>
where
    S: Service<R, Response = Resp, Error = ApiError>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router below is always ready; shedding happens per route, inside `call`.
        self.inner.poll_ready(cx).map(|_| Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        RescueFuture { response: self.inner.call(req) }
    }
}

pin_project! {
    pub(crate) struct RescueFuture<F> {
        #[pin]
        response: F,
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Resp, ApiError>>,
{
    type Output = Result<Resp, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().response.poll(cx));
        Poll::Ready(Ok(result.unwrap_or_else(ApiError::into_response)))
    }
}
