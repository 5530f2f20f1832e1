//! The node under test: one `wisp up` process (spawned through wisp-testkit), the parts of its
//! admin API the scenarios use (push an artifact, apply a Knative Service) and its per-revision
//! autoscaler gauges from `/metrics`.

use anyhow::{Context, bail};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wisp_testkit::{Node, metric_samples, metric_value};

/// The artifact tags the services' `image:` fields name.
pub const MISBEHAVE: &str = "misbehave:v1";
pub const HELLO: &str = "hello:v1";

pub struct Wisp {
    node: std::sync::Mutex<Node>,
    pub addr: SocketAddr,
    pub pid: u32,
    log: PathBuf,
}

impl Wisp {
    /// `wisp up` on `data_dir` with `extra` flags, logging to `log`.
    pub fn start(bin: &Path, data_dir: &Path, log: &Path, extra: &[String]) -> anyhow::Result<Wisp> {
        let node = Node::builder(bin, data_dir)
            .args(extra)
            .env("RUST_LOG", "info,wasmtime=warn")
            .log_file(log)
            .spawn()
            .with_context(|| format!("starting wisp up (log: {})", log.display()))?;
        Ok(Wisp { addr: node.addr, pid: node.pid(), node: std::sync::Mutex::new(node), log: log.to_owned() })
    }

    /// The exit status if the node has exited (it should not have).
    pub fn exited(&self) -> Option<String> {
        self.node.lock().unwrap().exited().map(|s: ExitStatus| s.to_string())
    }

    /// One request on a shared keep-alive agent; any status is an answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, String)> {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build());
        let bearer = format!("Bearer {}", self.node.lock().unwrap().token);
        let url = format!("http://{}{path}", self.addr);
        let resp = wisp_testkit::try_request(agent, method, &url, body, &[("Authorization", &bearer)])?;
        Ok((resp.status, resp.body))
    }

    fn expect(&self, method: &str, path: &str, body: Option<&[u8]>, status: u16) -> anyhow::Result<String> {
        let (got, text) = self.call(method, path, body)?;
        if got != status {
            bail!("{method} {path}: {got} {} (node log: {})", text.trim(), self.log.display());
        }
        Ok(text)
    }

    /// `PUT /v1/artifacts/{name}/{tag}` with the component's bytes.
    pub fn push(&self, image: &str, wasm: &[u8]) -> anyhow::Result<()> {
        let (name, tag) = image.split_once(':').context("image is name:tag")?;
        self.expect("PUT", &format!("/v1/artifacts/{name}/{tag}"), Some(wasm), 201).map(drop)
    }

    /// `POST /v1/apply` with one Service; returns the revision it created, as the node names it.
    pub fn apply(&self, service: &Service) -> anyhow::Result<String> {
        let yaml = service.yaml();
        let text = self.expect("POST", "/v1/apply", Some(yaml.as_bytes()), 200)?;
        let answer: serde_json::Value = serde_json::from_str(&text).context("parsing the apply answer")?;
        let revision = &answer["results"][0]["revision"];
        Ok(revision.as_str().map_or_else(|| revision.to_string(), str::to_string))
    }

    /// `GET path` must answer 200 (a service works before it is measured).
    pub fn check(&self, path: &str) -> anyhow::Result<()> {
        self.expect("GET", path, None, 200).map(drop)
    }

    pub fn metrics(&self) -> anyhow::Result<String> {
        self.expect("GET", "/metrics", None, 200)
    }

    /// The autoscaler gauges of `function`'s revisions, now.
    pub fn gauges(&self, function: &str) -> anyhow::Result<Gauges> {
        Ok(Gauges::of(&self.metrics()?, function))
    }

    /// Polls the gauges every `interval` until `done` holds; fails after `timeout`.
    pub fn wait_gauges(
        &self,
        function: &str,
        interval: Duration,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Gauges) -> bool,
    ) -> anyhow::Result<(Gauges, Duration)> {
        let start = Instant::now();
        loop {
            let g = self.gauges(function)?;
            if done(&g) {
                return Ok((g, start.elapsed()));
            }
            if start.elapsed() > timeout {
                bail!(
                    "{function}: not {what} after {:.0} s: {g:?} (node log: {})",
                    timeout.as_secs_f64(),
                    self.log.display()
                );
            }
            std::thread::sleep(interval);
        }
    }

    /// Scrapes the gauges of `function` every `interval` (on the caller's thread) until `stop`
    /// is set; each sample is stamped with when its request was sent and its answer arrived,
    /// since `t0`: the node read the gauges in between.
    pub fn poll(
        &self,
        function: &str,
        interval: Duration,
        t0: Instant,
        stop: &AtomicBool,
    ) -> (Vec<Poll>, Option<String>) {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let url = format!("http://{}/metrics", self.addr);
        let (mut samples, mut error) = (Vec::new(), None);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let sent = t0.elapsed();
            match wisp_testkit::try_request(&agent, "GET", &url, None, &[]) {
                Ok(resp) if resp.status == 200 => {
                    samples.push(Poll { sent, answered: t0.elapsed(), gauges: Gauges::of(&resp.body, function) })
                }
                Ok(resp) => {
                    error.get_or_insert_with(|| format!("/metrics answered {}", resp.status));
                }
                Err(e) => {
                    error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
            next += interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now; // a slow scrape: no burst to catch up
            }
        }
        (samples, error)
    }
}

