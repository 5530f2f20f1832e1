//! `wisp-bench-containers`: what container functions (OCI images run by crun) cost on a Wisp
//! node, next to the Wasm `hello` component on the same node in the same run: cold start (the
//! first request to a function at zero), warm throughput and latency at 1 and 16 keep-alive
//! connections, memory per idle replica (PSS), and replicas started per second. Writes
//! `report.md` and `report.json` to `--out DIR`; results and method: docs/bench/containers.md.
//!
//! The HTTP client, histograms and the closed-loop load generator are wisp-bench's own
//! (`src/loadgen.rs`, with `src/sys.rs` for /proc readings), compiled into this binary too.

mod cold;
#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../loadgen.rs"]
mod loadgen;
mod node;
mod procs;
#[path = "../../progress.rs"]
mod progress;
mod replicas;
mod report;
#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../sys.rs"]
mod sys;
mod warm;

use anyhow::Context;
use clap::{Parser, ValueEnum};
pub use progress::{block_on, log, ms};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Benchmarks Wisp's container functions (crun) next to Wasm: cold start, warm requests, memory per replica, replica starts"
)]
struct Args {
    /// Directory for report.md, report.json and the node's log
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Small numbers everywhere (about 40 s in all), for a smoke test
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated; the others are reported as skipped [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    only: Vec<Scenario>,
    /// Cold: functions deployed at zero and timed once each, per runtime (default 30, quick 5)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    samples: Option<u32>,
    /// Warm: measured seconds per run (default 10, quick 2)
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Warm: unmeasured seconds before each run (default 1, quick 0.5)
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,
    /// Warm: keep-alive connections, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "LIST", default_value = "1,16")]
    connections: Vec<u32>,
    /// Replicas: the min-scale K of the idle service measured (default 50, quick 10)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=1000))]
    replicas: Option<u32>,
    /// Replicas: how often the service view is polled while they start, ms
    #[arg(long, default_value_t = 10, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_ms: u64,
    /// `wisp up --container-stop-grace`
    #[arg(long, default_value = "300ms", value_name = "DURATION")]
    container_stop_grace: String,
    /// `wisp up --scale-to-zero-grace`
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    scale_to_zero_grace: String,
    /// `wisp up --scale-interval` (the autoscaler's tick)
    #[arg(long, default_value = "100ms", value_name = "DURATION")]
    scale_interval: String,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
    /// The busybox httpd image (oci-archive) [default: functions/containers/target/httpd.tar]
    #[arg(long, value_name = "PATH")]
    httpd: Option<PathBuf>,
    /// The native C server image (oci-archive) [default: functions/containers/target/native.tar]
    #[arg(long, value_name = "PATH")]
    native: Option<PathBuf>,
    /// The `hello` component [default: functions/target/wasm32-wasip2/release/hello.wasm, built if missing]
    #[arg(long, value_name = "PATH")]
    hello: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Cold,
    Warm,
    Replicas,
}

/// The images' tags on the node.
pub const HTTPD: &str = "httpd:bench";
pub const NATIVE: &str = "native:bench";

/// What a run does: the flags, with the full or `--quick` defaults filled in.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub scenarios: Vec<Scenario>,
    pub cold_samples: u32,
    pub warm_duration_s: f64,
    pub warm_warmup_s: f64,
    pub warm_connections: Vec<u32>,
    /// min-scale of the warm container services.
    pub warm_min_scale: u32,
    pub replicas: u32,
    pub poll_ms: u64,
    /// Cold-start goal for containers, p99 ms.
    pub cold_goal_p99_ms: f64,
}

