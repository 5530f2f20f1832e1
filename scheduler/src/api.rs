//! The admin API's JSON answers (docs/admin-api.md), shared by the gateway and the CLI. Every
//! field defaults when missing and unknown fields are ignored, so a client and a node of
//! different releases still understand each other.

use crate::model::{Artifact, Settings};
use crate::service::ServiceSpec;
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

/// What an apply did to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
}

/// The outcome of applying one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// `name`, or `namespace/name` outside the default namespace.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// The revision the apply stamped, if the template changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A service with a Knative-shaped status and its revisions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceView {
    pub id: String,
    pub spec: ServiceSpec,
    pub status: ServiceStatus,
    /// Every stored revision, newest first.
    pub revisions: Vec<RevisionStatus>,
}

/// Knative's `Service.status`, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceStatus {
    pub observed_generation: u64,
    pub url: String,
    pub latest_created_revision_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision_name: Option<String>,
    pub traffic: Vec<TrafficStatus>,
    pub conditions: Vec<Condition>,
}

/// One resolved traffic target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficStatus {
    pub revision_name: String,
    pub latest_revision: bool,
    pub percent: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A Knative status condition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Condition {
    pub(crate) fn new(type_: &str, failure: Option<(&str, String)>) -> Self {
        match failure {
            None => Self { type_: type_.into(), status: "True".into(), reason: None, message: None },
            Some((reason, message)) => Self {
                type_: type_.into(),
                status: "False".into(),
                reason: Some(reason.into()),
                message: Some(message),
            },
        }
    }
}

/// One revision, as `wisp revisions` and `wisp describe` show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RevisionStatus {
    pub name: String,
    /// The generation that stamped it (1, 2, ...).
    pub generation: u64,
    pub image: String,
    pub artifact: Artifact,
    pub created_at_ms: u64,
    /// Loaded and serving (or able to: a revision at zero is still ready).
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Share of the service's requests routed to it.
    pub percent: u32,
    pub tags: Vec<String>,
    pub latest: bool,
    pub container_concurrency: u32,
    pub scaling: crate::ScalingStatus,
}
