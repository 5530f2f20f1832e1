//! The servers under test in the HTTP scenarios: a `wisp up` node (spawned by wisp-testkit) and
//! two `wasmtime serve` baselines, each logging to `logs/NAME.log`.

use crate::loadgen::Target;
use crate::{Ctx, Status, log};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use wisp_testkit::Node;

/// `wasmtime serve` flags of the tuned baseline (pooling, keep-resident like Wisp's defaults).
pub const TUNED_FLAGS: [&str; 10] = [
    "-O",
    "pooling-allocator=y",
    "-O",
    "pooling-memory-keep-resident=2097152",
    "-O",
    "pooling-table-keep-resident=65536",
    "-O",
    "pooling-async-stack-keep-resident=65536",
    "-O",
    "pooling-pagemap-scan=y",
];

pub enum Server {
    Wisp(Node),
    Wasmtime(Child, SocketAddr),
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Wisp(n) => n.addr,
            Server::Wasmtime(_, addr) => *addr,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Server::Wisp(n) => n.pid(),
            Server::Wasmtime(c, _) => c.id(),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        match self {
            Server::Wisp(n) => n.exited(),
            Server::Wasmtime(c, _) => c.try_wait().ok().flatten(),
        }
    }

    fn stop(&mut self) {
        match self {
            Server::Wisp(n) => {
                n.terminate(Duration::from_secs(30));
            }
            Server::Wasmtime(c, _) => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
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
        Some(Target { addr: s.addr(), path: self.path.into(), pid: Some(s.pid()) })
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
    let wisp = Node::builder(&ctx.wisp_bin, ctx.work.join("wisp-data"))
        .arg("--deploy-dir")
        .arg(&deploy)
        .env("RUST_LOG", "info,wasmtime=warn")
        .log_file(ctx.logs.join("wisp.log"))
        .spawn()
        .and_then(|n| crate::wait_ok(n.addr, "/fn/hello", Duration::from_secs(60)).map(|()| Server::Wisp(n)));
    let mut all = vec![Contender { name: "wisp", server: wisp.map_err(Status::failed), path: "/fn/hello" }];
    for (name, flags) in [("wasmtime-default", &[][..]), ("wasmtime-tuned", &TUNED_FLAGS[..])] {
        let server = match wasmtime_bin {
            None => Err(Status::Skipped("wasmtime not installed (run bench/setup.sh)".into())),
            Some(bin) => wasmtime(bin, wasm, flags, &ctx.logs.join(format!("{name}.log"))).map_err(Status::failed),
        };
        all.push(Contender { name, server, path: "/" });
    }
    for c in &all {
        let what =
            c.server.as_ref().map_or_else(|e| e.to_string(), |s| format!("http://{} (pid {})", s.addr(), s.pid()));
        log(&format!("{}: {what}", c.name));
    }
    Ok(all)
}

/// Spawns `wasmtime serve -S cli` on a free port and waits until `/` answers 200.
fn wasmtime(bin: &Path, wasm: &Path, flags: &[&str], log: &Path) -> anyhow::Result<Server> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let stderr = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(["serve", "-S", "cli", "--addr", &addr.to_string()])
        .args(flags)
        .arg(wasm)
        .stdin(Stdio::null())
        .stdout(stderr.try_clone()?)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let mut server = Server::Wasmtime(child, addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if crate::http("GET", addr, "/", None).is_ok_and(|r| r.status == 200) {
            return Ok(server);
        }
        if let Some(status) = server.exited() {
            bail!("wasmtime serve exited ({status}); see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("wasmtime serve did not answer on {addr} within 120 s; see {}", log.display())
}

/// Stops every server; notes the ones that died during the run.
pub fn stop_all(servers: &mut Vec<Contender>) -> Vec<String> {
    let mut notes = Vec::new();
    for c in servers.iter_mut() {
        if let Ok(s) = &mut c.server {
            if let Some(status) = s.exited() {
                notes.push(format!("{} exited during the run ({status}); see logs/{}.log", c.name, c.name));
            }
            s.stop();
        }
    }
    servers.clear();
    notes
}
