//! The baseline: `wasmtime serve` with the tuned flags every bench uses (`servers::TUNED_FLAGS`),
//! one process per component, optionally reusing instances.

use crate::Status;
use crate::loadgen::Target;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `wasmtime serve`'s arguments after `serve` and before the address and component: the tuned
/// baseline, plus `--max-instance-reuse-count N` with reuse on.
pub fn flags(reuse: Option<u32>) -> Vec<String> {
    let mut flags: Vec<String> = ["-S", "cli"].map(String::from).into();
    flags.extend(crate::servers::TUNED_FLAGS.split_whitespace().map(String::from));
    if let Some(n) = reuse {
        flags.extend(["--max-instance-reuse-count".into(), n.to_string()]);
    }
    flags
}

/// A running `wasmtime serve`; killed when dropped.
pub struct Wasmtime {
    child: Child,
    pub addr: SocketAddr,
    /// Seconds from the spawn to the first 200 (its compile, or a load from wasmtime's own cache).
    pub ready_s: f64,
}

impl Wasmtime {
    /// Spawns `wasmtime serve` on a free port and waits until `/` answers 200.
    pub fn spawn(bin: &Path, wasm: &Path, reuse: Option<u32>, log: &Path) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let stderr = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .args(flags(reuse))
            .args(["--addr", &addr.to_string()])
            .arg(wasm)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = Wasmtime { child, addr, ready_s: 0.0 };
        // Generous: a cold compile of the Python component takes tens of seconds on a busy machine.
        let deadline = started + Duration::from_secs(300);
        loop {
            if crate::http("GET", addr, "/", None).is_ok_and(|r| r.status == 200) {
                server.ready_s = started.elapsed().as_secs_f64();
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait().ok().flatten() {
                anyhow::bail!("wasmtime serve exited ({status}); see {}", log.display());
            }
            anyhow::ensure!(Instant::now() < deadline, "wasmtime serve not ready in 300 s; see {}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn target(&self) -> Target {
        Target { addr: self.addr, path: "/".into(), pid: self.pid(), authorization: None }
    }
}

impl Drop for Wasmtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A baseline per component, or why there is none.
pub fn spawn_or_status(
    bin: &Result<&Path, Status>,
    wasm: &Path,
    reuse: Option<u32>,
    log: &Path,
) -> Result<Wasmtime, Status> {
    let bin = bin.as_ref().map_err(Clone::clone)?;
    Wasmtime::spawn(bin, wasm, reuse, log).map_err(|e| Status::failed(format!("{e:#}")))
}
