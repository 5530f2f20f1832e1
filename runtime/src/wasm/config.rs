//! Node-wide knobs of the Wasm runtime, named after `wasmtime serve`'s flags where it has one.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Node-wide Wasm runtime knobs; each has a `wisp up` flag. Serializable: the compiler child
/// builds its engine from the node's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WasmConfig {
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
    /// Host resources (streams, fields, bodies...) one instance may hold at once
    /// (`wasmtime serve -Smax-resources`).
    pub max_resources: usize,
    /// Largest total size of one `wasi:http` fields (headers) resource, in bytes.
    pub max_field_size: usize,
    /// Largest table (elements) an instance may grow.
    pub max_table_elements: usize,
    /// Bounds each granted outbound HTTP request: connecting, the first response byte, each
    /// gap between body bytes, and waiting for a slot under `max_outbound_concurrency`.
    pub outbound_timeout: Duration,
    /// Granted outbound HTTP requests in flight on the node at once; more wait for a slot.
    pub max_outbound_concurrency: usize,
    /// The executable that compiles components in a child process (`wisp` itself, which
    /// takes the hidden subcommand `COMPILE_SUBCOMMAND`); `None` compiles in this process.
    pub compiler: Option<PathBuf>,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            pool_instances: 1000,
            max_memory_bytes: 1 << 30,
            memory_keep_resident: 2 << 20,
            table_keep_resident: 64 << 10,
            stack_keep_resident: 64 << 10,
            epoch_tick: Duration::from_millis(5),
            log_buffer_bytes: 64 << 10,
            max_resources: 10_000,
            max_field_size: 128 << 10,
            max_table_elements: 1 << 20,
            outbound_timeout: Duration::from_secs(10),
            max_outbound_concurrency: 256,
            compiler: None,
        }
    }
}
