//! `wisp-bench`: reproducible benchmarks of the `wisp` binary against `wasmtime serve`, side by
//! side in one run, over HTTP only. Writes `report.md`, `report.json` and `chart.svg` to
//! `--out DIR`. What each scenario measures and how to read it: bench/README.md.

mod client;
mod cold;
mod density;
mod loadgen;
mod report;
mod servers;
mod sys;
mod warm;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use serde::Serialize;
use servers::Contender;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCENARIOS: [&str; 4] = ["warm", "cold", "density", "overhead"];

#[derive(Parser, Debug)]
#[command(version, about = "Benchmarks Wisp against `wasmtime serve` and writes a report")]
struct Args {
    /// Directory for report.md, report.json, chart.svg (and server logs)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Every scenario, briefly (seconds each); works without the baseline installed
    #[arg(long)]
    quick: bool,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
    /// The baseline `wasmtime` binary [default: $WISP_BENCH_CACHE/bin/wasmtime, cache default
    /// $HOME/.cache/wisp-bench]
    #[arg(long, value_name = "PATH")]
    wasmtime_bin: Option<PathBuf>,
    /// The `hello` component [default: functions/target/wasm32-wasip2/release/hello.wasm, built if missing]
    #[arg(long, value_name = "PATH")]
    wasm: Option<PathBuf>,
    /// Scenarios to run, comma-separated (warm,cold,density,overhead); the others are reported
    /// as skipped
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Vec<String>,
    /// Measured seconds per warm run (default 4, quick 0.5)
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Alternating rounds per warm configuration (default 4, quick 1)
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Density levels K, comma-separated (default 1000,10000,20000,40000; quick 100)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    density_levels: Vec<usize>,
    /// Time budget for the density scenario (default 300, quick 60)
    #[arg(long, value_name = "SECS")]
    density_budget: Option<f64>,
}

/// What a run does, from `--quick` and the overrides.
pub struct Plan {
    pub quick: bool,
    pub connection_levels: Vec<usize>,
    pub rounds: usize,
    pub warm_warmup: Duration,
    pub warm_duration: Duration,
    pub open_duration: Duration,
    pub cold_functions: usize,
    pub samples: usize,
    pub density_levels: Vec<usize>,
    pub density_budget: Duration,
    /// Pool size of the start-up probe after the density levels (address space).
    pub address_space_probe: u64,
    pub scenarios: Vec<String>,
}

impl Plan {
    fn from_args(a: &Args) -> anyhow::Result<Self> {
        let q = a.quick;
        for s in &a.only {
            anyhow::ensure!(SCENARIOS.contains(&s.as_str()), "--only: unknown scenario {s:?} (known: {SCENARIOS:?})");
        }
        let duration = a.duration.unwrap_or(if q { 0.5 } else { 4.0 });
        let density_levels = match (&a.density_levels[..], q) {
            ([], true) => vec![100],
            ([], false) => vec![1000, 10_000, 20_000, 40_000],
            (levels, _) => levels.to_vec(),
        };
        Ok(Plan {
            quick: q,
            connection_levels: vec![1, 16, 64],
            rounds: a.rounds.unwrap_or(if q { 1 } else { 4 }).max(1),
            warm_warmup: Duration::from_secs_f64(if q { 0.25 } else { 1.0 }),
            warm_duration: Duration::from_secs_f64(duration),
            open_duration: Duration::from_secs_f64(if q { 1.0 } else { (duration * 1.5).max(2.0) }),
            cold_functions: if q { 5 } else { 50 },
            samples: if q { 200 } else { 2000 },
            density_levels,
            density_budget: Duration::from_secs_f64(a.density_budget.unwrap_or(if q { 60.0 } else { 300.0 })),
            address_space_probe: 32_100,
            scenarios: if a.only.is_empty() { SCENARIOS.map(String::from).to_vec() } else { a.only.clone() },
        })
    }

    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// Whether a report section (or row) has numbers; serialized as "ok", "skipped: why" or
/// "failed: why".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(into = "String")]
pub enum Status {
    #[default]
    Ok,
    Skipped(String),
    Failed(String),
}

impl Status {
    pub fn failed(e: impl std::fmt::Display) -> Self {
        Status::Failed(e.to_string())
    }

