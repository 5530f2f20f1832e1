use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds the guest functions once per test process and returns their directory.
pub fn functions_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let manifest = root.join("functions/Cargo.toml");
        let target = root.join("functions/target");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("running cargo to build the guest functions");
        assert!(status.success(), "building functions/ for wasm32-wasip2 failed");
        target.join("wasm32-wasip2/release")
    })
}

pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(functions_dir().join(format!("{name}.wasm"))).unwrap()
}

/// A running `wisp up` process; killed when dropped.
pub struct Node {
    pub url: String,
    child: Child,
}

pub fn wisp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wisp")
}

impl Node {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let mut child = Command::new(wisp_bin())
            .args(["up", "--listen", "127.0.0.1:0", "--scale-interval", "100ms", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting wisp up");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("wisp up printed nothing").unwrap();
        let url = first.strip_prefix("wisp: listening on ").unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node { url: url.to_string(), child }
    }

    /// SIGTERM, then wait for a clean exit (in-flight requests drained, ledger flushed).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "wisp up exited with {status}");
    }

    pub fn get(&self, path: &str) -> Resp {
        request("GET", &format!("{}{path}", self.url), None, &[])
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Resp {
        request("POST", &format!("{}{path}", self.url), Some(body), &[])
    }

    pub fn delete(&self, path: &str) -> Resp {
        request("DELETE", &format!("{}{path}", self.url), None, &[])
    }

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

    /// Value of one sample in /metrics, e.g. `wisp_cold_starts_total{function="hello"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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

pub fn request(method: &str, url: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string())).collect();
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).unwrap();
    Resp { status, body, headers }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("wisp-test-").tempdir().unwrap()
}
