//! Triggers in-process against real brokers (the RabbitMQ service on 127.0.0.1:5672, librdkafka's
//! mock cluster over TCP), a real scheduler on SQLite and real wasmtime running `functions/events`.
//! Node-level behaviour (kill -9, restart, CLI) is tested in `cli/tests`.

mod kafka;
mod rabbitmq;

use prometheus_client::registry::Registry;
use std::time::Duration;
use wisp_ledger::{Ledger, LedgerConfig, StoredUsage};
use wisp_runtime::MemoryBudget;
use wisp_runtime::wasm::{WasmConfig, WasmRuntime};
use wisp_scheduler::{Scheduler, SchedulerConfig, UsageQuery};
use wisp_triggers::{DeliverySpec, TriggerView, Triggers, TriggersConfig};

/// A scheduler with `events` deployed (and `echo`), and the node's triggers.
pub struct Node {
    pub scheduler: Scheduler,
    pub triggers: Triggers,
    pub registry: Registry,
    pub ledger: Ledger,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub async fn start() -> Node {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// A node on an existing data dir (restart: stored triggers resume).
    pub async fn start_in(dir: tempfile::TempDir) -> Node {
        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        let wasm = WasmRuntime::new(
            WasmConfig { pool_instances: 64, ..WasmConfig::default() },
            &dir.path().join("cache"),
            MemoryBudget::new(u64::MAX),
        )
        .unwrap();
        let mut registry = Registry::default();
        let scheduler = Scheduler::new(
            SchedulerConfig::new(dir.path()),
            wasm,
            Err("not in these tests".into()),
            ledger.clone(),
            &mut registry,
        )
        .await
        .unwrap();
        for f in ["events", "echo"] {
            if !scheduler.exists(f) {
                scheduler.deploy(f, &[], wisp_testkit::wasm(f).into()).await.unwrap();
            }
        }
        let config = TriggersConfig { drain: Duration::from_secs(5) };
        let triggers = Triggers::start(scheduler.clone(), config, &mut registry).await.unwrap();
        Node { scheduler, triggers, registry, ledger, dir }
    }

    /// Stops the triggers and the ledger (a clean shutdown), handing back the data dir.
    pub async fn stop(self) -> tempfile::TempDir {
        self.triggers.shutdown().await;
        self.scheduler.drain(Duration::from_secs(10)).await;
        self.ledger.close().await;
        self.dir
    }

    /// Every usage record of `function`, oldest first (at most 10,000 per call; tests stay below).
    pub async fn usage(&self, function: &str) -> Vec<StoredUsage> {
        let mut records = self
            .scheduler
            .usage(UsageQuery { function: Some(function.into()), limit: 10_000, ..UsageQuery::default() })
            .await
            .unwrap()
            .records;
        records.reverse();
        records
    }

    pub fn describe(&self, trigger: &str) -> TriggerView {
        self.triggers.describe(trigger).unwrap()
    }

    /// Waits until `check` holds on the trigger's view, or fails with `what` and the view.
    pub async fn wait_for(&self, trigger: &str, timeout: Duration, what: &str, check: impl Fn(&TriggerView) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.describe(trigger);
            if check(&view) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {view:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

/// A fast retry policy for tests: `retries` retries, 50 ms linear backoff, 10 s per attempt.
pub fn quick_retries(retries: u32) -> DeliverySpec {
    DeliverySpec { retries, backoff_ms: 50, backoff_policy: wisp_triggers::BackoffPolicy::Linear, timeout_ms: 10_000 }
}
