//! WebAssembly workloads: one wasmtime engine per node (pooling allocator, copy-on-write memory
//! images, epoch interruption), a compile cache on disk, and per-revision [`InstancePool`]s of
//! pre-instantiated `wasi:http/incoming-handler` instances.

mod cache;
mod compiler;
mod config;
mod engine;
mod error;
mod host;
mod invoke;
mod outbound;
mod pool;
mod refill;
mod validate;

pub use cache::CacheStats;
pub use compiler::{COMPILE_SUBCOMMAND, ChildError, compile_child};
pub use config::WasmConfig;
pub use engine::{Compiled, PoolUsage, WasmRuntime};
pub use error::{DeployError, RuntimeError};
pub use outbound::{Grants, Origin};
pub use pool::{InstancePool, PoolId};