impl Plan {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let q = a.quick;
        let secs = |v: Option<f64>, full: f64, quick: f64, what: &str| {
            let v = v.unwrap_or(if q { quick } else { full });
            anyhow::ensure!((0.0..=3600.0).contains(&v), "{what} must be 0 to 3600");
            Ok(v)
        };
        let plan = Plan {
            quick: q,
            scenarios: if a.only.is_empty() {
                vec![Scenario::Cold, Scenario::Warm, Scenario::Replicas]
            } else {
                a.only.clone()
            },
            cold_samples: a.samples.unwrap_or(if q { 5 } else { 30 }),
            warm_duration_s: secs(a.duration, 10.0, 2.0, "--duration")?,
            warm_warmup_s: secs(a.warmup, 1.0, 0.5, "--warmup")?,
            warm_connections: a.connections.clone(),
            warm_min_scale: 2,
            replicas: a.replicas.unwrap_or(if q { 10 } else { 50 }),
            poll_ms: a.poll_ms,
            cold_goal_p99_ms: 100.0,
        };
        anyhow::ensure!(plan.warm_duration_s > 0.0, "--duration must be above 0");
        anyhow::ensure!(
            !plan.warm_connections.is_empty() && plan.warm_connections.iter().all(|&c| (1..=512).contains(&c)),
            "--connections must be 1 to 512 each"
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

/// Runs the scenario if the plan selects it; a failure is reported, not fatal.
fn section<T>(plan: &Plan, s: Scenario, run: impl FnOnce() -> anyhow::Result<T>) -> Section<T> {
    if !plan.runs(s) {
        return Section { status: "skipped: not selected".into(), data: None };
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
        eprintln!("wisp-bench-containers: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let repo = wisp_testkit::repo_root();
    let wisp_bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let example = |name: &str| repo.join("functions/containers/target").join(format!("{name}.tar"));
    let httpd_path = args.httpd.clone().unwrap_or_else(|| example("httpd"));
    let native_path = args.native.clone().unwrap_or_else(|| example("native"));
    let hello_path = args.hello.clone().unwrap_or_else(|| wisp_testkit::wasm_path("hello"));
    let missing_image = "(functions/containers/build.sh builds it; scripts/setup.sh installs crun and umoci)";
    let httpd = read(&httpd_path).context(missing_image)?;
    let native = read(&native_path).context(missing_image)?;
    let hello = read(&hello_path)?;
    std::fs::create_dir_all(args.out.join("logs")).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = tempfile::Builder::new().prefix("wisp-bench-containers-").tempdir()?;
    let machine = sys::machine(&repo, None, &hello_path);
    let crun = procs::crun_version();
    log(&format!("{} mode; commit {:.12}; {crun}", if plan.quick { "quick" } else { "full" }, machine.git_commit));

    let flags: Vec<String> = [
        ("--container-stop-grace", &args.container_stop_grace),
        ("--scale-to-zero-grace", &args.scale_to_zero_grace),
        ("--scale-interval", &args.scale_interval),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value.clone()])
    .collect();
    let log_file = out.join("logs/wisp.log");
    let mut wisp = node::Wisp::start(&wisp_bin, &work.path().join("wisp"), &log_file, &flags)?;
    log(&format!("wisp: http://{} (pid {}) {}, log {}", wisp.addr, wisp.pid, flags.join(" "), log_file.display()));
    let node_rss_start_kib = sys::footprint(wisp.pid).rss_kib;

    // Everything on the one node, one scenario after the other; a failed scenario is reported
    // and the next one still runs.
    let images = wisp.import_image(HTTPD, &httpd).and_then(|()| wisp.import_image(NATIVE, &native));
    let (cold, warm, replicas) = match images {
        Ok(()) => (
            section(&plan, Scenario::Cold, || cold::run(&plan, &wisp, &hello)),
            section(&plan, Scenario::Warm, || warm::run(&plan, &wisp, &hello)),
            section(&plan, Scenario::Replicas, || replicas::run(&plan, &wisp)),
        ),
        Err(e) => {
            fn failed<T>(e: &anyhow::Error) -> Section<T> {
                Section { status: format!("failed: importing the images: {e:#}"), data: None }
            }
            (failed(&e), failed(&e), failed(&e))
        }
    };
    let node_rss_end_kib = sys::footprint(wisp.pid).rss_kib;
    let node_exit = wisp.exited();
    log("stopping the node: deleting the functions, then SIGTERM");
    let stopped = wisp.stop();
    log(&format!(
        "node stopped: {} in {:.2} s after SIGTERM; containers left: {}",
        stopped.exit,
        stopped.exit_s,
        stopped.containers_left.len()
    ));

    let command = std::env::args().map(|a| if a.contains(' ') { format!("{a:?}") } else { a }).collect::<Vec<_>>();
    let report = report::Report {
        mode: if plan.quick { "quick" } else { "full" },
        command: command.join(" "),
        total_s: progress::elapsed_s(),
        machine,
        crun,
        node_flags: flags.join(" "),
        node_rss_start_kib,
        node_rss_end_kib,
        node_exit,
        stopped,
        plan: &plan,
        cold,
        warm,
        replicas,
    };
    report::write(&out, &report)?;
    log(&format!("report: {}/report.md, report.json ({:.0} s)", out.display(), report.total_s));
    Ok(())
}
