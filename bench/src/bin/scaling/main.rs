//! `wisp-bench-scaling`: how Wisp's KPA autoscaler and activator behave under load, each
//! measurement next to its baseline in the same run: a 10x step in closed-loop load (decision
//! latency, panic mode, p99 recovery, errors; baseline: the load before the step), 100
//! concurrent first requests to a revision scaled to zero (baseline: the same burst right after,
//! warm), and the activator's fast path (containerConcurrency 0, gate open, against 1000, gate
//! in the path but never full). Writes `scaling.md` and `scaling.json` to `--out DIR`; what each
//! number means: docs/bench/scaling.md.
//!
//! The HTTP client, histograms and the closed-loop load generator are wisp-bench's own
//! (`src/loadgen.rs`, with `src/sys.rs` for /proc readings), compiled into this binary too.

mod gate;
#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../loadgen.rs"]
mod loadgen;
mod node;
#[path = "../../progress.rs"]
mod progress;
mod report;
mod step;
#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../sys.rs"]
mod sys;
mod zero;

use anyhow::Context;
use clap::{Parser, ValueEnum};
pub use progress::{block_on, log, ms};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "Benchmarks Wisp's autoscaler and activator: load steps, scale from zero, the gate")]
struct Args {
    /// Directory for scaling.md, scaling.json and the node's log
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Small numbers everywhere (seconds in all), for a smoke test
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated; the others are reported as skipped [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    only: Vec<Scenario>,
    /// Milliseconds the guest sleeps per request in the step and zero scenarios
    #[arg(long, default_value_t = 30, value_name = "MS")]
    work_ms: u64,
    /// Step: closed-loop connections before the step
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Step: the load after the step is this many times the load before
    #[arg(long, default_value_t = 10, value_name = "X", value_parser = clap::value_parser!(u32).range(2..=100))]
    factor: u32,
    /// Step: seconds of load before the step, its first second a warm-up (default 5, quick 1.5)
    #[arg(long, value_name = "SECS")]
    pre: Option<f64>,
    /// Step: seconds of load after the step (default 5, quick 1.5)
    #[arg(long, value_name = "SECS")]
    post: Option<f64>,
    /// Step: how often /metrics is polled for the revision's replicas, ms
    #[arg(long, default_value_t = 10, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_ms: u64,
    /// Zero: concurrent first requests to the revision at zero (default 100, quick 20)
    #[arg(long, value_name = "N")]
    zero_requests: Option<usize>,
    /// Zero: rounds (each waits for the revision to scale to zero again) (default 3, quick 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    zero_rounds: Option<u32>,
    /// Zero: the service's stable window (`autoscaling.knative.dev/window`), seconds, 6 at least
    #[arg(long, default_value_t = 6, value_name = "SECS", value_parser = clap::value_parser!(u64).range(6..=3600))]
    zero_window: u64,
    /// Gate: closed-loop connections per run
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=999))]
    gate_connections: u32,
    /// Gate: `wisp up --max-ready` of the gate's node [default: 2 × --gate-connections]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    gate_max_ready: Option<u32>,
    /// Gate: rounds, each one run of containerConcurrency 0 then one of 1000 (default 8, quick 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    gate_rounds: Option<u32>,
    /// Gate: measured seconds per run, after a warm-up run of a sixth of it (default 2, quick 0.5)
    #[arg(long, value_name = "SECS")]
    gate_duration: Option<f64>,
    /// `wisp up --scale-interval` (the autoscaler's tick) [default: the node's, 100ms]
    #[arg(long, value_name = "DURATION")]
    scale_interval: Option<String>,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
    /// The `misbehave` component (`?mode=sleep&ms=N`) [default: functions/target/wasm32-wasip2/release/misbehave.wasm, built if missing]
    #[arg(long, value_name = "PATH")]
    misbehave: Option<PathBuf>,
    /// The `hello` component [default: functions/target/wasm32-wasip2/release/hello.wasm, built if missing]
    #[arg(long, value_name = "PATH")]
    hello: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Step,
    Zero,
    Gate,
}

