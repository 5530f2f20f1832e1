//! The per-node WebAssembly runtime: one wasmtime engine with the pooling allocator, a compile
//! cache on disk, and per-revision pools of pre-instantiated `wasi:http/incoming-handler`
//! instances. It knows nothing of routing or triggers: it takes an HTTP request for a revision
//! and gives back a response plus exactly one usage record.

mod cache;
mod config;
mod engine;
mod error;
mod host;
mod invoke;
mod logs;
mod pool;
mod usage;
mod validate;

pub use cache::{CacheStats, write_atomically};
pub use config::{Limits, RuntimeConfig};
pub use engine::{Compiled, PoolUsage, Runtime};
pub use error::{DeployError, InvokeError, RuntimeError};
pub use invoke::Invoked;
pub use logs::LogBuffer;
pub use pool::{PoolStats, Revision, RevisionId};
pub use usage::{Outcome, UsageRecord, UsageSink};
