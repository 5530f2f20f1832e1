//! The report: `report.json` (everything), `report.md` (tables, one-line captions; the prose
//! lives in bench/README.md) and `chart.svg` (plotters).

use crate::cold::{ColdReport, OverheadReport};
use crate::density::DensityReport;
use crate::loadgen::{Hist, Latency, Run};
use crate::sys::Machine;
use crate::warm::{CONNECTIONS, WarmReport, WarmRow};
use crate::{Section, Status};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub command: String,
    pub total_s: f64,
    pub machine: Machine,
    pub warm: Section<WarmReport>,
    pub cold: Section<ColdReport>,
    pub density: Section<DensityReport>,
    pub overhead: Section<OverheadReport>,
}

pub fn write(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    let warm = report.warm.data.as_ref().map_or(&[][..], |w| &w.rows[..]);
    chart(&dir.join("chart.svg"), warm)
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

/// A Markdown table; `header` is the column names separated by '|', those starting with '>'
/// right-aligned.
fn table(s: &mut String, header: &str, rows: impl IntoIterator<Item = Vec<String>>) {
    let names: Vec<&str> = header.split('|').map(|h| h.trim_start_matches('>')).collect();
    let align: Vec<&str> = header.split('|').map(|h| if h.starts_with('>') { "---:" } else { "---" }).collect();
    let _ = writeln!(s, "| {} |\n| {} |", names.join(" | "), align.join(" | "));
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

/// Section heading, its status unless ok, and its body if it has numbers.
fn section<T>(s: &mut String, title: &str, section: &Section<T>, body: impl FnOnce(&mut String, &T)) {
    let _ = writeln!(s, "## {title}\n");
    if !section.status.is_ok() {
        let _ = writeln!(s, "{}\n", section.status);
    }
    if let Some(data) = &section.data {
        body(s, data);
    }
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Wisp benchmark report ({})\n\nReproduce: `{}` (took {:.0} s). How to read it: bench/README.md.\n",
        r.mode, r.command, r.total_s
    );
    let machine = serde_json::to_value(&r.machine).unwrap_or_default();
    let fields = machine.as_object().into_iter().flatten();
    table(&mut s, "machine|", fields.map(|(k, v)| vec![k.clone(), v.to_string().trim_matches('"').into()]));

    section(&mut s, "Warm: `hello`, keep-alive HTTP/1.1, closed loop", &r.warm, warm);
    let warm_p50 = r.warm.data.as_ref().and_then(|w| w.run("wisp", 1)).map(|run| run.hist.latency().p50_us);
    section(&mut s, "Cold: first request after deploy with `min_warm=0`", &r.cold, |s, c| cold(s, c, warm_p50));
    section(&mut s, "Density: K functions per node", &r.density, density);
    section(&mut s, "Overhead: one request at a time through the node", &r.overhead, overhead);
    s
}

/// Latency, errors and CPU columns of a run (closed or open loop).
const RUN_HEADER: &str =
    ">p50 µs|>p90 µs|>p99 µs|>p99.9 µs|>max µs|>errors|>bench CPU|>server CPU|>server CPU µs/req|>other CPU";

fn run_cells(run: &Run) -> Vec<String> {
    let l = run.hist.latency();
    let pct = |cpu_s: f64| format!("{:.0}%", run.pct(cpu_s));
    let saturated = if run.saturated() { " ⚠ saturated" } else { "" };
    let mut cells = [l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us].map(f1).to_vec();
    cells.extend([
        (run.errors + run.non_2xx).to_string(),
        format!("{}{saturated}", pct(run.bench_cpu_s)),
        pct(run.server_cpu_s),
        f1(run.server_us_per_req()),
        pct(run.other_cpu_s),
    ]);
    cells
}

fn latency_table<const N: usize>(s: &mut String, rows: [(&str, &Hist); N]) {
    let cells = |l: Latency| [l.mean_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us].map(f1);
    let rows = rows.map(|(name, h)| [&[name.to_string()][..], &cells(h.latency())].concat());
    table(s, "µs|>mean|>p50|>p90|>p99|>p99.9|>max", rows);
}

/// `cells` if the row has numbers, else its status.
fn status_or(status: &Status, run: Option<&Run>, cells: impl FnOnce(&Run) -> Vec<String>) -> Vec<String> {
    match run {
        Some(run) if status.is_ok() => cells(run),
        _ => vec![status.to_string()],
    }
}

fn warm(s: &mut String, w: &WarmReport) {
    let _ = writeln!(
        s,
        "{} round(s) × {:.1} s after {:.1} s warm-up, alternating targets; CPU in % of one core.\n",
        w.rounds, w.duration_s, w.warmup_s
    );
    let _ = writeln!(s, "![latency percentiles and throughput](chart.svg)\n");
    table(
        s,
        &format!("target|>conns|>req/s|rounds req/s|{RUN_HEADER}|>cold starts"),
        w.rows.iter().map(|row| {
            let mut cells = vec![row.target.to_string(), row.connections.to_string()];
            cells.extend(status_or(&row.status, row.run.as_ref(), |run| {
                let rounds = row.rps_rounds.iter().map(|x| f0(*x)).collect::<Vec<_>>().join(" / ");
                let mut cells = vec![format!("**{}**", f0(run.rps())), rounds];
                cells.extend(run_cells(run));
                cells.push(opt(row.cold_starts, |c| format!("{c} of {}", run.answered)));
                cells
            }));
            cells
        }),
    );
    let _ =
        writeln!(s, "Wisp / baseline (throughput above 1 = Wisp serves more; p99 below 1 = Wisp's tail is lower):\n");
    let mut ratios = Vec::new();
    for conns in CONNECTIONS {
        for baseline in ["wasmtime-default", "wasmtime-tuned"] {
            let Some((w, b)) = w.run("wisp", conns).zip(w.run(baseline, conns)) else { continue };
            let (wl, bl) = (w.hist.latency(), b.hist.latency());
            let cells = [w.rps() / b.rps(), wl.p50_us / bl.p50_us, wl.p99_us / bl.p99_us].map(|x| format!("{x:.2}×"));
            ratios.push([&[conns.to_string(), baseline.into()][..], &cells].concat());
        }
    }
    table(s, ">conns|baseline|>throughput|>p50|>p99", ratios);
    let _ = writeln!(
        s,
        "### Open loop at {} connections (50% of the target's own closed-loop max; latency from the intended send time)\n",
        CONNECTIONS[2]
    );
    table(
        s,
        &format!("target|>rate req/s|>achieved|>unsent|>pacer lag p99 µs|{RUN_HEADER}"),
        w.open_loop.iter().map(|o| {
            let mut cells = vec![o.target.to_string()];
            cells.extend(status_or(&o.status, o.run.as_ref(), |run| {
                let lag = run.pacer_lag.latency().p99_us;
                let mut cells = vec![f0(o.rate_rps), f0(run.rps()), run.unsent.to_string(), f1(lag)];
                cells.extend(run_cells(run));
                cells
            }));
            cells
        }),
    );
}

fn cold(s: &mut String, c: &ColdReport, warm_p50_us: Option<f64>) {
    let _ = writeln!(
        s,
        "{} functions deployed in {:.2} s; `wisp_cold_starts_total` = 1 for **{} of {}**; second request cold for {}.\n",
        c.requests, c.deploy_s, c.verified_cold, c.requests, c.second_cold
    );
    latency_table(
        s,
        [
            ("**first request** (cold)", &c.first),
            ("second request", &c.second),
            ("warm control (hello)", &c.warm_control),
        ],
    );
    if let Some(w) = warm_p50_us {
        let first = c.first.latency();
        let (p50, p99) = (first.p50_us / w, first.p99_us / w);
        let _ = writeln!(
            s,
            "First request / Wisp's warm p50 at 1 connection ({w:.1} µs): **{p50:.2}×** at p50, {p99:.2}× at p99.\n"
        );
    }
}

fn density(s: &mut String, d: &DensityReport) {
    let _ = writeln!(s, "Budget {:.0} s.\n", d.budget_s);
    let header = [
        ">K|status|>deploys/s|RSS MiB: empty / 1st / K idle / +K warm|>per idle fn KiB|>per warm fn KiB",
        ">per warm instance KiB|>ready|maps: empty / idle / warm|>maps per warm instance|>VmSize TiB|>fds",
    ];
    table(
        s,
        &header.join("|"),
        d.levels.iter().map(|lv| {
            let rss = |f: Option<_>| opt(f, |f: crate::sys::Footprint| (f.rss_kib / 1024).to_string());
            let maps = |f: Option<_>| opt(f, |f: crate::sys::Footprint| f.maps.to_string());
            let last = lv.last();
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
        Some(limit) => {
            let _ = writeln!(s, "**First limit:** {}\n", limit.replace('`', "'"));
        }
        None => s.push_str("No limit reached at the levels run.\n\n"),
    }
    if let (Some(model), Some(k)) = (&d.map_count_model, d.max_warm_by_map_count) {
        let _ = writeln!(s, "Map-count model: {model}; vm.max_map_count allows K ≈ {k:.0} warm functions.\n");
    }
}

fn overhead(s: &mut String, o: &OverheadReport) {
    let (hello, healthz) = (o.hello.latency(), o.healthz.latency());
    latency_table(s, [("`/fn/hello` over HTTP", &o.hello), ("`/healthz` over HTTP (no function)", &o.healthz)]);
    let _ = writeln!(
        s,
        "Inside the runtime (`wisp_invocation_duration_seconds`, mean): {} µs; **added by gateway, transport and client (mean): {} µs**; hello − healthz at p50: {} µs; {} cold starts.\n",
        opt(o.runtime_mean_us, f1),
        opt(o.runtime_mean_us, |r| f1(hello.mean_us - r)),
        f1(hello.p50_us - healthz.p50_us),
        o.hello_cold_starts
    );
}

const COLORS: [(&str, RGBColor); 3] = [
    ("wisp", RGBColor(0xd9, 0x48, 0x0f)),
    ("wasmtime-default", RGBColor(0x19, 0x71, 0xc2)),
    ("wasmtime-tuned", RGBColor(0x2f, 0x9e, 0x44)),
];

/// Left: p50 (dashed) and p99 latency against connections, log scale; right: throughput.
fn chart(path: &Path, rows: &[WarmRow]) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(500);
    let points: Vec<(&WarmRow, Latency, f64)> = rows
        .iter()
        .filter_map(|r| r.run.as_ref().filter(|_| r.status.is_ok()).map(|run| (r, run.hist.latency(), run.rps())))
        .collect();
    let max_conns = CONNECTIONS[2] as f64;
    let lo = points.iter().map(|p| p.1.p50_us).fold(f64::INFINITY, f64::min).clamp(1.0, 1e6);
    let hi = points.iter().map(|p| p.1.p99_us).fold(lo * 10.0, f64::max);
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
    let max_rps = points.iter().map(|p| p.2).fold(1.0, f64::max);
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
        // (connections, value) of this target's rows.
        let series = |f: fn(&Latency, f64) -> f64| {
            points.iter().filter(move |p| p.0.target == name).map(move |(r, l, rps)| (r.connections as f64, f(l, *rps)))
        };
        let style = color.stroke_width(2);
        lat.draw_series(DashedLineSeries::new(series(|l, _| l.p50_us), 6, 4, style)).map_err(err)?;
        lat.draw_series(LineSeries::new(series(|l, _| l.p99_us), style))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
        lat.draw_series(series(|l, _| l.p99_us).map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        tput.draw_series(LineSeries::new(series(|_, rps| rps), style)).map_err(err)?;
        tput.draw_series(series(|_, rps| rps).map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
    }
    lat.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
