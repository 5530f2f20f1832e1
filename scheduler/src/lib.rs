//! The scheduler: the registry of services and their revisions (persisted in the node's SQLite
//! store, with migrations), applies that stamp revisions and switch traffic without dropping
//! in-flight requests, the one invoke path every source goes through (routing by traffic
//! split and tag, the activator, admission, metering, metrics), and the KPA autoscaler that
//! sets each live revision's replicas.

mod activator;
mod api;
mod autoscaler;
mod error;
mod images;
mod invoke;
mod kpa;
mod metrics;
mod model;
mod revision;
mod route;
mod scaling;
mod secrets;
mod service;
mod services;
mod store;
mod views;

pub use api::{
    Applied, Condition, FunctionView, RevisionStatus, RevisionView, ServiceStatus, ServiceView, TrafficStatus,
};
pub use error::{ErrorKind, InvokeError, SchedulerError};
pub use images::DEFAULT_PORT;
pub use kpa::{Averages, Decider, DeciderConfig, Decision, Input, Windows};
pub use model::{
    Artifact, MAX_INSTANCE_REUSE, RESERVED_ENV, SETTING_NAMES, SecretKeyRef, Settings, check_env_name, parse_duration,
    parse_origin, parse_size, validate_name,
};
pub use revision::ScalingStatus;
pub use scaling::{Metric, Scaling};
pub use secrets::SecretInfo;
pub use service::{
    CLUSTER_LOCAL, DEFAULT_NAMESPACE, ServiceSpec, Template, TrafficTarget, VISIBILITY_LABEL, function_id, split_id,
};
pub use store::{ArtifactRef, StoredObject};
pub use wisp_ledger::{Bill, GroupBy, Origin, Period, Pricing, Source, UsageQuery, UsageReport, parse_time};
pub use wisp_runtime::{BodyError, read_within};

use metrics::{FunctionMetrics, Metrics};
use prometheus_client::registry::Registry;
use route::Route;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{Store, StoredRevision};
use tokio_util::sync::CancellationToken;
use wisp_ledger::Ledger;
use wisp_oci::ImageStore;
use wisp_runtime::LogBuffer;
use wisp_runtime::container::ContainerRuntime;
use wisp_runtime::wasm::WasmRuntime;

/// Scheduler knobs; each has a `wisp up` flag.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Where the registry (`wisp.db`) and component files live.
    pub data_dir: PathBuf,
    /// How often the autoscaler decides for every revision; also its metric bucket.
    pub scale_interval: Duration,
    /// Cap on ready Wasm instances, or container replicas, per revision.
    pub max_ready: usize,
    /// A function's `max_concurrency` when it sets none.
    pub function_concurrency: u32,
    /// Requests one revision's activator holds while it is at capacity (Knative: 10,000).
    pub activator_queue: usize,
    /// KPA node knobs (Knative's config-autoscaler).
    pub decider: DeciderConfig,
    /// Unrouted revisions kept per service beyond the routed ones; older ones are deleted.
    pub revision_retention: usize,
    /// Host suffix of service URLs: `{name}.{namespace}.{domain}`.
    pub domain: String,
    /// Port shown in service URLs (0: none).
    pub url_port: u16,
    /// Whether invocations are recorded in the ledger (off only to measure what metering
    /// costs: nothing can be billed or exported then).
    pub metering: bool,
}

impl SchedulerConfig {
    /// Defaults for a node keeping its state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let scale_interval = Duration::from_millis(100);
        Self {
            data_dir: data_dir.into(),
            scale_interval,
            max_ready: 64,
            function_concurrency: 250,
            activator_queue: 10_000,
            decider: DeciderConfig { tick: scale_interval, ..DeciderConfig::default() },
            revision_retention: 20,
            domain: "localhost".to_string(),
            url_port: 0,
            metering: true,
        }
    }
}

/// What a service keeps across its revisions.
pub(crate) struct FunctionState {
    pub(crate) name: Arc<str>,
    pub(crate) logs: Arc<LogBuffer>,
    /// Invocations admitted now (all revisions), against `max_concurrency`.
    pub(crate) admitted: AtomicUsize,
    /// Created by the first invocation: an idle function costs no metric series.
    pub(crate) metrics: std::sync::OnceLock<FunctionMetrics>,
}

/// A service as requests see it: an immutable snapshot, replaced whole by every apply, so the
/// request path reads it under a read lock held for one `Arc` clone.
pub(crate) struct Service {
    pub(crate) spec: ServiceSpec,
    pub(crate) state: Arc<FunctionState>,
    pub(crate) route: Route,
    /// Loaded revisions, by number: the routed ones and the latest.
    pub(crate) live: BTreeMap<u64, Arc<revision::Revision>>,
    /// Revisions that could not be loaded (a corrupt component file, say), with why.
    pub(crate) failed: BTreeMap<u64, String>,
    /// Every stored revision, newest first.
    pub(crate) history: Vec<StoredRevision>,
}

