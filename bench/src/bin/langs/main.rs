//! `wisp-bench-langs`: Wisp against a tuned `wasmtime serve` on the Python (componentize-py) and
//! JavaScript (ComponentizeJS) functions, side by side in one run.
//!
//! - **deploy:** both components on a fresh node (compilation included), one after the other and
//!   then both at once on another fresh node; the node's RSS after deploying, a few seconds
//!   later, and after a restart that loads both from the compile cache.
//! - **throughput:** requests/s and p50/p99 at 1 and 4 keep-alive connections, rounds
//!   alternating between Wisp and `wasmtime serve`; Wisp's on-demand instantiations per run.
//! - **reuse:** the same with instance reuse on both sides (`max_instance_reuse_count=N`, and
//!   `wasmtime serve --max-instance-reuse-count N`), reported separately.
//!
//! Writes `langs.md`, `langs.json` and `logs/` to `--out DIR`; see docs/bench/langs.md.

mod deploy;
mod report;
mod throughput;
mod wasmtime;

#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../loadgen.rs"]
mod loadgen;
#[path = "../../progress.rs"]
mod progress;
// For `TUNED_FLAGS`, the tuned baseline every bench compares with; its `start_all` (wisp-bench's
// own servers) is not used here, only compiled against the `Ctx`, `Status` and `http` below.
#[allow(dead_code)]
#[path = "../../servers.rs"]
mod servers;
#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../sys.rs"]
mod sys;

use anyhow::Context;
use clap::Parser;
pub use progress::{block_on, log};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "Benchmarks Wisp against `wasmtime serve` on the Python and JavaScript functions")]
struct Args {
    /// Directory for langs.md, langs.json and the servers' logs
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Small numbers everywhere, for a smoke test (compilation still takes its time)
    #[arg(long)]
    quick: bool,
    /// Measured seconds per run [default: 3, quick 0.5]
    #[arg(long, value_name = "SECS")]
    secs: Option<f64>,
    /// Rounds per comparison, each running both sides once, which goes first alternating
    /// [default: 4, quick 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// Requests one instance may serve with reuse on, on both sides
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..))]
    reuse: u32,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
    /// The baseline `wasmtime` binary [default: $WISP_BENCH_CACHE/bin/wasmtime, else ~/.cache/wisp-bench/bin/wasmtime]
    #[arg(long, value_name = "PATH")]
    wasmtime_bin: Option<PathBuf>,
}

/// What a run does: the flags, with the full or `--quick` defaults filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub rounds: u32,
    /// Measured seconds per run.
    pub secs: f64,
    /// Seconds of load before each measured run (not recorded).
    pub warmup_s: f64,
    /// Seconds between the RSS reading right after the deploys and the second one.
    pub settle_s: f64,
    pub connections: Vec<usize>,
    pub reuse: u32,
}

impl Plan {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let q = a.quick;
        let secs = a.secs.unwrap_or(if q { 0.5 } else { 3.0 });
        anyhow::ensure!(secs > 0.0 && secs.is_finite(), "--secs must be above 0, got {secs}");
        Ok(Plan {
            quick: q,
            rounds: a.rounds.unwrap_or(if q { 1 } else { 4 }),
            secs,
            warmup_s: if q { 0.2 } else { 1.0 },
            settle_s: if q { 1.0 } else { 5.0 },
            connections: vec![1, 4],
            reuse: a.reuse,
        })
    }
}

/// A function in one language: its component and what it answers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lang {
    /// `Python` or `JavaScript`.
    pub name: &'static str,
    /// The component's file stem, also the function's name on the node (like `wisp up
    /// --deploy-dir` names it).
    pub function: &'static str,
    pub build: &'static str,
    pub greeting: &'static str,
}

pub const LANGS: [Lang; 2] = [
    Lang { name: "Python", function: "hello-py", build: "functions/python/build.sh", greeting: "Hello from Python!\n" },
    Lang {
        name: "JavaScript",
        function: "hello-js",
        build: "functions/js/build.sh",
        greeting: "Hello from JavaScript!\n",
    },
];

/// A component read from disk.
pub struct Component {
    pub lang: Lang,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Whether a row (or one side of it) has numbers; serialized as "ok", "skipped: why",
/// "not available: why" or "failed: why".
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Status {
    #[default]
    Ok,
    Skipped(String),
    /// The node refused a setting this bench asks for (an older `wisp`).
    NotAvailable(String),
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
            Status::NotAvailable(why) => write!(f, "not available: {why}"),
            Status::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where the binaries, the scratch space and the logs are (the shape `servers.rs` expects too).
pub struct Ctx {
    pub wisp_bin: PathBuf,
    /// Unused here: `servers::start_all` writes it for wisp-bench's deploy dir.
    pub wasm: Vec<u8>,
    pub work: PathBuf,
    pub logs: PathBuf,
}

/// Never set here (the node calls go through `wisp_testkit::Node`, which sends its own admin
/// token); `servers.rs` and `http` read it.
pub static WISP_TOKEN: OnceLock<String> = OnceLock::new();

/// One blocking request (readiness probes, /metrics), on a keep-alive agent.
pub fn http(method: &str, addr: SocketAddr, path: &str, body: Option<&[u8]>) -> anyhow::Result<wisp_testkit::Resp> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build());
    let bearer = WISP_TOKEN.get().filter(|_| path.starts_with("/v1/")).map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    wisp_testkit::try_request(agent, method, &format!("http://{addr}{path}"), body, &headers)
}

