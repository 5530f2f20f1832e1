//! Container workloads: OCI images run by crun, following the Knative runtime contract (an
//! HTTP server on `$PORT`). A revision's [`ReplicaSet`] keeps a target number of running
//! replicas, each a crun container in its own namespaces over the image's shared read-only
//! rootfs, reached through keep-alive connections opened inside its network namespace.
//!
//! The node is the containers' child subreaper, so a container's exit is seen at once through
//! its pidfd. crun keeps no process resident; nothing but the container itself stays up.

mod bundle;
mod host;
mod replica;
mod set;

pub use host::CgroupMode;
pub use set::{ReplicaSet, ReplicaSpan};

use host::{Crun, Netns};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Limits;

/// Node-wide container settings; each has a `wisp up` flag.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The crun binary.
    pub crun: PathBuf,
    /// Where replica bundles live (one directory each, removed when the replica goes).
    pub bundles: PathBuf,
    /// crun's state directory for this node (kept on tmpfs: `/run/wisp/...`).
    pub state: PathBuf,
    /// cgroups path prefix for this node's containers.
    pub cgroup_parent: String,
    /// How long a starting replica may take to listen on its port.
    pub ready_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a replica is stopped.
    pub stop_grace: Duration,
    /// Processes one replica may run, where cgroups are available.
    pub pids_limit: u32,
    /// Replica starts in flight at once per revision.
    pub max_parallel_starts: usize,
    /// How often a running replica's time so far is metered (it is also metered when it stops).
    pub usage_interval: Duration,
}

/// Why the container runtime cannot be used on this host.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// crun is not installed or does not run.
    #[error("crun ({path}) is not usable: {message} (scripts/setup.sh installs it)")]
    Crun {
        /// The binary tried.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A host call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What a container image and its revision ask of one replica.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Names replicas (and crun containers): `<prefix>-<n>`; unique on the node.
    pub name: String,
    /// The image's unpacked rootfs, shared read-only.
    pub rootfs: PathBuf,
    /// Entrypoint and command.
    pub args: Vec<String>,
    /// `K=V` pairs: the image's, the revision's, then `PORT` and the `K_*` variables.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// uid and gid the process runs as.
    pub user: (u32, u32),
    /// The port the server listens on (`$PORT`).
    pub port: u16,
    /// Requests one replica serves at once (0: no limit).
    pub concurrency: u32,
    /// Per-request limits; `memory_bytes` is also the replica's cgroup memory limit.
    pub limits: Limits,
    /// Signal sent to stop a replica (the image's `StopSignal`, else SIGTERM).
    pub stop_signal: i32,
}

/// Which limits the host lets crun enforce, for `wisp up`'s output and `/metrics`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Enforcement {
    /// How the host mounts cgroups.
    pub cgroups: CgroupMode,
    /// Per-replica memory limit (cgroup).
    pub memory: bool,
    /// Per-replica process limit (cgroup).
    pub pids: bool,
    /// Per-request timeout (always: the node's proxy enforces it).
    pub timeout: bool,
    /// Peak memory metered per replica (cgroup).
    pub memory_metering: bool,
}

/// A process a replica runs, tracked so node shutdown can stop it.
pub(crate) struct Tracked {
    pub(crate) id: String,
    pub(crate) pid: i32,
}

pub(crate) struct Host {
    pub(crate) config: ContainerConfig,
    pub(crate) crun: Crun,
    pub(crate) netns: Netns,
    pub(crate) running: Mutex<Vec<Tracked>>,
    /// crun processes running now (tokio reaps them; the stray reaper must not).
    commands: Mutex<HashSet<i32>>,
    /// Replica starts in progress on the node.
    pub(crate) starting: AtomicUsize,
    /// Set by shutdown: no replica starts after it.
    pub(crate) closed: AtomicBool,
}

/// The node's container runtime. Cheap to clone.
#[derive(Clone)]
pub struct ContainerRuntime {
    host: Arc<Host>,
}

