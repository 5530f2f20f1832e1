//! `langs.md`: the tables, one caption each; the method is in docs/bench/langs.md.

use crate::Report;
use crate::throughput::{Row, Side};
use std::fmt::Write as _;

/// A Markdown table; `header` is the column names separated by '|'.
fn table(s: &mut String, header: &str, rows: impl IntoIterator<Item = Vec<String>>) {
    let names: Vec<&str> = header.split('|').collect();
    let _ = writeln!(s, "| {} |\n|{}", names.join(" | "), " --- |".repeat(names.len()));
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::from("# Python and JavaScript functions: Wisp against `wasmtime serve`\n\n");
    let m = &r.machine;
    let p = &r.plan;
    let baseline = match &m.wasmtime_version {
        Some(v) => format!("{v} (`wasmtime serve {}`)", r.wasmtime_flags),
        None => format!("`wasmtime serve` {}", r.wasmtime),
    };
    let _ = writeln!(
        s,
        "`{}` ({:.0} s)\n\n{} cores, {}, load average at start {}; commit {:.12}{}. Baseline: {baseline}. \
         {} round(s) of {} s per side and row after a {} s warm-up, alternating.\n",
        r.command,
        r.total_s,
        m.cores,
        m.cpu_model,
        m.loadavg_at_start,
        m.git_commit,
        if m.git_dirty { " (dirty)" } else { "" },
        p.rounds,
        p.secs,
        p.warmup_s
    );
    table(
        &mut s,
        "language|function|component|MiB",
        r.components.iter().map(|c| {
            vec![
                c.lang.into(),
                c.function.into(),
                format!("`{}`", c.path),
                format!("{:.1}", c.bytes as f64 / 1048576.0),
            ]
        }),
    );

    let d = &r.deploy;
    s.push_str("## Deploy (fresh node, empty compile cache)\n\n");
    let total: f64 = d.sequential.iter().map(|x| x.seconds).sum();
    table(
        &mut s,
        "function|deploy, one after the other (s)|deploy, both at once (s)",
        d.sequential.iter().map(|x| {
            let at_once = d.concurrent.deploys.iter().find(|c| c.function == x.function);
            vec![
                x.function.into(),
                format!("{:.2}", x.seconds),
                at_once.map_or("–".into(), |c| format!("{:.2}", c.seconds)),
            ]
        }),
    );
    let _ = writeln!(
        s,
        "Both: {total:.2} s one after the other, {:.2} s at once{}.\n",
        d.concurrent.wall_s,
        if d.concurrent.status.is_ok() { String::new() } else { format!(" ({})", d.concurrent.status) }
    );
    let restart = &d.restart;
    let cache = format!(
        "compile cache hits {}, misses {}",
        restart.compile_cache_hits.map_or("?".into(), |v| format!("{v:.0}")),
        restart.compile_cache_misses.map_or("?".into(), |v| format!("{v:.0}"))
    );
    table(
        &mut s,
        "node memory|RSS (MiB)|peak VmHWM (MiB)",
        [
            ("right after deploying both".to_string(), d.after_deploy),
            (format!("{:.0} s later", p.settle_s), d.after_settle),
            (
                format!(
                    "after a restart, both loaded from the compile cache and answering ({:.2} s; {cache})",
                    restart.ready_s
                ),
                restart.mem,
            ),
            ("right after deploying both at once (another fresh node)".into(), d.concurrent.after),
        ]
        .into_iter()
        .map(|(when, m)| vec![when, format!("{:.0}", m.rss_mib), format!("{:.0}", m.hwm_mib)]),
    );
    let _ = writeln!(
        s,
        "Peak RSS of the node and its child processes (sampled every 50 ms): {:.0} MiB during the deploys one \
         after the other, {:.0} MiB during the deploys at once.\n",
        d.peak_tree_mib, d.concurrent.peak_tree_mib
    );

    let _ = writeln!(s, "## Throughput, one instance per request (goal: Wisp ≥ 2x `wasmtime serve`)\n");
    rows(&mut s, &r.throughput, "every request (one instance each)");
    let _ =
        writeln!(s, "## Throughput with instance reuse (up to {} requests per instance, both sides)\n", r.plan.reuse);
    rows(&mut s, &r.reuse, &format!("up to 1 per {} requests", r.plan.reuse));

    s.push_str("## Server memory at the end of the runs\n\n");
    table(
        &mut s,
        "server|RSS (MiB)|peak VmHWM (MiB)|first 200 after spawn (s)",
        r.servers_rss.iter().map(|m| {
            vec![
                m.server.clone(),
                format!("{:.0}", m.mem.rss_mib),
                format!("{:.0}", m.mem.hwm_mib),
                m.ready_s.map_or("–".into(), |v| format!("{v:.1}")),
            ]
        }),
    );
    s
}

fn rows(s: &mut String, rows: &[Row], wasmtime_instantiates: &str) {
    let side = |x: &Side| {
        if x.status.is_ok() {
            format!(
                "{:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {:.0} µs CPU/req",
                x.rps, x.p50_us, x.p99_us, x.server_us_per_req
            )
        } else {
            x.status.to_string()
        }
    };
    table(
        s,
        "language|connections|Wisp|wasmtime serve|Wisp / wasmtime|Wisp on-demand instantiations|Wisp instantiation (ms)",
        rows.iter().map(|r| {
            let on_demand = match (r.wisp.status.is_ok(), r.wisp.on_demand, r.wisp.on_demand_pct) {
                (true, Some(n), Some(pct)) => format!("{n} of {} ({pct:.1}%)", r.wisp.requests),
                (true, _, _) => "unknown".into(),
                (false, _, _) => "–".into(),
            };
            vec![
                r.lang.into(),
                r.connections.to_string(),
                side(&r.wisp),
                side(&r.wasmtime),
                r.ratio.map_or("–".into(), |x| format!("{x:.2}x")),
                on_demand,
                r.wisp.instantiation_ms.map_or("–".into(), |v| format!("{v:.2}")),
            ]
        }),
    );
    let _ = writeln!(
        s,
        "`wasmtime serve` instantiates for {wasmtime_instantiates}. Requests/s of each round: {}.\n",
        rows.iter()
            .map(|r| {
                let fmt = |x: &Side| x.rps_rounds.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join("/");
                format!("{} c={} Wisp {} wasmtime {}", r.lang, r.connections, fmt(&r.wisp), fmt(&r.wasmtime))
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    let saturated: Vec<String> = rows
        .iter()
        .flat_map(|r| [("Wisp", &r.wisp, r), ("wasmtime", &r.wasmtime, r)])
        .filter(|(_, x, _)| x.bench_cpu_pct > crate::loadgen::SATURATED_PCT)
        .map(|(name, x, r)| format!("{name} {} c={} ({:.0}%)", r.lang, r.connections, x.bench_cpu_pct))
        .collect();
    if !saturated.is_empty() {
        let _ = writeln!(s, "Load generator above 90% of a core (a lower bound): {}.\n", saturated.join(", "));
    }
}
