//! Compiling in a child process. Cranelift's working memory for a large component (a Python
//! interpreter: hundreds of MiB) stayed in the node's allocator after a deploy; in a child
//! it ends with the child. The child is the node's own executable run with a hidden
//! subcommand, at a lower CPU priority, with the node's engine configuration: it writes the
//! compiled code into the compile cache and the node maps it from there.

use super::{DeployError, WasmConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};

/// The hidden subcommand of the node's executable that compiles one component.
pub const COMPILE_SUBCOMMAND: &str = "__compile-component";
/// The engine configuration the child must build, as JSON.
const CONFIG_ENV: &str = "WISP_COMPILE_CONFIG";
/// Nice value of the compiler: requests on the node come first.
const NICE: libc::c_int = 10;

/// Runs compilations in child processes, as many at once as there are cores.
pub(crate) struct Compiler {
    exe: PathBuf,
    config: String,
    running: Mutex<usize>,
    freed: Condvar,
    most: usize,
}

impl Compiler {
    pub(crate) fn new(exe: PathBuf, config: &WasmConfig) -> Self {
        Self {
            exe,
            config: serde_json::to_string(config).expect("WasmConfig serializes"),
            running: Mutex::new(0),
            freed: Condvar::new(),
            most: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    /// Compiles `bytes` into `out` (a compile cache entry) in a child; blocks until it is done.
    pub(crate) fn compile(&self, bytes: &[u8], out: &Path, engine_key: &str) -> Result<(), DeployError> {
        let _slot = self.slot();
        let failed = |why: String| DeployError::Compiler { exe: self.exe.clone(), message: why };
        let mut child = Command::new(&self.exe)
            .arg(COMPILE_SUBCOMMAND)
            .arg(out)
            .arg(engine_key)
            .env(CONFIG_ENV, &self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("starting it: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let written = stdin.write_all(bytes);
        drop(stdin);
        let output = child.wait_with_output().map_err(|e| failed(format!("waiting for it: {e}")))?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) => Ok(()),
            // The child's own verdict: the component does not compile.
            Some(2) => Err(DeployError::Invalid(stderr)),
            _ => Err(failed(format!("{} {stderr}", output.status).trim_end().to_string())),
        }
        .and(written.map_err(|e| failed(format!("sending the component: {e}"))))
    }

    /// Waits for a free compile slot; released when the guard drops.
    fn slot(&self) -> impl Drop + '_ {
        let mut running = self.running.lock().unwrap();
        while *running >= self.most {
            running = self.freed.wait(running).unwrap();
        }
        *running += 1;
        Slot(self)
    }
}

struct Slot<'a>(&'a Compiler);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

/// Why the child could not produce the compiled component.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// wasmtime refused the component (exit code 2).
    #[error("{0}")]
    Invalid(String),
    /// Anything else (exit code 1).
    #[error("{0}")]
    Failed(String),
}

impl ChildError {
    /// The exit code the node reads.
    pub fn exit_code(&self) -> i32 {
        match self {
            ChildError::Invalid(_) => 2,
            ChildError::Failed(_) => 1,
        }
    }
}

/// The child's side of [`COMPILE_SUBCOMMAND`]: reads a component on stdin and writes its
/// compiled form to `out`, with an engine built from the node's configuration. Refuses if its
/// engine's compatibility key is not `engine_key`, so no cache entry is ever written by an
/// engine the node could not load it with.
pub fn compile_child(out: &Path, engine_key: &str) -> Result<(), ChildError> {
    // SAFETY: setpriority on the calling thread (the compiler threads it starts inherit it).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    let config = std::env::var(CONFIG_ENV).map_err(|_| ChildError::Failed(format!("{CONFIG_ENV} is not set")))?;
    let config: WasmConfig =
        serde_json::from_str(&config).map_err(|e| ChildError::Failed(format!("{CONFIG_ENV}: {e}")))?;
    let engine = wasmtime::Engine::new(&super::engine::engine_config(&config))
        .map_err(|e| ChildError::Failed(format!("building the engine: {e:#}")))?;
    let key = super::cache::engine_key(&engine);
    if key != engine_key {
        return Err(ChildError::Failed(format!("engine key {key} is not the node's {engine_key}")));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
        .map_err(|e| ChildError::Failed(format!("reading the component: {e}")))?;
    let compiled = engine.precompile_component(&bytes).map_err(|e| ChildError::Invalid(format!("{e:#}")))?;
    super::cache::write_atomically(out, &compiled)
        .map_err(|e| ChildError::Failed(format!("writing {}: {e}", out.display())))
}
