//! The report: `report.md` (also printed) with one table per measurement and the machine, and
//! `report.json` with every number, the plan and the machine.

use crate::cold::{ColdReport, Side};
use crate::node::Stopped;
use crate::replicas::ReplicasReport;
use crate::sys::Machine;
use crate::warm::WarmReport;
use crate::{Plan, Section};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub mode: &'static str,
    pub command: String,
    pub total_s: f64,
    pub machine: Machine,
    /// `crun --version`, first line.
    pub crun: String,
    /// Flags given to `wisp up` beyond `--listen` and `--data-dir`.
    pub node_flags: String,
    pub node_rss_start_kib: u64,
    pub node_rss_end_kib: u64,
    /// Set if the node had exited before the end of the run (it should not have).
    pub node_exit: Option<String>,
    pub stopped: Stopped,
    pub plan: &'a Plan,
    pub cold: Section<ColdReport>,
    pub warm: Section<WarmReport>,
    pub replicas: Section<ReplicasReport>,
}

/// 12345.6 -> "12,346".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(kib: f64) -> String {
    format!("{:.2} MiB", kib / 1024.0)
}

fn cold_md(c: &ColdReport, plan: &Plan) -> String {
    let mut t = String::from(
        "| runtime | functions | first request p50 | p99 | max | mean | second request p50 (cold too) | verified cold | not at zero | errors | goal |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let row = |t: &mut String, s: &Side, goal: String| {
        let l = s.first.latency();
        let ms = |us: f64| format!("{:.1} ms", us / 1e3);
        let _ = writeln!(
            t,
            "| {} | {} | **{}** | **{}** | {} | {} | {:.2} ms ({}) | {} | {} | {} | {goal} |",
            if s.runtime == "wasm" { "Wasm hello (baseline)" } else { "container (httpd image)" },
            c.samples,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            ms(l.mean_us),
            s.second.latency().p50_us / 1e3,
            s.second_cold,
            s.verified_cold,
            s.not_at_zero,
            s.errors
        );
    };
    let p99 = c.container.first.latency().p99_us / 1e3;
    let goal = plan.cold_goal_p99_ms;
    let verdict = if p99 <= goal { "met" } else { "missed" };
    row(&mut t, &c.container, format!("p99 ≤ {goal:.0} ms: **{verdict}**"));
    row(&mut t, &c.wasm, String::new());
    let _ = writeln!(t, "| container / Wasm | | {:.1}x | {:.1}x | | | | | | | |", c.ratio_p50, c.ratio_p99);
    let firsts: Vec<String> = c.container.first_ms.iter().map(|v| format!("{v:.0}")).collect();
    let _ = writeln!(
        t,
        "\nEach function deployed with `min_warm=0` and requested once, one at a time over an open keep-alive \
         connection, container and Wasm alternating; timed until the whole answer was read. Deploy calls: \
         {:.1} ms (container, by image reference) and {:.1} ms (Wasm, with the bytes) each. Container first \
         requests in order (ms): {}. For scale: crun alone takes 7–18 ms to a first answer on this machine.",
        c.container.deploy_ms,
        c.wasm.deploy_ms,
        firsts.join(", ")
    );
    if let Some(e) = c.container.first_error.as_ref().or(c.wasm.first_error.as_ref()) {
        let _ = writeln!(t, "\nFirst error: `{e}`");
    }
    t
}

fn warm_md(w: &WarmReport) -> String {
    let mut t = String::from(
        "| function | connections | req/s | p50 | p99 | p99.9 | errors | CPU % of a core: node / bench / other | replicas after |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n",
    );
    for r in &w.rows {
        let l = r.run.hist.latency();
        let what = match r.function {
            "warm-httpd" => "container: busybox httpd",
            "warm-native" => "container: native C (threads, zlib)",
            _ => "Wasm hello",
        };
        let _ = writeln!(
            t,
            "| {what}{} | {} | **{}** | {:.0} µs | {:.0} µs | {:.0} µs | {} | {:.0} / {:.0} / {:.0} | {} |",
            if r.bench_saturated { " (load generator saturated)" } else { "" },
            r.connections,
            thousands(r.rps),
            l.p50_us,
            l.p99_us,
            l.p999_us,
            r.run.errors + r.run.non_2xx,
            r.run.pct(r.run.server_cpu_s),
            r.run.pct(r.run.bench_cpu_s),
            r.run.pct(r.run.other_cpu_s),
            r.after.map_or_else(|| "–".into(), |a| a.ready.to_string()),
        );
    }
    let _ = writeln!(
        t,
        "\nClosed loop, keep-alive HTTP/1.1 from the bench to the node, {:.0} s measured after {:.1} s warm-up per run. \
         Containers: Knative Services with min-scale {} and containerConcurrency 0; Wasm: deployed with the node's \
         defaults. `other` is everything on the machine but the node and the load generator: the containers' \
         own CPU is there.",
        w.duration_s, w.warmup_s, w.min_scale
    );
    if let Some(e) = w.rows.iter().find_map(|r| r.run.first_error.as_ref()) {
        let _ = writeln!(t, "\nFirst error: `{e}`");
    }
    t
}

