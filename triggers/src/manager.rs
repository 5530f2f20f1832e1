//! Triggers as API objects: created, listed, described and deleted through the admin API,
//! persisted in the registry (kind `trigger`), and resumed at start from where their brokers
//! say they were (committed offsets, unacknowledged messages).

use crate::kafka::KafkaConsumer;
use crate::rabbitmq::RabbitmqConsumer;
use crate::spec::{Invalid, SourceSpec, TriggerSpec};
use crate::status::{Collector, TriggerStats, TriggerStatus};
use crate::{Consumer, Context, Dispatcher};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wisp_ledger::Source;
use wisp_scheduler::{ErrorKind, Scheduler, SchedulerError, StoredObject};

const KIND: &str = "trigger";

/// Node-wide trigger knobs.
#[derive(Debug, Clone)]
pub struct TriggersConfig {
    /// How long a stopping trigger waits for in-flight deliveries before abandoning them
    /// (they are not acknowledged, so they are redelivered).
    pub drain: Duration,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        Self { drain: Duration::from_secs(10) }
    }
}

/// Why a trigger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A setting failed its check.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The body is not a trigger spec.
    #[error("invalid trigger: {0}")]
    Malformed(String),
    /// No such trigger.
    #[error("trigger {0:?} not found")]
    NotFound(String),
    /// The function a trigger names does not exist.
    #[error("invalid trigger setting `fn`: function {0:?} not found")]
    NoFunction(String),
    /// A trigger of that name exists.
    #[error("trigger {0:?} already exists (delete it first)")]
    Exists(String),
    /// The registry failed.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

impl TriggerError {
    /// The kind of failure, for the gateway's status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TriggerError::Invalid(_) | TriggerError::Malformed(_) | TriggerError::NoFunction(_) => ErrorKind::Invalid,
            TriggerError::NotFound(_) => ErrorKind::NotFound,
            TriggerError::Exists(_) => ErrorKind::Conflict,
            TriggerError::Scheduler(e) => e.kind(),
        }
    }
}

/// A trigger as the API shows it: its spec (password redacted) and its live stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerView {
    /// The spec as created.
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// When it was created, Unix ms.
    pub created_at_ms: u64,
    /// State, counts, lag.
    pub status: TriggerStats,
}

struct Running {
    spec: TriggerSpec,
    created_at_ms: u64,
    status: Arc<TriggerStatus>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn view(&self) -> TriggerView {
        TriggerView { spec: self.spec.redacted(), created_at_ms: self.created_at_ms, status: self.status.stats() }
    }
}

struct Inner {
    scheduler: Scheduler,
    config: TriggersConfig,
    running: Mutex<BTreeMap<String, Running>>,
    collector: Collector,
    /// Serializes creates and deletes, so the registry and the running set agree.
    admin: tokio::sync::Mutex<()>,
}

/// The node's triggers. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    inner: Arc<Inner>,
}

impl Triggers {
    /// Registers the trigger metrics and starts every stored trigger. A stored spec this
    /// release cannot read is logged and skipped (left in the registry), not fatal.
    pub async fn start(
        scheduler: Scheduler,
        config: TriggersConfig,
        registry: &mut Registry,
    ) -> Result<Self, TriggerError> {
        let collector = Collector::default();
        registry.register_collector(Box::new(collector.clone()));
        let stored = scheduler.objects(KIND).await?;
        let triggers = Self {
            inner: Arc::new(Inner {
                scheduler,
                config,
                running: Mutex::default(),
                collector,
                admin: tokio::sync::Mutex::new(()),
            }),
        };
        for object in stored {
            match serde_json::from_str::<TriggerSpec>(&object.spec) {
                Ok(spec) => triggers.spawn(spec, object.created_at_ms),
                Err(e) => tracing::error!(trigger = %object.name, "stored trigger cannot be read, not started: {e}"),
            }
        }
        Ok(triggers)
    }