/// What a run does: the flags, with the full or `--quick` defaults filled in.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub scenarios: Vec<Scenario>,
    pub work_ms: u64,
    pub step_connections: u32,
    pub step_factor: u32,
    pub step_warmup_s: f64,
    pub step_pre_s: f64,
    pub step_post_s: f64,
    pub poll_ms: u64,
    /// Width of the latency windows after the step.
    pub window_ms: u64,
    /// A window has recovered when its p99 is at most this times the pre-step p99.
    pub recovery_factor: f64,
    pub zero_requests: usize,
    pub zero_rounds: u32,
    pub zero_window_s: u64,
    pub gate_connections: u32,
    pub gate_max_ready: u32,
    pub gate_rounds: u32,
    pub gate_warmup_s: f64,
    pub gate_duration_s: f64,
    pub scale_interval: Option<String>,
}

impl Plan {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let q = a.quick;
        let secs = |v: Option<f64>, full: f64, quick: f64, what: &str| {
            let v = v.unwrap_or(if q { quick } else { full });
            anyhow::ensure!(v.is_finite() && v > 0.0 && v <= 3600.0, "{what} must be above 0 and at most 3600");
            Ok(v)
        };
        let pre = secs(a.pre, 5.0, 1.5, "--pre")?;
        let gate_duration = secs(a.gate_duration, 2.0, 0.5, "--gate-duration")?;
        let plan = Plan {
            quick: q,
            scenarios: if a.only.is_empty() {
                vec![Scenario::Step, Scenario::Zero, Scenario::Gate]
            } else {
                a.only.clone()
            },
            work_ms: a.work_ms,
            step_connections: a.connections,
            step_factor: a.factor,
            step_warmup_s: (pre / 5.0).min(1.0),
            step_pre_s: pre,
            step_post_s: secs(a.post, 5.0, 1.5, "--post")?,
            poll_ms: a.poll_ms,
            window_ms: 100,
            recovery_factor: 1.5,
            zero_requests: a.zero_requests.unwrap_or(if q { 20 } else { 100 }),
            zero_rounds: a.zero_rounds.unwrap_or(if q { 1 } else { 3 }),
            zero_window_s: a.zero_window,
            gate_connections: a.gate_connections,
            gate_max_ready: a.gate_max_ready.unwrap_or(2 * a.gate_connections),
            gate_rounds: a.gate_rounds.unwrap_or(if q { 1 } else { 8 }),
            gate_warmup_s: gate_duration / 6.0,
            gate_duration_s: gate_duration,
            scale_interval: a.scale_interval.clone(),
        };
        anyhow::ensure!(plan.work_ms <= 10_000, "--work-ms must be at most 10000");
        anyhow::ensure!((1..=900).contains(&plan.zero_requests), "--zero-requests must be 1 to 900");
        anyhow::ensure!(
            plan.step_connections * plan.step_factor <= 900,
            "--connections × --factor must stay at most 900 (the node admits 1024 function requests at once)"
        );
        Ok(plan)
    }

    pub fn runs(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }
}

/// A scenario's part of the report: `ok`, `skipped: why` or `failed: why`, and its numbers if
/// it ran to the end.
#[derive(Debug, Serialize)]
pub struct Section<T> {
    pub status: String,
    #[serde(flatten)]
    pub data: Option<T>,
}

impl<T> Section<T> {
    fn not_selected() -> Self {
        Section { status: "skipped: not selected".into(), data: None }
    }
}

