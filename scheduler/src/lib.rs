//! The scheduler: the registry of functions and revisions (persisted in the node's SQLite
//! store, with migrations), deploys that switch traffic to a new revision without dropping
//! in-flight requests, the one invoke path every source goes through (admission, metering,
//! metrics), and the autoscaler that sets each live revision's target.

mod api;
mod autoscaler;
mod error;
mod invoke;
mod metrics;
mod model;
mod scaling;
mod service;
mod store;

pub use api::{FunctionView, RevisionView};
pub use autoscaler::{IdleScaler, Sample};
pub use error::{ErrorKind, InvokeError, SchedulerError};
pub use scaling::{Metric, Scaling};
pub use service::{DEFAULT_NAMESPACE, ServiceSpec, Template, TrafficTarget, function_id, split_id};
pub use model::{Artifact, SETTING_NAMES, Settings, parse_duration, parse_size, validate_name};
pub use wisp_ledger::{Origin, Source, UsageQuery, UsageReport};
pub use wisp_runtime::{BodyError, read_within};

use bytes::Bytes;
use metrics::{FunctionMetrics, Metrics};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
pub use store::StoredObject;
use store::{Store, StoredRevision};
use tokio_util::sync::CancellationToken;
use wisp_ledger::Ledger;
use wisp_runtime::wasm::{Compiled, InstancePool, PoolId, WasmRuntime};
use wisp_runtime::{Invoked, LogBuffer, Workload, WorkloadStats};

/// Scheduler knobs; each has a `wisp up` flag.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Where the registry (`wisp.db`) and component files live.
    pub data_dir: PathBuf,
    /// How often the autoscaler re-evaluates every revision's target.
    pub scale_interval: Duration,
    /// Cap on ready instances per revision.
    pub max_ready: usize,
    /// A function's `max_concurrency` when it sets none.
    pub function_concurrency: u32,
}

impl SchedulerConfig {
    /// Defaults for a node keeping its state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            scale_interval: Duration::from_secs(1),
            max_ready: 64,
            function_concurrency: 250,
        }
    }
}

/// A function's live revision: one workload implementation per artifact kind, dispatched
/// statically (containers will be the second variant).
enum Live {
    Wasm(InstancePool),
}

impl Workload for Live {
    async fn invoke<B>(&self, req: http::Request<B>) -> Invoked
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self {
            Live::Wasm(pool) => pool.invoke(req).await,
        }
    }

    fn set_target(&self, target: usize) {
        match self {
            Live::Wasm(pool) => pool.set_target(target),
        }
    }

    fn stats(&self) -> WorkloadStats {
        match self {
            Live::Wasm(pool) => pool.stats(),
        }
    }
}

/// What a function keeps across its revisions.
struct FunctionState {
    name: Arc<str>,
    logs: Arc<LogBuffer>,
    /// Invocations admitted now (all revisions), against `max_concurrency`.
    admitted: AtomicUsize,
    /// Created by the first invocation: an idle function costs no metric series.
    metrics: std::sync::OnceLock<FunctionMetrics>,
}

/// A function's live revision, what invocations are routed to.
struct Deployed {
    stored: StoredRevision,
    live: Live,
    state: Arc<FunctionState>,
}

/// A function whose current revision could not be loaded (say, a corrupt component file):
/// listed with its error, answered with 503, and replaced by the next deploy.
struct Failed {
    stored: StoredRevision,
    reason: String,
}

pub(crate) struct Inner {
    config: SchedulerConfig,
    runtime: WasmRuntime,
    store: Store,
    ledger: Ledger,
    metrics: Metrics,
    functions: RwLock<HashMap<String, Arc<Deployed>>>,
    failed: RwLock<HashMap<String, Failed>>,
    /// Serializes deploys and deletes so revision numbers and traffic switches stay ordered.
    admin: tokio::sync::Mutex<()>,
    policy: IdleScaler,
    /// Every function's state while anything holds it (deleted functions' in-flight
    /// invocations included), so shutdown can wait for their admitted invocations.
    states: std::sync::Mutex<Vec<std::sync::Weak<FunctionState>>>,
}

