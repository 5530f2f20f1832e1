use serde::Serialize;
use std::sync::Arc;

/// How an invocation ended, as metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The guest produced a response (whatever its status).
    Ok,
    /// The guest answered with an error instead of a response, or an oversized one.
    Error,
    Trap,
    Timeout,
    Memory,
    /// Refused before running: request too large, or no instance could be had.
    Rejected,
    /// The caller went away before the invocation finished.
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::Memory,
        Outcome::Rejected,
        Outcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Memory => "memory",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Exactly one per invocation.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub function: Arc<str>,
    pub revision: u64,
    /// Unix time in milliseconds when the invocation started.
    pub start_ms: u64,
    pub wall_us: u64,
    pub cold: bool,
    pub peak_memory_bytes: u64,
    pub outcome: Outcome,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// HTTP status returned to the caller.
    pub status: u16,
}

/// Where usage records go; implemented by the node's ledger. Must not block.
pub trait UsageSink: Send + Sync + 'static {
    fn record(&self, record: UsageRecord);
}
