//! Every error the gateway answers with, and its HTTP status: the one place for that mapping
//! (invocation failures carry their status from the runtime's `InvokeError::status`).

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use wisp_runtime::{DeployError, InvokeError};
use wisp_scheduler::SchedulerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("function {0:?} not found")]
    UnknownFunction(String),
    #[error("{what} exceeds the limit of {limit} bytes")]
    BodyTooLarge { what: &'static str, limit: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method {method} not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed { method: String, path: String, allowed: &'static str },
    #[error("node is overloaded: too many requests in flight")]
    Overloaded,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Scheduler(e) => match e {
                SchedulerError::InvalidName { .. } | SchedulerError::InvalidSetting { .. } => StatusCode::BAD_REQUEST,
                SchedulerError::Deploy(DeployError::Cache(_)) => StatusCode::INTERNAL_SERVER_ERROR,
                SchedulerError::Deploy(DeployError::Capacity(_)) => StatusCode::SERVICE_UNAVAILABLE,
                SchedulerError::Deploy(_) => StatusCode::BAD_REQUEST,
                SchedulerError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Invoke(e) => e.status(),
            ApiError::UnknownFunction(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn into_response(self) -> http::Response<Full<Bytes>> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, "{self}");
        }
        crate::json_response(status, &serde_json::json!({ "error": self.to_string() }))
    }
}
