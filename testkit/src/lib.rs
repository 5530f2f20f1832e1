//! Dev-only kit shared by the cli tests and wisp-bench (modelled on wasmtime's
//! `crates/test-programs/artifacts`): build the guest functions once and expose their paths,
//! spawn `wisp up` nodes, talk HTTP to them and read their `/metrics`.

use anyhow::{Context, bail};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root (the workspace containing this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit/ has a parent").to_path_buf()
}

/// Builds `functions/` for wasm32-wasip2 (release) once per process and returns the directory
/// holding the `.wasm` files.
pub fn functions_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let target = root.join("functions/target");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("functions/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("running cargo to build the guest functions");
        assert!(status.success(), "building functions/ for wasm32-wasip2 failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The `wisp` binary a bench drives: `explicit` (its `--wisp-bin`), else the one next to the
/// running executable (same profile), else target/release/wisp. An error says how to build it.
pub fn bench_wisp_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = explicit.unwrap_or_else(|| {
        let sibling = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("wisp")));
        sibling.filter(|p| p.exists()).unwrap_or_else(|| repo_root().join("target/release/wisp"))
    });
    anyhow::ensure!(
        bin.exists(),
        "no wisp binary at {} (cargo build --release -p wisp-cli, or --wisp-bin)",
        bin.display()
    );
    Ok(bin)
}

/// Path of a guest component, e.g. `wasm_path("hello")`.
pub fn wasm_path(name: &str) -> PathBuf {
    functions_dir().join(format!("{name}.wasm"))
}

/// Bytes of a guest component.
pub fn wasm(name: &str) -> Vec<u8> {
    let path = wasm_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("wisp-test-").tempdir().expect("creating a temp dir")
}

/// Every sample of a Prometheus text exposition as (series, value), where series is the name
/// with its labels as printed, e.g. `wisp_cold_starts_total{function="hello"}`.
pub fn metric_samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (series, value) = l.trim_end().rsplit_once(' ')?;
        Some((series.trim_end(), value.parse().ok()?))
    })
}

/// The value of one series, e.g. `metric_value(text, "wisp_pool_instances")`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    metric_samples(text).find(|(s, _)| *s == series).map(|(_, v)| v)
}

/// Spawns `wisp up --listen 127.0.0.1:0 --data-dir DIR ARGS..` (see [`Node::builder`]).
pub struct NodeBuilder {
    bin: PathBuf,
    data_dir: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: Option<PathBuf>,
}

impl NodeBuilder {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Writes the node's stderr (its log) and the rest of its stdout to this file instead of
    /// inheriting stderr and discarding stdout.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Starts the node and waits (up to 120 s) for its `wisp: listening on URL` line.
    pub fn spawn(self) -> anyhow::Result<Node> {
        let (stderr, mut copy) = match &self.log {
            Some(p) => {
                let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
                (Stdio::from(f.try_clone()?), Some(f))
            }
            None => (Stdio::inherit(), None),
        };
        let mut child = Command::new(&self.bin)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args)
            .envs(self.envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Hands over the first line, then keeps draining so the node never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next());
            for line in lines {
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let mut node = Node {
            url: String::new(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            token: String::new(),
            child,
            log: self.log,
        };
        let first = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(line)) => line,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = node.terminate(Duration::from_secs(5));
                bail!("wisp up exited ({status:?}) before listening{}", node.log_tail(20))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                node.kill();
                bail!("wisp up printed nothing within 120 s{}", node.log_tail(20))
            }
        };
        let Some(url) = first.strip_prefix("wisp: listening on ") else {
            node.kill();
            bail!("unexpected first line from wisp up: {first:?}");
        };
        node.url = url.trim().to_string();
        node.addr = node.url.trim_start_matches("http://").parse().with_context(|| format!("parsing {first:?}"))?;
        // Written before the node listens; absent only on nodes from before tokens existed.
        node.token = std::fs::read_to_string(self.data_dir.join("admin-token")).unwrap_or_default().trim().to_string();
        Ok(node)
    }
}

