//! One replica: a crun container started from its bundle, watched through its pidfd, probed
//! until it listens, and reached through a small pool of keep-alive HTTP/1.1 connections.

use super::bundle::{self, Resources};
use super::host::{self, pidfd_open};
use super::{ContainerSpec, Host, Tracked};
use crate::LogBuffer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

pub(crate) type Sender = SendRequest<Full<Bytes>>;

pub(crate) struct Replica {
    pub(crate) id: String,
    pid: i32,
    netns: OwnedFd,
    port: u16,
    /// Requests on this replica now.
    pub(crate) in_flight: AtomicUsize,
    /// Taken out of service: no new requests; stopped once idle.
    pub(crate) draining: AtomicBool,
    idle: Mutex<Vec<Sender>>,
    /// How the container exited, once it has.
    exited: watch::Receiver<Option<String>>,
    memory_peak_file: Option<PathBuf>,
    cpu_file: Option<PathBuf>,
    /// Highest memory use seen (sampled), bytes.
    pub(crate) memory_peak: AtomicU64,
    /// Metered up to here (Unix ms) and this much CPU (ms): the next span starts there.
    billed_until_ms: AtomicU64,
    billed_cpu_ms: AtomicU64,
}

/// A started replica, and the receiver of its exit.
pub(crate) struct Started {
    pub(crate) replica: Arc<Replica>,
    pub(crate) pidfd: AsyncFd<OwnedFd>,
    pub(crate) exited: watch::Sender<Option<String>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts replica `id` and waits for it to listen. On failure nothing is left running.
pub(crate) async fn start(
    host: &Arc<Host>,
    spec: &ContainerSpec,
    id: String,
    logs: &Arc<LogBuffer>,
) -> Result<Started, String> {
    let _starting = Starting::enter(host)?;
    let bundle = host.config.bundles.join(&id);
    let cgroup = format!("{}/{id}", host.config.cgroup_parent);
    let resources =
        Resources { memory_bytes: spec.limits.memory_bytes, pids: host.config.pids_limit, cgroup: cgroup.clone() };
    let config = bundle::config(spec, &id, host.crun.mode, &resources);
    let write = async {
        tokio::fs::create_dir_all(&bundle).await?;
        tokio::fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?).await
    };
    write.await.map_err(|e| format!("writing the bundle {}: {e}", bundle.display()))?;

    // The container inherits crun's stdout and stderr: a pipe the node drains into the
    // function's logs (never waiting for its end, which comes only when the container exits).
    let (read, write) = host::pipe().map_err(|e| format!("creating the log pipe: {e}"))?;
    let write2 = write.try_clone().map_err(|e| format!("creating the log pipe: {e}"))?;
    spawn_log_reader(read, logs.clone());
    let crun_log = bundle.join("crun.log");
    let mut command = host.crun.command();
    command
        .arg(format!("--log=file:{}", crun_log.display()))
        .args(["run", "-d", "--pid-file"])
        .arg(bundle.join("pid"))
        .arg("--bundle")
        .arg(&bundle)
        .arg(&id)
        .stdout(write)
        .stderr(write2);
    let status = host.crun(&mut command).await.map(|out| out.status);
    let failed = |why: String| {
        let bundle = bundle.clone();
        async move {
            let _ = tokio::fs::remove_dir_all(&bundle).await;
            Err(why)
        }
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            let log = tokio::fs::read_to_string(&crun_log).await.unwrap_or_default();
            let log = log.lines().last().unwrap_or("").trim().to_string();
            host.delete(&id).await;
            return failed(format!("crun run failed ({s}): {log}")).await;
        }
        Err(e) => return failed(format!("running crun: {e}")).await,
    }
    let pid = tokio::fs::read_to_string(bundle.join("pid")).await.ok().and_then(|p| p.trim().parse::<i32>().ok());
    let opened = pid.ok_or_else(|| "crun wrote no pid".to_string()).and_then(|pid| {
        let pidfd = pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("container netns: {e}"))?;
        // SAFETY: an OwnedFd: valid, and the same descriptor for as long as the AsyncFd owns it.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| format!("watching the container: {e}"))?;
        Ok((pid, pidfd, OwnedFd::from(netns)))
    });
    let (pid, pidfd, netns) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            host.delete(&id).await;
            return failed(why).await;
        }
    };
    host.running.lock().unwrap().push(Tracked { id: id.clone(), pid });
    let (exited_tx, exited) = watch::channel(None);
    let started_ms = now_ms();
    let replica = Arc::new(Replica {
        id,
        pid,
        netns,
        port: spec.port,
        in_flight: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        idle: Mutex::new(Vec::new()),
        exited,
        memory_peak_file: host.crun.mode.memory_peak_file(&cgroup),
        cpu_file: host.crun.mode.cpu_file(&cgroup),
        memory_peak: AtomicU64::new(0),
        billed_until_ms: AtomicU64::new(started_ms),
        billed_cpu_ms: AtomicU64::new(0),
    });
    let started = Started { replica, pidfd, exited: exited_tx };
    match started.replica.wait_ready(host, &started.pidfd).await {
        Ok(()) => Ok(started),
        Err(timeout) => {
            if timeout.is_some() {
                host::kill(pid, libc::SIGKILL);
                let _ = started.pidfd.readable().await.map(|mut g| g.retain_ready());
            }
            // Reaped only now, after the last signal: the pid cannot have been reused.
            let status = host::reap(started.pidfd.get_ref().as_fd());
            cleanup(host, &started.replica.id).await;
            Err(timeout
                .unwrap_or_else(|| format!("container exited before listening on port {} ({status})", spec.port)))
        }
    }
}

