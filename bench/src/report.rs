//! The report: `report.json` (everything), `report.md` (tables, one-line captions; the prose
//! lives in bench/README.md) and `chart.svg` (plotters).

use crate::cold::{ColdReport, OverheadReport};
use crate::density::DensityReport;
use crate::loadgen::{Latency, Target};
use crate::sys::{Footprint, Machine};
use crate::warm::WarmReport;
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// The warm node once the HTTP scenarios are done.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAfter {
    /// All invocations the node counted (`wisp_invocations_total`).
    pub invocations: u64,
    pub data_dir_bytes: u64,
    /// SQLite stores (every `*.db*` file in the data dir, WAL included): registry and usage ledger.
    pub db_bytes: u64,
    pub db_bytes_per_invocation: f64,
    pub footprint: Footprint,
}

pub fn node_after(wisp: &Target, data: &Path) -> Option<NodeAfter> {
    std::thread::sleep(std::time::Duration::from_millis(200)); // the usage ledger commits every 20 ms
    let text = crate::metrics(wisp.addr).ok()?;
    let invocations = wisp_testkit::metric_samples(&text)
        .filter(|(s, _)| s.starts_with("wisp_invocations_total{"))
        .map(|(_, v)| v)
        .sum::<f64>() as u64;
    let db_bytes = std::fs::read_dir(data)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".db"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    Some(NodeAfter {
        invocations,
        data_dir_bytes: crate::dir_size(data),
        db_bytes,
        db_bytes_per_invocation: db_bytes as f64 / invocations.max(1) as f64,
        footprint: crate::sys::footprint(wisp.pid?),
    })
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
    pub density: DensityReport,
    pub overhead: OverheadReport,
    pub wisp_node_after_http_scenarios: Option<NodeAfter>,
    pub notes: Vec<String>,
}

pub fn write(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    chart(&dir.join("chart.svg"), &report.warm)
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn opt<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or("–".into(), f)
}

fn pct(x: f64) -> String {
    format!("{x:.0}%")
}

fn ratio(x: Option<f64>) -> String {
    opt(x, |r| format!("{r:.2}×"))
}

fn mib(kib: u64) -> String {
    f0(kib as f64 / 1024.0)
}

