//! Every error the gateway answers with, and its HTTP status: the one place for that mapping.
//! Scheduler errors carry an [`ErrorKind`]; the mapping from kinds is exhaustive, so a new kind
//! cannot silently become a 500.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use wisp_access::AccessError;
use wisp_scheduler::{ErrorKind, InvokeError, SchedulerError};
use wisp_triggers::{InvocationError, TriggerError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    #[error(transparent)]
    Invocation(#[from] InvocationError),
    #[error(transparent)]
    Manifest(#[from] wisp_manifest::ManifestError),
    #[error(transparent)]
    Access(#[from] wisp_access::AccessError),
    /// No valid bearer token: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token outside its role or namespace scope.
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} exceeds the limit of {limit} bytes ({flag})")]
    BodyTooLarge { what: &'static str, limit: u64, flag: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    NoRoute(String),
    /// Something the admin API addresses (an image tag) does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed { method: String, path: String, allowed: &'static str },
    #[error("node is overloaded: too many function requests in flight (--max-concurrency)")]
    Overloaded,
    #[error("the request body was not received within {0:?} (--upload-timeout)")]
    UploadTimeout(std::time::Duration),
    #[error("{0}")]
    Internal(String),
}

/// The status for each kind of scheduler failure ([`ErrorKind::http_status`]).
pub fn kind_status(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).expect("ErrorKind::http_status returns valid statuses")
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Scheduler(e) => kind_status(e.kind()),
            ApiError::Invoke(e) => kind_status(e.kind()),
            ApiError::Trigger(e) => kind_status(e.kind()),
            ApiError::Invocation(InvocationError::Callback(_)) => StatusCode::BAD_REQUEST,
            ApiError::Invocation(InvocationError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Invocation(InvocationError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Manifest(_) => StatusCode::BAD_REQUEST,
            ApiError::Access(e) => match e {
                AccessError::Invalid { .. } => StatusCode::BAD_REQUEST,
                AccessError::Exists(_) => StatusCode::CONFLICT,
                AccessError::NotFound(_) => StatusCode::NOT_FOUND,
                AccessError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoRoute(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UploadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> http::Response<Full<Bytes>> {
        let status = self.status();
        // The node's own failures are worth a warning; a function's are its caller's business
        // (and its metrics'), and logging each would let one function flood the node's log.
        let node_side = match &self {
            ApiError::Scheduler(e) => e.kind() == ErrorKind::Internal,
            ApiError::Invoke(e) => e.kind() == ErrorKind::Internal,
            ApiError::Trigger(e) => e.kind() == ErrorKind::Internal,
            ApiError::Invocation(InvocationError::Store(_))
            | ApiError::Access(AccessError::Store(_))
            | ApiError::Internal(_) => true,
            _ => false,
        };
        if node_side {
            tracing::warn!(%status, "{self}");
        }
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let mut response = crate::json_response(status, &serde_json::json!({ "error": self.to_string() }));
        if challenge {
            let value = http::HeaderValue::from_static("Bearer realm=\"wisp\"");
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wisp_runtime::InvokeError as Runtime;

    #[test]
    fn every_error_maps_to_its_status() {
        let runtime = |e: Runtime| ApiError::Invoke(InvokeError::Runtime(e));
        let table: Vec<(ApiError, u16)> = vec![
            (ApiError::Invoke(InvokeError::NotFound("f".into())), 404),
            (ApiError::Invoke(InvokeError::Throttled { function: "f".into(), limit: 1 }), 429),
            (ApiError::Invoke(InvokeError::Unavailable { function: "f".into(), reason: "x".into() }), 503),
            (runtime(Runtime::RequestTooLarge { limit: 1 }), 413),
            (runtime(Runtime::BadRequest(wisp_runtime::BodyError::InvalidLength)), 400),
            (runtime(Runtime::ResponseTooLarge { limit: 1 }), 500),
            (runtime(Runtime::Trap("t".into())), 500),
            (runtime(Runtime::Memory { limit: 1 }), 500),
            (runtime(Runtime::Guest("g".into())), 500),
            (runtime(Runtime::Timeout(Duration::from_secs(1))), 504),
            (runtime(Runtime::Capacity("c".into())), 503),
            (runtime(Runtime::MemoryBudget { limit: 1 }), 503),
            (ApiError::Scheduler(SchedulerError::NotFound("f".into())), 404),
            (ApiError::Scheduler(SchedulerError::InvalidName { name: "F".into(), reason: "r".into() }), 400),
            (ApiError::Scheduler(SchedulerError::InvalidSetting { field: "x".into(), message: "m".into() }), 400),
            (ApiError::Scheduler(wisp_runtime::wasm::DeployError::NotWasm.into()), 400),
            (ApiError::Scheduler(wisp_runtime::wasm::DeployError::Capacity("c".into()).into()), 503),
            (ApiError::Scheduler(wisp_runtime::wasm::DeployError::Cache(std::io::Error::other("disk")).into()), 500),
            (ApiError::Scheduler(SchedulerError::SchemaTooNew { found: 9, known: 2 }), 500),
            (ApiError::BodyTooLarge { what: "upload", limit: 1, flag: "--x" }, 413),
            (ApiError::BadRequest("b".into()), 400),
            (ApiError::NoRoute("/x".into()), 404),
            (ApiError::NotFound("no image tagged x:latest".into()), 404),
            (ApiError::MethodNotAllowed { method: "PATCH".into(), path: "/v1/x".into(), allowed: "GET" }, 405),
            (ApiError::Overloaded, 429),
            (ApiError::Trigger(TriggerError::NotFound("t".into())), 404),
            (ApiError::Trigger(TriggerError::Exists("t".into())), 409),
            (ApiError::Trigger(TriggerError::NoFunction("f".into())), 400),
            (ApiError::Trigger(TriggerError::Malformed("m".into())), 400),
            (ApiError::Invocation(InvocationError::Callback("u".into())), 400),
            (ApiError::Invocation(InvocationError::NotFound("i".into())), 404),
            (ApiError::Invocation(InvocationError::Store("s".into())), 500),
            (ApiError::UploadTimeout(Duration::from_secs(1)), 408),
            (ApiError::Internal("x".into()), 500),
            (ApiError::Unauthorized("u".into()), 401),
            (ApiError::Forbidden("f".into()), 403),
            (ApiError::Access(AccessError::Invalid { field: "role", message: "m".into() }), 400),
            (ApiError::Access(AccessError::Exists("t".into())), 409),
            (ApiError::Access(AccessError::NotFound("t".into())), 404),
            (ApiError::Access(AccessError::Store("s".into())), 500),
        ];
        for (error, status) in table {
            assert_eq!(error.status().as_u16(), status, "{error}");
        }
    }
}