/// Runs the scenario if the plan selects it; a failure is reported, not fatal.
fn section<T>(plan: &Plan, s: Scenario, run: impl FnOnce() -> anyhow::Result<T>) -> Section<T> {
    if !plan.runs(s) {
        return Section::not_selected();
    }
    log(&format!("scenario: {s:?}"));
    match run() {
        Ok(data) => Section { status: "ok".into(), data: Some(data) },
        Err(e) => {
            log(&format!("{s:?} failed: {e:#}"));
            Section { status: format!("failed: {e:#}"), data: None }
        }
    }
}

fn main() {
    progress::elapsed_s();
    if let Err(e) = run(Args::parse()) {
        eprintln!("wisp-bench-scaling: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let repo = wisp_testkit::repo_root();
    let wisp_bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let misbehave_path = args.misbehave.clone().unwrap_or_else(|| wisp_testkit::wasm_path("misbehave"));
    let hello_path = args.hello.clone().unwrap_or_else(|| wisp_testkit::wasm_path("hello"));
    let misbehave = read(&misbehave_path)?;
    let hello = read(&hello_path)?;
    std::fs::create_dir_all(args.out.join("logs")).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = tempfile::Builder::new().prefix("wisp-bench-scaling-").tempdir()?;
    let machine = sys::machine(&repo, None, &hello_path);
    log(&format!("{} mode; commit {:.12}", if plan.quick { "quick" } else { "full" }, machine.git_commit));

    let mut flags = Vec::new();
    if let Some(interval) = &plan.scale_interval {
        flags.extend(["--scale-interval".to_string(), interval.clone()]);
    }
    let start = |name: &str, extra: &[String]| -> anyhow::Result<node::Wisp> {
        let log_file = out.join(format!("logs/{name}.log"));
        let args = [flags.as_slice(), extra].concat();
        let wisp = node::Wisp::start(&wisp_bin, &work.path().join(name), &log_file, &args)?;
        let shown = if args.is_empty() { String::new() } else { format!(" {}", args.join(" ")) };
        log(&format!("{name}: http://{} (pid {}){shown}, log {}", wisp.addr, wisp.pid, log_file.display()));
        Ok(wisp)
    };
    let mut node_exit = Vec::new();

    // One node for the step and zero scenarios, one after the other, each on services of its own.
    let (step, zero) = if plan.runs(Scenario::Step) || plan.runs(Scenario::Zero) {
        let wisp = start("wisp", &[])?;
        wisp.push(node::MISBEHAVE, &misbehave)?;
        let step = section(&plan, Scenario::Step, || step::run(&plan, &wisp));
        let zero = section(&plan, Scenario::Zero, || zero::run(&plan, &wisp));
        node_exit.extend(wisp.exited().map(|e| format!("wisp: {e}")));
        (step, zero)
    } else {
        (Section::not_selected(), Section::not_selected())
    };
    // The gate on a node of its own, with --max-ready at twice the connections: both services
    // then keep the same number of ready instances under load (see gate.rs).
    let gate_flags = ["--max-ready".to_string(), plan.gate_max_ready.to_string()];
    let gate = section(&plan, Scenario::Gate, || {
        let wisp = start("wisp-gate", &gate_flags)?;
        wisp.push(node::HELLO, &hello)?;
        let report = gate::run(&plan, &wisp);
        node_exit.extend(wisp.exited().map(|e| format!("wisp-gate: {e}")));
        report
    });

    let command = std::env::args().map(|a| if a.contains(' ') { format!("{a:?}") } else { a }).collect::<Vec<_>>();
    let report = report::Report {
        mode: if plan.quick { "quick" } else { "full" },
        command: command.join(" "),
        total_s: progress::elapsed_s(),
        machine,
        node_flags: flags.join(" "),
        gate_node_flags: [flags.as_slice(), &gate_flags].concat().join(" "),
        node_exit: (!node_exit.is_empty()).then(|| node_exit.join("; ")),
        plan: &plan,
        step,
        zero,
        gate,
    };
    report::write(&out, &report)?;
    log(&format!("report: {}/scaling.md, scaling.json ({:.0} s)", out.display(), report.total_s));
    Ok(())
}
