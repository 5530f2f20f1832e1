//! The admin API's JSON answers (docs/admin-api.md), shared by the gateway and the CLI. Every
//! field defaults when missing and unknown fields are ignored, so a client and a node of
//! different releases still understand each other.

use crate::model::{Artifact, Settings};
use serde::{Deserialize, Serialize};

/// A function as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionView {
    pub name: String,
    pub revision: u64,
    pub artifact: Artifact,
    /// `sha256:<hex>` of the component (same as `artifact`; kept for older clients).
    pub component_hash: String,
    pub component_bytes: u64,
    pub created_at_ms: u64,
    pub settings: Settings,
    /// Invocations allowed at once (the function's `max_concurrency`, or the node default).
    pub concurrency_limit: u32,
    pub ready_instances: usize,
    pub in_flight: usize,
    /// Why the function is not serving, when it could not be loaded (e.g. a corrupt file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionView>,
}

/// One revision in a function's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RevisionView {
    pub revision: u64,
    pub artifact: Artifact,
    /// `sha256:<hex>` (kept for older clients).
    pub component_hash: String,
    pub created_at_ms: u64,
}
