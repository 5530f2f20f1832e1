//! The rescue layer (linkerd's `ServerRescue`): every error that reaches the top of the stack
//! becomes its JSON answer here, through the one status mapping in `error.rs`.

use crate::metrics::GatewayMetrics;
use crate::{ApiError, Resp};
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service};

#[derive(Clone)]
pub(crate) struct RescueLayer(pub(crate) GatewayMetrics);

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Rescue<S> {
    inner: S,
    metrics: GatewayMetrics,
}

impl<S, R> Service<R> for Rescue<S>
where
    S: Service<R, Response = Resp, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Resp, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router below is always ready; shedding happens per route, inside `call`.
        self.inner.poll_ready(cx).map(|_| Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let response = self.inner.call(req);
        let shed = self.metrics.shed.clone();
        Box::pin(async move {
            Ok(response.await.unwrap_or_else(|error| {
                let error = match error.downcast::<ApiError>() {
                    Ok(api) => *api,
                    Err(other) if other.is::<tower::load_shed::error::Overloaded>() => {
                        shed.inc();
                        ApiError::Overloaded
                    }
                    Err(other) => ApiError::BadRequest(other.to_string()),
                };
                error.into_response()
            }))
        })
    }
}
