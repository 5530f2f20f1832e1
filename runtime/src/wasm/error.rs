//! Errors of preparing Wasm workloads. Messages are shown to users as-is.

/// Engine start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the configuration or the linker.
    #[error("configuring the wasmtime engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    /// The compile cache directory could not be created.
    #[error("compile cache directory {path}: {error}")]
    CacheDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("starting the epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
    /// A refill thread could not be started.
    #[error("starting the refill threads: {0}")]
    Refill(#[source] std::io::Error),
}

/// Why a component could not be deployed. Messages are shown to users as-is.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Zero bytes.
    #[error("component is empty (0 bytes)")]
    Empty,
    /// No `\0asm` header.
    #[error("not a WebAssembly binary (missing the \\0asm magic header)")]
    NotWasm,
    /// A core module instead of a component.
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// wasmtime could not validate or compile it.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// It does not export the HTTP handler.
    #[error("component does not export wasi:http/incoming-handler@0.2 (exports: {0})")]
    MissingExport(String),
    /// It imports something the node does not link.
    #[error("component imports something this node does not provide: {0}")]
    Link(String),
    /// Instantiating it with the function's limits failed.
    #[error("component failed to instantiate: {0}")]
    Instantiate(String),
    /// No pool slot or address space for even one instance.
    #[error("node is out of instance capacity: {0}")]
    Capacity(String),
    /// The function asks for more memory than the node grants.
    #[error("memory limit {requested} bytes exceeds this node's maximum of {max} bytes (--max-memory)")]
    MemoryTooLarge {
        /// What the function asked for.
        requested: u64,
        /// `--max-memory`.
        max: u64,
    },
    /// The compiler process failed (not the component: it did not compile, or was killed).
    #[error("the compiler process {} failed: {message}", exe.display())]
    Compiler {
        /// The executable run.
        exe: std::path::PathBuf,
        /// What happened: its exit status and error output.
        message: String,
    },
    /// Writing the compiled code to the cache failed.
    #[error("writing compiled component to the cache: {0}")]
    Cache(#[source] std::io::Error),
    /// The compiled code in the cache could not be loaded.
    #[error("loading compiled component {path}: {message}")]
    CacheLoad {
        /// The cache file.
        path: std::path::PathBuf,
        /// wasmtime's reason.
        message: String,
    },
}
