//! The node's JSON answers (docs/admin-api.md): the scheduler's own types, plus the two small
//! envelopes the gateway wraps around them.

use serde::Deserialize;
pub use wisp_scheduler::{FunctionView as Function, UsageReport as Usage};

#[derive(Debug, Deserialize)]
pub struct FunctionList {
    pub functions: Vec<Function>,
}

#[derive(Debug, Deserialize)]
pub struct Deleted {
    pub deleted: String,
}
