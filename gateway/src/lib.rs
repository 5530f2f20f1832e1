//! The node's HTTP front door. One tower stack, read top to bottom in [`Gateway::serve`]:
//! connection limit and hyper's header-read / keep-alive timeouts at the socket, a rescue layer
//! turning every error into its status, a body-read timeout, then routing: `/healthz`,
//! `/metrics` and the `/v1/` admin API outside the invocation limits, `/fn/{name}/...` shed
//! with 429 past `--max-concurrency` and handed to the scheduler's one invoke path; async
//! requests (`/async/fn/...`, or `Prefer: respond-async`) stored durably and answered 202.

mod admin;
mod asynchronous;
mod auth;
mod body;
mod error;
mod metrics;
mod rescue;

pub use error::{ApiError, kind_status};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics::GatewayMetrics;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use wisp_scheduler::{Scheduler, Source};
use wisp_triggers::{Invocations, Triggers};

/// Gateway limits; each has a default and a `wisp up` flag.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Function requests handled at once before new ones are shed with 429.
    pub max_concurrency: usize,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Largest component upload accepted by the deploy endpoint.
    pub max_component_bytes: u64,
    /// Largest OCI image (`oci-archive`) accepted by `POST /v1/images`.
    pub max_image_bytes: u64,
    /// Where image uploads are written while they are imported (the node's data dir, so the
    /// import can move blobs rather than copy them); `None`: the system's temporary directory.
    pub upload_dir: Option<PathBuf>,
    /// Time a client has to send a request's headers, and how long an idle keep-alive
    /// connection is kept.
    pub header_read_timeout: Duration,
    /// Longest pause between two chunks of a request body.
    pub body_read_timeout: Duration,
    /// Time an admin upload (a component or an image) may take in all.
    pub upload_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 1024,
            max_connections: 10_000,
            max_component_bytes: 64 << 20,
            max_image_bytes: 2 << 30,
            upload_dir: None,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            upload_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The gateway of one node.
pub struct Gateway {
    scheduler: Scheduler,
    /// The node's bearer tokens: every `/v1` call and every private function needs one.
    access: wisp_access::Access,
    triggers: Triggers,
    invocations: Invocations,
    /// `--max-concurrency`: function requests in flight at once.
    function_slots: Semaphore,
    config: GatewayConfig,
    metrics: GatewayMetrics,
    /// Rendered at `/metrics`; complete (every crate registered) once `serve` is called.
    registry: Registry,
}

type Resp = Response<Full<Bytes>>;
use body::{Body, IdleTimeout};

pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(value).expect("serializing JSON");
    text_response(status, "application/json", body)
}

pub(crate) fn text_response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

