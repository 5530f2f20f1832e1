//! `wisp-bench`: reproducible benchmarks of Wisp against `wasmtime serve`, side by side in one
//! run. Writes `report.md`, `report.json` and `chart.svg` to `--out DIR`. See bench/README.md.

mod client;
mod cold;
mod density;
mod inproc;
mod loadgen;
mod node;
mod report;
mod sys;
mod warm;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use loadgen::Target;
use node::Server;
use report::{InstantiateReport, OverheadReport, PerRequest, Report};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warm::Contender;

const SCENARIOS: [&str; 5] = ["warm", "cold", "instantiate", "density", "overhead"];
const NOT_INSTALLED: &str = "skipped: wasmtime not installed (run bench/setup.sh)";

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
    /// The `hello` component [default: functions/target/wasm32-wasip2/release/hello.wasm]
    #[arg(long, value_name = "PATH")]
    wasm: Option<PathBuf>,
    /// Scenarios to run, comma-separated (warm,cold,instantiate,density,overhead); the others
    /// are reported as skipped
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
            anyhow::ensure!(
                SCENARIOS.contains(&s.as_str()),
                "--only: unknown scenario {s:?} (known: {})",
                SCENARIOS.join(",")
            );
        }
        let duration = a.duration.unwrap_or(if q { 0.5 } else { 4.0 });
        Ok(Plan {
            quick: q,
            connection_levels: vec![1, 16, 64],
            rounds: a.rounds.unwrap_or(if q { 1 } else { 4 }).max(1),
            warm_warmup: Duration::from_secs_f64(if q { 0.25 } else { 1.0 }),
            warm_duration: Duration::from_secs_f64(duration),
            open_duration: Duration::from_secs_f64(if q { 1.0 } else { (duration * 1.5).max(2.0) }),
            cold_functions: if q { 5 } else { 50 },
            samples: if q { 200 } else { 2000 },
            density_levels: if !a.density_levels.is_empty() {
                a.density_levels.clone()
            } else if q {
                vec![100]
            } else {
                vec![1000, 10_000, 20_000, 40_000]
            },
            density_budget: Duration::from_secs_f64(a.density_budget.unwrap_or(if q { 60.0 } else { 300.0 })),
            address_space_probe: 32_100,
            scenarios: if a.only.is_empty() {
                SCENARIOS.iter().map(|s| s.to_string()).collect()
            } else {
                a.only.clone()
            },
        })
    }

    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Progress on stderr, with seconds since start.
pub fn log(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {msg}");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf()
}

fn default_wisp_bin() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("wisp");
        if sibling.exists() {
            return sibling;
        }
    }
    repo_root().join("target/release/wisp")
}

fn default_wasmtime_bin() -> PathBuf {
    let cache = std::env::var_os("WISP_BENCH_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/wisp-bench")
    });
    cache.join("bin/wasmtime")
}

