//! The report: `scaling.md` (also printed) with one table per scenario, and `scaling.json` with
//! every number, the plan and the machine.

use crate::gate::{GateReport, Side};
use crate::loadgen::{Hist, Latency};
use crate::step::{Phase, StepReport};
use crate::sys::Machine;
use crate::zero::{Burst, Round, ZeroReport};
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
    /// Flags given to `wisp up` beyond `--listen` and `--data-dir`: the step and zero node,
    /// and the gate's node.
    pub node_flags: String,
    pub gate_node_flags: String,
    /// Set if the node had exited by the end of the run (it should not have).
    pub node_exit: Option<String>,
    pub plan: &'a Plan,
    pub step: Section<StepReport>,
    pub zero: Section<ZeroReport>,
    pub gate: Section<GateReport>,
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0} ms"))
}

fn lat_ms(h: &Hist) -> String {
    let l = h.latency();
    format!("{:.1} / {:.1} ms", l.p50_us / 1e3, l.p99_us / 1e3)
}

fn phase(p: &Phase) -> String {
    format!("{:.0} req/s, p50 / p99 {}, {} requests, {} errors", p.rps, lat_ms(&p.latency), p.requests, p.errors)
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

fn step_md(s: &StepReport, plan: &Plan) -> String {
    let mut t = String::from("| measurement | value | goal |\n| --- | --- | --- |\n");
    let mut row = |what: &str, value: String, goal: &str| {
        let _ = writeln!(t, "| {what} | {value} | {goal} |");
    };
    row(
        "load",
        format!(
            "closed loop, {} → {} connections; guest sleeps {} ms; containerConcurrency {} (target {:.0} per replica)",
            s.pre.connections, s.post.connections, s.work_ms, s.container_concurrency, s.replica_target
        ),
        "",
    );
    row("before the step (baseline)", phase(&s.pre), "");
    row("after the step, whole phase", phase(&s.post), "");
    row(
        "after the step, once recovered",
        s.post_recovered.as_ref().map_or_else(|| "never recovered".into(), phase),
        "",
    );
    row(
        "desired replicas",
        format!("{} → {} (target asks for {})", s.desired_before, s.desired_max_after, s.desired_expected),
        "",
    );
    row("ready replicas", format!("{} → {}", s.ready_before, s.ready_max_after), "");
    row(
        "**decision latency**: step → desired replicas changed in /metrics",
        match (s.decision_after_ms, s.decision_ms) {
            (Some(lo), Some(hi)) => format!(
                "**{lo:.1}–{hi:.1} ms** (the last poll still showing the old count was sent at {lo:.1} ms, the \
                 first showing the new one answered at {hi:.1} ms; polled every {:.1} ms)",
                s.poll_interval_ms
            ),
            _ => "no change seen".into(),
        },
        "≤ 200 ms",
    );
    row(
        "decision latency, client side: step → more in service than the old capacity",
        opt_ms(s.decision_client_ms),
        "≤ 200 ms",
    );
    row("step → ready replicas changed in /metrics", opt_ms(s.ready_change_ms), "");
    row(
        &format!("step → desired replicas at the target's count ({}) in /metrics", s.desired_expected),
        opt_ms(s.desired_reached_ms),
        "",
    );
    row(
        "panic mode",
        format!(
            "{} after the step ({} before)",
            if s.panic_observed { "yes" } else { "no" },
            if s.panic_before { "also" } else { "not" }
        ),
        "",
    );
    row("activator queue, most seen after the step", format!("{:.0}", s.activator_queue_max), "");
    row(
        &format!("p99 per {} ms window back within {}× the pre-step p99", plan.window_ms, plan.recovery_factor),
        match s.recovered_ms {
            Some(r) => {
                format!("{r:.0} ms after the step ({} windows over {:.1} ms)", s.windows_over, s.recovery_threshold_ms)
            }
            None => format!("not within the run ({} windows over {:.1} ms)", s.windows_over, s.recovery_threshold_ms),
        },
        "",
    );
    row("errors (non-200 and transport), before / after", format!("{} / {}", s.pre.errors, s.post.errors), "0");
    row(
        "CPU, % of one core (whole load)",
        format!("node {:.0}%, bench {:.0}%, other {:.0}%", s.node_cpu_pct, s.bench_cpu_pct, s.other_cpu_pct),
        "",
    );
    let series: Vec<String> = s
        .windows
        .iter()
        .take(25)
        .map(|w| format!("{:+.0}: {}", w.start_ms, w.p99_ms.map_or_else(|| "–".into(), |p| format!("{p:.0}"))))
        .collect();
    let _ = write!(
        t,
        "\np99 (ms) of the {} ms windows by completion time, window start relative to the step (ms): {}{}\n",
        plan.window_ms,
        series.join(", "),
        if s.windows.len() > 25 { ", …" } else { "" }
    );
    if let Some(e) = s.first_error.as_ref().or(s.poll_error.as_ref()) {
        let _ = writeln!(t, "\nFirst error: `{e}`");
    }
    t
}

fn zero_md(z: &ZeroReport) -> String {
    let mut t = String::from(
        "| burst | requests | errors | p50 | p99 | max | cold starts | rounds p50 / p99 / max (ms) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let ms = |us: f64| format!("{:.1} ms", us / 1e3);
    fn cold(r: &Round) -> &Burst {
        &r.cold
    }
    fn warm(r: &Round) -> &Burst {
        &r.warm
    }
    type Pick = fn(&Round) -> &Burst;
    let bursts: [(&str, &Hist, u64, Pick); 2] = [
        ("from zero (cold)", &z.cold, z.cold_errors, cold),
        ("right after (warm, baseline)", &z.warm, z.warm_errors, warm),
    ];
    for (name, hist, errors, pick) in bursts {
        let l: Latency = hist.latency();
        let cold_starts: f64 = z.rounds.iter().map(|r| pick(r).cold_starts).sum();
        let rounds: Vec<String> = z
            .rounds
            .iter()
            .map(|r| {
                let l = pick(r).latency.latency();
                format!("{:.1} / {:.1} / {:.1}", l.p50_us / 1e3, l.p99_us / 1e3, l.max_us / 1e3)
            })
            .collect();
        let _ = writeln!(
            t,
            "| {name} | {} | {errors} | {} | {} | {} | {cold_starts:.0} | {} |",
            l.count,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            rounds.join("; ")
        );
    }
    let _ = writeln!(t, "| cold / warm | | | {:.2}x | {:.2}x | {:.2}x | | |", z.ratio_p50, z.ratio_p99, z.ratio_max);
    let desired: Vec<String> = z.rounds.iter().map(|r| format!("{}", r.cold.after.desired)).collect();
    let waits: Vec<String> = z.rounds.iter().map(|r| format!("{:.1}", r.wait_zero_s)).collect();
    let _ = writeln!(
        t,
        "\n{} round(s) of {} concurrent requests; guest sleeps {} ms; containerConcurrency {}, window {} s. \
         Desired replicas right after each cold burst: {}. Waited for zero: {} s.",
        z.rounds.len(),
        z.requests_per_burst,
        z.work_ms,
        z.container_concurrency,
        z.window_s,
        desired.join(", "),
        waits.join(", ")
    );
    if let Some(e) = z.rounds.iter().find_map(|r| r.cold.first_error.as_ref().or(r.warm.first_error.as_ref())) {
        let _ = writeln!(t, "\nFirst error: `{e}`");
    }
    t
}

fn gate_md(g: &GateReport) -> String {
    let mut t = String::from(
        "| service | containerConcurrency | req/s | p50 | p99 | rounds req/s | node CPU µs/req | CPU: node / bench / other | cold starts (warm-ups) | errors |\n\
         | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |\n",
    );
    let side = |t: &mut String, s: &Side| {
        let l = s.run.hist.latency();
        let rounds: Vec<String> = s.rounds_rps.iter().map(|&r| thousands(r)).collect();
        let _ = writeln!(
            t,
            "| {}{} | {} | {} | {:.1} µs | {:.1} µs | {} | {:.1} | {:.0}% / {:.0}% / {:.0}% | {:.0} ({:.0}) | {} |",
            s.service,
            if s.bench_saturated { " (load generator saturated)" } else { "" },
            s.container_concurrency,
            thousands(s.rps),
            l.p50_us,
            l.p99_us,
            rounds.join(", "),
            s.node_us_per_req,
            s.run.pct(s.run.server_cpu_s),
            s.run.pct(s.run.bench_cpu_s),
            s.run.pct(s.run.other_cpu_s),
            s.cold_starts,
            s.warmup_cold_starts,
            s.run.errors + s.run.non_2xx
        );
    };
    side(&mut t, &g.open);
    side(&mut t, &g.gated);
    let rounds: Vec<String> = g.rounds_ratio_rps.iter().map(|r| format!("{r:.3}")).collect();
    let _ = writeln!(
        t,
        "| gated / open | | {:.3}x | {:.3}x | {:.3}x | {} (median {:.3}x) | | | | |",
        g.ratio_rps,
        g.ratio_p50,
        g.ratio_p99,
        rounds.join(", "),
        g.median_ratio_rps
    );
    let _ = writeln!(
        t,
        "\n{} connections, closed loop, {} rounds (open then gated in each), each run after a warm-up run of its own; \
         the gated service's capacity after the runs: {:.0} slots; ready instances after the runs: {:.0} (open), {:.0} \
         (gated).",
        g.connections, g.rounds, g.gated_capacity, g.open.after.ready_instances, g.gated.after.ready_instances
    );
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
        "## 1. A {factor}x step in load\n\n{step}\n## 2. Scale from zero\n\n{zero}\n## 3. Activator fast path\n\n{gate}",
        factor = p.step_factor,
        step = section(&report.step, |s| step_md(s, p)),
        zero = section(&report.zero, zero_md),
        gate = section(&report.gate, gate_md),
    );
    println!("{tables}");
    let dirty = if m.git_dirty { " (uncommitted changes)" } else { "" };
    let flags = if report.node_flags.is_empty() { "no other flags".to_string() } else { report.node_flags.clone() };
    let exit = report.node_exit.as_ref().map_or_else(String::new, |e| format!(" **A node exited: {e}.**"));
    let md = format!(
        "# Wisp autoscaling: a load step, scale from zero, the activator gate\n\n\
         `{command}` ({mode} mode, {total:.0} s), commit `{commit:.12}`{dirty}; {cores} cores, {cpu}, Linux \
         {kernel}, {mem} MiB, load average at start {load}. Nodes: `wisp up --listen 127.0.0.1:0 --data-dir DIR` \
         ({flags}) for the step and zero scenarios, each on services of its own, then a fresh one with \
         `{gate_flags}` for the gate; a node, the load generator (one thread) and the /metrics poller share the \
         {cores} cores.{exit}\n\n{tables}",
        command = report.command,
        mode = report.mode,
        total = report.total_s,
        commit = m.git_commit,
        cores = m.cores,
        cpu = m.cpu_model,
        kernel = m.kernel,
        mem = m.mem_total_mib,
        load = m.loadavg_at_start,
        gate_flags = report.gate_node_flags,
    );
    std::fs::write(out.join("scaling.md"), md)?;
    std::fs::write(out.join("scaling.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}
