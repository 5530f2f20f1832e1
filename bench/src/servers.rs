//! The servers under test in the HTTP scenarios: a `wisp up` node (spawned by wisp-testkit) and
//! two `wasmtime serve` baselines, each logging to `logs/NAME.log`.

use crate::loadgen::Target;
use crate::{Ctx, Status, log};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wisp_testkit::Node;

/// `wasmtime serve` flags of the tuned baseline (pooling, keep-resident like Wisp's defaults).
pub const TUNED_FLAGS: &str = "-O pooling-allocator=y -O pooling-memory-keep-resident=2097152 \
    -O pooling-table-keep-resident=65536 -O pooling-async-stack-keep-resident=65536 -O pooling-pagemap-scan=y";

/// A running server under test and where it listens; the process is killed when dropped.
pub struct Server {
    process: Process,
    addr: SocketAddr,
    pid: u32,
}

enum Process {
    Wisp(Node),
    Wasmtime(Child),
}

impl Server {
    /// Polls `GET path` until it answers 200; fails if the process exits or 120 s pass.
    fn wait_ready(mut self, path: &str, log: &Path) -> anyhow::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if crate::http("GET", self.addr, path, None).is_ok_and(|r| r.status == 200) {
                return Ok(self);
            }
            let exited = match &mut self.process {
                Process::Wisp(n) => n.exited(),
                Process::Wasmtime(c) => c.try_wait().ok().flatten(),
            };
            if let Some(status) = exited {
                anyhow::bail!("exited ({status}); see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("{path} did not answer 200 within 120 s; see {}", log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A `Node` kills its process itself.
        if let Process::Wasmtime(c) = &mut self.process {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server under test, or why it is not running.
pub struct Contender {
    pub name: &'static str,
    pub server: Result<Server, Status>,
    pub path: &'static str,
}

impl Contender {
    pub fn target(&self) -> Option<Target> {
        let s = self.server.as_ref().ok()?;
        Some(Target { addr: s.addr, path: self.path.into(), pid: s.pid, authorization: None })
    }

    pub fn status(&self) -> Status {
        self.server.as_ref().err().cloned().unwrap_or_default()
    }
}

/// Starts Wisp (hello deployed from a deploy dir) and, if installed, both baselines.
pub fn start_all(ctx: &Ctx, wasmtime_bin: Option<&Path>, wasm: &Path) -> anyhow::Result<Vec<Contender>> {
    let deploy = ctx.work.join("deploy");
    std::fs::create_dir_all(&deploy)?;
    std::fs::write(deploy.join("hello.wasm"), &ctx.wasm)?;
    let log_file = ctx.logs.join("wisp.log");
    let wisp = Node::builder(&ctx.wisp_bin, ctx.work.join("wisp-data"))
        .arg("--deploy-dir")
        .arg(&deploy)
        .env("RUST_LOG", "info,wasmtime=warn")
        .log_file(&log_file)
        .spawn()
        .and_then(|n| {
            let _ = crate::WISP_TOKEN.set(n.token.clone());
            Server { addr: n.addr, pid: n.pid(), process: Process::Wisp(n) }.wait_ready("/fn/hello", &log_file)
        });
    let mut all = vec![Contender { name: "wisp", server: wisp.map_err(Status::failed), path: "/fn/hello" }];
    for (name, flags) in [("wasmtime-default", ""), ("wasmtime-tuned", TUNED_FLAGS)] {
        let server = match wasmtime_bin {
            None => Err(Status::Skipped("wasmtime not installed (run bench/setup.sh)".into())),
            Some(bin) => wasmtime(bin, wasm, flags, &ctx.logs.join(format!("{name}.log"))).map_err(Status::failed),
        };
        all.push(Contender { name, server, path: "/" });
    }
    for c in &all {
        let what = c.server.as_ref().map_or_else(|e| e.to_string(), |s| format!("http://{} (pid {})", s.addr, s.pid));
        log(&format!("{}: {what}", c.name));
    }
    Ok(all)
}

/// Spawns `wasmtime serve -S cli` on a free port and waits until `/` answers 200.
fn wasmtime(bin: &Path, wasm: &Path, flags: &str, log: &Path) -> anyhow::Result<Server> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let stderr = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(["serve", "-S", "cli", "--addr", &addr.to_string()])
        .args(flags.split_whitespace())
        .arg(wasm)
        .stdin(Stdio::null())
        .stdout(stderr.try_clone()?)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let server = Server { addr, pid: child.id(), process: Process::Wasmtime(child) };
    server.wait_ready("/", log).context("wasmtime serve")
}