impl Service {
    /// The newest revision, the one the template last stamped.
    pub(crate) fn latest(&self) -> &StoredRevision {
        &self.history[0]
    }

    /// The newest revision that is loaded: what `latestRevision` routes to.
    pub(crate) fn latest_ready(&self) -> Option<&Arc<revision::Revision>> {
        self.live.values().next_back()
    }
}

pub(crate) struct Inner {
    config: SchedulerConfig,
    runtime: WasmRuntime,
    /// The container runtime, or why this node has none (no crun, say).
    containers: Result<ContainerRuntime, String>,
    /// Imported OCI images (`images/` in the data dir).
    images: ImageStore,
    store: Store,
    ledger: Ledger,
    metrics: Metrics,
    services: RwLock<HashMap<String, Arc<Service>>>,
    /// Serializes applies and deletes so revision numbers and traffic switches stay ordered.
    admin: tokio::sync::Mutex<()>,
    /// Every function's state while anything holds it (deleted functions' in-flight
    /// invocations included), so shutdown can wait for their admitted invocations.
    states: std::sync::Mutex<Vec<std::sync::Weak<FunctionState>>>,
    /// The autoscaler's clock origin.
    epoch: Instant,
    /// Secrets by namespace and name (written through to the registry).
    secrets: secrets::Secrets,
}

impl Inner {
    fn services(&self) -> Vec<Arc<Service>> {
        self.services.read().unwrap().values().cloned().collect()
    }

    /// A function's metric handles, created on its first use.
    fn metrics_of<'a>(&self, state: &'a FunctionState) -> &'a FunctionMetrics {
        state.metrics.get_or_init(|| self.metrics.function(&state.name))
    }

    /// Invocations a function may run at once: its own `max_concurrency`, or the node default.
    fn concurrency_limit(&self, settings: &Settings) -> u32 {
        match settings.max_concurrency {
            0 => self.config.function_concurrency,
            n => n,
        }
    }
}

