//! `wisp-bench`: reproducible benchmarks of the `wisp` binary against `wasmtime serve`, side by
//! side in one run, over HTTP only. Writes `report.md`, `report.json` and `chart.svg` to
//! `--out DIR`. What each scenario measures and how to read it: bench/README.md.

mod cold;
mod density;
mod loadgen;
mod progress;
mod report;
mod servers;
mod sys;
mod warm;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
pub use progress::{block_on, log};
use serde::Serialize;
use servers::Contender;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

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
    /// The baseline `wasmtime` binary [default: $WISP_BENCH_CACHE/bin/wasmtime, else ~/.cache/wisp-bench/bin/wasmtime]
    #[arg(long, value_name = "PATH")]
    wasmtime_bin: Option<PathBuf>,
    /// The `hello` component [default: functions/target/wasm32-wasip2/release/hello.wasm, built if missing]
    #[arg(long, value_name = "PATH")]
    wasm: Option<PathBuf>,
    /// Scenarios to run, comma-separated; the others are reported as skipped [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    only: Vec<Scenario>,
    /// Measured seconds per warm run (default 4, quick 0.5)
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Alternating rounds per warm configuration (default 4, quick 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// Density levels K, comma-separated (default 1000,10000,20000,40000; quick 100)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    density_levels: Vec<usize>,
    /// Time budget for the density scenario (default 300, quick 60)
    #[arg(long, value_name = "SECS")]
    density_budget: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Scenario {
    Warm,
    Cold,
    Density,
    Overhead,
}

/// What a run does: the flags, with the full or `--quick` defaults filled in.
pub struct Plan {
    pub quick: bool,
    only: Vec<Scenario>,
    pub rounds: u32,
    pub warmup: Duration,
    pub duration: Duration,
    pub open_duration: Duration,
    pub cold_functions: usize,
    pub samples: usize,
    pub density_levels: Vec<usize>,
    pub density_budget: Duration,
}

impl Plan {
    fn new(a: &Args) -> Self {
        let q = a.quick;
        let duration = a.duration.unwrap_or(if q { 0.5 } else { 4.0 });
        let density_levels = match (a.density_levels.is_empty(), q) {
            (true, true) => vec![100],
            (true, false) => vec![1000, 10_000, 20_000, 40_000],
            (false, _) => a.density_levels.clone(),
        };
        Plan {
            quick: q,
            only: a.only.clone(),
            rounds: a.rounds.unwrap_or(if q { 1 } else { 4 }),
            warmup: Duration::from_secs_f64(if q { 0.25 } else { 1.0 }),
            duration: Duration::from_secs_f64(duration),
            open_duration: Duration::from_secs_f64(if q { 1.0 } else { (duration * 1.5).max(2.0) }),
            cold_functions: if q { 5 } else { 50 },
            samples: if q { 200 } else { 2000 },
            density_levels,
            density_budget: Duration::from_secs_f64(a.density_budget.unwrap_or(if q { 60.0 } else { 300.0 })),
        }
    }

    fn runs(&self, s: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

/// Whether a report section (or row) has numbers; serialized as "ok", "skipped: why" or
/// "failed: why".
#[derive(Debug, Clone, Default, PartialEq)]
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

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A scenario's part of the report: its status, and its numbers if it ran to the end.
#[derive(Debug, Serialize)]
pub struct Section<T> {
    pub status: Status,
    #[serde(flatten)]
    pub data: Option<T>,
}

/// Runs the scenario if the plan selects it.
fn section<T>(plan: &Plan, s: Scenario, run: impl FnOnce() -> anyhow::Result<T>) -> Section<T> {
    if !plan.runs(s) {
        return Section { status: Status::Skipped("not selected".into()), data: None };
    }
    log(&format!("scenario: {s:?}"));
    match run() {
        Ok(data) => Section { status: Status::Ok, data: Some(data) },
        Err(e) => Section { status: Status::failed(format!("{e:#}")), data: None },
    }
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
    pub fn wisp(&self) -> anyhow::Result<loadgen::Target> {
        self.servers.first().and_then(Contender::target).context("the wisp node is not running")
    }
}

/// The bench's wisp node's admin token, set once it is up; sent with `/v1` calls.
pub static WISP_TOKEN: OnceLock<String> = OnceLock::new();

/// One blocking request to a server (admin calls, /metrics), on a keep-alive agent.
pub fn http(method: &str, addr: SocketAddr, path: &str, body: Option<&[u8]>) -> anyhow::Result<wisp_testkit::Resp> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build());
    let bearer = WISP_TOKEN.get().filter(|_| path.starts_with("/v1/")).map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    wisp_testkit::try_request(agent, method, &format!("http://{addr}{path}"), body, &headers)
}

/// The node's /metrics text.
pub fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(http("GET", addr, "/metrics", None)?.body)
}

fn main() {
    progress::elapsed_s();
    if let Err(e) = run(Args::parse()) {
        eprintln!("wisp-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let repo = wisp_testkit::repo_root();
    let wisp_bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    let wasmtime_bin = args.wasmtime_bin.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let cache = std::env::var_os("WISP_BENCH_CACHE").map_or_else(|| home.join(".cache/wisp-bench"), PathBuf::from);
        cache.join("bin/wasmtime")
    });
    let wasmtime_bin = Some(wasmtime_bin).filter(|b| b.exists());
    let wasm_path = args.wasm.clone().unwrap_or_else(|| wisp_testkit::wasm_path("hello"));
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    std::fs::create_dir_all(args.out.join("logs")).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = tempfile::Builder::new().prefix("wisp-bench-").tempdir()?;
    let mut ctx =
        Ctx { wisp_bin, wasm: wasm.into(), work: work.path().to_owned(), logs: out.join("logs"), servers: Vec::new() };

    let machine = sys::machine(&repo, wasmtime_bin.as_deref(), &wasm_path);
    let mode = if plan.quick { "quick" } else { "full" };
    let baseline = machine.wasmtime_version.as_deref().unwrap_or("not installed");
    log(&format!("{mode} mode; commit {:.12}; baseline: {baseline}", machine.git_commit));
    if [Scenario::Warm, Scenario::Cold, Scenario::Overhead].into_iter().any(|s| plan.runs(s)) {
        ctx.servers = servers::start_all(&ctx, wasmtime_bin.as_deref(), &wasm_path)?;
    }

    // The scenarios, in order: the HTTP ones share the servers; density starts its own nodes.
    let warm = section(&plan, Scenario::Warm, || Ok(warm::run(&plan, &ctx)));
    let overhead = section(&plan, Scenario::Overhead, || cold::overhead(&plan, &ctx));
    let cold = section(&plan, Scenario::Cold, || cold::run(&plan, &ctx));
    ctx.servers.clear(); // stops them: density needs the machine to itself
    let density = section(&plan, Scenario::Density, || Ok(density::run(&plan, &ctx, &machine)));

    let command =
        if plan.quick { format!("wisp-bench --quick --out {}", args.out.display()) } else { "bench/run.sh".into() };
    let total_s = progress::elapsed_s();
    let report = report::Report { mode, command, total_s, machine, warm, cold, density, overhead };
    report::write(&out, &report)?;
    log(&format!("report: {}/report.md, report.json, chart.svg ({:.0} s)", out.display(), report.total_s));
    Ok(())
}
