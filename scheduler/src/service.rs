//! Services: what `wisp apply` (a Knative `Service` manifest, validated and defaulted by the
//! manifest crate) and `wisp deploy` both produce. One model, two front doors. A service's
//! template stamps revisions; its traffic splits requests over them.

use crate::model::Settings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace of objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A service as the scheduler keeps it, already validated and defaulted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    /// `metadata.namespace` (`default` when not given).
    pub namespace: String,
    /// `metadata.name`, a DNS-1035 label.
    pub name: String,
    /// `metadata.labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` (never autoscaling ones: those belong to the template).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `spec.template`: what each revision is stamped from.
    pub template: Template,
    /// `spec.traffic`, defaulted: never empty, percents sum to 100.
    pub traffic: Vec<TrafficTarget>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_string(),
            name: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            template: Template::default(),
            traffic: vec![TrafficTarget::latest(100)],
        }
    }
}

impl ServiceSpec {
    /// The function id this service answers as: `name` in the default namespace,
    /// `namespace/name` elsewhere (the same string as its path under `/fn/`).
    pub fn id(&self) -> String {
        function_id(&self.namespace, &self.name)
    }
}

/// `name` in the default namespace, `namespace/name` elsewhere.
/// The Service label that makes it private, and its one value (Knative's cluster-local
/// visibility): only callers with a token that may invoke in its namespace reach it.
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";
pub const CLUSTER_LOCAL: &str = "cluster-local";

pub fn function_id(namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE { name.to_string() } else { format!("{namespace}/{name}") }
}

/// (namespace, name) of a function id.
pub fn split_id(id: &str) -> (&str, &str) {
    id.split_once('/').unwrap_or((DEFAULT_NAMESPACE, id))
}

/// `spec.template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    /// `template.metadata.name`: a bring-your-own revision name (`<service>-<suffix>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// `template.metadata.labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `template.metadata.annotations`, autoscaling ones included (as written, for display;
    /// their parsed values are in `settings`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `containers[0].image` as written: a pushed component `name[:tag]`, a digest
    /// `sha256:<hex>` (or `name@sha256:<hex>`); the node resolves it.
    pub image: String,
    /// Everything the template sets that the runtime enforces: `containerConcurrency`,
    /// `timeoutSeconds`, `resources.limits.memory`, `env`, the autoscaling annotations.
    pub settings: Settings,
}

/// One entry of `spec.traffic`, defaulted (`latestRevision` is set exactly when
/// `revisionName` is not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    pub latest_revision: bool,
    pub percent: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl TrafficTarget {
    /// `percent`% to the latest ready revision.
    pub fn latest(percent: u32) -> Self {
        Self { revision_name: None, latest_revision: true, percent, tag: None }
    }
}
