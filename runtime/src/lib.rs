//! The per-node workload runtime. A live revision is a [`Workload`]: something that takes an HTTP
//! request and gives back a response, keeps a target number of instances ready, and reports
//! its stats. The WebAssembly implementation ([`wasm`]: one wasmtime engine with the pooling
//! allocator, a compile cache on disk, per-revision pools of pre-instantiated
//! `wasi:http/incoming-handler` instances) is the first; [`container`] replicas (OCI images run
//! by crun) are the second.
//!
//! The runtime knows nothing of routing, triggers or metering: callers (the scheduler) record
//! what an invocation used from the [`Invoked`] it returns.

#![warn(missing_docs)]

mod body;
mod budget;
pub mod container;
mod error;
mod limits;
mod logs;
pub mod wasm;
mod workload;

pub use body::{BodyError, declared_length, read_within};
pub use budget::{MemoryBudget, MemoryCharge};
pub use error::InvokeError;
pub use limits::Limits;
pub use logs::LogBuffer;
pub use workload::{Invoked, Workload, WorkloadStats};
