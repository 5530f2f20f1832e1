use std::time::Duration;

/// Engine start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuring the wasmtime engine: {0}")]
    Engine(String),
    #[error("compile cache directory {path}: {error}")]
    CacheDir { path: std::path::PathBuf, error: std::io::Error },
}

/// Why a component could not be deployed. Messages are shown to users as-is.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("component is empty (0 bytes)")]
    Empty,
    #[error("not a WebAssembly binary (missing the \\0asm magic header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("component does not export wasi:http/incoming-handler@0.2 (exports: {0})")]
    MissingExport(String),
    #[error("component imports something this node does not provide: {0}")]
    Link(String),
    #[error("component failed to instantiate: {0}")]
    Instantiate(String),
    #[error("node is out of instance capacity: {0}")]
    Capacity(String),
    #[error("memory limit {requested} bytes exceeds this node's maximum of {max} bytes")]
    MemoryTooLarge { requested: u64, max: u64 },
    #[error("writing compiled component to the cache: {0}")]
    Cache(#[source] std::io::Error),
}

/// Why an invocation did not produce the guest's response.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("request body exceeds the limit of {limit} bytes")]
    RequestTooLarge { limit: u64 },
    #[error("reading the request body: {0}")]
    RequestBody(String),
    #[error("response body exceeds the limit of {limit} bytes")]
    ResponseTooLarge { limit: u64 },
    #[error("function trapped: {0}")]
    Trap(String),
    #[error("function exceeded its memory limit of {limit} bytes")]
    Memory { limit: u64 },
    #[error("function timed out after {0:?}")]
    Timeout(Duration),
    #[error("function failed: {0}")]
    Guest(String),
    #[error("no instance available: {0}")]
    Capacity(String),
}