    /// Creates a trigger: validates it, stores it durably, and starts it.
    pub async fn create(&self, spec: TriggerSpec) -> Result<TriggerView, TriggerError> {
        spec.validate()?;
        if !self.inner.scheduler.exists(&spec.function) {
            return Err(TriggerError::NoFunction(spec.function));
        }
        let _admin = self.inner.admin.lock().await;
        let created_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let object = StoredObject {
            kind: KIND.into(),
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).expect("specs serialize"),
            created_at_ms,
        };
        if !self.inner.scheduler.create_object(object).await? {
            return Err(TriggerError::Exists(spec.name));
        }
        let name = spec.name.clone();
        tracing::info!(trigger = %name, function = %spec.function, "trigger created");
        self.spawn(spec, created_at_ms);
        self.describe(&name)
    }

    /// Creates a trigger, or replaces one whose spec differs (`wisp apply` of a KafkaSource or
    /// RabbitmqSource); returns `created`, `configured` or `unchanged`. With `dry_run` it only
    /// validates.
    pub async fn apply(&self, spec: TriggerSpec, dry_run: bool) -> Result<&'static str, TriggerError> {
        spec.validate()?;
        if !self.inner.scheduler.exists(&spec.function) {
            return Err(TriggerError::NoFunction(spec.function));
        }
        let existing = self.inner.running.lock().unwrap().get(&spec.name).map(|r| r.spec.clone());
        match existing {
            Some(existing) if existing == spec => Ok("unchanged"),
            Some(_) if dry_run => Ok("configured"),
            None if dry_run => Ok("created"),
            Some(_) => {
                self.delete(&spec.name).await?;
                self.create(spec).await.map(|_| "configured")
            }
            None => self.create(spec).await.map(|_| "created"),
        }
    }

    fn spawn(&self, spec: TriggerSpec, created_at_ms: u64) {
        let status = Arc::new(TriggerStatus::new(&spec.name));
        self.inner.collector.add(&status);
        let source = match spec.source {
            SourceSpec::Kafka(_) => Source::Kafka,
            SourceSpec::Rabbitmq(_) => Source::Rabbitmq,
        };
        let dispatcher =
            Dispatcher::new(self.inner.scheduler.clone(), &spec.function, source, spec.delivery, Some(status.clone()));
        let ctx = Context { spec: spec.clone(), dispatcher, status: status.clone(), drain: self.inner.config.drain };
        let stop = CancellationToken::new();
        let task = match &spec.source {
            SourceSpec::Kafka(k) => tokio::spawn(KafkaConsumer::new(&spec, k).run(ctx, stop.clone())),
            SourceSpec::Rabbitmq(r) => tokio::spawn(RabbitmqConsumer::new(&spec, r).run(ctx, stop.clone())),
        };
        let name = spec.name.clone();
        let running = Running { spec, created_at_ms, status, stop, task };
        self.inner.running.lock().unwrap().insert(name, running);
    }

    /// Every trigger, by name.
    pub fn list(&self) -> Vec<TriggerView> {
        self.inner.running.lock().unwrap().values().map(Running::view).collect()
    }

    /// One trigger.
    pub fn describe(&self, name: &str) -> Result<TriggerView, TriggerError> {
        let running = self.inner.running.lock().unwrap();
        running.get(name).map(Running::view).ok_or_else(|| TriggerError::NotFound(name.to_string()))
    }

    /// Deletes a trigger: removes it from the registry, then stops it and waits until its
    /// consumer has committed what it finished and left its group or channel.
    pub async fn delete(&self, name: &str) -> Result<(), TriggerError> {
        let _admin = self.inner.admin.lock().await;
        if !self.inner.running.lock().unwrap().contains_key(name) {
            return Err(TriggerError::NotFound(name.to_string()));
        }
        self.inner.scheduler.delete_object(KIND, name).await?;
        let running = self.inner.running.lock().unwrap().remove(name);
        if let Some(running) = running {
            stop(running, self.inner.config.drain).await;
        }
        tracing::info!(trigger = name, "trigger deleted");
        Ok(())
    }

    /// Stops every trigger (node shutdown): each finishes or abandons its in-flight work,
    /// commits, and leaves its broker. They stay in the registry and resume at the next start.
    pub async fn shutdown(&self) {
        let all: Vec<Running> = std::mem::take(&mut *self.inner.running.lock().unwrap()).into_values().collect();
        let drain = self.inner.config.drain;
        futures::future::join_all(all.into_iter().map(|r| stop(r, drain))).await;
    }
}

/// Cancels a consumer and waits for it to leave; one that overstays its drain by far is aborted.
async fn stop(running: Running, drain: Duration) {
    running.stop.cancel();
    let mut task = running.task;
    if tokio::time::timeout(drain + Duration::from_secs(10), &mut task).await.is_err() {
        tracing::warn!(trigger = %running.spec.name, "consumer did not stop in time; aborted");
        task.abort();
    }
    running.status.stopped();
}
