use std::time::Duration;

/// Node-wide runtime knobs, named after `wasmtime serve`'s pooling flags.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Component instances the pooling allocator can hold at once (ready + running).
    pub pool_instances: u32,
    /// Largest linear memory any function may be granted (per-function limits must fit).
    pub max_memory_bytes: u64,
    /// Bytes of each linear memory kept resident (memset, not madvise) when a slot is reused.
    pub memory_keep_resident: usize,
    /// Bytes of each table kept resident when a slot is reused.
    pub table_keep_resident: usize,
    /// Bytes of each async stack kept resident when a slot is reused.
    pub stack_keep_resident: usize,
    /// Epoch tick: granularity of timeouts and of yielding a busy guest to other requests.
    pub epoch_tick: Duration,
    /// Bytes of guest stdout/stderr kept per function.
    pub log_buffer_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pool_instances: 1000,
            max_memory_bytes: 1 << 30,
            memory_keep_resident: 2 << 20,
            table_keep_resident: 64 << 10,
            stack_keep_resident: 64 << 10,
            epoch_tick: Duration::from_millis(5),
            log_buffer_bytes: 64 << 10,
        }
    }
}

/// Per-invocation limits of one function; every field has a default and a deploy-time override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub timeout: Duration,
    pub max_request_body: u64,
    pub max_response_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            max_request_body: 4 << 20,
            max_response_body: 16 << 20,
        }
    }
}