impl Gateway {
    /// A gateway in front of `scheduler` (and the node's triggers and async invocations);
    /// registers its metrics in `registry`.
    pub fn new(
        scheduler: Scheduler,
        access: wisp_access::Access,
        triggers: Triggers,
        invocations: Invocations,
        config: GatewayConfig,
        registry: &mut Registry,
    ) -> Self {
        let metrics = GatewayMetrics::register(registry);
        metrics.connection_limit.set(config.max_connections as i64);
        let function_slots = Semaphore::new(config.max_concurrency);
        Self {
            scheduler,
            access,
            triggers,
            invocations,
            function_slots,
            config,
            metrics,
            registry: Registry::default(),
        }
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and drains in-flight
    /// requests (up to the drain timeout). `registry` (the node's, complete) is rendered at
    /// `/metrics`.
    pub async fn serve(mut self, listener: TcpListener, registry: Registry, shutdown: CancellationToken) {
        self.registry = registry;
        let gateway = Arc::new(self);
        let config = gateway.config.clone();

        // Read top to bottom: every error becomes its status here (the one mapping), bodies
        // that stall are cut off, then routing.
        let stack = ServiceBuilder::new()
            .layer(rescue::RescueLayer)
            .map_request(move |req: Request<Incoming>| req.map(|b| IdleTimeout::new(b, config.body_read_timeout)))
            .service_fn({
                let gateway = gateway.clone();
                move |req: Request<Body>| {
                    let gateway = gateway.clone();
                    async move { route(&gateway, req).await }
                }
            });

        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper restarts the header timer whenever it waits for a request head, so it is also
        // the keep-alive idle timeout: an idle or half-sent connection cannot be held forever.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(config.header_read_timeout)
            .keep_alive_timeout(config.header_read_timeout);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(config.max_connections));
        loop {
            // At the connection limit, stop accepting: new clients wait in the backlog until an
            // open connection ends (timeouts guarantee one will), instead of being reset.
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => permit.expect("never closed"),
                _ = shutdown.cancelled() => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            // hyper's header timer starts only once it knows the protocol, and the auto builder
            // waits for the preface without one: a client that sends nothing (or half a
            // preface) is dropped if no request has started within the header timeout.
            let started = Arc::new(AtomicBool::new(false));
            let service = stack.clone().map_request({
                let started = started.clone();
                move |req: Request<Incoming>| {
                    started.store(true, Ordering::Relaxed);
                    req
                }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let conn = graceful.watch(conn.into_owned());
            let first_request = FirstRequest { started, within: config.header_read_timeout };
            spawn_connection(conn, first_request, gateway.metrics.open_connections.clone(), permit);
        }
        drop(listener);
        if tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await.is_err() {
            tracing::warn!("shutdown: requests still running after {:?}", config.drain_timeout);
        }
    }
}

/// A connection must have started a request by `within`, or it is closed.
struct FirstRequest {
    started: Arc<AtomicBool>,
    within: Duration,
}

/// Runs one connection to its end, counted in the open-connections gauge and holding its
/// slot of the connection limit. (A function of its own: spawning the connection inline in
/// `serve` made rustc fail to prove the future `Send` for all lifetimes.)
fn spawn_connection<F>(conn: F, first: FirstRequest, open: Gauge, permit: OwnedSemaphorePermit)
where
    F: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    open.inc();
    tokio::spawn(async move {
        tokio::pin!(conn);
        let result = match tokio::time::timeout(first.within, &mut conn).await {
            Ok(result) => result,
            Err(_) if !first.started.load(Ordering::Relaxed) => Ok(()),
            Err(_) => conn.await,
        };
        if let Err(e) = result {
            tracing::debug!("connection ended: {e}");
        }
        open.dec();
        drop(permit);
    });
}

async fn route(gateway: &Gateway, req: Request<Body>) -> Result<Resp, ApiError> {
    // Knative-style addressing: `{name}.{namespace}.{domain}` (or `{tag}-{name}...`) routes
    // every path to the service; the function sees the whole path.
    if let Some((id, tag)) = host_of(&req).and_then(|host| gateway.scheduler.resolve_host(host)) {
        let Ok(_permit) = gateway.function_slots.try_acquire() else {
            gateway.metrics.shed.inc();
            return Err(ApiError::Overloaded);
        };
        return invoke_by_host(gateway, &id, tag, req).await;
    }
    let path = req.uri().path();
    if path.starts_with("/fn/") || path.starts_with("/async/fn/") {
        // Shed (429) once `--max-concurrency` function requests are in flight; the permit is
        // held until the response is built (for async ones: until the request is stored).
        let Ok(_permit) = gateway.function_slots.try_acquire() else {
            gateway.metrics.shed.inc();
            return Err(ApiError::Overloaded);
        };
        if let Some(rest) = path.strip_prefix("/async/fn/") {
            let rest = rest.to_string();
            asynchronous::submit(gateway, &rest, req).await
        } else if asynchronous::wants_async(&req) {
            let rest = path["/fn/".len()..].to_string();
            asynchronous::submit(gateway, &rest, req).await
        } else {
            invoke(gateway, req).await
        }
    } else if path.starts_with("/v1/") {
        admin::handle(gateway, req).await
    } else if path == "/healthz" {
        Ok(text_response(StatusCode::OK, "text/plain", "ok\n"))
    } else if path == "/metrics" {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut text, &gateway.registry)
            .map_err(|e| ApiError::Internal(format!("rendering metrics: {e}")))?;
        Ok(text_response(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text))
    } else {
        Err(ApiError::NoRoute(path.to_string()))
    }
}

