//! The registry of functions and revisions (persisted in the node's SQLite store), deploys that
//! switch traffic to a new revision without dropping in-flight requests, and the scaler that
//! sets each revision's pool target.

mod ledger;
mod model;
mod scaler;
mod store;

pub use ledger::{Ledger, StoredUsage, UsageReport, UsageSummary};
pub use model::{FunctionView, RevisionView, SETTING_NAMES, Settings, parse_duration, parse_size, validate_name};
pub use scaler::{IdleScaler, Sample, ScalingPolicy};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Store, StoredRevision};
use wisp_runtime::{CacheStats, Compiled, DeployError, LogBuffer, Revision, RevisionId, Runtime, RuntimeConfig};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid function name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid setting `{field}`: {message}")]
    InvalidSetting { field: String, message: String },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("function {0:?} not found")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Runtime(#[from] wisp_runtime::RuntimeError),
}

/// Node settings for the scheduler and the runtime under it.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub runtime: RuntimeConfig,
    /// How often the scaler re-evaluates every revision's pool target.
    pub scale_interval: Duration,
    /// Cap on ready instances per revision.
    pub max_ready: usize,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            runtime: RuntimeConfig::default(),
            scale_interval: Duration::from_secs(1),
            max_ready: 64,
        }
    }
}

/// A function's live revision, what the gateway routes to.
struct Deployed {
    revision: Revision,
    stored: StoredRevision,
}

struct Inner {
    runtime: Runtime,
    store: Store,
    ledger: Arc<Ledger>,
    functions: RwLock<HashMap<String, Arc<Deployed>>>,
    /// Guest logs per function name, kept across revisions.
    logs: RwLock<HashMap<String, Arc<LogBuffer>>>,
    /// Compiled components by content hash, shared by every function deploying the same bytes.
    compiled: RwLock<HashMap<String, Compiled>>,
    /// Serializes deploys and deletes so revision numbers and traffic switches stay ordered.
    admin: tokio::sync::Mutex<()>,
    policy: Box<dyn ScalingPolicy>,
}

