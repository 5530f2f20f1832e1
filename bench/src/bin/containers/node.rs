//! The node under test: one `wisp up` process (spawned through wisp-testkit) and the parts of
//! its admin API the scenarios use: import an image, deploy an image or a component, apply a
//! Knative Service, read a service's view, delete a function. Stopping it is careful to leave
//! no container behind (see [`Wisp::stop`]).

use crate::log;
use crate::procs;
use anyhow::{Context, bail};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use wisp_testkit::{Node, metric_value};

pub struct Wisp {
    node: Option<Node>,
    pub addr: SocketAddr,
    pub pid: u32,
    log: PathBuf,
    data_dir: PathBuf,
    /// Every function the bench created, deleted again before the node stops.
    functions: Mutex<Vec<String>>,
}

/// How the node ended, and what it left behind.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// Functions deleted before the SIGTERM, and how long until their containers were gone.
    pub functions_deleted: usize,
    pub containers_gone_s: f64,
    /// Containers still running when the SIGTERM was sent (should be 0).
    pub containers_at_sigterm: usize,
    /// SIGTERM until the process exited.
    pub exit_s: f64,
    pub exit: String,
    /// Containers whose bundle lies in the node's data dir still listed by crun
    /// (`crun --root /run/wisp/* list`) after the exit: should be 0. The bench deletes them.
    pub containers_left: Vec<String>,
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
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        Ok(Wisp {
            addr: node.addr,
            pid: node.pid(),
            node: Some(node),
            log: log.to_owned(),
            data_dir,
            functions: Mutex::default(),
        })
    }

    /// The exit status if the node has exited (it should not have).
    pub fn exited(&mut self) -> Option<String> {
        self.node.as_mut()?.exited().map(|s| s.to_string())
    }

    /// One request on a shared keep-alive agent; any status is an answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, String)> {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build());
        let bearer = format!("Bearer {}", self.node.as_ref().map_or("", |n| n.token.as_str()));
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

    fn created(&self, name: &str) {
        let mut functions = self.functions.lock().unwrap();
        if !functions.iter().any(|f| f == name) {
            functions.push(name.to_string());
        }
    }

    /// `POST /v1/images?name=&tag=` with an oci-archive.
    pub fn import_image(&self, image: &str, archive: &[u8]) -> anyhow::Result<()> {
        let (name, tag) = image.split_once(':').context("image is name:tag")?;
        self.expect("POST", &format!("/v1/images?name={name}&tag={tag}"), Some(archive), 201).map(drop)
    }

    /// `POST /v1/functions/NAME?image=REF&QUERY`: a container function.
    pub fn deploy_image(&self, name: &str, image: &str, query: &str) -> anyhow::Result<()> {
        self.created(name);
        self.expect("POST", &format!("/v1/functions/{name}?image={image}&{query}"), None, 201).map(drop)
    }

    /// `POST /v1/functions/NAME?QUERY` with a component's bytes: a Wasm function.
    pub fn deploy_wasm(&self, name: &str, wasm: &[u8], query: &str) -> anyhow::Result<()> {
        self.created(name);
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        self.expect("POST", &format!("/v1/functions/{name}{query}"), Some(wasm), 201).map(drop)
    }

    /// `POST /v1/apply` with one Service.
    pub fn apply(&self, service: &Service) -> anyhow::Result<()> {
        self.created(&service.name);
        self.expect("POST", "/v1/apply", Some(service.yaml().as_bytes()), 200).map(drop)
    }

    /// `DELETE /v1/functions/NAME` (its replicas stop).
    pub fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.expect("DELETE", &format!("/v1/functions/{name}"), None, 200)?;
        self.functions.lock().unwrap().retain(|f| f != name);
        Ok(())
    }

    /// `GET path` must answer 200.
    pub fn check(&self, path: &str) -> anyhow::Result<()> {
        self.expect("GET", path, None, 200).map(drop)
    }

    /// `GET /v1/services/default/NAME`: ready and desired replicas, summed over revisions.
    pub fn replicas(&self, name: &str) -> anyhow::Result<Replicas> {
        let text = self.expect("GET", &format!("/v1/services/default/{name}"), None, 200)?;
        Ok(Replicas::of(&serde_json::from_str(&text).context("parsing the service view")?))
    }

    /// Polls the service view every `interval` until `done` holds; fails after `timeout`.
    pub fn wait_replicas(
        &self,
        name: &str,
        interval: Duration,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Replicas) -> bool,
    ) -> anyhow::Result<Replicas> {
        let start = Instant::now();
        loop {
            let r = self.replicas(name)?;
            if done(&r) {
                return Ok(r);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{name}: not {what} after {:.0} s: {r:?} (node log: {})",
                    timeout.as_secs_f64(),
                    self.log.display()
                );
            }
            std::thread::sleep(interval);
        }
    }

    /// `wisp_cold_starts_total{function="NAME"}` from /metrics.
    pub fn cold_starts(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.expect("GET", "/metrics", None, 200)?;
        Ok(metric_value(&text, &format!("wisp_cold_starts_total{{function=\"{name}\"}}")).unwrap_or(0.0))
    }

    /// Stops the node so that no container outlives it: every function the bench created is
    /// deleted and their containers awaited (a node stopping with replicas still wanted may
    /// replace the ones its shutdown kills), then SIGTERM and wait for the exit (testkit's
    /// `Node::terminate`; SIGKILL only after 60 s), then crun's state is checked for
    /// containers of this data dir, which are deleted and reported.
    pub fn stop(&mut self) -> Stopped {
        let mut stopped = Stopped {
            functions_deleted: 0,
            containers_gone_s: 0.0,
            containers_at_sigterm: 0,
            exit_s: 0.0,
            exit: "already stopped".into(),
            containers_left: Vec::new(),
        };
        let Some(mut node) = self.node.take() else { return stopped };
        let start = Instant::now();
        let functions = self.functions.lock().unwrap().clone();
        for name in &functions {
            match self.delete(name) {
                Ok(()) => stopped.functions_deleted += 1,
                Err(e) => log(&format!("stop: deleting {name}: {e:#}")),
            }
        }
        while !procs::containers(self.pid).is_empty() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        stopped.containers_gone_s = start.elapsed().as_secs_f64();
        stopped.containers_at_sigterm = procs::containers(self.pid).len();
        let sigterm = Instant::now();
        let status = node.terminate(Duration::from_secs(60));
        stopped.exit_s = sigterm.elapsed().as_secs_f64();
        stopped.exit = status.map_or_else(|| "unknown".into(), |s| s.to_string());
        stopped.containers_left = procs::crun_leftovers(&self.data_dir);
        if !stopped.containers_left.is_empty() {
            log(&format!(
                "stop: {} container(s) left behind by the node, deleting them: {}",
                stopped.containers_left.len(),
                stopped.containers_left.join(", ")
            ));
            procs::crun_delete(&self.data_dir);
        }
        stopped
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        if self.node.is_some() {
            self.stop();
        }
    }
}

