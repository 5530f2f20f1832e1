//! The report: `report.json` (everything), `report.md` (tables) and `chart.svg` (latency
//! percentiles per connection count, and throughput), written by hand.

use crate::cold::ColdReport;
use crate::density::DensityReport;
use crate::inproc::Sampled;
use crate::loadgen::Latency;
use crate::sys::Machine;
use crate::warm::WarmReport;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct PerRequest {
    pub baseline: String,
    /// Which HTTP p50 of Wisp the gateway overhead was derived from.
    pub basis: String,
    pub warm_p50_1conn_us: f64,
    pub gateway_overhead_p50_us: f64,
    /// Estimated instantiate + handle cost per request inside `wasmtime serve`.
    pub per_request_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstantiateReport {
    pub status: String,
    /// Takes measured (both series).
    pub requests: u64,
    pub samples: usize,
    pub pool_size: usize,
    pub compile_s: f64,
    pub take_pooled: Sampled,
    pub take_on_demand: Sampled,
    /// On-demand p50 / pooled p50.
    pub pooled_speedup_p50: Option<f64>,
    /// In-process invoke with an empty pool (instantiate + handle, no HTTP).
    pub invoke_on_demand: Sampled,
    pub wasmtime_per_request: Vec<PerRequest>,
    pub derivation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    pub status: String,
    pub requests: u64,
    pub samples: usize,
    /// One keep-alive connection, one request at a time (back to back), through the node.
    pub http: Latency,
    pub http_cold_starts: u64,
    /// `GET /healthz` the same way: the transport floor (bench client, loopback, hyper server,
    /// tower stack) without routing to a function or invoking it.
    pub healthz: Latency,
    /// `Revision::invoke` in-process, one at a time, pool target 1, refilled before each call.
    pub inproc: Sampled,
    /// Same, back to back (no wait for the refill): some calls instantiate.
    pub inproc_back_to_back: Sampled,
    /// HTTP p50 − in-process (refilled) p50: the gateway's cost on the warm path.
    pub added_p50_us: Option<f64>,
    /// HTTP p50 − in-process back-to-back p50.
    pub added_p50_vs_back_to_back_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub added_mean_us: Option<f64>,
}

/// The warm node once scenarios 1, 2 and 5 are done.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAfter {
    /// All invocations the node counted (`wisp_invocations_total`).
    pub invocations: u64,
    pub data_dir_bytes: u64,
    /// SQLite store (wisp.db + WAL): registry plus one usage row per invocation.
    pub db_bytes: u64,
    pub db_bytes_per_invocation: f64,
    pub footprint: crate::sys::Footprint,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub mode: &'static str,
    pub command: String,
    pub total_s: f64,
    pub machine: Machine,
    pub warm: WarmReport,
    pub cold: ColdReport,
    pub instantiate: InstantiateReport,
    pub density: DensityReport,
    pub overhead: OverheadReport,
    pub wisp_node_after_http_scenarios: Option<NodeAfter>,
    pub notes: Vec<String>,
}

pub fn write(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    std::fs::write(dir.join("chart.svg"), svg(&report.warm))?;
    Ok(())
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map_or("–".into(), f)
}

fn ratio(x: Option<f64>) -> String {
    x.map_or("–".into(), |r| format!("{r:.2}×"))
}

