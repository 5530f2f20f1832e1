//! Server processes under test: a `wisp up` node and `wasmtime serve`. Each logs to a file;
//! each is stopped with SIGTERM (then SIGKILL after a grace period) when stopped or dropped.

use crate::sys;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    pub log: PathBuf,
    pub exit: Option<ExitStatus>,
}

impl Server {
    /// Spawns `wisp up` and waits for its `wisp: listening on http://ADDR` line.
    pub fn wisp(bin: &Path, data_dir: &Path, extra: &[String], log: &Path) -> anyhow::Result<Server> {
        if !bin.exists() {
            bail!(
                "wisp binary not found at {} (build it with `cargo build --release`, or pass --wisp-bin)",
                bin.display()
            );
        }
        let stderr = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(bin)
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info,wasmtime=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let log_copy = log.with_extension("stdout");
        std::thread::spawn(move || {
            let mut copy = std::fs::File::create(log_copy).ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child: Some(child), addr: "0.0.0.0:0".parse()?, pid, log: log.into(), exit: None };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("wisp: listening on http://") {
                        server.addr = addr.trim().parse().with_context(|| format!("parsing {line:?}"))?;
                        return Ok(server);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if !server.alive() {
                        bail!("wisp up exited ({:?}) before listening: {}", server.exit, server.log_tail(20));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process is exiting.
                    for _ in 0..250 {
                        if !server.alive() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let tail = server.log_tail(20);
                    server.stop();
                    bail!("wisp up exited ({:?}) before listening: {tail}", server.exit);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let tail = server.log_tail(20);
                    server.stop();
                    bail!("wisp up did not print its listening line within 120 s: {tail}");
                }
            }
        }
    }

    /// Spawns `wasmtime serve -S cli` on a free port and waits until it accepts connections.
    pub fn wasmtime(bin: &Path, wasm: &Path, flags: &[&str], log: &Path) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let stderr = std::fs::File::create(log)?;
        let stdout = stderr.try_clone()?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["-S", "cli"])
            .arg("--addr")
            .arg(addr.to_string())
            .args(flags)
            .arg(wasm)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id();
        let mut server = Server { child: Some(child), addr, pid, log: log.into(), exit: None };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if !server.alive() {
                bail!("wasmtime serve exited ({:?}): {}", server.exit, server.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = server.log_tail(20);
        server.stop();
        bail!("wasmtime serve did not start listening on {addr}: {tail}")
    }

    pub fn alive(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.exit = Some(status);
                false
            }
            _ => false,
        }
    }

    /// SIGTERM, wait up to 30 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(status)) = child.try_wait() {
            self.exit = Some(status);
            return;
        }
        sys::signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        self.exit = child.wait().ok();
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