/// A replica start in progress, counted so node shutdown waits for it.
struct Starting<'a>(&'a Host);

impl<'a> Starting<'a> {
    fn enter(host: &'a Host) -> Result<Self, String> {
        host.starting.fetch_add(1, Ordering::SeqCst);
        let starting = Starting(host);
        if host.closed.load(Ordering::SeqCst) {
            return Err("the node is shutting down".to_string());
        }
        Ok(starting)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.starting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Removes a replica's crun state and bundle, and forgets its process.
pub(crate) async fn cleanup(host: &Arc<Host>, id: &str) {
    host.running.lock().unwrap().retain(|t| t.id != id);
    host.delete(id).await;
    let _ = tokio::fs::remove_dir_all(host.config.bundles.join(id)).await;
}

fn spawn_log_reader(read: OwnedFd, logs: Arc<LogBuffer>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else { return };
    tokio::spawn(async move {
        let mut buf = vec![0; 8192];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            logs.append(&buf[..n]);
        }
    });
}

impl Replica {
    /// Probes the port (a TCP connect inside the container's netns) until it answers; the
    /// probe's connection becomes the first pooled one. Knative's queue-proxy probes every
    /// 50 ms; a container starts in a few ms here, so the probe starts at 1 ms and backs off.
    /// `Err(None)`: the container exited first.
    async fn wait_ready(&self, host: &Host, pidfd: &AsyncFd<OwnedFd>) -> Result<(), Option<String>> {
        let deadline = Instant::now() + host.config.ready_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Ok(sender) = self.connect(host).await {
                self.idle.lock().unwrap().push(sender);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Some(format!(
                    "container did not listen on port {} within {:?} (readiness timeout)",
                    self.port, host.config.ready_timeout
                )));
            }
            tokio::select! {
                // Exited before listening: the caller reaps it and reports the status.
                _ = pidfd.readable() => return Err(None),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 3 / 2).min(Duration::from_millis(20));
        }
    }

    async fn connect(&self, host: &Host) -> std::io::Result<Sender> {
        let socket = host.netns.socket_in(self.netns.as_fd())?;
        let stream = socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// A connection ready for a request: an idle pooled one, or a new one.
    pub(crate) async fn sender(&self, host: &Host) -> Result<Sender, String> {
        loop {
            let pooled = self.idle.lock().unwrap().pop();
            match pooled {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => return self.connect(host).await.map_err(|e| self.failure(&e.to_string())),
            }
        }
    }

    /// Returns a connection to the pool after its response was read.
    pub(crate) fn put_back(&self, sender: Sender) {
        if !sender.is_closed() {
            self.idle.lock().unwrap().push(sender);
        }
    }

    /// How a failed exchange reads: the container's exit when it died, else the I/O error.
    pub(crate) fn failure(&self, error: &str) -> String {
        match &*self.exited.borrow() {
            Some(status) => format!("container {} exited ({status}) while handling the request", self.id),
            None => format!("container {}: {error}", self.id),
        }
    }

    /// [`Self::failure`], after giving the exit watcher a moment: a crash resets the
    /// connection a little before the pidfd reports the exit.
    pub(crate) async fn failure_after(&self, error: &str) -> String {
        self.wait_exit(Duration::from_millis(200)).await;
        self.failure(error)
    }

    pub(crate) fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Waits until the container has exited.
    pub(crate) async fn wait_exit(&self, within: Duration) -> bool {
        let mut exited = self.exited.clone();
        tokio::time::timeout(within, exited.wait_for(|s| s.is_some())).await.is_ok()
    }

    pub(crate) fn signal(&self, signal: i32) {
        if !self.has_exited() {
            host::kill(self.pid, signal);
        }
    }

    pub(crate) fn billed_until(&self) -> u64 {
        self.billed_until_ms.load(Ordering::Relaxed)
    }

    /// The span since the last one, up to `now_ms`, with the CPU used in it. Blocking (a read).
    pub(crate) fn span(&self, now_ms: u64) -> super::ReplicaSpan {
        let cpu = self.cpu_ms();
        let start_ms = self.billed_until_ms.swap(now_ms, Ordering::Relaxed);
        let cpu_ms = cpu.saturating_sub(self.billed_cpu_ms.swap(cpu, Ordering::Relaxed));
        super::ReplicaSpan { id: self.id.clone(), start_ms, end_ms: now_ms, cpu_ms }
    }

    /// CPU time the container used, from its cgroup (read after it exited, before crun
    /// deletes the cgroup); 0 where the host has none.
    pub(crate) fn cpu_ms(&self) -> u64 {
        let Some(Ok(text)) = self.cpu_file.as_ref().map(std::fs::read_to_string) else { return 0 };
        match text.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
            Some(usec) => usec.trim().parse::<u64>().map_or(0, |u| u / 1000),
            None => text.trim().parse::<u64>().map_or(0, |ns| ns / 1_000_000),
        }
    }

    /// Reads the cgroup's peak memory (a small in-kernel read, done by the set's housekeeping,
    /// never on the request path).
    pub(crate) fn sample_memory(&self) {
        if let Some(Ok(text)) = self.memory_peak_file.as_ref().map(std::fs::read_to_string)
            && let Ok(bytes) = text.trim().parse::<u64>()
        {
            self.memory_peak.fetch_max(bytes, Ordering::Relaxed);
        }
    }
}
