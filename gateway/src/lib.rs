//! The node's HTTP front door: a tower stack (load shedding -> concurrency limit -> router)
//! serving `/fn/{name}/...` invocations, the `/v1/` admin API, `/healthz` and `/metrics`.

mod admin;
mod error;
mod metrics;

pub use error::ApiError;
pub use metrics::Metrics;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use wisp_scheduler::Scheduler;

/// Gateway limits; each has a default and a `wisp up` flag.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Requests handled at once before new ones are shed with 429.
    pub max_concurrency: usize,
    /// Largest component upload accepted by the deploy endpoint.
    pub max_component_bytes: u64,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { max_concurrency: 1024, max_component_bytes: 64 << 20, drain_timeout: Duration::from_secs(30) }
    }
}

pub(crate) struct Gateway {
    pub(crate) scheduler: Scheduler,
    pub(crate) metrics: Metrics,
    pub(crate) config: GatewayConfig,
}

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(value).expect("serializing JSON");
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

pub(crate) fn text_response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// Serves until `shutdown` resolves, then stops accepting and drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    scheduler: Scheduler,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let gateway = Arc::new(Gateway { scheduler, metrics: Metrics::default(), config: config.clone() });
    let routed = gateway.clone();
    // Read top to bottom: shed when full (429), bound concurrency, then route.
    let stack = ServiceBuilder::new().load_shed().concurrency_limit(config.max_concurrency).service_fn(
        move |req: Request<Incoming>| {
            let gateway = routed.clone();
            async move { Ok::<_, Infallible>(route(&gateway, req).await) }
        },
    );
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let (stack, gateway) = (stack.clone(), gateway.clone());
        async move {
            Ok::<_, Infallible>(stack.oneshot(req).await.unwrap_or_else(|_overloaded: BoxError| {
                gateway.metrics.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ApiError::Overloaded.into_response()
            }))
        }
    });

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown: in-flight requests still running after {:?}", config.drain_timeout);
    }
    Ok(())
}

async fn route(gateway: &Gateway, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let result = if let Some(rest) = path.strip_prefix("/fn/") {
        let (name, _) = split_function_path(rest);
        let name = name.to_string();
        invoke(gateway, name, req).await
    } else if path.starts_with("/v1/") {
        admin::handle(gateway, req).await
    } else if path == "/healthz" {
        Ok(text_response(StatusCode::OK, "text/plain", "ok\n"))
    } else if path == "/metrics" {
        let body = gateway.metrics.render(&gateway.scheduler);
        Ok(text_response(StatusCode::OK, "text/plain; version=0.0.4", body))
    } else {
        Err(ApiError::NoRoute(path.to_string()))
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// `hello/a/b` -> (`hello`, `/a/b`); `hello` -> (`hello`, `/`).
fn split_function_path(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Hands the request to the function's live revision with the URI the function should see:
/// the rest of the path after `/fn/{name}`, and the query string.
async fn invoke(gateway: &Gateway, name: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let Some(revision) = gateway.scheduler.route(&name) else {
        return Err(ApiError::UnknownFunction(name));
    };
    let (mut parts, body) = req.into_parts();
    let rest = split_function_path(&parts.uri.path()["/fn/".len()..]).1;
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    parts.uri = path_and_query.parse().map_err(|e| ApiError::BadRequest(format!("request path: {e}")))?;
    let invoked = revision.invoke(Request::from_parts(parts, body)).await;
    gateway.metrics.observe(&name, invoked.outcome, invoked.cold, invoked.wall);
    let response = invoked.result?;
    Ok(response.map(Full::new))
}

#[cfg(test)]
mod tests {
    use super::split_function_path;

    #[test]
    fn splits_name_from_rest() {
        assert_eq!(split_function_path("hello"), ("hello", "/"));
        assert_eq!(split_function_path("hello/"), ("hello", "/"));
        assert_eq!(split_function_path("hello/a/b"), ("hello", "/a/b"));
    }
}
