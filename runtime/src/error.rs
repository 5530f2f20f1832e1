//! Why an invocation did not produce the function's response. Messages are shown to callers.

use std::time::Duration;

/// Why an invocation did not produce the function's response.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The request body is larger than the function accepts.
    #[error("request body exceeds the function's limit of {limit} bytes (max_request_body)")]
    RequestTooLarge {
        /// The function's `max_request_body`.
        limit: u64,
    },
    /// The request itself is unusable (bad content-length, client failed mid-body).
    #[error("bad request: {0}")]
    BadRequest(#[source] crate::BodyError),
    /// The function's response body is larger than it may return.
    #[error("response body exceeds the function's limit of {limit} bytes (max_response_body)")]
    ResponseTooLarge {
        /// The function's `max_response_body`.
        limit: u64,
    },
    /// The guest trapped.
    #[error("function trapped: {0}")]
    Trap(String),
    /// The guest tried to grow its memory past its limit.
    #[error("function exceeded its memory limit of {limit} bytes")]
    Memory {
        /// The function's memory limit.
        limit: u64,
    },
    /// The invocation (body upload included) ran past the function's timeout.
    #[error("function timed out after {0:?}")]
    Timeout(Duration),
    /// The guest answered with an error instead of a response, or could not be started.
    #[error("function failed: {0}")]
    Guest(String),
    /// The node has no instance slot (or address space) for another instance right now.
    #[error("no instance available: {0}")]
    Capacity(String),
    /// A container's server broke the exchange: it exited, or reset or closed the connection.
    #[error("{0}")]
    Upstream(String),
    /// No replica could be started to serve the request (a container image that does not
    /// start or never listens); the message says why.
    #[error("function not ready: {0}")]
    NotReady(String),
    /// The node-wide memory budget (`--memory-budget`) is spent.
    #[error("the node's memory budget of {limit} bytes is spent (--memory-budget)")]
    MemoryBudget {
        /// The node's budget.
        limit: u64,
    },
}