/// One scrape of /metrics: sent and answered since the poller's origin.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub sent: Duration,
    pub answered: Duration,
    pub gauges: Gauges,
}

/// A Knative Service on one of the pushed artifacts.
pub struct Service {
    pub name: &'static str,
    pub image: &'static str,
    pub container_concurrency: u32,
    /// Template annotations.
    pub annotations: Vec<(&'static str, String)>,
}

impl Service {
    pub fn yaml(&self) -> String {
        let mut anns = String::new();
        if !self.annotations.is_empty() {
            anns.push_str("    metadata:\n      annotations:\n");
            for (k, v) in &self.annotations {
                anns.push_str(&format!("        {k}: \"{v}\"\n"));
            }
        }
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n{anns}    \
             spec:\n      containerConcurrency: {cc}\n      containers:\n        - image: {image}\n",
            name = self.name,
            cc = self.container_concurrency,
            image = self.image,
        )
    }
}

/// The per-revision autoscaler gauges of one function, summed over its revisions (the scenarios
/// run one revision per service), and its pool's ready instances and cold starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Gauges {
    pub desired: f64,
    pub ready: f64,
    pub panic: f64,
    pub queue: f64,
    pub panic_concurrency: f64,
    pub ready_instances: f64,
    pub cold_starts: f64,
}

impl Gauges {
    pub fn of(text: &str, function: &str) -> Gauges {
        let label = format!("function=\"{function}\"");
        let sum = |name: &str| {
            let prefix = format!("{name}{{");
            metric_samples(text)
                .filter(|(series, _)| series.starts_with(&prefix) && series.contains(&label))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        let one = |name: &str| metric_value(text, &format!("{name}{{{label}}}")).unwrap_or(0.0);
        Gauges {
            desired: sum("wisp_revision_desired_replicas"),
            ready: sum("wisp_revision_ready_replicas"),
            panic: sum("wisp_revision_panic"),
            queue: sum("wisp_revision_activator_queue"),
            panic_concurrency: sum("wisp_revision_panic_concurrency"),
            ready_instances: one("wisp_ready_instances"),
            cold_starts: one("wisp_cold_starts_total"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_match_the_function_label_exactly() {
        let text = "wisp_revision_desired_replicas{function=\"step\",revision=\"step-00001\"} 6\n\
                    wisp_revision_desired_replicas{function=\"step2\",revision=\"step2-00001\"} 9\n\
                    wisp_revision_panic{function=\"step\",revision=\"step-00001\"} 1\n\
                    wisp_ready_instances{function=\"step\"} 40\n";
        let g = Gauges::of(text, "step");
        assert_eq!((g.desired, g.panic, g.ready_instances, g.ready), (6.0, 1.0, 40.0, 0.0));
    }

    #[test]
    fn the_manifest_names_its_knobs() {
        let s = Service {
            name: "zero",
            image: MISBEHAVE,
            container_concurrency: 10,
            annotations: vec![("autoscaling.knative.dev/window", "6s".into())],
        };
        let yaml = s.yaml();
        assert!(yaml.contains("  name: zero\n"), "{yaml}");
        assert!(yaml.contains("        autoscaling.knative.dev/window: \"6s\"\n"), "{yaml}");
        assert!(yaml.contains("      containerConcurrency: 10\n"), "{yaml}");
        assert!(yaml.contains("        - image: misbehave:v1\n"), "{yaml}");
    }
}