/// The scheduler of one node. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Scheduler {
    /// Opens (and migrates) the registry in `config.data_dir`, registers the scheduler's
    /// metrics, and restores every service: a revision that cannot be loaded is logged, naming
    /// its file, and answers 503 while the others serve. Needs a tokio runtime.
    /// `containers` runs container images (or says why this node cannot).
    pub async fn new(
        config: SchedulerConfig,
        runtime: WasmRuntime,
        containers: Result<ContainerRuntime, String>,
        ledger: Ledger,
        registry: &mut Registry,
    ) -> Result<Self, SchedulerError> {
        let data_dir = config.data_dir.clone();
        let (store, images) = tokio::task::spawn_blocking(move || {
            Ok::<_, SchedulerError>((Store::open(&data_dir)?, ImageStore::open(&data_dir.join("images"))?))
        })
        .await??;
        let scheduler = Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                containers,
                images,
                store,
                ledger,
                metrics: Metrics::register(registry),
                services: RwLock::default(),
                admin: tokio::sync::Mutex::new(()),
                states: std::sync::Mutex::default(),
                epoch: Instant::now(),
                secrets: secrets::Secrets::default(),
            }),
        };
        registry.register_collector(Box::new(metrics::NodeCollector(Arc::downgrade(&scheduler.inner))));
        scheduler.load_secrets().await?;
        scheduler.restore().await?;
        Ok(scheduler)
    }

    /// Runs the autoscaler until `shutdown` is cancelled.
    pub fn spawn_autoscaler(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(autoscaler::run(Arc::downgrade(&self.inner), self.inner.config.scale_interval, shutdown))
    }

    /// The settings of a function's latest revision, if it is deployed.
    pub fn settings(&self, id: &str) -> Option<Settings> {
        self.service(id).map(|s| s.latest().settings.clone())
    }

    /// The container runtime, or an error naming the image field and why there is none.
    pub(crate) fn containers(&self) -> Result<&ContainerRuntime, SchedulerError> {
        self.inner.containers.as_ref().map_err(|why| SchedulerError::InvalidField {
            field: images::IMAGE_FIELD.into(),
            message: format!("a container image, and this node cannot run containers: {why}"),
        })
    }

    /// Records replicas' time (spans while they run, and when they stop) in the ledger, for
    /// replica-seconds billing.
    pub(crate) fn replica_meter(
        &self,
        function: &Arc<str>,
        revision: u64,
    ) -> Arc<dyn Fn(wisp_runtime::container::ReplicaSpan) + Send + Sync> {
        let (ledger, function) = (self.inner.ledger.clone(), function.clone());
        Arc::new(move |ended| {
            drop(ledger.record_replica(wisp_ledger::ReplicaUsage {
                function: function.clone(),
                revision,
                replica: ended.id.into(),
                start_ms: ended.start_ms,
                end_ms: ended.end_ms,
                cpu_ms: ended.cpu_ms,
            }))
        })
    }

    pub(crate) fn service(&self, id: &str) -> Option<Arc<Service>> {
        self.inner.services.read().unwrap().get(id).cloned()
    }

    /// Whether a function is private (`networking.knative.dev/visibility: cluster-local`): the
    /// gateway then admits only callers whose token may invoke in its namespace.
    pub fn is_private(&self, id: &str) -> bool {
        let services = self.inner.services.read().unwrap();
        services.get(id).is_some_and(|s| s.spec.labels.get(VISIBILITY_LABEL).is_some_and(|v| v == CLUSTER_LOCAL))
    }

    /// Whether a function (service) of this id is deployed (loaded or not).
    pub fn exists(&self, id: &str) -> bool {
        self.inner.services.read().unwrap().contains_key(id)
    }

    /// The service and tag a request's Host names: `{name}.{namespace}.{domain}`, or
    /// `{tag}-{name}.{namespace}.{domain}`. None when the host is not under the domain or
    /// names nothing deployed.
    pub fn resolve_host(&self, host: &str) -> Option<(String, Option<String>)> {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host });
        let prefix = host.strip_suffix(self.inner.config.domain.as_str())?.strip_suffix('.')?;
        let (label, namespace) = prefix.split_once('.')?;
        let services = self.inner.services.read().unwrap();
        let id = function_id(namespace, label);
        if services.contains_key(&id) {
            return Some((id, None));
        }
        label.match_indices('-').find_map(|(i, _)| {
            let (tag, name) = (&label[..i], &label[i + 1..]);
            let id = function_id(namespace, name);
            services.get(&id).filter(|s| s.route.has_tag(tag)).map(|_| (id, Some(tag.to_string())))
        })
    }

    /// Stores an API object durably unless one of its kind and name exists (returns false then).
    pub async fn create_object(&self, object: StoredObject) -> Result<bool, SchedulerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.store.create_object(&object)).await?
    }

    /// Deletes an API object; returns whether it existed.
    pub async fn delete_object(&self, kind: &str, name: &str) -> Result<bool, SchedulerError> {
        let (inner, kind, name) = (self.inner.clone(), kind.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || inner.store.delete_object(&kind, &name)).await?
    }

    /// Every stored API object of a kind, by name.
    pub async fn objects(&self, kind: &str) -> Result<Vec<StoredObject>, SchedulerError> {
        let (inner, kind) = (self.inner.clone(), kind.to_string());
        tokio::task::spawn_blocking(move || inner.store.objects(&kind)).await?
    }

    /// The function's captured guest output.
    pub fn logs(&self, id: &str) -> Result<Vec<u8>, SchedulerError> {
        services::validate_id(id)?;
        match self.service(id) {
            Some(s) => Ok(s.state.logs.contents()),
            None => Err(SchedulerError::NotFound(id.to_string())),
        }
    }

    /// Usage totals and the newest records; includes every invocation finished before the call.
    pub async fn usage(&self, query: UsageQuery) -> Result<UsageReport, SchedulerError> {
        self.inner.ledger.flush().await;
        Ok(self.inner.ledger.report(query).await?)
    }

    /// A calendar month's bill, for one namespace or all; includes every invocation finished
    /// before the call.
    pub async fn bill(&self, period: Period, namespace: Option<String>) -> Result<Bill, SchedulerError> {
        self.inner.ledger.flush().await;
        Ok(self.inner.ledger.bill(period, namespace).await?)
    }

    /// The price plans bills are computed with.
    pub fn pricing(&self) -> &Pricing {
        self.inner.ledger.pricing()
    }

    /// Deletes raw usage records past the retention now (totals and bills do not change);
    /// returns how many went.
    pub async fn prune_usage(&self) -> u64 {
        self.inner.ledger.prune().await
    }

    /// Waits up to `timeout` for the invocations admitted from every source to finish (ingress
    /// stops first). Polls the per-function admission counters the request path keeps anyway,
    /// rather than adding a shared counter to every request.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let busy = self
                .inner
                .states
                .lock()
                .unwrap()
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .any(|s| s.admitted.load(Ordering::Relaxed) > 0);
            if !busy {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
