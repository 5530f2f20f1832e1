//! The node's JSON answers (docs/admin-api.md). Lenient: missing fields read as defaults, unknown
//! fields are ignored, so the CLI keeps working while the node evolves.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Function {
    pub name: String,
    pub revision: u64,
    pub component_hash: String,
    pub component_bytes: u64,
    pub created_at_ms: u64,
    pub settings: Settings,
    pub ready_instances: u64,
    pub in_flight: u64,
    /// Only in `GET /v1/functions/{name}`.
    pub revisions: Option<Vec<Revision>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub min_warm: u64,
    pub idle_timeout_ms: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Revision {
    pub revision: u64,
    pub component_hash: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FunctionList {
    pub functions: Vec<Function>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Deleted {
    pub deleted: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub summary: Vec<UsageSummary>,
    pub records: Vec<UsageRecord>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UsageSummary {
    pub function: String,
    pub invocations: u64,
    pub cold_starts: u64,
    pub ok: u64,
    pub failed: u64,
    pub wall_us_total: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub peak_memory_bytes_max: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UsageRecord {
    pub id: u64,
    pub function: String,
    pub revision: u64,
    pub start_ms: u64,
    pub wall_us: u64,
    pub cold: bool,
    pub peak_memory_bytes: u64,
    pub outcome: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub status: Option<u16>,
}