/// A Markdown table; columns whose header starts with '>' are right-aligned.
fn table(s: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let names: Vec<&str> = header.iter().map(|h| h.trim_start_matches('>')).collect();
    let align: Vec<&str> = header.iter().map(|h| if h.starts_with('>') { "---:" } else { "---" }).collect();
    let _ = writeln!(s, "| {} |\n| {} |", names.join(" | "), align.join(" | "));
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

fn latency_cells(l: &Latency) -> Vec<String> {
    [l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us].map(f1).to_vec()
}

/// Section heading, its status unless ok, and its body unless skipped.
fn section(s: &mut String, title: &str, status: &crate::Status, body: impl FnOnce(&mut String)) {
    let _ = writeln!(s, "## {title}\n");
    if !status.is_ok() {
        let _ = writeln!(s, "{status}\n");
    }
    if !matches!(status, crate::Status::Skipped(_)) {
        body(s);
    }
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "# Wisp benchmark report ({})\n\nReproduce: `{}` (took {:.0} s). How to read it: bench/README.md.\n",
        r.mode, r.command, r.total_s
    );
    let dirty = if m.git_dirty { " (uncommitted changes)" } else { "" };
    let machine = [
        ("git commit", format!("`{}`{dirty}", m.git_commit)),
        ("CPU", format!("{} × {}", m.cores, m.cpu_model)),
        ("kernel", m.kernel.clone()),
        ("memory", format!("{:.1} GiB", m.mem_total_gib)),
        ("load average at start", m.loadavg_at_start.clone()),
        ("vm.max_map_count", opt(m.vm_max_map_count, |v| v.to_string())),
        ("open files limit", opt(m.open_files_limit, |v| v.to_string())),
        ("rustc", m.rustc.clone()),
        ("baseline", m.wasmtime_version.clone().unwrap_or_else(|| "not installed (run bench/setup.sh)".into())),
        ("function", format!("`{}` ({} bytes)", m.hello_wasm, m.hello_wasm_bytes)),
    ];
    table(&mut s, &["machine", ""], machine.map(|(k, v)| vec![k.to_string(), v]));

    section(&mut s, "Warm: `hello`, keep-alive HTTP/1.1, closed loop", &r.warm.status, |s| warm(s, &r.warm));
    section(&mut s, "Cold: first request after deploy with `min_warm=0`", &r.cold.status, |s| cold(s, &r.cold));
    section(&mut s, "Density: K functions per node", &r.density.status, |s| density(s, &r.density));
    section(&mut s, "Overhead: one request at a time through the node", &r.overhead.status, |s| {
        overhead(s, &r.overhead)
    });
    if let Some(n) = &r.wisp_node_after_http_scenarios {
        let _ = writeln!(
            s,
            "## The warm node afterwards\n\n{} invocations; SQLite stores {:.1} MiB ({:.0} B per invocation); data dir {:.1} MiB; RSS {} MiB, {} threads, {} fds.\n",
            n.invocations,
            n.db_bytes as f64 / (1 << 20) as f64,
            n.db_bytes_per_invocation,
            n.data_dir_bytes as f64 / (1 << 20) as f64,
            mib(n.footprint.rss_kib),
            n.footprint.threads,
            n.footprint.fds
        );
    }
    if !r.notes.is_empty() {
        s.push_str("## Notes\n\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn warm(s: &mut String, w: &WarmReport) {
    let _ = writeln!(
        s,
        "{} round(s) × {:.1} s after {:.1} s warm-up, alternating targets; CPU in % of one core.\n",
        w.rounds, w.duration_s, w.warmup_s
    );
    let _ = writeln!(s, "![latency percentiles and throughput](chart.svg)\n");
    let header = [
        "target",
        ">conns",
        ">req/s",
        "rounds req/s",
        ">p50 µs",
        ">p90 µs",
        ">p99 µs",
        ">p99.9 µs",
        ">max µs",
        ">errors",
        ">bench CPU",
        ">server CPU",
        ">server CPU µs/req",
        ">other CPU",
        ">cold starts",
    ];
    table(
        s,
        &header,
        w.rows.iter().map(|row| {
            let mut cells = vec![row.target.clone(), row.connections.to_string()];
            if !row.status.is_ok() {
                cells.push(row.status.to_string());
                return cells;
            }
            cells.push(format!("**{}**", f0(row.rps)));
            cells.push(row.rps_rounds.iter().map(|x| f0(*x)).collect::<Vec<_>>().join(" / "));
            cells.extend(latency_cells(&row.latency));
            cells.extend([
                (row.errors + row.non_2xx).to_string(),
                format!("{}{}", pct(row.bench_cpu_pct), if row.loadgen_saturated { " ⚠ saturated" } else { "" }),
                opt(row.server_cpu_pct, pct),
                opt(row.server_cpu_us_per_req, f1),
                opt(row.other_cpu_pct, pct),
                opt(row.cold_starts, |c| format!("{c} of {}", row.answered)),
            ]);
            cells
        }),
    );
    let _ =
        writeln!(s, "Wisp / baseline (throughput above 1 = Wisp serves more; p99 below 1 = Wisp's tail is lower):\n");
    table(
        s,
        &[">conns", "baseline", ">throughput", ">p50", ">p99"],
        w.ratios.iter().map(|x| {
            vec![x.connections.to_string(), x.baseline.clone(), ratio(x.throughput), ratio(x.p50), ratio(x.p99)]
        }),
    );
    if let Some(row) = w.connection_levels.iter().max().and_then(|top| w.row("wisp", *top)) {
        let mut threads: Vec<_> = row.server_threads_pct.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let list: Vec<String> = threads.iter().map(|(n, p)| format!("`{n}` {p:.0}%")).collect();
        let _ =
            writeln!(s, "Wisp CPU by thread at {} connections (last round): {}.\n", row.connections, list.join(", "));
    }
    let _ = writeln!(s, "### Open loop (fixed rate, latency from the intended send time)\n");
    let header = [
        "target",
        "rate basis",
        ">rate req/s",
        ">achieved",
        ">p50 µs",
        ">p90 µs",
        ">p99 µs",
        ">p99.9 µs",
        ">max µs",
        ">unsent",
        ">pacer lag p99 µs",
        ">bench CPU",
        ">server CPU",
        ">server CPU µs/req",
        ">other CPU",
    ];
    table(
        s,
        &header,
        w.open_loop.iter().map(|o| {
            let mut cells = vec![o.target.clone(), o.basis.clone()];
            if !o.status.is_ok() {
                cells.push(o.status.to_string());
                return cells;
            }
            cells.extend([f0(o.rate_rps), f0(o.achieved_rps)]);
            cells.extend(latency_cells(&o.latency));
            cells.extend([o.unsent.to_string(), f1(o.pacer_lag_p99_us), pct(o.bench_cpu_pct)]);
            cells.extend([opt(o.server_cpu_pct, pct), opt(o.server_cpu_us_per_req, f1), opt(o.other_cpu_pct, pct)]);
            cells
        }),
    );
}

fn cold(s: &mut String, c: &ColdReport) {
    let _ = writeln!(
        s,
        "{} functions deployed in {:.2} s; `wisp_cold_starts_total` = 1 for **{} of {}**; second request cold for {}.\n",
        c.functions, c.deploy_s, c.verified_cold, c.functions, c.second_cold
    );
    let rows = [
        ("**first request** (cold)", &c.latency),
        ("second request", &c.second),
        ("warm control (hello)", &c.warm_control),
    ];
    table(
        s,
        &["µs", ">min", ">p50", ">p90", ">p99", ">max"],
        rows.map(|(name, l)| vec![name.into(), f1(l.min_us), f1(l.p50_us), f1(l.p90_us), f1(l.p99_us), f1(l.max_us)]),
    );
    let _ = writeln!(
        s,
        "First request / Wisp's warm p50 at 1 connection ({} µs): **{}** at p50, {} at p99.\n",
        opt(c.warm_p50_us, f1),
        ratio(c.p50_vs_warm_p50),
        ratio(c.p99_vs_warm_p50)
    );
}

fn density(s: &mut String, d: &DensityReport) {
    let _ = writeln!(
        s,
        "vm.max_map_count {}; open files limit {}; budget {:.0} s.\n",
        opt(d.vm_max_map_count, |v| v.to_string()),
        opt(d.open_files_limit, |v| v.to_string()),
        d.budget_s
    );
    let header = [
        ">K",
        "status",
        ">deploys/s",
        "RSS MiB: empty / 1st / K idle / +K warm",
        ">per idle fn KiB",
        ">per warm fn KiB",
        ">per warm instance KiB",
        ">ready",
        "maps: empty / idle / warm",
        ">maps per warm instance",
        ">VmSize TiB",
        ">fds",
    ];
    table(
        s,
        &header,
        d.levels.iter().map(|lv| {
            let rss = |f: Option<Footprint>| opt(f, |f| mib(f.rss_kib));
            let maps = |f: Option<Footprint>| opt(f, |f| f.maps.to_string());
            let last = lv.warm.or(lv.idle).or(lv.base).or(lv.empty);
            vec![
                lv.functions.to_string(),
                lv.status.to_string(),
                f0(lv.deploys_per_s),
                format!("{} / {} / {} / {}", rss(lv.empty), rss(lv.base), rss(lv.idle), rss(lv.warm)),
                opt(lv.rss_per_idle_function_kib, f1),
                opt(lv.rss_per_warm_function_kib, f1),
                opt(lv.rss_per_warm_instance_kib, f1),
                format!("{}/{}", lv.warm_ready, lv.functions),
                format!("{} / {} / {}", maps(lv.empty), maps(lv.idle), maps(lv.warm)),
                opt(lv.maps_per_warm_instance, f1),
                opt(last, |f| format!("{:.1}", f.vm_size_kib as f64 / (1u64 << 30) as f64)),
                opt(last, |f| f.fds.to_string()),
            ]
        }),
    );
    match &d.first_limit {
        Some(fl) => {
            let _ = writeln!(
                s,
                "**First limit: {}** at K = {} ({}). Evidence: {}\n",
                fl.resource,
                fl.functions,
                fl.phase,
                fl.evidence.replace('`', "'")
            );
        }
        None => s.push_str("No limit reached at the levels run.\n\n"),
    }
    if let (Some(model), Some(k)) = (&d.map_count_model, d.max_warm_by_map_count) {
        let _ = writeln!(s, "Map-count model: {model}; vm.max_map_count allows K ≈ {k:.0} warm functions.\n");
    }
    if let Some(p) = &d.probe {
        let _ = writeln!(s, "Address-space probe: `{}`\n", p.replace('`', "'"));
    }
}

fn overhead(s: &mut String, o: &OverheadReport) {
    let rows = [
        ("`/fn/hello` over HTTP", &o.http, o.http_cold_starts.to_string()),
        ("`/healthz` over HTTP (no function)", &o.healthz, "".into()),
    ];
    table(
        s,
        &["µs", ">mean", ">p50", ">p90", ">p99", ">p99.9", ">cold"],
        rows.map(|(name, l, cold)| {
            vec![name.into(), f1(l.mean_us), f1(l.p50_us), f1(l.p90_us), f1(l.p99_us), f1(l.p999_us), cold]
        }),
    );
    let _ = writeln!(
        s,
        "Inside the runtime (`wisp_invocation_duration_seconds`, mean): {} µs; **added by gateway, transport and client (mean): {} µs**; hello − healthz at p50: {} µs.\n",
        opt(o.runtime_mean_us, f1),
        opt(o.added_mean_us, f1),
        f1(o.function_p50_over_healthz_us)
    );
}

const COLORS: [(&str, RGBColor); 3] = [
    ("wisp", RGBColor(0xd9, 0x48, 0x0f)),
    ("wasmtime-default", RGBColor(0x19, 0x71, 0xc2)),
    ("wasmtime-tuned", RGBColor(0x2f, 0x9e, 0x44)),
];

/// Left: p50 (dashed) and p99 latency against connections, log scale; right: throughput.
fn chart(path: &Path, w: &WarmReport) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(500);
    let ok = || w.rows.iter().filter(|r| r.status.is_ok());
    let max_conns = w.connection_levels.iter().copied().max().unwrap_or(1) as f64;
    let lo = ok().map(|r| r.latency.p50_us).fold(f64::INFINITY, f64::min).clamp(1.0, 1e6);
    let hi = ok().map(|r| r.latency.p99_us).fold(lo * 10.0, f64::max);
    let mut lat = ChartBuilder::on(&left)
        .caption("hello latency (µs): p50 dashed, p99 solid", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d((0.8..max_conns * 1.25).log_scale(), (lo / 2.0..hi * 2.0).log_scale())
        .map_err(err)?;
    lat.configure_mesh()
        .x_desc("connections")
        .x_label_formatter(&|x| f0(*x))
        .y_label_formatter(&|y| f0(*y))
        .draw()
        .map_err(err)?;
    let max_rps = ok().map(|r| r.rps).fold(1.0, f64::max);
    let mut tput = ChartBuilder::on(&right)
        .caption("throughput (req/s)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(65)
        .build_cartesian_2d((0.8..max_conns * 1.25).log_scale(), 0.0..max_rps * 1.15)
        .map_err(err)?;
    tput.configure_mesh()
        .x_desc("connections")
        .x_label_formatter(&|x| f0(*x))
        .y_label_formatter(&|y| f0(*y))
        .draw()
        .map_err(err)?;
    for (name, color) in COLORS {
        let rows: Vec<_> = ok().filter(|r| r.target == name).collect();
        let points = |f: fn(&crate::warm::WarmRow) -> f64| rows.iter().map(move |r| (r.connections as f64, f(r)));
        let style = color.stroke_width(2);
        lat.draw_series(DashedLineSeries::new(points(|r| r.latency.p50_us), 6, 4, style)).map_err(err)?;
        lat.draw_series(LineSeries::new(points(|r| r.latency.p99_us), style))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
        lat.draw_series(points(|r| r.latency.p99_us).map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        tput.draw_series(LineSeries::new(points(|r| r.rps), style)).map_err(err)?;
        tput.draw_series(points(|r| r.rps).map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
    }
    lat.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