#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Scheduler {
    /// Opens the store in `config.data_dir`, starts the runtime, restores every deployed
    /// function (from the compile cache) and starts the scaler. Needs a tokio runtime.
    pub async fn open(config: NodeConfig) -> Result<Self, SchedulerError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(&config.data_dir)?;
        let ledger = Arc::new(Ledger::start(store.db_path())?);
        let runtime = Runtime::new(config.runtime.clone(), &config.data_dir.join("cache"), ledger.clone())?;
        let scheduler = Self {
            inner: Arc::new(Inner {
                runtime,
                store,
                ledger,
                functions: RwLock::new(HashMap::new()),
                logs: RwLock::new(HashMap::new()),
                compiled: RwLock::new(HashMap::new()),
                admin: tokio::sync::Mutex::new(()),
                policy: Box::new(IdleScaler { max_ready: config.max_ready }),
            }),
        };
        for stored in scheduler.inner.store.current_revisions()? {
            let bytes = scheduler.inner.store.read_component(&stored.component_hash)?;
            let compiled = scheduler.compile(&stored.component_hash, Bytes::from(bytes)).await?;
            scheduler.activate(stored, compiled);
        }
        tokio::spawn(scale_loop(Arc::downgrade(&scheduler.inner), config.scale_interval));
        Ok(scheduler)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.inner.runtime.cache_stats()
    }

    /// The live revision serving `name`, if any.
    pub fn route(&self, name: &str) -> Option<Revision> {
        self.inner.functions.read().unwrap().get(name).map(|d| d.revision.clone())
    }

    /// Deploys `bytes` as a new revision of `name` and switches traffic to it. Nothing changes
    /// unless every check passes; a 2xx answer means the revision is on disk.
    pub async fn deploy(
        &self,
        name: &str,
        params: &[(String, String)],
        bytes: Bytes,
    ) -> Result<FunctionView, SchedulerError> {
        validate_name(name)?;
        let settings = Settings::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        self.inner.runtime.check_limits(&settings.limits())?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let compiled = self.compile(&hash, bytes.clone()).await?;
        // Instantiate once with the function's own limits, so a component that cannot start
        // (say, its initial memory is above `memory`) is refused now rather than on every request.
        let probe = RevisionId { function: name.into(), revision: 0 };
        let logs = LogBuffer::new(0);
        self.inner.runtime.revision(probe, compiled.clone(), settings.limits(), logs).probe_take().await?;

        let _admin = self.inner.admin.lock().await;
        let inner = self.inner.clone();
        let (name_owned, hash_owned) = (name.to_string(), hash.clone());
        let stored = tokio::task::spawn_blocking(move || -> Result<StoredRevision, SchedulerError> {
            inner.store.put_component(&hash_owned, &bytes)?;
            let created_at_ms = now_ms();
            let revision =
                inner.store.add_revision(&name_owned, &hash_owned, bytes.len() as u64, &settings, created_at_ms)?;
            Ok(StoredRevision {
                function: name_owned,
                revision,
                component_hash: hash_owned,
                component_bytes: bytes.len() as u64,
                settings,
                created_at_ms,
            })
        })
        .await
        .expect("deploy task panicked")?;
        tracing::info!(function = name, revision = stored.revision, hash = %hash, "deployed");
        self.activate(stored, compiled);
        self.describe(name)
    }

    /// Compiles off the async threads, once per distinct component.
    async fn compile(&self, hash: &str, bytes: Bytes) -> Result<Compiled, SchedulerError> {
        if let Some(compiled) = self.inner.compiled.read().unwrap().get(hash) {
            return Ok(compiled.clone());
        }
        let runtime = self.inner.runtime.clone();
        let hash_owned = hash.to_string();
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&hash_owned, &bytes))
            .await
            .expect("compile task panicked")?;
        self.inner.compiled.write().unwrap().insert(hash.to_string(), compiled.clone());
        Ok(compiled)
    }

    /// Starts a revision's pool and routes the function to it; the previous revision's idle
    /// instances are released while its in-flight requests finish on their own.
    fn activate(&self, stored: StoredRevision, compiled: Compiled) {
        let logs = self
            .inner
            .logs
            .write()
            .unwrap()
            .entry(stored.function.clone())
            .or_insert_with(|| LogBuffer::new(self.inner.runtime.config().log_buffer_bytes))
            .clone();
        let id = RevisionId { function: stored.function.as_str().into(), revision: stored.revision };
        let revision = self.inner.runtime.revision(id, compiled, stored.settings.limits(), logs);
        revision.set_target(stored.settings.min_warm as usize);
        let name = stored.function.clone();
        let previous =
            self.inner.functions.write().unwrap().insert(name, Arc::new(Deployed { revision, stored }));
        if let Some(previous) = previous {
            previous.revision.set_target(0);
        }
    }

    pub fn list(&self) -> Vec<FunctionView> {
        let functions = self.inner.functions.read().unwrap();
        let mut views: Vec<FunctionView> = functions.values().map(|d| view(d)).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    pub fn describe(&self, name: &str) -> Result<FunctionView, SchedulerError> {
        let deployed = self.deployed(name)?;
        let mut v = view(&deployed);
        v.revisions = self.inner.store.revisions(name)?;
        Ok(v)
    }

    pub async fn delete(&self, name: &str) -> Result<(), SchedulerError> {
        let _admin = self.inner.admin.lock().await;
        self.deployed(name)?;
        let inner = self.inner.clone();
        let owned = name.to_string();
        tokio::task::spawn_blocking(move || inner.store.delete_function(&owned)).await.expect("delete task panicked")?;
        if let Some(gone) = self.inner.functions.write().unwrap().remove(name) {
            gone.revision.set_target(0);
        }
        self.inner.logs.write().unwrap().remove(name);
        tracing::info!(function = name, "deleted");
        Ok(())
    }

    pub fn logs(&self, name: &str) -> Result<Vec<u8>, SchedulerError> {
        validate_name(name)?;
        self.deployed(name)?;
        let logs = self.inner.logs.read().unwrap();
        Ok(logs.get(name).map(|l| l.contents()).unwrap_or_default())
    }

    /// Usage totals and the newest records; includes every invocation finished before the call.
    pub async fn usage(&self, function: Option<String>, limit: u64) -> Result<UsageReport, SchedulerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.ledger.flush();
            Ok(ledger::report(&inner.store.conn(), function.as_deref(), limit)?)
        })
        .await
        .expect("usage task panicked")
    }

    /// Writes every pending usage record; call on shutdown after the gateway stopped.
    pub async fn shutdown(&self) {
        let ledger = self.inner.ledger.clone();
        let _ = tokio::task::spawn_blocking(move || ledger.flush()).await;
    }

    fn deployed(&self, name: &str) -> Result<Arc<Deployed>, SchedulerError> {
        self.inner.functions.read().unwrap().get(name).cloned().ok_or_else(|| SchedulerError::NotFound(name.to_string()))
    }
}

fn view(d: &Deployed) -> FunctionView {
    let stats = d.revision.stats();
    FunctionView {
        name: d.stored.function.clone(),
        revision: d.stored.revision,
        component_hash: format!("sha256:{}", d.stored.component_hash),
        component_bytes: d.stored.component_bytes,
        created_at_ms: d.stored.created_at_ms,
        settings: d.stored.settings,
        ready_instances: stats.ready,
        in_flight: stats.in_flight,
        revisions: Vec::new(),
    }
}

async fn scale_loop(inner: std::sync::Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let deployed: Vec<Arc<Deployed>> = inner.functions.read().unwrap().values().cloned().collect();
        for d in deployed {
            let stats = d.revision.stats();
            let sample = Sample {
                in_flight: stats.in_flight,
                peak_in_flight: d.revision.take_peak_in_flight(),
                idle_for: stats.idle_for,
            };
            d.revision.set_target(inner.policy.desired_ready(&d.stored.settings, &sample));
        }
    }
}