fn memory_md(r: &ReplicasReport) -> String {
    let m = &r.memory;
    let mut t = String::from("| measurement | value |\n| --- | --- |\n");
    let mut row = |what: &str, value: String| {
        let _ = writeln!(t, "| {what} | {value} |");
    };
    row(
        "idle replicas (httpd image, min-scale)",
        format!("{} ({} containers found under the node)", r.replicas, r.containers),
    );
    row(
        "**PSS per idle replica**",
        format!(
            "**{}** (anon {}, file {})",
            mib(r.pss_per_replica_kib),
            mib(r.pss_anon_per_replica_kib),
            mib(m.pss_file_kib as f64 / f64::from(r.replicas))
        ),
    );
    row("PSS, all replicas", format!("{} over {} processes", mib(m.pss_kib as f64), m.processes));
    row("RSS per replica (shared pages counted in each)", mib(r.rss_per_replica_kib));
    row(
        "node RSS before → with the replicas",
        format!(
            "{} → {} ({:+.0} KiB per replica)",
            mib(r.node_rss_before_kib as f64),
            mib(r.node_rss_after_kib as f64),
            r.node_rss_per_replica_kib
        ),
    );
    t
}

fn starts_md(r: &ReplicasReport) -> String {
    let mut t = String::from("| measurement | value |\n| --- | --- |\n");
    let mut row = |what: &str, value: String| {
        let _ = writeln!(t, "| {what} | {value} |");
    };
    row("replicas (min-scale K)", r.replicas.to_string());
    row("apply answered", format!("{:.1} ms", r.apply_ms));
    row("apply → first replica ready", format!("{:.0} ms", r.first_ready_ms));
    row("apply → K replicas ready", format!("{:.0} ms", r.all_ready_ms));
    row("**replicas started per second**", format!("**{:.1}**", r.replicas_per_s));
    row(
        "service view polls",
        format!(
            "{} (one every {} ms at most; each took {:.0} ms on average, {:.0} ms at most, which bounds the timings' \
             resolution)",
            r.polls, r.poll_ms, r.poll_mean_ms, r.poll_max_ms
        ),
    );
    let series: Vec<String> = r.ready_series.iter().map(|(at, n)| format!("{at:.0}: {n}")).collect();
    let _ = writeln!(t, "\nReady replicas over time (ms since the apply was sent: ready): {}", series.join(", "));
    t
}

fn section<T>(s: &Section<T>, body: impl FnOnce(&T) -> String) -> String {
    match &s.data {
        Some(d) => body(d),
        None => format!("{}\n", s.status),
    }
}

pub fn write(out: &Path, report: &Report) -> anyhow::Result<()> {
    let m = &report.machine;
    let p = report.plan;
    let tables = format!(
        "## 1. Cold start: the first request to a function at zero\n\n{cold}\n\
         ## 2. Warm requests\n\n{warm}\n\
         ## 3. Memory per idle replica\n\n{memory}\n\
         ## 4. Replicas started per second\n\n{starts}",
        cold = section(&report.cold, |c| cold_md(c, p)),
        warm = section(&report.warm, warm_md),
        memory = section(&report.replicas, memory_md),
        starts = section(&report.replicas, starts_md),
    );
    println!("{tables}");
    let dirty = if m.git_dirty { " (uncommitted changes)" } else { "" };
    let s = &report.stopped;
    let exit =
        report.node_exit.as_ref().map_or_else(String::new, |e| format!(" **The node exited during the run: {e}.**"));
    let md = format!(
        "# Wisp container functions (crun) next to Wasm\n\n\
         `{command}` ({mode} mode, {total:.0} s), commit `{commit:.12}`{dirty}.\n\n\
         Machine: {cores} cores (`nproc`), {cpu}, Linux {kernel}, {mem} MiB, load average at start {load}; {crun}.\n\n\
         One node for everything: `wisp up --listen 127.0.0.1:0 --data-dir DIR {flags}`; the node, its containers \
         and the load generator (one thread) share the {cores} cores. Node RSS at start {rss0}, at the end {rss1}. \
         At the end the bench deleted its {deleted} functions (their containers gone in {gone:.1} s; {at_term} \
         still running at the SIGTERM), the node exited ({exit_status}) {exit_s:.2} s after SIGTERM, and crun listed \
         {left} container(s) of its data dir afterwards.{exit}\n\n{tables}",
        command = report.command,
        mode = report.mode,
        total = report.total_s,
        commit = m.git_commit,
        cores = m.cores,
        cpu = m.cpu_model,
        kernel = m.kernel,
        mem = m.mem_total_mib,
        load = m.loadavg_at_start,
        crun = report.crun,
        flags = report.node_flags,
        rss0 = mib(report.node_rss_start_kib as f64),
        rss1 = mib(report.node_rss_end_kib as f64),
        deleted = s.functions_deleted,
        gone = s.containers_gone_s,
        at_term = s.containers_at_sigterm,
        exit_status = s.exit,
        exit_s = s.exit_s,
        left = s.containers_left.len(),
    );
    std::fs::write(out.join("report.md"), md)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}