/// Replicas of a service from its view, summed over its revisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Replicas {
    /// `scaling.ready_instances`: replicas started and answering.
    pub ready: u64,
    /// `scaling.desired_replicas`: what the autoscaler asks for.
    pub desired: u64,
}

impl Replicas {
    pub fn of(view: &serde_json::Value) -> Replicas {
        let sum = |field: &str| {
            view["revisions"]
                .as_array()
                .map_or(0, |revs| revs.iter().map(|r| r["scaling"][field].as_u64().unwrap_or(0)).sum())
        };
        Replicas { ready: sum("ready_instances"), desired: sum("desired_replicas") }
    }
}

/// A Knative Service on an imported image.
pub struct Service {
    pub name: String,
    pub image: String,
    pub container_concurrency: u32,
    pub min_scale: u32,
}

impl Service {
    pub fn yaml(&self) -> String {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    \
             metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"{min}\"\n    spec:\n      \
             containerConcurrency: {cc}\n      containers:\n        - image: {image}\n",
            name = self.name,
            min = self.min_scale,
            cc = self.container_concurrency,
            image = self.image,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_summed_over_revisions() {
        let view = serde_json::json!({"revisions": [
            {"scaling": {"ready_instances": 3, "desired_replicas": 4}},
            {"scaling": {"ready_instances": 1, "desired_replicas": 0}},
        ]});
        assert_eq!(Replicas::of(&view), Replicas { ready: 4, desired: 4 });
    }

    #[test]
    fn the_manifest_names_its_knobs() {
        let s = Service { name: "fleet".into(), image: "httpd:bench".into(), container_concurrency: 0, min_scale: 50 };
        let yaml = s.yaml();
        assert!(yaml.contains("  name: fleet\n"), "{yaml}");
        assert!(yaml.contains("        autoscaling.knative.dev/min-scale: \"50\"\n"), "{yaml}");
        assert!(yaml.contains("      containerConcurrency: 0\n"), "{yaml}");
        assert!(yaml.contains("        - image: httpd:bench\n"), "{yaml}");
    }
}
