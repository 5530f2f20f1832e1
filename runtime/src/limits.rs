//! Per-invocation limits of one function, whatever runs it.

use std::time::Duration;

/// Per-invocation limits of one function; every field has a default and a deploy-time override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest memory one instance may use.
    pub memory_bytes: u64,
    /// Wall-clock limit of one invocation, reading the request body included.
    pub timeout: Duration,
    /// Largest request body accepted.
    pub max_request_body: u64,
    /// Largest response body the function may return.
    pub max_response_body: u64,
    /// Requests one instance may serve, one after another (1: a fresh instance per request).
    /// Reuse keeps guest state between those requests; see `max_instance_reuse_count`.
    pub max_instance_reuse: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            max_request_body: 4 << 20,
            max_response_body: 16 << 20,
            max_instance_reuse: 1,
        }
    }
}
