//! `wisp-bench-tenants`: what access control, metering and usage export cost, each next to its
//! baseline in the same run.
//!
//! - **auth:** the same component deployed public and private (`--private`), called with an
//!   invoker token; rounds alternate between the two, at 1 and 4 connections.
//! - **metering:** two nodes, one with `--no-usage-metering`; rounds alternate between them.
//! - **export:** a node fills its ledger with N invocations, then restarts with
//!   `--usage-export-url` pointing at a receiver in this process; events/s until all N arrived,
//!   per batch size.
//!
//! Writes `tenants.md` and `tenants.json` to `--out DIR`; see docs/bench/tenants.md.

#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../loadgen.rs"]
mod loadgen;
#[path = "../../progress.rs"]
mod progress;
#[allow(dead_code)] // shared with wisp-bench; not every item is used here
#[path = "../../sys.rs"]
mod sys;

use anyhow::{Context, bail};
use clap::Parser;
use loadgen::{Run, Spec, Target};
pub use progress::{block_on, log, ms};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wisp_testkit::Node;

#[derive(Parser, Debug)]
#[command(version, about = "Benchmarks the cost of tokens and metering on the request path, and usage export")]
struct Args {
    /// Directory for tenants.md, tenants.json and the nodes' logs
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Small numbers everywhere, for a smoke test
    #[arg(long)]
    quick: bool,
    /// Rounds per A/B comparison (each runs both sides once, alternating which goes first)
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Measured seconds per run
    #[arg(long, value_name = "SECS")]
    secs: Option<f64>,
    /// Invocations in the ledger before the export is measured
    #[arg(long, value_name = "N")]
    export_records: Option<u64>,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Side {
    name: String,
    connections: usize,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
    non_2xx: u64,
    server_us_per_req: f64,
}

#[derive(Debug, Serialize)]
struct Comparison {
    what: &'static str,
    connections: usize,
    baseline: Side,
    measured: Side,
    /// (baseline - measured) / baseline requests/s, percent: the cost.
    cost_pct: f64,
}

#[derive(Debug, Serialize)]
struct ExportRun {
    batch: usize,
    events: u64,
    seconds: f64,
    events_per_s: f64,
    posts: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    machine: sys::Machine,
    rounds: u32,
    secs: f64,
    comparisons: Vec<Comparison>,
    export_records: u64,
    export: Vec<ExportRun>,
    total_s: f64,
}

fn main() -> anyhow::Result<()> {
    progress::elapsed_s();
    let args = Args::parse();
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 5 });
    let secs = args.secs.unwrap_or(if args.quick { 0.5 } else { 3.0 });
    let export_records = args.export_records.unwrap_or(if args.quick { 500 } else { 100_000 });
    anyhow::ensure!(
        rounds >= 1 && secs > 0.0 && export_records > 0,
        "--rounds, --secs, --export-records must be above 0"
    );
    let bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let work = tempfile::tempdir()?;
    let hello = wisp_testkit::wasm_path("hello");
    let machine = sys::machine(&wisp_testkit::repo_root(), None, &hello);
    let spec = |connections| Spec {
        connections,
        warmup: Duration::from_secs_f64(secs / 5.0),
        duration: Duration::from_secs_f64(secs),
        rate: None,
    };

    // auth: public against private with an invoker token, on one node.
    let node = start(&bin, &work.path().join("auth"), &args.out.join("auth.log"), &[])?;
    deploy(&node, "hello", "")?;
    deploy(&node, "private", "private=true")?;
    let token = invoker_token(&node)?;
    let public = target(&node, "/fn/hello", None);
    let private = target(&node, "/fn/private", Some(format!("Bearer {token}")));
    let mut comparisons = Vec::new();
    for connections in [1, 4] {
        comparisons.push(compare(
            "auth",
            rounds,
            spec(connections),
            ("public", &public),
            ("private + token", &private),
        )?);
    }
    node.stop();

    // metering: the same function on a node that meters and one that does not.
    let metered = start(&bin, &work.path().join("metered"), &args.out.join("metered.log"), &[])?;
    let unmetered =
        start(&bin, &work.path().join("unmetered"), &args.out.join("unmetered.log"), &["--no-usage-metering"])?;
    deploy(&metered, "hello", "")?;
    deploy(&unmetered, "hello", "")?;
    let (with, without) = (target(&metered, "/fn/hello", None), target(&unmetered, "/fn/hello", None));
    for connections in [1, 4] {
        comparisons.push(compare(
            "metering",
            rounds,
            spec(connections),
            ("not metered", &without),
            ("metered", &with),
        )?);
    }
    metered.stop();
    unmetered.stop();

    // export: fill a ledger, copy it once per batch size, export each copy.
    let filled = work.path().join("export");
    let node = start(&bin, &filled, &args.out.join("fill.log"), &[])?;
    deploy(&node, "hello", "")?;
    fill(&node, export_records)?;
    node.stop();
    let mut export = Vec::new();
    for batch in [100usize, 1000] {
        let dir = work.path().join(format!("export-{batch}"));
        copy_dir(&filled, &dir)?;
        export.push(measure_export(&bin, &dir, &args.out.join(format!("export-{batch}.log")), batch, export_records)?);
    }

    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        rounds,
        secs,
        comparisons,
        export_records,
        export,
        total_s: progress::elapsed_s(),
    };
    let md = markdown(&report);
    print!("{md}");
    std::fs::write(args.out.join("tenants.md"), md)?;
    std::fs::write(args.out.join("tenants.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn start(bin: &Path, dir: &Path, log_file: &Path, extra: &[&str]) -> anyhow::Result<Node> {
    Node::builder(bin, dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .log_file(log_file)
        .spawn()
        .with_context(|| format!("starting wisp up (log: {})", log_file.display()))
}

fn deploy(node: &Node, name: &str, query: &str) -> anyhow::Result<()> {
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    let resp = node.request("POST", &format!("/v1/functions/{name}{query}"), Some(&wisp_testkit::wasm("hello")), &[]);
    if resp.status != 201 {
        bail!("deploying {name}: {} {}", resp.status, resp.body);
    }
    Ok(())
}

fn invoker_token(node: &Node) -> anyhow::Result<String> {
    let body = br#"{"name": "bench", "role": "invoker", "namespace": "default"}"#;
    let resp = node.request("POST", "/v1/tokens", Some(body), &[("Content-Type", "application/json")]);
    if resp.status != 201 {
        bail!("creating a token: {} {}", resp.status, resp.body);
    }
    resp.json()["token"].as_str().map(str::to_string).context("no token in the answer")
}

fn target(node: &Node, path: &str, authorization: Option<String>) -> Target {
    Target { addr: node.addr, path: path.into(), pid: node.pid(), authorization }
}

/// Alternating rounds of `baseline` and `measured` (which goes first alternates too).
fn compare(
    what: &'static str,
    rounds: u32,
    spec: Spec,
    baseline: (&str, &Target),
    measured: (&str, &Target),
) -> anyhow::Result<Comparison> {
    let (mut a, mut b) = (Run::default(), Run::default());
    for round in 0..rounds {
        let one = |target: &Target, into: &mut Run| -> anyhow::Result<()> {
            let run = loadgen::run(target, spec)?;
            into.merge(&run);
            Ok(())
        };
        if round % 2 == 0 {
            one(baseline.1, &mut a)?;
            one(measured.1, &mut b)?;
        } else {
            one(measured.1, &mut b)?;
            one(baseline.1, &mut a)?;
        }
    }
    let side = |name: &str, r: &Run| {
        let l = r.hist.latency();
        Side {
            name: name.into(),
            connections: spec.connections,
            rps: r.rps(),
            p50_us: l.p50_us,
            p99_us: l.p99_us,
            requests: r.requests,
            errors: r.errors,
            non_2xx: r.non_2xx,
            server_us_per_req: r.server_us_per_req(),
        }
    };
    let (baseline, measured) = (side(baseline.0, &a), side(measured.0, &b));
    if baseline.non_2xx + measured.non_2xx + baseline.errors + measured.errors > 0 {
        bail!("{what}: failed requests: {baseline:?} {measured:?}");
    }
    let cost_pct = (baseline.rps - measured.rps) / baseline.rps.max(1e-9) * 100.0;
    log(&format!(
        "{what} at {} connections: {} {:.0} rps, {} {:.0} rps ({cost_pct:+.1}%)",
        spec.connections, baseline.name, baseline.rps, measured.name, measured.rps
    ));
    Ok(Comparison { what, connections: spec.connections, baseline, measured, cost_pct })
}

/// Invokes until the node has metered `n` invocations (closed loop, 4 connections).
fn fill(node: &Node, n: u64) -> anyhow::Result<()> {
    let target = target(node, "/fn/hello", None);
    let mut done = 0;
    while done < n {
        // About 2,000 per second per connection at least: size each run to what is left.
        let secs = ((n - done) as f64 / 8000.0).clamp(0.2, 10.0);
        let run = loadgen::run(
            &target,
            Spec { connections: 4, warmup: Duration::ZERO, duration: Duration::from_secs_f64(secs), rate: None },
        )?;
        done += run.answered;
        log(&format!("export: {done} invocations so far"));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    anyhow::ensure!(status.success(), "cp -a {} {}", from.display(), to.display());
    Ok(())
}

/// Restarts the node on `dir` exporting to a receiver here; times until `records` (at least)
/// events arrived.
fn measure_export(bin: &Path, dir: &Path, log_file: &Path, batch: usize, records: u64) -> anyhow::Result<ExportRun> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let received = Arc::new(Counts::default());
    let counts = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counts = counts.clone();
            std::thread::spawn(move || serve(stream, &counts));
        }
    });
    let batch_flag = batch.to_string();
    let started = Instant::now();
    let node = start(
        bin,
        dir,
        log_file,
        &["--usage-export-url", &url, "--usage-export-batch", &batch_flag, "--usage-export-interval", "100ms"],
    )?;
    let deadline = started + Duration::from_secs(600);
    while received.events.load(Ordering::Relaxed) < records {
        anyhow::ensure!(Instant::now() < deadline, "export of {records} events did not finish in 600 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    node.stop();
    let events = received.events.load(Ordering::Relaxed);
    let run = ExportRun {
        batch,
        events,
        seconds,
        events_per_s: events as f64 / seconds,
        posts: received.posts.load(Ordering::Relaxed),
    };
    log(&format!("export, batches of {batch}: {events} events in {seconds:.2} s ({:.0}/s)", run.events_per_s));
    Ok(run)
}

#[derive(Default)]
struct Counts {
    events: AtomicU64,
    posts: AtomicU64,
}

/// A keep-alive HTTP/1.1 receiver: counts the events of each batch, answers 204.
fn serve(stream: TcpStream, counts: &Counts) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let events = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body).map_or(0, |v| v.len());
        counts.events.fetch_add(events as u64, Ordering::Relaxed);
        counts.posts.fetch_add(1, Ordering::Relaxed);
        if writer.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