impl Inner {
    fn live(&self) -> Vec<Arc<Deployed>> {
        self.functions.read().unwrap().values().cloned().collect()
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
    /// metrics, and restores every deployed function: one that cannot be loaded is logged,
    /// naming its file, and answers 503 while the others serve. Needs a tokio runtime.
    pub async fn new(
        config: SchedulerConfig,
        runtime: WasmRuntime,
        ledger: Ledger,
        registry: &mut Registry,
    ) -> Result<Self, SchedulerError> {
        let data_dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir)).await??;
        let policy = IdleScaler { max_ready: config.max_ready };
        let scheduler = Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                store,
                ledger,
                metrics: Metrics::register(registry),
                functions: RwLock::default(),
                failed: RwLock::default(),
                admin: tokio::sync::Mutex::new(()),
                policy,
                states: std::sync::Mutex::default(),
            }),
        };
        registry.register_collector(Box::new(metrics::NodeCollector(Arc::downgrade(&scheduler.inner))));
        let inner = scheduler.inner.clone();
        for stored in tokio::task::spawn_blocking(move || inner.store.current_revisions()).await?? {
            let name = stored.function.clone();
            match scheduler.load(&stored).await {
                Ok(compiled) => scheduler.activate(stored, compiled),
                Err(e) => {
                    let reason = format!("could not be loaded: {e}");
                    tracing::error!(function = %name, "{reason}");
                    scheduler.inner.failed.write().unwrap().insert(name, Failed { stored, reason });
                }
            }
        }
        Ok(scheduler)
    }

    /// Runs the autoscaler until `shutdown` is cancelled.
    pub fn spawn_autoscaler(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(autoscaler::run(Arc::downgrade(&self.inner), self.inner.config.scale_interval, shutdown))
    }

    /// Reads and compiles a stored revision's artifact off the async threads; a component
    /// another function already loaded (many functions, one component) is neither read nor
    /// compiled again.
    async fn load(&self, stored: &StoredRevision) -> Result<Compiled, SchedulerError> {
        let Artifact::Wasm { sha256, .. } = &stored.artifact;
        if let Some(compiled) = self.inner.runtime.loaded(sha256) {
            return Ok(compiled);
        }
        let inner = self.inner.clone();
        let hash = sha256.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = inner.store.read_component(&hash)?;
            inner
                .runtime
                .compile(&hash, &bytes)
                .map_err(|error| SchedulerError::Component { path: inner.store.component_path(&hash), error })
        })
        .await?
    }

    /// Deploys `bytes` as a new revision of `name` and switches traffic to it. Settings start
    /// from the previous revision's (defaults for a new function) with `params` applied.
    /// Nothing changes unless every check passes; a 2xx answer means the revision is on disk.
    pub async fn deploy(
        &self,
        name: &str,
        params: &[(String, String)],
        bytes: Bytes,
    ) -> Result<FunctionView, SchedulerError> {
        validate_name(name)?;
        let previous = self.current_settings(name).unwrap_or_default();
        let settings = previous.with_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        self.inner.runtime.check_limits(&settings.limits())?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let runtime = self.inner.runtime.clone();
        let (hash_owned, bytes_owned) = (hash.clone(), bytes.clone());
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&hash_owned, &bytes_owned)).await??;
        // Instantiate once with the function's own limits, so a component that cannot start
        // (say, its initial memory is above `memory`) is refused now rather than on every request.
        self.inner.runtime.check_instantiates(&compiled, settings.limits()).await?;

        let _admin = self.inner.admin.lock().await;
        let inner = self.inner.clone();
        let name_owned = name.to_string();
        let stored = tokio::task::spawn_blocking(move || -> Result<StoredRevision, SchedulerError> {
            inner.store.put_component(&hash, &bytes)?;
            let artifact = Artifact::Wasm { sha256: hash, bytes: bytes.len() as u64 };
            let created_at_ms = now_ms();
            let revision = inner.store.add_revision(&name_owned, &artifact, &settings, created_at_ms)?;
            Ok(StoredRevision { function: name_owned, revision, artifact, settings, created_at_ms })
        })
        .await??;
        tracing::info!(function = name, revision = stored.revision, artifact = %stored.artifact.digest(), "deployed");
        self.activate(stored, compiled);
        drop(_admin);
        self.describe(name).await
    }

    /// The settings of a function's current revision, if it is deployed.
    pub fn settings(&self, name: &str) -> Option<Settings> {
        self.current_settings(name)
    }

    fn current_settings(&self, name: &str) -> Option<Settings> {
        if let Some(d) = self.inner.functions.read().unwrap().get(name) {
            return Some(d.stored.settings.clone());
        }
        self.inner.failed.read().unwrap().get(name).map(|f| f.stored.settings.clone())
    }

    /// Starts a revision's workload and routes the function to it; the previous revision's
    /// idle instances are released, its in-flight requests finish on it.
    fn activate(&self, stored: StoredRevision, compiled: Compiled) {
        let inner = &self.inner;
        let name = stored.function.clone();
        let previous = inner.functions.read().unwrap().get(&name).cloned();
        let state = match &previous {
            Some(p) => p.state.clone(),
            None => {
                let state = Arc::new(FunctionState {
                    name: name.as_str().into(),
                    logs: Arc::new(LogBuffer::new(inner.runtime.config().log_buffer_bytes)),
                    admitted: AtomicUsize::new(0),
                    metrics: std::sync::OnceLock::new(),
                });
                let mut states = inner.states.lock().unwrap();
                states.retain(|s| s.strong_count() > 0);
                states.push(Arc::downgrade(&state));
                state
            }
        };
        let id = PoolId { function: state.name.clone(), revision: stored.revision };
        let live = Live::Wasm(inner.runtime.pool(id, compiled, stored.settings.limits(), state.logs.clone()));
        live.set_target(stored.settings.min_warm as usize);
        inner.failed.write().unwrap().remove(&name);
        let replaced = inner.functions.write().unwrap().insert(name, Arc::new(Deployed { stored, live, state }));
        if let Some(previous) = replaced {
            previous.live.set_target(0);
        }
    }

    /// Every function, sorted by name.
    pub fn list(&self) -> Vec<FunctionView> {
        let mut views: Vec<FunctionView> =
            self.inner.functions.read().unwrap().values().map(|d| self.view(d)).collect();
        views.extend(self.inner.failed.read().unwrap().values().map(failed_view));
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// One function with its revision history.
    pub async fn describe(&self, name: &str) -> Result<FunctionView, SchedulerError> {
        validate_name(name)?;
        let mut view = {
            let live = self.inner.functions.read().unwrap().get(name).map(|d| self.view(d));
            match live {
                Some(v) => v,
                None => self
                    .inner
                    .failed
                    .read()
                    .unwrap()
                    .get(name)
                    .map(failed_view)
                    .ok_or_else(|| SchedulerError::NotFound(name.to_string()))?,
            }
        };
        let inner = self.inner.clone();
        let owned = name.to_string();
        let revisions = tokio::task::spawn_blocking(move || inner.store.revisions(&owned)).await??;
        view.revisions = revisions
            .into_iter()
            .map(|r| RevisionView {
                revision: r.revision,
                component_hash: r.artifact.digest(),
                artifact: r.artifact,
                created_at_ms: r.created_at_ms,
            })
            .collect();
        Ok(view)
    }

    /// Deletes a function: its revisions, its metric series, and the component files and
    /// compiled code no other function uses. Its usage stays in the ledger.
    pub async fn delete(&self, name: &str) -> Result<(), SchedulerError> {
        validate_name(name)?;
        let _admin = self.inner.admin.lock().await;
        let inner = self.inner.clone();
        let owned = name.to_string();
        let unused = tokio::task::spawn_blocking(move || inner.store.delete_function(&owned))
            .await??
            .ok_or_else(|| SchedulerError::NotFound(name.to_string()))?;
        if let Some(gone) = self.inner.functions.write().unwrap().remove(name) {
            gone.live.set_target(0);
        }
        self.inner.failed.write().unwrap().remove(name);
        self.inner.metrics.remove(name);
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            for artifact in unused {
                let Artifact::Wasm { sha256, .. } = artifact;
                inner.store.remove_component(&sha256);
                inner.runtime.forget(&sha256);
            }
        })
        .await?;
        tracing::info!(function = name, "deleted");
        Ok(())
    }

    /// Whether a function of this name is deployed (loaded or not).
    pub fn exists(&self, name: &str) -> bool {
        self.inner.functions.read().unwrap().contains_key(name) || self.inner.failed.read().unwrap().contains_key(name)
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
    pub fn logs(&self, name: &str) -> Result<Vec<u8>, SchedulerError> {
        validate_name(name)?;
        let functions = self.inner.functions.read().unwrap();
        match functions.get(name) {
            Some(d) => Ok(d.state.logs.contents()),
            None if self.inner.failed.read().unwrap().contains_key(name) => Ok(Vec::new()),
            None => Err(SchedulerError::NotFound(name.to_string())),
        }
    }

    /// Usage totals and the newest records; includes every invocation finished before the call.
    pub async fn usage(&self, query: UsageQuery) -> Result<UsageReport, SchedulerError> {
        self.inner.ledger.flush().await;
        Ok(self.inner.ledger.report(query).await?)
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

    fn view(&self, d: &Deployed) -> FunctionView {
        let stats = d.live.stats();
        let mut v = stored_view(&d.stored);
        v.concurrency_limit = self.inner.concurrency_limit(&d.stored.settings);
        v.ready_instances = stats.ready;
        v.in_flight = stats.in_flight;
        v
    }
}

fn stored_view(stored: &StoredRevision) -> FunctionView {
    FunctionView {
        name: stored.function.clone(),
        revision: stored.revision,
        component_hash: stored.artifact.digest(),
        component_bytes: stored.artifact.bytes(),
        artifact: stored.artifact.clone(),
        created_at_ms: stored.created_at_ms,
        settings: stored.settings.clone(),
        ..FunctionView::default()
    }
}

fn failed_view(f: &Failed) -> FunctionView {
    FunctionView { error: Some(f.reason.clone()), ..stored_view(&f.stored) }
}