/// `GET path` once: ok if it answers 200 with `greeting`.
pub fn probe(addr: SocketAddr, path: &str, greeting: &str) -> Result<(), Status> {
    match http("GET", addr, path, None) {
        Ok(r) if r.status == 200 && r.body == greeting => Ok(()),
        Ok(r) => Err(Status::failed(format!("GET {path} answered {} {:?}", r.status, r.body))),
        Err(e) => Err(Status::failed(format!("{e:#}"))),
    }
}

#[derive(Debug, Serialize)]
pub struct ComponentInfo {
    pub lang: &'static str,
    pub function: &'static str,
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub plan: Plan,
    pub machine: sys::Machine,
    /// `wasmtime serve`'s flags (the tuned baseline of every bench), or why it did not run.
    pub wasmtime: Status,
    pub wasmtime_flags: String,
    pub components: Vec<ComponentInfo>,
    pub deploy: deploy::DeployReport,
    pub throughput: Vec<throughput::Row>,
    pub reuse: Vec<throughput::Row>,
    /// RSS of every server at the end of its runs.
    pub servers_rss: Vec<throughput::ServerMem>,
    pub total_s: f64,
}

fn main() {
    progress::elapsed_s();
    if let Err(e) = run(Args::parse()) {
        eprintln!("wisp-bench-langs: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let repo = wisp_testkit::repo_root();
    let wisp_bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    let wasmtime_bin = args.wasmtime_bin.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let cache = std::env::var_os("WISP_BENCH_CACHE").map_or_else(|| home.join(".cache/wisp-bench"), PathBuf::from);
        cache.join("bin/wasmtime")
    });
    let wasmtime = if wasmtime_bin.exists() {
        Ok(wasmtime_bin.clone())
    } else {
        Err(Status::Skipped(format!("wasmtime not installed at {} (run bench/setup.sh)", wasmtime_bin.display())))
    };
    let components = LANGS.map(|lang| read_component(&repo, lang));
    let [py, js] = components;
    let components = [py?, js?];

    std::fs::create_dir_all(args.out.join("logs")).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = tempfile::Builder::new().prefix("wisp-bench-langs-").tempdir()?;
    let ctx = Ctx { wisp_bin, wasm: Vec::new(), work: work.path().to_owned(), logs: out.join("logs") };
    let machine = sys::machine(&repo, wasmtime.as_ref().ok().map(PathBuf::as_path), &components[0].path);
    let baseline = machine.wasmtime_version.as_deref().unwrap_or("not installed");
    log(&format!(
        "{} mode; commit {:.12}; baseline: {baseline}",
        if plan.quick { "quick" } else { "full" },
        machine.git_commit
    ));

    let (deploy, node) = deploy::run(&plan, &ctx, &components)?;
    let results = throughput::run(&plan, &ctx, &components, &node, wasmtime.as_deref().map_err(Clone::clone))?;
    node.stop();

    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        plan,
        machine,
        wasmtime: wasmtime.err().unwrap_or_default(),
        wasmtime_flags: wasmtime::flags(None).join(" "),
        components: components
            .iter()
            .map(|c| ComponentInfo {
                lang: c.lang.name,
                function: c.lang.function,
                path: c.path.display().to_string(),
                bytes: c.bytes.len() as u64,
            })
            .collect(),
        deploy,
        throughput: results.plain,
        reuse: results.reuse,
        servers_rss: results.servers_rss,
        total_s: progress::elapsed_s(),
    };
    let md = report::markdown(&report);
    std::fs::write(out.join("langs.md"), &md)?;
    std::fs::write(out.join("langs.json"), serde_json::to_string_pretty(&report)?)?;
    print!("{md}");
    log(&format!("report: {}/langs.md, langs.json ({:.0} s)", out.display(), report.total_s));
    Ok(())
}

/// The built component of `lang`; its build script is named if it is missing.
fn read_component(repo: &Path, lang: Lang) -> anyhow::Result<Component> {
    let path = repo.join(format!("functions/target/wasm32-wasip2/release/{}.wasm", lang.function));
    let bytes =
        std::fs::read(&path).with_context(|| format!("reading {} (build it with {})", path.display(), lang.build))?;
    Ok(Component { lang, path, bytes })
}
