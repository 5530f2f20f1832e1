//! The workload seam: what the scheduler needs of a live revision, whatever runs it.

use bytes::Bytes;

use crate::InvokeError;

/// What one invocation produced, with what metering needs.
#[derive(Debug)]
pub struct Invoked {
    /// The function's response (buffered), or why there is none.
    pub result: Result<http::Response<Bytes>, InvokeError>,
    /// No instance was ready: this request had to start one.
    pub cold: bool,
    /// Highest memory the instance was granted.
    pub peak_memory_bytes: u64,
    /// Bytes of request body read.
    pub request_bytes: u64,
    /// CPU time the invocation used on the node's threads, microseconds (0 where not metered:
    /// container replicas are metered per replica, not per request).
    pub cpu_us: u64,
    /// Bytes the function sent and received over granted outbound HTTP.
    pub outbound_bytes: u64,
}

/// A snapshot of a workload, for scaling decisions, metrics and the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Instances (or replicas) ready to take a request now.
    pub ready: usize,
    /// What the scheduler last asked for.
    pub target: usize,
    /// Invocations running now.
    pub in_flight: usize,
    /// Highest concurrency since the previous `set_target` (at least `in_flight`).
    pub peak_in_flight: usize,
    /// Invocations since the workload started.
    pub invocations: u64,
    /// Invocations that found nothing ready and started an instance themselves.
    pub cold_starts: u64,
    /// Recent average time to start one instance (zero where not measured).
    pub instantiation: std::time::Duration,
}

/// One live revision: a pool of Wasm instances now, container replicas next. Callers hold a
/// concrete type (or an enum of them), so the request path is statically dispatched.
pub trait Workload: Send + Sync + 'static {
    /// Runs one request; `req`'s URI is what the function sees. The function's timeout covers
    /// reading the request body too.
    fn invoke<B>(&self, req: http::Request<B>) -> impl Future<Output = Invoked> + Send
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>;

    /// How many instances to keep ready; surplus ones are released at once. Also closes the
    /// observation window of [`WorkloadStats::peak_in_flight`].
    fn set_target(&self, target: usize);

    /// The workload's current state.
    fn stats(&self) -> WorkloadStats;
}