fn main() {
    START.get_or_init(Instant::now);
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("wisp-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let started = Instant::now();
    let wisp_bin = args.wisp_bin.clone().unwrap_or_else(default_wisp_bin);
    let wasmtime_bin = args.wasmtime_bin.clone().unwrap_or_else(default_wasmtime_bin);
    let wasmtime_bin = wasmtime_bin.exists().then_some(wasmtime_bin);
    let wasm_path =
        args.wasm.clone().unwrap_or_else(|| repo_root().join("functions/target/wasm32-wasip2/release/hello.wasm"));
    let wasm = Bytes::from(std::fs::read(&wasm_path).with_context(|| {
        format!(
            "reading {} (build it: cargo build --release --target wasm32-wasip2 --manifest-path functions/Cargo.toml)",
            wasm_path.display()
        )
    })?);
    anyhow::ensure!(
        wisp_bin.exists(),
        "no wisp binary at {} (cargo build --release, or --wisp-bin)",
        wisp_bin.display()
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let work = tempfile::Builder::new().prefix("wisp-bench-").tempdir()?;

    let machine = sys::machine(&repo_root(), &wisp_bin, wasmtime_bin.as_deref(), &wasm_path);
    log(&format!(
        "{} mode; {} x {}; kernel {}; commit {}; baseline: {}",
        if plan.quick { "quick" } else { "full" },
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        &machine.git_commit[..machine.git_commit.len().min(12)],
        machine.wasmtime_version.as_deref().unwrap_or("not installed")
    ));
    let mut notes = Vec::new();

    // Servers for scenarios 1, 2 and the HTTP half of 5.
    let needs_servers = plan.runs("warm") || plan.runs("cold") || plan.runs("overhead");
    let mut contenders: Vec<Contender> = Vec::new();
    if needs_servers {
        let deploy = work.path().join("deploy");
        std::fs::create_dir_all(&deploy)?;
        std::fs::write(deploy.join("hello.wasm"), &wasm)?;
        let wisp = Server::wisp(
            &wisp_bin,
            &work.path().join("wisp-data"),
            &["--deploy-dir".into(), deploy.display().to_string()],
            &logs.join("wisp.log"),
        )
        .and_then(|s| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(client::wait_ok(s.addr, "/fn/hello", Duration::from_secs(60)))?;
            Ok(s)
        })
        .map_err(|e| format!("failed: {e:#}"));
        log(&format!(
            "wisp node: {}",
            wisp.as_ref().map_or_else(|e| e.clone(), |s| format!("http://{} (pid {})", s.addr, s.pid))
        ));
        contenders.push(Contender { name: "wisp", server: wisp, path: "/fn/hello" });
        let baselines: [(&'static str, &[&str]); 2] =
            [("wasmtime-default", &[]), ("wasmtime-tuned", &node::TUNED_FLAGS)];
        for (name, flags) in baselines {
            let server = match &wasmtime_bin {
                None => Err(NOT_INSTALLED.to_string()),
                Some(bin) => Server::wasmtime(bin, &wasm_path, flags, &logs.join(format!("{name}.log")))
                    .and_then(|s| {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        rt.block_on(client::wait_ok(s.addr, "/", Duration::from_secs(60)))?;
                        Ok(s)
                    })
                    .map_err(|e| format!("failed: {e:#}")),
            };
            log(&format!(
                "{name}: {}",
                server.as_ref().map_or_else(|e| e.clone(), |s| format!("http://{} (pid {})", s.addr, s.pid))
            ));
            contenders.push(Contender { name, server, path: "/" });
        }
    }
    let wisp_target: Option<Target> = contenders.first().and_then(|c| c.target());

    // 1. warm (+ open loop)
    let warm = if plan.runs("warm") {
        log("scenario 1: warm");
        warm::run(&plan, &contenders)
    } else {
        warm::WarmReport {
            requests: 0,
            rounds: 0,
            warmup_s: 0.0,
            duration_s: 0.0,
            connection_levels: Vec::new(),
            rows: Vec::new(),
            ratios: Vec::new(),
            open_loop: Vec::new(),
            wisp_invocation_buckets: Vec::new(),
        }
    };
    let warm_p50_1 = warm.row("wisp", 1).map(|r| r.latency.p50_us);

    // 5 (HTTP half): sequential requests through the node.
    let mut overhead = OverheadReport {
        status: if plan.runs("overhead") { "ok".into() } else { "skipped: not selected".into() },
        requests: 0,
        samples: plan.samples,
        http: Default::default(),
        http_cold_starts: 0,
        healthz: Default::default(),
        inproc: Default::default(),
        inproc_back_to_back: Default::default(),
        added_p50_us: None,
        added_p99_us: None,
        added_mean_us: None,
        added_p50_vs_back_to_back_us: None,
    };
    if plan.runs("overhead") {
        log("scenario 5: overhead (HTTP through the node)");
        match &wisp_target {
            Some(t) => match cold::sequential_http(t, &[&t.path, "/healthz"], plan.samples / 10, plan.samples) {
                Ok((lat, cold)) => {
                    let (hello, floor) = (lat[0], lat[1]);
                    overhead.http = hello;
                    overhead.http_cold_starts = cold;
                    overhead.healthz = floor;
                    overhead.requests += hello.count + floor.count;
                    log(&format!(
                        "overhead: HTTP p50 {:.1} us, p99 {:.1} us ({cold} of {} cold); /healthz p50 {:.1} us",
                        hello.p50_us, hello.p99_us, hello.count, floor.p50_us
                    ));
                }
                Err(e) => overhead.status = format!("failed: {e:#}"),
            },
            None => overhead.status = "failed: no wisp node".into(),
        }
    }

    // 2. cold
    let cold = if plan.runs("cold") {
        log("scenario 2: cold");
        match &wisp_target {
            Some(t) => cold::run(&plan, t, &wasm, warm_p50_1),
            None => cold::ColdReport::new(&plan, "failed: no wisp node"),
        }
    } else {
        cold::ColdReport::new(&plan, "skipped: not selected")
    };

    // Collect server-side evidence, then stop every server before the in-process scenarios.
    let mut node_after = None;
    if let Some(t) = &wisp_target {
        std::thread::sleep(Duration::from_millis(200)); // the usage ledger commits every 20 ms
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let invocations = rt
            .block_on(client::once(t.addr, http::Method::GET, "/metrics", Bytes::new()))
            .map(|(_, m)| client::metric_sum(&String::from_utf8_lossy(&m), "wisp_invocations_total", "") as u64)
            .unwrap_or(0);
        let data = work.path().join("wisp-data");
        let data_dir_bytes = dir_size(&data);
        let db_bytes =
            ["wisp.db", "wisp.db-wal"].iter().map(|f| std::fs::metadata(data.join(f)).map_or(0, |m| m.len())).sum();
        let fp = t.pid.map(sys::footprint).unwrap_or_default();
        node_after = Some(report::NodeAfter {
            invocations,
            data_dir_bytes,
            db_bytes,
            db_bytes_per_invocation: if invocations > 0 { db_bytes as f64 / invocations as f64 } else { 0.0 },
            footprint: fp,
        });
        log(&format!(
            "wisp node after the HTTP scenarios: {invocations} invocations, store {:.1} MiB ({:.0} B per invocation), RSS {} MiB",
            db_bytes as f64 / (1 << 20) as f64,
            if invocations > 0 { db_bytes as f64 / invocations as f64 } else { 0.0 },
            fp.rss_kib / 1024
        ));
    }
    for c in &mut contenders {
        if let Ok(s) = &mut c.server {
            if !s.alive() {
                notes.push(format!("{} exited during the run ({:?}); see logs/{}.log", c.name, s.exit, c.name));
            }
            s.stop();
        }
    }
    drop(contenders);

    // 3. instantiate and 5 (in-process half)
    let mut instantiate = InstantiateReport {
        status: if plan.runs("instantiate") { "ok".into() } else { "skipped: not selected".into() },
        requests: 0,
        samples: plan.samples,
        pool_size: 0,
        compile_s: 0.0,
        take_pooled: Default::default(),
        take_on_demand: Default::default(),
        pooled_speedup_p50: None,
        invoke_on_demand: Default::default(),
        wasmtime_per_request: Vec::new(),
        derivation: String::new(),
    };
    if plan.runs("instantiate") || plan.runs("overhead") {
        log("scenarios 3 and 5: in-process (wisp-runtime linked into the bench)");
        match inproc::run(&plan, &wasm) {
            Ok(p) => {
                if plan.runs("instantiate") {
                    instantiate.requests = p.take_pooled.latency.count + p.take_on_demand.latency.count;
                    instantiate.pool_size = p.pool_size;
                    instantiate.compile_s = p.compile_s;
                    instantiate.pooled_speedup_p50 = (p.take_pooled.latency.p50_us > 0.0)
                        .then(|| p.take_on_demand.latency.p50_us / p.take_pooled.latency.p50_us);
                    instantiate.take_pooled = p.take_pooled.clone();
                    instantiate.take_on_demand = p.take_on_demand.clone();
                    instantiate.invoke_on_demand = p.invoke_on_demand.clone();
                }
                if plan.runs("overhead") && overhead.status == "ok" {
                    overhead.inproc = p.invoke_pooled.clone();
                    overhead.inproc_back_to_back = p.invoke_back_to_back.clone();
                    overhead.requests += p.invoke_pooled.latency.count + p.invoke_back_to_back.latency.count;
                    let h = &overhead.http;
                    let i = &p.invoke_pooled.latency;
                    overhead.added_p50_us = Some(h.p50_us - i.p50_us);
                    overhead.added_p99_us = Some(h.p99_us - i.p99_us);
                    overhead.added_mean_us = Some(h.mean_us - i.mean_us);
                    let b = &p.invoke_back_to_back.latency;
                    overhead.added_p50_vs_back_to_back_us = Some(h.p50_us - b.p50_us);
                    log(&format!(
                        "overhead: HTTP p50 {:.1} us vs in-process p50 {:.1} us: gateway adds {:.1} us at p50, {:.1} us at p99",
                        h.p50_us,
                        i.p50_us,
                        h.p50_us - i.p50_us,
                        h.p99_us - i.p99_us
                    ));
                }
            }
            Err(e) => {
                if plan.runs("instantiate") {
                    instantiate.status = format!("failed: {e:#}");
                }
                if plan.runs("overhead") {
                    overhead.status = format!("failed: {e:#}");
                }
            }
        }
    }
    // wasmtime serve's per-request cost, derived.
    let inproc_p50 = overhead.inproc.latency.p50_us;
    let gateway = overhead.added_p50_us;
    let gateway_warm = warm.row("wisp", 1).filter(|_| inproc_p50 > 0.0).map(|r| r.latency.p50_us - inproc_p50);
    instantiate.derivation = format!(
        "`wasmtime serve` instantiates a fresh instance for every request (WASIp2: reuse count 1), so its \
         per-request cost (instantiate + handle) is estimated as its warm p50 at 1 connection (scenario 1) minus \
         Wisp's gateway overhead at p50, i.e. what remains once the loopback round trip, the bench's client and an \
         HTTP server of comparable cost (both use hyper) are taken out. The gateway overhead is Wisp's HTTP p50 \
         minus its in-process invoke p50 ({} µs, pool refilled), with the HTTP p50 taken (a) from scenario 1 at 1 \
         connection, measured in alternation with the baselines (overhead {} µs; preferred), or (b) from the \
         sequential series of scenario 5 (overhead {} µs). Compare the result with Wisp's in-process on-demand \
         invoke (instantiate + handle: {} µs p50), the instantiation alone (on-demand take: {} µs p50) and a \
         pooled take ({} µs p50).",
        report_f1(inproc_p50),
        gateway_warm.map_or("n/a".into(), |g| format!("{g:.1}")),
        gateway.map_or("n/a".into(), |g| format!("{g:.1}")),
        report_f1(instantiate.invoke_on_demand.latency.p50_us),
        report_f1(instantiate.take_on_demand.latency.p50_us),
        report_f1(instantiate.take_pooled.latency.p50_us),
    );
    for name in ["wasmtime-default", "wasmtime-tuned"] {
        if let Some(row) = warm.row(name, 1) {
            for (basis, g) in [("(a) scenario 1", gateway_warm), ("(b) scenario 5", gateway)] {
                if let Some(g) = g {
                    instantiate.wasmtime_per_request.push(PerRequest {
                        baseline: name.into(),
                        basis: basis.into(),
                        warm_p50_1conn_us: row.latency.p50_us,
                        gateway_overhead_p50_us: g,
                        per_request_us: row.latency.p50_us - g,
                    });
                }
            }
        }
    }

    // 4. density
    let density = if plan.runs("density") {
        log("scenario 4: density");
        let mut d = density::run(&plan, &wisp_bin, &wasm, work.path());
        d.mem_total_gib = machine.mem_total_gib;
        // Keep the node logs of each level next to the report.
        for lv in &d.levels {
            let src = work.path().join(format!("density-{}/node.log", lv.functions));
            let _ = std::fs::copy(&src, logs.join(format!("density-{}.log", lv.functions)));
        }
        d
    } else {
        density::DensityReport {
            status: "skipped: not selected".into(),
            requests: 0,
            vm_max_map_count: machine.vm_max_map_count,
            open_files_limit: machine.open_files_limit,
            mem_total_gib: machine.mem_total_gib,
            budget_s: 0.0,
            levels: Vec::new(),
            first_limit: None,
            max_warm_by_map_count: None,
            map_count_model: String::new(),
            probes: Vec::new(),
        }
    };

    notes.extend(findings(&warm, &overhead, &instantiate));
    let command =
        if plan.quick { format!("wisp-bench --quick --out {}", args.out.display()) } else { "bench/run.sh".into() };
    let report = Report {
        tool: "wisp-bench",
        mode: if plan.quick { "quick" } else { "full" },
        command,
        total_s: started.elapsed().as_secs_f64(),
        machine,
        warm,
        cold,
        instantiate,
        density,
        overhead,
        wisp_node_after_http_scenarios: node_after,
        notes,
    };
    report::write(&out, &report)?;
    println!("Wisp / baseline (throughput: above 1 = Wisp serves more; p99: below 1 = Wisp's tail is lower)");
    for x in &report.warm.ratios {
        let fmt = |v: Option<f64>| v.map_or("skipped".to_string(), |v| format!("{v:.2}x"));
        println!(
            "  {:>2} conns vs {:<16} throughput {:>8}  p99 {:>8}",
            x.connections,
            x.baseline,
            fmt(x.throughput),
            fmt(x.p99)
        );
    }
    log(&format!("report: {}/report.md, report.json, chart.svg ({:.0} s)", out.display(), report.total_s));
    Ok(())
}

fn dir_size(path: &Path) -> u64 {
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

fn report_f1(x: f64) -> String {
    format!("{x:.1}")
}

/// Observations worth a reader's attention, derived from the numbers.
fn findings(warm: &warm::WarmReport, overhead: &OverheadReport, inst: &InstantiateReport) -> Vec<String> {
    let mut notes = Vec::new();
    for r in warm.rows.iter().filter(|r| r.status == "ok") {
        if r.loadgen_saturated {
            notes.push(format!(
                "load generator saturated ({:.0}% of a core) against {} at {} connections: its throughput is a lower bound",
                r.bench_cpu_pct, r.target, r.connections
            ));
        }
        if r.errors + r.non_2xx > 0 {
            notes.push(format!(
                "{} at {} connections: {} errors, {} non-2xx (first: {})",
                r.target,
                r.connections,
                r.errors,
                r.non_2xx,
                r.first_error.as_deref().unwrap_or("-")
            ));
        }
        if let Some(c) = r.cold_starts
            && c > 0
        {
            notes.push(format!(
                "wisp at {} connections: {} of {} requests ({:.1}%, warm-up included) found the pool empty and \
                 instantiated on demand",
                r.connections,
                c,
                r.answered,
                100.0 * c as f64 / r.answered.max(1) as f64
            ));
        }
    }
    for o in warm.open_loop.iter().filter(|o| o.status == "ok") {
        if o.unsent > 0 {
            notes.push(format!(
                "open loop {}: {} scheduled requests were never sent (rate above capacity)",
                o.target, o.unsent
            ));
        }
    }
    let ib = &overhead.inproc_back_to_back;
    if overhead.http_cold_starts > 0 || ib.cold > 0 {
        notes.push(format!(
            "a `min_warm=1` function called one request at a time, back to back, still cold-starts: {} of {} \
             requests over HTTP and {} of {} direct invokes found its pool empty (the refill task re-instantiates \
             only after the take and can lose the race with the next request)",
            overhead.http_cold_starts, overhead.http.count, ib.cold, ib.latency.count
        ));
    }
    if inst.take_pooled.cold > 0 {
        notes.push(format!("instantiate: {} pooled takes found the pool empty", inst.take_pooled.cold));
    }
    notes
}