/// A running `wisp up` process; killed (SIGKILL) when dropped.
pub struct Node {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    /// The admin token `wisp up` wrote to `DATA_DIR/admin-token`; sent by [`Node::get`],
    /// [`Node::post`], [`Node::delete`] and [`Node::request`]. Pass it to the CLI as
    /// `WISP_TOKEN` ([`Node::cli`]).
    pub token: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Node {
    pub fn builder(bin: impl AsRef<Path>, data_dir: impl AsRef<Path>) -> NodeBuilder {
        NodeBuilder {
            bin: bin.as_ref().to_owned(),
            data_dir: data_dir.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            log: None,
        }
    }

    /// For tests: starts `bin up` with `extra` flags and `RUST_LOG=warn`, stderr inherited;
    /// panics if it does not come up.
    pub fn start_with(bin: impl AsRef<Path>, data_dir: &Path, extra: &[&str]) -> Node {
        Node::builder(bin, data_dir).args(extra).env("RUST_LOG", "warn").spawn().expect("starting wisp up")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then wait for a clean exit (in-flight requests drained, ledger flushed).
    pub fn stop(mut self) {
        signal(self.pid(), libc::SIGTERM);
        let status = self.child.wait().expect("waiting for wisp up");
        assert!(status.success(), "wisp up exited with {status}");
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns how the process ended.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        self.child.wait().ok()
    }

    /// SIGKILL (a crash, as far as the node can tell) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `n` lines of the log file, if the node has one, prefixed with ": ".
    pub fn log_tail(&self, n: usize) -> String {
        let Some(text) = self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else { return String::new() };
        let lines: Vec<&str> = text.lines().collect();
        format!(": {}", lines[lines.len().saturating_sub(n)..].join("\n"))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, Some(body), &[])
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None, &[])
    }

    /// One request to `path` with the admin token (unless `headers` set `Authorization`).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
        let bearer = format!("Bearer {}", self.token);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !self.token.is_empty() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            all.push(("Authorization", &bearer));
        }
        request(method, &format!("{}{path}", self.url), body, &all)
    }

    /// A `wisp` CLI command aimed at this node with its admin token (`--node`, `WISP_TOKEN`).
    pub fn cli(&self, bin: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new(bin.as_ref());
        cmd.arg("--node").arg(&self.url).env("WISP_TOKEN", &self.token);
        cmd
    }

    /// Deploys the guest `wasm_name` as `name` with `settings` (a query string); asserts 201.
    pub fn deploy(&self, name: &str, wasm_name: &str, settings: &str) -> Resp {
        let query = if settings.is_empty() { String::new() } else { format!("?{settings}") };
        let resp = self.post(&format!("/v1/functions/{name}{query}"), &wasm(wasm_name));
        assert_eq!(resp.status, 201, "deploying {name}: {}", resp.body);
        resp
    }

    pub fn function(&self, name: &str) -> serde_json::Value {
        let resp = self.get(&format!("/v1/functions/{name}"));
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.json()
    }

    /// Value of one series in /metrics, e.g. `wisp_cold_starts_total{function="hello"}`; 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.get("/metrics").body, series).unwrap_or(0.0)
    }

    /// Polls until `check` holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut check: impl FnMut(&Node) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child we spawned and have
    // not reaped, so it cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.body)).to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh agent (60 s timeout); panics on a transport error.
pub fn request(method: &str, url: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    try_request(&agent, method, url, body, headers).unwrap_or_else(|e| panic!("{e:#}"))
}

/// One request on `agent` (which keeps connections alive); any status is a response, only
/// transport failures are errors.
pub fn try_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Resp> {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => bail!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers =
        resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string())).collect();
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).with_context(|| format!("{method} {url}: reading the body"))?;
    Ok(Resp { status, body, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_matches_whole_series() {
        let text = "# HELP x\nwisp_pool_instances_limit 200\nwisp_pool_instances 7\n\
                    wisp_cold_starts_total{function=\"hello\"} 3\n";
        assert_eq!(metric_value(text, "wisp_pool_instances"), Some(7.0));
        assert_eq!(metric_value(text, "wisp_pool_instances_limit"), Some(200.0));
        assert_eq!(metric_value(text, "wisp_cold_starts_total{function=\"hello\"}"), Some(3.0));
        assert_eq!(metric_value(text, "wisp_cold_starts_total"), None);
    }
}