fn kib(x: Option<f64>) -> String {
    x.map_or("–".into(), |k| format!("{k:.1} KiB"))
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "# Wisp benchmark report ({})\n", r.mode);
    let _ = writeln!(s, "Reproduce: `{}` (took {:.0} s).\n", r.command, r.total_s);
    let _ = writeln!(s, "| machine | |\n| --- | --- |");
    let _ =
        writeln!(s, "| git commit | `{}`{} |", m.git_commit, if m.git_dirty { " (uncommitted changes)" } else { "" });
    let _ = writeln!(s, "| CPU | {} × {} |", m.cores, m.cpu_model);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| memory | {:.1} GiB |", m.mem_total_gib);
    let _ = writeln!(s, "| load average at start | {} |", m.loadavg_at_start);
    let _ = writeln!(s, "| vm.max_map_count | {} |", m.vm_max_map_count.map_or("?".into(), |v| v.to_string()));
    let _ = writeln!(s, "| open files limit | {} |", m.open_files_limit.map_or("?".into(), |v| v.to_string()));
    let _ = writeln!(s, "| rustc | {} |", m.rustc);
    let _ =
        writeln!(s, "| baseline | {} |", m.wasmtime_version.as_deref().unwrap_or("not installed (run bench/setup.sh)"));
    let _ = writeln!(s, "| function | `{}` ({} bytes) |\n", m.hello_wasm, m.hello_wasm_bytes);

    // 1. warm
    let w = &r.warm;
    let _ = writeln!(s, "## 1. Warm: `hello`, keep-alive HTTP/1.1, closed loop\n");
    let _ = writeln!(
        s,
        "{} alternating round(s) per target and connection count, {:.1} s measured after {:.1} s warm-up each; \
         latencies merged over the rounds. Wisp at `/fn/hello` (`wisp up --deploy-dir`, defaults: `min_warm=1`, \
         `--max-ready 64`), `wasmtime serve -S cli` at `/`. Load generator: one thread. CPU in % of one core over the \
         measured window: bench = the load generator, server = the process under test, other = everything else on \
         the machine (noise; the bench shares the machine).\n",
        w.rounds, w.duration_s, w.warmup_s
    );
    let _ = writeln!(s, "![latency percentiles and throughput](chart.svg)\n");
    let _ = writeln!(
        s,
        "| target | conns | req/s | rounds req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | bench CPU | server CPU | server CPU µs/req | other CPU | cold starts |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in &w.rows {
        if row.status != "ok" {
            let _ = writeln!(s, "| {} | {} | {} | | | | | | | | | | | | |", row.target, row.connections, row.status);
            continue;
        }
        let l = &row.latency;
        let rounds: Vec<String> = row.rps_rounds.iter().map(|x| f0(*x)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | **{}** | {} | {} | {} | **{}** | {} | {} | {} | {:.0}%{} | {} | {} | {} | {} |",
            row.target,
            row.connections,
            f0(row.rps),
            rounds.join(" / "),
            f1(l.p50_us),
            f1(l.p90_us),
            f1(l.p99_us),
            f1(l.p999_us),
            f1(l.max_us),
            row.errors + row.non_2xx,
            row.bench_cpu_pct,
            if row.loadgen_saturated { " ⚠ saturated" } else { "" },
            opt(row.server_cpu_pct, |x| format!("{x:.0}%")),
            opt(row.server_cpu_us_per_req, f1),
            opt(row.other_cpu_pct, |x| format!("{x:.0}%")),
            row.cold_starts.map_or("".into(), |c| format!("{c} of {}", row.answered)),
        );
    }
    let _ =
        writeln!(s, "\nWisp / baseline (throughput above 1 = Wisp serves more; p99 below 1 = Wisp's tail is lower):\n");
    let _ = writeln!(
        s,
        "| conns | baseline | throughput ratio | p50 ratio | p99 ratio |\n| ---: | --- | ---: | ---: | ---: |"
    );
    for x in &w.ratios {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            x.connections,
            x.baseline,
            x.throughput.map_or("skipped".into(), |v| format!("{v:.2}×")),
            ratio(x.p50),
            ratio(x.p99)
        );
    }
    if let Some(top) = w.connection_levels.iter().max()
        && let Some(row) = w.row("wisp", *top)
        && !row.server_threads_pct.is_empty()
    {
        let mut threads: Vec<_> = row.server_threads_pct.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let list: Vec<String> = threads.iter().map(|(n, p)| format!("`{n}` {p:.0}%")).collect();
        let _ = writeln!(
            s,
            "\nWisp node CPU by thread at {top} connections (last round, % of one core): {}.",
            list.join(", ")
        );
    }
    let _ = writeln!(s, "\n### Open loop (fixed rate, latency from the intended send time)\n");
    let _ = writeln!(
        s,
        "Rate = 50% of the target's own closed-loop throughput at the highest connection count, then (when both ran) \
         50% of the lower of the two for both, so tails are also compared at the same offered load. Requests are \
         spread over that many connections; a request that finds every connection busy waits, and the wait counts. `unsent` = \
         scheduled in the window but never sent (rate above capacity). Pacer lag = how late the load generator \
         itself released requests (included in the latencies).\n"
    );
    let _ = writeln!(
        s,
        "| target | rate basis | rate req/s | achieved | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | unsent | pacer lag p99 µs | bench CPU | server CPU | server CPU µs/req | other CPU |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for o in &w.open_loop {
        if o.status != "ok" {
            let _ = writeln!(s, "| {} | {} | {} | | | | | | | | | | | | |", o.target, o.basis, o.status);
            continue;
        }
        let l = &o.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} | {} |",
            o.target,
            o.basis,
            f0(o.rate_rps),
            f0(o.achieved_rps),
            f1(l.p50_us),
            f1(l.p90_us),
            f1(l.p99_us),
            f1(l.p999_us),
            f1(l.max_us),
            o.unsent,
            f1(o.pacer_lag_p99_us),
            o.bench_cpu_pct,
            opt(o.server_cpu_pct, |x| format!("{x:.0}%")),
            opt(o.server_cpu_us_per_req, f1),
            opt(o.other_cpu_pct, |x| format!("{x:.0}%"))
        );
    }

    if let Some((_, total)) = w.wisp_invocation_buckets.iter().find(|(le, _)| le.is_infinite())
        && *total > 0
    {
        let share = |bound: f64| {
            w.wisp_invocation_buckets.iter().filter(|(le, _)| *le <= bound).map(|(_, n)| *n).max().unwrap_or(0) as f64
                / *total as f64
                * 100.0
        };
        let _ = writeln!(
            s,
            "\nWisp's own invocation time (`wisp_invocation_duration_seconds`, inside the runtime, gateway excluded) over \
             all {} invocations of the warm and open-loop runs: {:.1}% ≤ 100 µs, {:.1}% ≤ 1 ms, {:.2}% ≤ 10 ms, {:.3}% > 10 ms.",
            total,
            share(100.0),
            share(1000.0),
            share(10_000.0),
            100.0 - share(10_000.0)
        );
    }

    // 2. cold
    let c = &r.cold;
    let _ = writeln!(s, "\n## 2. Cold: first request after deploy with `min_warm=0`\n");
    if c.status != "ok" {
        let _ = writeln!(s, "{}\n", c.status);
    }
    let _ = writeln!(
        s,
        "{} functions deployed in {:.2} s (same bytes: compiled once). First request to each over an open keep-alive \
         connection. `/metrics` `wisp_cold_starts_total` = 1 for **{} of {}** (all cold: {}).\n",
        c.functions, c.deploy_s, c.verified_cold, c.functions, c.all_cold
    );
    let _ = writeln!(
        s,
        "Each function: 5 ms idle, then `GET /fn/hello` (warm control, wakes idle threads), then the first request \
         to the new function, then a second one right away (on demand too unless the scaler ticked in between: {} of \
         {} were cold).\n",
        c.second_cold, c.functions
    );
    let _ = writeln!(s, "| µs | min | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, l) in [
        ("**first request** (cold)", &c.latency),
        ("second request", &c.second),
        ("warm control (hello)", &c.warm_control),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            f1(l.min_us),
            f1(l.p50_us),
            f1(l.p90_us),
            f1(l.p99_us),
            f1(l.max_us)
        );
    }
    let _ = writeln!(
        s,
        "\nFirst request vs Wisp's warm p50 at 1 connection ({} µs, scenario 1): **{}** at p50, {} at p99.\n",
        opt(c.warm_p50_us, f1),
        ratio(c.p50_vs_warm_p50),
        ratio(c.p99_vs_warm_p50)
    );

    // 3. instantiate
    let i = &r.instantiate;
    let _ = writeln!(s, "\n## 3. Instantiate: pooled take vs on demand (in-process `Revision::probe_take`)\n");
    if i.status != "ok" {
        let _ = writeln!(s, "{}\n", i.status);
    }
    let _ = writeln!(
        s,
        "{} samples each (after warm-up); pooled = {} ready instances, refilled before each take; on demand = target 0. \
         Compile (cranelift, uncached) took {:.2} s.\n",
        i.samples, i.pool_size, i.compile_s
    );
    let _ =
        writeln!(s, "| µs | p50 | p90 | p99 | p99.9 | max | cold |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, x) in [
        ("take from ready pool", &i.take_pooled),
        ("take on demand (instantiate)", &i.take_on_demand),
        ("invoke on demand (instantiate + handle, no HTTP)", &i.invoke_on_demand),
    ] {
        let l = &x.latency;
        let _ = writeln!(
            s,
            "| {name} | **{}** | {} | **{}** | {} | {} | {} |",
            f1(l.p50_us),
            f1(l.p90_us),
            f1(l.p99_us),
            f1(l.p999_us),
            f1(l.max_us),
            x.cold
        );
    }
    let _ = writeln!(s, "\nOn demand / pooled at p50: {}.\n", ratio(i.pooled_speedup_p50));
    let _ = writeln!(s, "{}\n", i.derivation);
    if !i.wasmtime_per_request.is_empty() {
        let _ = writeln!(
            s,
            "| baseline | overhead from | warm p50, 1 conn (µs) | − gateway overhead p50 (µs) | = per-request cost (µs) |"
        );
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: |");
        for p in &i.wasmtime_per_request {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | **{}** |",
                p.baseline,
                p.basis,
                f1(p.warm_p50_1conn_us),
                f1(p.gateway_overhead_p50_us),
                f1(p.per_request_us)
            );
        }
    }

    // 4. density
    let d = &r.density;
    let _ = writeln!(s, "\n## 4. Density: K functions per node\n");
    let _ = writeln!(
        s,
        "One node per K (`--pool-instances K+100 --max-ready 1`): K idle functions (`min_warm=0`), then K warm ones \
         (`min_warm=1`, one ready instance each), deployed over 4 connections; `idle_timeout=1h` so the scaler keeps \
         them. RSS per idle function = (RSS idle − RSS after the first deploy, which compiles and loads the component \
         once) / (K − 1); per warm function = (RSS warm − RSS idle) / K; per warm instance = the difference of the two. At small K \
         these per-function figures are within the allocator's noise (memory freed after the compile is returned \
         lazily); read them at the largest K that worked. vm.max_map_count = {}; open files limit = {}; density budget {:.0} s.\n",
        d.vm_max_map_count.map_or("?".into(), |v| v.to_string()),
        d.open_files_limit.map_or("?".into(), |v| v.to_string()),
        d.budget_s
    );
    let _ = writeln!(
        s,
        "| K | status | deploys/s | RSS MiB: empty / 1st deployed / K idle / +K warm | per idle fn | per warm fn | per warm instance | ready | maps: empty / idle / warm | maps per warm instance | VmSize TiB | fds |"
    );
    let _ = writeln!(s, "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |");
    for lv in &d.levels {
        let mib = |f: Option<crate::sys::Footprint>| f.map_or("–".into(), |f| f0(f.rss_kib as f64 / 1024.0));
        let maps = |f: Option<crate::sys::Footprint>| f.map_or("–".into(), |f| f.maps.to_string());
        let last = lv.warm.or(lv.idle).or(lv.base).or(lv.empty);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} / {} / {} | {} | {} | {} | {}/{} | {} / {} / {} | {} | {} | {} |",
            lv.functions,
            lv.status,
            f0(lv.deploys_per_s),
            mib(lv.empty),
            mib(lv.base),
            mib(lv.idle),
            mib(lv.warm),
            kib(lv.rss_per_idle_function_kib),
            kib(lv.rss_per_warm_function_kib),
            kib(lv.rss_per_warm_instance_kib),
            lv.warm_ready,
            lv.functions,
            maps(lv.empty),
            maps(lv.idle),
            maps(lv.warm),
            opt(lv.maps_per_warm_instance, |x| format!("{x:.1}")),
            last.map_or("–".into(), |f| format!("{:.1}", f.vm_size_kib as f64 / (1024.0 * 1024.0 * 1024.0))),
            last.map_or("–".into(), |f| f.fds.to_string()),
        );
    }
    match &d.first_limit {
        Some(fl) => {
            let _ = writeln!(
                s,
                "\n**First limit: {}** at K = {} ({}).\n\nError: `{}`\n\nEvidence: {}",
                fl.resource,
                fl.functions,
                fl.phase,
                fl.error.replace('`', "'"),
                fl.evidence
            );
        }
        None => {
            let _ = writeln!(s, "\nNo limit reached at the levels run.");
        }
    }
    if !d.map_count_model.is_empty() {
        let _ = writeln!(s, "\nMap-count model from the measured levels: {}.", d.map_count_model);
    }
    for p in &d.probes {
        let _ = writeln!(s, "\nAlso: {}: `{}`", p.what, p.result.replace('`', "'"));
    }

    // 5. overhead
    let o = &r.overhead;
    let _ = writeln!(s, "\n## 5. Overhead: through the node vs direct `Revision::invoke`\n");
    if o.status != "ok" {
        let _ = writeln!(s, "{}\n", o.status);
    }
    let _ = writeln!(
        s,
        "{} requests per series, one at a time. HTTP: one keep-alive connection to the node, `/fn/hello` \
         (`min_warm=1`) and `/healthz` alternating, back to back. In-process: `Revision::invoke` on a multi-thread tokio runtime in the bench, \
         pool target 1, either waiting (spinning) until the pool is refilled before each call (the warm path) or \
         back to back. `cold` = calls that instantiated on demand.\n",
        o.samples
    );
    let _ = writeln!(
        s,
        "| µs | mean | p50 | p90 | p99 | p99.9 | cold |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (name, l, cold) in [
        ("HTTP through the node", &o.http, o.http_cold_starts),
        ("HTTP `/healthz` on the node (no function)", &o.healthz, 0),
        ("in-process invoke, pool refilled", &o.inproc.latency, o.inproc.cold),
        ("in-process invoke, back to back", &o.inproc_back_to_back.latency, o.inproc_back_to_back.cold),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {cold} |",
            f1(l.mean_us),
            f1(l.p50_us),
            f1(l.p90_us),
            f1(l.p99_us),
            f1(l.p999_us)
        );
    }
    let _ = writeln!(
        s,
        "| **added by the gateway** (HTTP − in-process refilled) | {} | **{}** | | {} | | |",
        opt(o.added_mean_us, f1),
        opt(o.added_p50_us, f1),
        opt(o.added_p99_us, f1)
    );
    let _ = writeln!(
        s,
        "\nAgainst the back-to-back in-process series the gateway adds {} µs at p50. Split at p50: transport floor \
         (`/healthz`: client, loopback, hyper, tower) {} µs; function routing + invoke (hello − healthz) {} µs, of \
         which the in-process invoke is {} µs.",
        opt(o.added_p50_vs_back_to_back_us, f1),
        f1(o.healthz.p50_us),
        f1(o.http.p50_us - o.healthz.p50_us),
        f1(o.inproc.latency.p50_us)
    );
    let _ = writeln!(
        s,
        "\nThe added latency includes the bench's own HTTP client and the loopback round trip, not only the node's \
         hyper server, tower stack, routing and metrics."
    );

    if let Some(n) = &r.wisp_node_after_http_scenarios {
        let _ = writeln!(
            s,
            "\n## The warm node afterwards\n\nAfter scenarios 1, 2 and 5: {} invocations; SQLite store (registry + usage \
             ledger, one row per invocation) {:.1} MiB = {:.0} bytes per invocation; data dir {:.1} MiB; RSS {:.0} MiB, \
             {} threads, {} fds.",
            n.invocations,
            n.db_bytes as f64 / (1 << 20) as f64,
            n.db_bytes_per_invocation,
            n.data_dir_bytes as f64 / (1 << 20) as f64,
            n.footprint.rss_kib as f64 / 1024.0,
            n.footprint.threads,
            n.footprint.fds
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

const COLORS: [(&str, &str); 3] = [("wisp", "#d9480f"), ("wasmtime-default", "#1971c2"), ("wasmtime-tuned", "#2f9e44")];

fn color(target: &str) -> &'static str {
    COLORS.iter().find(|(n, _)| *n == target).map_or("#666", |(_, c)| c)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Latency percentiles (log scale) per connection count, and throughput bars.
pub fn svg(w: &WarmReport) -> String {
    let levels = &w.connection_levels;
    let targets: Vec<&str> = COLORS.iter().map(|(n, _)| *n).collect();
    let (panel_w, panel_h, top, left, gap) = (250.0, 260.0, 60.0, 60.0, 40.0);
    let width = left + (levels.len() as f64 + 1.0) * (panel_w + gap) + 20.0;
    let height = top + panel_h + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15" font-weight="bold">hello: Wisp vs wasmtime serve (closed loop, keep-alive HTTP/1.1)</text>"#
    );

    // Shared log-scale latency axis.
    let lat: Vec<f64> = w
        .rows
        .iter()
        .filter(|r| r.status == "ok")
        .flat_map(|r| [r.latency.p50_us, r.latency.p90_us, r.latency.p99_us, r.latency.p999_us])
        .filter(|v| *v > 0.0)
        .collect();
    let lo = lat.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = lat.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (lo_d, hi_d) = (lo.log10().floor(), hi.log10().ceil());
    let y_of = |v: f64| top + panel_h - (v.max(1e-9).log10() - lo_d) / (hi_d - lo_d) * panel_h;
    let pcts = ["p50", "p90", "p99", "p99.9"];
    for (pi, &conns) in levels.iter().enumerate() {
        let x0 = left + pi as f64 * (panel_w + gap);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-weight="bold">latency, {conns} connection(s)</text>"#,
            x0,
            top - 10.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{top:.1}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#999"/>"##
        );
        let mut d = lo_d;
        while d <= hi_d {
            let y = y_of(10f64.powf(d));
            let _ =
                writeln!(s, r##"<line x1="{x0:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/>"##, x0 + panel_w);
            if pi == 0 {
                let label =
                    if d >= 3.0 { format!("{} ms", 10f64.powf(d - 3.0)) } else { format!("{} µs", 10f64.powf(d)) };
                let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#, x0 - 5.0, y + 4.0);
            }
            d += 1.0;
        }
        let xs: Vec<f64> = (0..pcts.len()).map(|i| x0 + 25.0 + i as f64 * (panel_w - 50.0) / 3.0).collect();
        for (x, p) in xs.iter().zip(pcts) {
            let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{p}</text>"#, top + panel_h + 15.0);
        }
        for t in &targets {
            let Some(row) = w.rows.iter().find(|r| r.target == *t && r.connections == conns && r.status == "ok") else {
                continue;
            };
            let vals = [row.latency.p50_us, row.latency.p90_us, row.latency.p99_us, row.latency.p999_us];
            let pts: Vec<String> = xs.iter().zip(vals).map(|(x, v)| format!("{x:.1},{:.1}", y_of(v))).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                pts.join(" "),
                color(t)
            );
            for (x, v) in xs.iter().zip(vals) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="{}"><title>{t} {conns} conns: {v:.1} µs</title></circle>"#,
                    y_of(v),
                    color(t)
                );
            }
        }
    }

    // Throughput bars.
    let x0 = left + levels.len() as f64 * (panel_w + gap) + 20.0;
    let _ = writeln!(s, r#"<text x="{x0:.1}" y="{:.1}" font-weight="bold">throughput (req/s)</text>"#, top - 10.0);
    let _ = writeln!(
        s,
        r##"<rect x="{x0:.1}" y="{top:.1}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#999"/>"##
    );
    let max_rps = w.rows.iter().map(|r| r.rps).fold(0.0, f64::max).max(1.0);
    let nice = nice_ceiling(max_rps);
    for i in 0..=4 {
        let v = nice * i as f64 / 4.0;
        let y = top + panel_h - v / nice * panel_h;
        let _ = writeln!(s, r##"<line x1="{x0:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/>"##, x0 + panel_w);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}">{v:.0}</text>"#, x0 + panel_w + 4.0, y + 4.0);
    }
    let group_w = panel_w / levels.len().max(1) as f64;
    let bar_w = (group_w - 16.0) / targets.len() as f64;
    for (gi, &conns) in levels.iter().enumerate() {
        let gx = x0 + gi as f64 * group_w + 8.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{conns} conn</text>"#,
            gx + (group_w - 16.0) / 2.0,
            top + panel_h + 15.0
        );
        for (ti, t) in targets.iter().enumerate() {
            let Some(row) = w.rows.iter().find(|r| r.target == *t && r.connections == conns && r.status == "ok") else {
                continue;
            };
            let h = row.rps / nice * panel_h;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{t} {conns} conns: {:.0} req/s</title></rect>"#,
                gx + ti as f64 * bar_w,
                top + panel_h - h,
                bar_w - 2.0,
                color(t),
                row.rps
            );
        }
    }

    // Legend.
    let ly = top + panel_h + 45.0;
    let mut lx = left;
    for t in &targets {
        let status = w.rows.iter().find(|r| r.target == *t).map(|r| r.status.clone()).unwrap_or_default();
        let label = if status == "ok" || status.is_empty() { t.to_string() } else { format!("{t} ({status})") };
        let _ = writeln!(s, r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{}"/>"#, ly - 9.0, color(t));
        let _ = writeln!(s, r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#, lx + 18.0, esc(&label));
        lx += 40.0 + label.len() as f64 * 6.2;
    }
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{:.1}" fill="#555">Latency axis is logarithmic; each point merges {} round(s) of {:.1} s.</text>"##,
        ly + 22.0,
        w.rounds,
        w.duration_s
    );
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}