    pub fn is_ok(&self) -> bool {
        *self == Status::Ok
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::Skipped(why) => write!(f, "skipped: {why}"),
            Status::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl From<Status> for String {
    fn from(s: Status) -> String {
        s.to_string()
    }
}

/// A report section: has a status, and a default (empty) value for when it does not run.
pub trait Section: Default {
    fn status_mut(&mut self) -> &mut Status;
}

/// Everything the scenarios share: binaries, the component, directories, the servers.
pub struct Ctx {
    pub wisp_bin: PathBuf,
    pub wasm: Bytes,
    pub work: PathBuf,
    pub logs: PathBuf,
    /// Wisp first, then the `wasmtime serve` baselines (empty unless warm, cold or overhead run).
    pub servers: Vec<Contender>,
}

impl Ctx {
    pub fn wisp(&self) -> Option<loadgen::Target> {
        self.servers.first().and_then(Contender::target)
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Progress on stderr, with seconds since start.
pub fn log(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {msg}");
}

/// Runs a future on a fresh current-thread runtime (call from outside any runtime).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("building a tokio runtime").block_on(f)
}

/// One blocking request to a server (admin calls, /metrics), on a keep-alive agent.
pub fn http(method: &str, addr: SocketAddr, path: &str, body: Option<&[u8]>) -> anyhow::Result<wisp_testkit::Resp> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build());
    wisp_testkit::try_request(agent, method, &format!("http://{addr}{path}"), body, &[])
}

/// The node's /metrics text.
pub fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(http("GET", addr, "/metrics", None)?.body)
}

/// Polls `GET path` until it answers 200, or fails after `timeout`.
pub fn wait_ok(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http("GET", addr, path, None) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => format!("{}: {}", r.status, r.body),
            Err(e) => format!("{e:#}"),
        };
        anyhow::ensure!(Instant::now() < deadline, "{addr}{path} not ready after {timeout:?}: {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `scenario` if the plan selects it, else returns its section marked skipped.
fn section<T: Section>(plan: &Plan, name: &str, run: impl FnOnce() -> T) -> T {
    if plan.runs(name) {
        log(&format!("scenario: {name}"));
        run()
    } else {
        let mut t = T::default();
        *t.status_mut() = Status::Skipped("not selected".into());
        t
    }
}

fn default_wisp_bin() -> PathBuf {
    let sibling = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("wisp")));
    sibling.filter(|p| p.exists()).unwrap_or_else(|| wisp_testkit::repo_root().join("target/release/wisp"))
}

fn default_wasmtime_bin() -> PathBuf {
    let cache = std::env::var_os("WISP_BENCH_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/wisp-bench")
    });
    cache.join("bin/wasmtime")
}

fn main() {
    START.get_or_init(Instant::now);
    if let Err(e) = run(Args::parse()) {
        eprintln!("wisp-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let started = Instant::now();
    let wisp_bin = args.wisp_bin.clone().unwrap_or_else(default_wisp_bin);
    anyhow::ensure!(
        wisp_bin.exists(),
        "no wisp binary at {} (cargo build --release, or --wisp-bin)",
        wisp_bin.display()
    );
    let wasmtime_bin = Some(args.wasmtime_bin.clone().unwrap_or_else(default_wasmtime_bin)).filter(|b| b.exists());
    let wasm_path = args.wasm.clone().unwrap_or_else(|| wisp_testkit::wasm_path("hello"));
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = tempfile::Builder::new().prefix("wisp-bench-").tempdir()?;
    let mut ctx =
        Ctx { wisp_bin, wasm: wasm.into(), work: work.path().to_owned(), logs: out.join("logs"), servers: Vec::new() };
    std::fs::create_dir_all(&ctx.logs)?;

    let machine = sys::machine(&wisp_testkit::repo_root(), &ctx.wisp_bin, wasmtime_bin.as_deref(), &wasm_path);
    log(&format!(
        "{} mode; {} x {}; kernel {}; commit {:.12}; baseline: {}",
        if plan.quick { "quick" } else { "full" },
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        machine.git_commit,
        machine.wasmtime_version.as_deref().unwrap_or("not installed")
    ));
    if plan.runs("warm") || plan.runs("cold") || plan.runs("overhead") {
        ctx.servers = servers::start_all(&ctx, wasmtime_bin.as_deref(), &wasm_path)?;
    }

    // The scenarios, in order: the HTTP ones share the servers; density starts its own nodes.
    let warm = section(&plan, "warm", || warm::run(&plan, &ctx));
    let overhead = section(&plan, "overhead", || cold::overhead(&plan, &ctx));
    let mut cold = section(&plan, "cold", || cold::run(&plan, &ctx));
    let node_after = ctx.wisp().and_then(|w| report::node_after(&w, &ctx.work.join("wisp-data")));
    let mut notes = servers::stop_all(&mut ctx.servers);
    let density = section(&plan, "density", || density::run(&plan, &ctx));

    cold.compare_to_warm(warm.row("wisp", 1).map(|r| r.latency.p50_us));
    notes.extend(warm.notes());
    let report = report::Report {
        tool: "wisp-bench",
        mode: if plan.quick { "quick" } else { "full" },
        command: if plan.quick {
            format!("wisp-bench --quick --out {}", args.out.display())
        } else {
            "bench/run.sh".into()
        },
        total_s: started.elapsed().as_secs_f64(),
        machine,
        warm,
        cold,
        density,
        overhead,
        wisp_node_after_http_scenarios: node_after,
        notes,
    };
    report::write(&out, &report)?;
    for x in &report.warm.ratios {
        let fmt = |v: Option<f64>| v.map_or("skipped".to_string(), |v| format!("{v:.2}x"));
        println!(
            "{:>2} conns, wisp / {:<16} throughput {:>8}  p99 {:>8}",
            x.connections,
            x.baseline,
            fmt(x.throughput),
            fmt(x.p99)
        );
    }
    log(&format!("report: {}/report.md, report.json, chart.svg ({:.0} s)", out.display(), report.total_s));
    Ok(())
}

/// Total size of the files under `path`.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
