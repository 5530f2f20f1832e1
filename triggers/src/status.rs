//! What a running trigger reports: its state and last error, delivery counters, consumer lag
//! (Kafka, per partition) or queue depth (RabbitMQ), and a delivery latency histogram. The same
//! values back `wisp trigger describe` and `/metrics` (read at scrape time by [`Collector`]), so
//! a deleted trigger's series disappear with it.

use prometheus_client::collector::Collector as PromCollector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Where a trigger is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Connecting to its broker (first time, or again after losing it).
    #[default]
    Connecting,
    /// Consuming.
    Running,
    /// Cannot reach or use its broker; retrying with backoff (`last_error` says why).
    Failing,
    /// Stopped (deleted, or the node is shutting down).
    Stopped,
}

/// Counters and gauges of one trigger, as `describe` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TriggerStats {
    /// See [`State`].
    pub state: State,
    /// The newest broker or delivery error, if any.
    pub last_error: Option<String>,
    /// Events the function accepted (2xx).
    pub delivered: u64,
    /// Attempts that were retried (one event may count several times).
    pub retried: u64,
    /// Events sent to the dead-letter destination after their last attempt.
    pub dead_lettered: u64,
    /// Events given up with no dead-letter destination (logged).
    pub dropped: u64,
    /// Kafka: per partition, records not yet committed (high watermark - committed offset).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<PartitionLag>,
    /// RabbitMQ: messages ready in the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
}

/// One partition's consumer lag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records between the committed offset and the high watermark.
    pub lag: i64,
}

/// Delivery latency bucket bounds, seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// Shared by a trigger's consumer (which writes) and the API and metrics (which read).
pub struct TriggerStatus {
    name: Arc<str>,
    state: Mutex<(State, Option<String>)>,
    delivered: Counter,
    retried: Counter,
    dead_lettered: Counter,
    dropped: Counter,
    latency: Histogram,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    queue_depth: Mutex<Option<u64>>,
}

impl TriggerStatus {
    /// A fresh status for trigger `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            state: Mutex::default(),
            delivered: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            dropped: Counter::default(),
            latency: Histogram::new(BUCKETS),
            lag: Mutex::default(),
            queue_depth: Mutex::default(),
        }
    }

    /// The trigger's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Now consuming; clears nothing (the last error stays visible until the next one).
    pub fn running(&self) {
        self.state.lock().unwrap().0 = State::Running;
    }

    /// (Re)connecting.
    pub fn connecting(&self) {
        self.state.lock().unwrap().0 = State::Connecting;
    }

    /// The broker failed us: remembered as the last error, state `failing`.
    pub fn failing(&self, error: impl std::fmt::Display) {
        let error = error.to_string();
        tracing::warn!(trigger = %self.name, "{error}");
        *self.state.lock().unwrap() = (State::Failing, Some(error));
    }

    /// A delivery problem worth showing (the trigger keeps running).
    pub fn error(&self, error: impl std::fmt::Display) {
        self.state.lock().unwrap().1 = Some(error.to_string());
    }

    /// Stopped for good.
    pub fn stopped(&self) {
        self.state.lock().unwrap().0 = State::Stopped;
    }

    /// An event was delivered, `latency` after the trigger received it.
    pub fn delivered(&self, latency: Duration) {
        self.delivered.inc();
        self.latency.observe(latency.as_secs_f64());
    }

    /// An attempt failed and will be retried.
    pub fn retried(&self) {
        self.retried.inc();
    }

    /// An event went to the dead-letter destination.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// An event was given up (no dead-letter destination).
    pub fn dropped(&self) {
        self.dropped.inc();
    }

    /// Sets one partition's lag.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag.lock().unwrap().insert((topic.to_string(), partition), lag.max(0));
    }

    /// Forgets the lag of partitions no longer assigned.
    pub fn retain_lag(&self, mut keep: impl FnMut(&str, i32) -> bool) {
        self.lag.lock().unwrap().retain(|(t, p), _| keep(t, *p));
    }

    /// Sets the queue depth.
    pub fn set_queue_depth(&self, depth: u64) {
        *self.queue_depth.lock().unwrap() = Some(depth);
    }

    /// A snapshot for the API.
    pub fn stats(&self) -> TriggerStats {
        let (state, last_error) = self.state.lock().unwrap().clone();
        TriggerStats {
            state,
            last_error,
            delivered: self.delivered.get(),
            retried: self.retried.get(),
            dead_lettered: self.dead_lettered.get(),
            dropped: self.dropped.get(),
            lag: self
                .lag
                .lock()
                .unwrap()
                .iter()
                .map(|((topic, partition), lag)| PartitionLag {
                    topic: topic.clone(),
                    partition: *partition,
                    lag: *lag,
                })
                .collect(),
            queue_depth: *self.queue_depth.lock().unwrap(),
        }
    }
}

impl std::fmt::Debug for TriggerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerStatus").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Renders every live trigger's series at scrape time.
#[derive(Debug, Default, Clone)]
pub(crate) struct Collector(pub(crate) Arc<Mutex<Vec<Weak<TriggerStatus>>>>);

impl Collector {
    pub(crate) fn add(&self, status: &Arc<TriggerStatus>) {
        let mut all = self.0.lock().unwrap();
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(status));
    }

    fn live(&self) -> Vec<Arc<TriggerStatus>> {
        let mut live: Vec<_> = self.0.lock().unwrap().iter().filter_map(Weak::upgrade).collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live.dedup_by(|a, b| a.name == b.name);
        live
    }
}

impl PromCollector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let live = self.live();
        type Read = fn(&TriggerStatus) -> &Counter;
        let counters: [(&str, &str, Read); 4] = [
            ("wisp_trigger_delivered", "Events a function accepted (2xx)", |s| &s.delivered),
            ("wisp_trigger_retried", "Delivery attempts retried", |s| &s.retried),
            ("wisp_trigger_dead_lettered", "Events sent to the dead-letter destination", |s| &s.dead_lettered),
            ("wisp_trigger_dropped", "Events given up with no dead-letter destination", |s| &s.dropped),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, Counter::<u64>::default().metric_type())?;
            for s in &live {
                read(s).encode(family.encode_family(&[("trigger", &*s.name)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "wisp_trigger_delivery_seconds",
            "Time from receiving an event to the function accepting it, retries included",
            None,
            Histogram::new([1.0]).metric_type(),
        )?;
        for s in &live {
            s.latency.encode(family.encode_family(&[("trigger", &*s.name)])?)?;
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "wisp_trigger_consumer_lag",
            "Kafka records not yet committed, per partition",
            None,
            gauge.metric_type(),
        )?;
        for s in &live {
            for ((topic, partition), lag) in s.lag.lock().unwrap().iter() {
                let partition = partition.to_string();
                let labels = [("trigger", &*s.name), ("topic", topic.as_str()), ("partition", partition.as_str())];
                ConstGauge::new(*lag).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "wisp_trigger_queue_depth",
            "RabbitMQ messages ready in a trigger's queue",
            None,
            gauge.metric_type(),
        )?;
        for s in &live {
            if let Some(depth) = *s.queue_depth.lock().unwrap() {
                ConstGauge::new(depth as i64).encode(family.encode_family(&[("trigger", &*s.name)])?)?;
            }
        }
        Ok(())
    }
}