fn markdown(r: &Report) -> String {
    let mut md = String::from("# Tenants: the cost of tokens and metering, and usage export\n\n");
    let m = &r.machine;
    let _ = writeln!(
        md,
        "`{}`\n\n{} cores, {}, load average at start {}; commit {}{}; {} rounds of {} s per side, \
         alternating.\n",
        r.command,
        m.cores,
        m.cpu_model,
        m.loadavg_at_start,
        m.git_commit,
        if m.git_dirty { " (dirty)" } else { "" },
        r.rounds,
        r.secs
    );
    md.push_str(
        "## Request path\n\n| what | connections | baseline | measured | cost |\n| --- | --- | --- | --- | --- |\n",
    );
    for c in &r.comparisons {
        let side = |s: &Side| format!("{}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs", s.name, s.rps, s.p50_us, s.p99_us);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:+.1}% |",
            c.what,
            c.connections,
            side(&c.baseline),
            side(&c.measured),
            c.cost_pct
        );
    }
    let _ = writeln!(md, "\n## Usage export ({} invocations in the ledger)\n", r.export_records);
    md.push_str(
        "| batch | events | seconds (node start to last event) | events/s | POSTs |\n| --- | --- | --- | --- | --- |\n",
    );
    for e in &r.export {
        let _ = writeln!(md, "| {} | {} | {:.2} | {:.0} | {} |", e.batch, e.events, e.seconds, e.events_per_s, e.posts);
    }
    let _ = writeln!(md, "\nTotal {:.0} s.", r.total_s);
    md
}