impl ContainerRuntime {
    /// Checks crun, reads the host's cgroup mode, makes the node its containers' subreaper,
    /// and deletes containers a previous run of this node left behind (after a crash).
    pub async fn new(config: ContainerConfig) -> Result<Self, ContainerError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| ContainerError::Io { what, source }
        };
        let crun = Crun { program: config.crun.clone(), root: config.state.clone(), mode: CgroupMode::detect() };
        let version = tokio::process::Command::new(&crun.program).arg("--version").output().await;
        match version {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(ContainerError::Crun { path: crun.program, message });
            }
            Err(e) => return Err(ContainerError::Crun { path: crun.program, message: e.to_string() }),
        }
        std::fs::create_dir_all(&config.bundles).map_err(io("creating the bundle directory"))?;
        std::fs::create_dir_all(&config.state).map_err(io("creating crun's state directory"))?;
        host::become_subreaper().map_err(io("becoming child subreaper"))?;
        let host = Host {
            netns: Netns::open().map_err(io("opening the node's netns"))?,
            crun,
            config,
            running: Mutex::default(),
            commands: Mutex::default(),
            starting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        };
        host.remove_leftovers().await;
        let host = Arc::new(host);
        tokio::spawn(reap_strays_every_second(Arc::downgrade(&host)));
        Ok(Self { host })
    }

    /// What this host enforces.
    pub fn enforcement(&self) -> Enforcement {
        let mode = self.host.crun.mode;
        Enforcement {
            cgroups: mode,
            memory: mode.limits(),
            pids: mode.limits(),
            timeout: true,
            memory_metering: mode.limits(),
        }
    }

    /// A replica set for one revision, at zero until its target is set. `ended` is told of
    /// every replica that stops (for replica-seconds metering).
    pub fn replica_set(
        &self,
        spec: ContainerSpec,
        logs: Arc<crate::LogBuffer>,
        ended: Arc<dyn Fn(ReplicaSpan) + Send + Sync>,
    ) -> ReplicaSet {
        ReplicaSet::new(self.host.clone(), spec, logs, ended)
    }

    /// Replicas running now, on the whole node.
    pub fn running(&self) -> usize {
        self.host.running.lock().unwrap().len()
    }

    /// Stops every container of the node: SIGTERM, the grace period, then SIGKILL. For node
    /// shutdown, after requests have drained.
    pub async fn shutdown(&self) {
        // Starts under way finish (or fail) first, so none leaves a container behind.
        self.host.closed.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.host.config.ready_timeout + Duration::from_secs(5);
        while self.host.starting.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pids: Vec<i32> = self.host.running.lock().unwrap().iter().map(|t| t.pid).collect();
        for &pid in &pids {
            host::kill(pid, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + self.host.config.stop_grace;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left: Vec<i32> = self.host.running.lock().unwrap().iter().map(|t| t.pid).collect();
        for pid in left {
            host::kill(pid, libc::SIGKILL);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.host.remove_leftovers().await;
    }
}

/// The node's stray reaper: crun's intermediate processes exit orphaned to the node.
async fn reap_strays_every_second(host: std::sync::Weak<Host>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(host) = host.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || host.reap_strays()).await;
    }
}

impl Host {
    /// Runs a crun command to its end. Its pid is known while it runs, so the stray reaper
    /// leaves it to tokio.
    pub(crate) async fn crun(&self, command: &mut tokio::process::Command) -> std::io::Result<Output> {
        // Spawned under the lock the reaper sweeps under: it never sees this child untracked.
        let (child, pid) = {
            let mut commands = self.commands.lock().unwrap();
            let child = command.spawn()?;
            let pid = child.id().map(|p| p as i32);
            commands.extend(pid);
            (child, pid)
        };
        let output = child.wait_with_output().await;
        if let Some(pid) = pid {
            self.commands.lock().unwrap().remove(&pid);
        }
        output
    }

    /// `crun delete -f`: kills what is left of a container and forgets it.
    pub(crate) async fn delete(&self, id: &str) {
        let mut command = self.crun.command();
        command.args(["delete", "-f", id]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = self.crun(&mut command).await;
    }

    /// Reaps exited children that are neither replicas (their watchers reap those) nor crun
    /// commands in progress: `crun run -d`'s intermediate process is orphaned to the node and
    /// would stay a zombie. Reads `/proc/self/task/*/children`: a few small in-kernel reads.
    fn reap_strays(&self) {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
        let mut children = Vec::new();
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        let running: HashSet<i32> = self.running.lock().unwrap().iter().map(|t| t.pid).collect();
        let commands = self.commands.lock().unwrap();
        for pid in children.into_iter().filter(|p| !running.contains(p) && !commands.contains(p)) {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')));
            if zombie {
                // SAFETY: waitpid on a zombie child no one else waits for.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
    }

    /// Deletes every container in this node's crun state directory, and stale bundles.
    async fn remove_leftovers(&self) {
        let listed = self.crun(self.crun.command().args(["list", "-q"]).stdout(Stdio::piped())).await;
        if let Ok(out) = listed {
            for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
                tracing::info!(container = id, "deleting a container left by an earlier run");
                self.delete(id).await;
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.config.bundles) {
            let running: Vec<String> = self.running.lock().unwrap().iter().map(|t| t.id.clone()).collect();
            for entry in entries.flatten() {
                if !running.iter().any(|id| entry.file_name().to_str() == Some(id)) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}
