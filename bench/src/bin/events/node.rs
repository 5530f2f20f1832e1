//! The node under test: a `wisp up` process (spawned through wisp-testkit) and the parts of its
//! admin API the scenarios use: deploy, triggers, their status, usage records.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wisp_testkit::Node;

/// The function every trigger delivers to.
pub const FUNCTION: &str = "events";
/// How often a waiting scenario reads a trigger's status.
const POLL: Duration = Duration::from_millis(10);

pub struct Wisp {
    node: Node,
    log: PathBuf,
}

/// A trigger's counters, from `GET /v1/triggers/NAME`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub state: String,
    pub last_error: Option<String>,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

/// One usage record (the fields the scenarios read).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub start_ms: u64,
    pub trigger: Option<String>,
    pub event_id: Option<String>,
}

/// How a wait for deliveries went, timed from the `start` it was given.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// When the first delivery was seen (within the polling interval).
    pub first: Duration,
    /// When `delivered` reached the target.
    pub done: Duration,
    pub stats: Stats,
}

impl Wisp {
    /// `wisp up` on `data_dir` with `extra` flags, logging to `log`, with the events function
    /// deployed unless it is there already (a restart).
    pub fn start(bin: &Path, data_dir: &Path, log: &Path, extra: &[&str], wasm: &[u8]) -> anyhow::Result<Wisp> {
        let node = Node::builder(bin, data_dir)
            .args(extra)
            .env("RUST_LOG", "info,wasmtime=warn")
            .log_file(log)
            .spawn()
            .with_context(|| format!("starting wisp up (log: {})", log.display()))?;
        let wisp = Wisp { node, log: log.to_owned() };
        if wisp.call("GET", &format!("/v1/functions/{FUNCTION}"), None)?.0 == 404 {
            wisp.expect("POST", &format!("/v1/functions/{FUNCTION}"), Some(wasm), 201)?;
        }
        Ok(wisp)
    }

    pub fn pid(&self) -> u32 {
        self.node.pid()
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.node.kill();
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, String)> {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build());
        let url = format!("{}{path}", self.node.url);
        let bearer = format!("Bearer {}", self.node.token);
        let resp = wisp_testkit::try_request(agent, method, &url, body, &[("Authorization", &bearer)])?;
        Ok((resp.status, resp.body))
    }

    fn expect(&self, method: &str, path: &str, body: Option<&[u8]>, status: u16) -> anyhow::Result<String> {
        let (got, text) = self.call(method, path, body)?;
        if got != status {
            bail!("{method} {path}: {got} {text} (node log: {})", self.log.display());
        }
        Ok(text)
    }

    pub fn create_trigger(&self, spec: &Value) -> anyhow::Result<()> {
        self.expect("POST", "/v1/triggers", Some(spec.to_string().as_bytes()), 201).map(drop)
    }

    /// Deletes a trigger; its consumer commits what it finished and leaves its group first.
    pub fn delete_trigger(&self, name: &str) -> anyhow::Result<()> {
        self.expect("DELETE", &format!("/v1/triggers/{name}"), None, 200).map(drop)
    }

    pub fn stats(&self, trigger: &str) -> anyhow::Result<Stats> {
        let text = self.expect("GET", &format!("/v1/triggers/{trigger}"), None, 200)?;
        let mut view: Value = serde_json::from_str(&text)?;
        Ok(serde_json::from_value(view["status"].take())?)
    }

    /// Polls `trigger` until it has delivered `n` events; fails after `timeout` (or at once if
    /// events were dead-lettered or dropped: they would never count as delivered).
    pub fn wait_delivered(
        &self,
        trigger: &str,
        n: u64,
        start: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Delivered> {
        let mut first = None;
        loop {
            let stats = self.stats(trigger)?;
            let now = start.elapsed();
            if stats.delivered > 0 && first.is_none() {
                first = Some(now);
            }
            if stats.delivered >= n {
                return Ok(Delivered { first: first.unwrap_or(now), done: now, stats });
            }
            if stats.dead_lettered + stats.dropped > 0 || now > timeout {
                bail!(
                    "trigger {trigger}: {} of {n} delivered after {:.1} s ({} dead-lettered, {} dropped, state {}, \
                     last error: {}); node log: {}",
                    stats.delivered,
                    now.as_secs_f64(),
                    stats.dead_lettered,
                    stats.dropped,
                    stats.state,
                    stats.last_error.as_deref().unwrap_or("none"),
                    self.log.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The newest usage records of the events function (at most 10,000, the API's limit) and
    /// the total number of its invocations, from the same answer.
    pub fn usage(&self) -> anyhow::Result<(Vec<Usage>, u64)> {
        #[derive(Deserialize)]
        struct Report {
            summary: Vec<Value>,
            records: Vec<Usage>,
        }
        let text = self.expect("GET", &format!("/v1/usage?function={FUNCTION}&limit=10000"), None, 200)?;
        let report: Report = serde_json::from_str(&text).context("parsing /v1/usage")?;
        let total = report.summary.first().and_then(|s| s["invocations"].as_u64()).unwrap_or(0);
        Ok((report.records, total))
    }
}

/// A Kafka trigger on `topic` from its earliest record, with a group of its own.
pub fn kafka_trigger(name: &str, brokers: &str, topic: &str, ordering: &str, max_in_flight: u32) -> Value {
    json!({
        "name": name,
        "function": FUNCTION,
        "source": {"kafka": {
            "brokers": brokers,
            "topics": [topic],
            "group": format!("{name}-group"),
            "from": "earliest",
            "ordering": ordering,
            "max_in_flight": max_in_flight,
        }},
        "delivery": delivery(),
    })
}

/// A RabbitMQ trigger on `queue` with `prefetch` messages in flight.
pub fn rabbitmq_trigger(name: &str, url: &str, queue: &str, prefetch: u16) -> Value {
    json!({
        "name": name,
        "function": FUNCTION,
        "source": {"rabbitmq": {"url": url, "queue": queue, "prefetch": prefetch}},
        "delivery": delivery(),
    })
}

/// Short retries: a failed attempt shows up as `retried` instead of stalling a run for seconds.
fn delivery() -> Value {
    json!({"retries": 3, "backoff_ms": 200, "backoff_policy": "exponential", "timeout_ms": 30_000})
}