/// The request's host: HTTP/1's Host header, or HTTP/2's `:authority`.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host())
}

/// A request addressed by Host: a tag from the host is passed on as the
/// `Knative-Serving-Tag` header, which is how the scheduler picks a tagged revision.
async fn invoke_by_host(
    gateway: &Gateway,
    id: &str,
    tag: Option<String>,
    req: Request<Body>,
) -> Result<Resp, ApiError> {
    let (mut parts, body) = req.into_parts();
    if let Err(refused) = auth::check_invoke(gateway, &mut parts.headers, id) {
        return Err(auth::refuse(refused, body).await);
    }
    if let Some(tag) = tag {
        let value = http::HeaderValue::from_str(&tag).map_err(|e| ApiError::BadRequest(format!("tag: {e}")))?;
        parts.headers.insert("knative-serving-tag", value);
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    parts.uri = path_and_query.parse().map_err(|e| ApiError::BadRequest(format!("request path: {e}")))?;
    let response = gateway.scheduler.invoke(id, Request::from_parts(parts, body), Source::Http).await?;
    Ok(response.map(Full::new))
}

/// `hello/a/b` -> (`hello`, `/a/b`); `hello` -> (`hello`, `/`); `team/api/x` -> (`team/api`,
/// `/x`) when a service `api` exists in namespace `team` (else function `team`, path `/api/x`).
pub(crate) fn split_function_path(rest: &str, exists: impl Fn(&str) -> bool) -> (&str, &str) {
    let first = rest.find('/');
    if let Some(i) = first {
        let second = rest[i + 1..].find('/').map_or(rest.len(), |j| i + 1 + j);
        let id = &rest[..second];
        if second > i + 1 && exists(id) {
            return (id, if second == rest.len() { "/" } else { &rest[second..] });
        }
    }
    match first {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Hands the request to the scheduler with the URI the function should see: the rest of the
/// path after `/fn/{name}`, and the query string.
async fn invoke(gateway: &Gateway, req: Request<Body>) -> Result<Resp, ApiError> {
    let (mut parts, body) = req.into_parts();
    let (name, uri) = function_uri(gateway, &parts.uri, &parts.uri.path()["/fn/".len()..])?;
    if let Err(refused) = auth::check_invoke(gateway, &mut parts.headers, &name) {
        return Err(auth::refuse(refused, body).await);
    }
    parts.uri = uri;
    let response = gateway.scheduler.invoke(&name, Request::from_parts(parts, body), Source::Http).await?;
    Ok(response.map(Full::new))
}

/// The function's name and the URI it sees, from `rest` (the path after `/fn/` or `/async/fn/`)
/// and the query string.
pub(crate) fn function_uri(gateway: &Gateway, uri: &http::Uri, rest: &str) -> Result<(String, http::Uri), ApiError> {
    let (name, rest) = split_function_path(rest, |id| gateway.scheduler.exists(id));
    let path_and_query = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let uri = path_and_query.parse().map_err(|e| ApiError::BadRequest(format!("request path: {e}")))?;
    Ok((name.to_string(), uri))
}

#[cfg(test)]
mod tests {
    use super::split_function_path;

    #[test]
    fn splits_name_from_rest() {
        let none = |_: &str| false;
        assert_eq!(split_function_path("hello", none), ("hello", "/"));
        assert_eq!(split_function_path("hello/", none), ("hello", "/"));
        assert_eq!(split_function_path("hello/a/b", none), ("hello", "/a/b"));
        let team_api = |id: &str| id == "team/api";
        assert_eq!(split_function_path("team/api", team_api), ("team/api", "/"));
        assert_eq!(split_function_path("team/api/x?y", team_api), ("team/api", "/x?y"));
        assert_eq!(split_function_path("team/other/x", team_api), ("team", "/other/x"));
    }
}
