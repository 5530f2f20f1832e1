//! The report: one table of every scenario (`events.md`, also printed) and the same rows with
//! the run's settings and machine in `events.json`.

use crate::{Broker, Part, Plan};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub mode: &'static str,
    pub command: String,
    pub total_s: f64,
    pub machine: Machine,
    pub plan: &'a Plan,
    pub rows: Vec<Row>,
}

/// One line of the table. Throughput rows have seconds, rates and ratios; latency rows their
/// percentiles; kill rows duplicates and losses.
#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub broker: Broker,
    pub part: Part,
    /// `ok`, `failed: why` or `skipped: why`.
    pub status: String,
    /// Events produced for the measurement.
    pub events: usize,
    /// Events that reached the function (raw rows: consumed); kill rows: distinct events with a
    /// usage record.
    pub delivered: Option<u64>,
    /// Throughput: the best round, from trigger creation (raw: subscribe) until all were
    /// delivered. Kill: from the restart until all were delivered.
    pub seconds: Option<f64>,
    pub events_per_s: Option<f64>,
    pub rounds_events_per_s: Vec<f64>,
    /// (best − worst) / best of the rounds, percent.
    pub spread_pct: Option<f64>,
    /// Of the best round: when the first event arrived (group join, connection, first fetch).
    pub first_event_s: Option<f64>,
    /// Of the best round: events / (seconds − first_event_s).
    pub after_first_events_per_s: Option<f64>,
    pub ratio_to_raw: Option<f64>,
    pub after_first_ratio_to_raw: Option<f64>,
    /// Attempts retried, all rounds.
    pub retried: Option<u64>,
    pub latency_ms: Option<Latency>,
    pub duplicates: Option<u64>,
    pub lost: Option<u64>,
    pub note: String,
}

impl Row {
    pub fn new(scenario: &str, broker: Broker, part: Part, events: usize) -> Row {
        Row {
            scenario: scenario.into(),
            broker,
            part,
            status: "ok".into(),
            events,
            delivered: None,
            seconds: None,
            events_per_s: None,
            rounds_events_per_s: Vec::new(),
            spread_pct: None,
            first_event_s: None,
            after_first_events_per_s: None,
            ratio_to_raw: None,
            after_first_ratio_to_raw: None,
            retried: None,
            latency_ms: None,
            duplicates: None,
            lost: None,
            note: String::new(),
        }
    }
}

/// Produce-to-function-start (raw: produce-to-receive) latency, milliseconds: whole ones from
/// the ledger, µs precision for the raw consumers.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_unstable_by(f64::total_cmp);
        // Nearest rank.
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency { samples: ms.len(), min: ms[0], p50: at(0.5), p90: at(0.9), p99: at(0.99), max: ms[ms.len() - 1] }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Latency { samples, min, p50, p90, p99, max } = self;
        write!(f, "{samples} events: min {min:.1} / p50 {p50:.1} / p90 {p90:.1} / p99 {p99:.1} / max {max:.1} ms")
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub loadavg_at_start: String,
    pub git_commit: String,
    pub git_dirty: bool,
    pub rustc: String,
    pub librdkafka: String,
}

pub fn machine(repo: &Path) -> Machine {
    let output = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let repo = repo.to_string_lossy();
    let git = |args: &[&str]| output("git", &[&["-C", &*repo], args].concat());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| Some(l.strip_prefix("model name")?.split_once(':')?.1.trim().to_string()))
            .unwrap_or_default(),
        kernel: read("/proc/sys/kernel/osrelease"),
        loadavg_at_start: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        git_commit: git(&["rev-parse", "HEAD"]).unwrap_or_default(),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()),
        rustc: output("rustc", &["--version"]).unwrap_or_default(),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
    }
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

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "–".into(), f)
}

/// The table, in Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| scenario | events | seconds | events/s | rounds (events/s) | ratio to raw | first event (s) | \
         events/s after first (ratio) | latency p50 / p99 (ms) | duplicates / lost | notes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let mut rounds = r.rounds_events_per_s.iter().map(|&v| thousands(v)).collect::<Vec<_>>().join(", ");
        if let Some(spread) = r.spread_pct.filter(|_| r.rounds_events_per_s.len() > 1) {
            rounds = format!("{rounds} (spread {spread:.0}%)");
        }
        let after = opt(r.after_first_events_per_s, |v| match r.after_first_ratio_to_raw {
            Some(ratio) => format!("{} ({ratio:.2}x)", thousands(v)),
            None => thousands(v),
        });
        let mut notes = Vec::new();
        if r.status != "ok" {
            notes.push(r.status.replace('|', "/").replace('\n', " "));
        }
        if let Some(retried) = r.retried.filter(|&n| n > 0) {
            notes.push(format!("retried attempts: {retried}"));
        }
        if !r.note.is_empty() {
            notes.push(r.note.clone());
        }
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            thousands(r.events as f64),
            opt(r.seconds, |s| format!("{s:.2}")),
            opt(r.events_per_s, thousands),
            if rounds.is_empty() { "–".into() } else { rounds },
            opt(r.ratio_to_raw, |v| format!("{v:.2}x")),
            opt(r.first_event_s, |s| format!("{s:.2}")),
            after,
            opt(r.latency_ms.as_ref(), |l| format!("{:.1} / {:.1}", l.p50, l.p99)),
            opt(r.duplicates.zip(r.lost), |(d, l)| format!("{d} / {l}")),
            notes.join("; "),
        );
    }
    t
}

pub fn write(out: &Path, report: &Report) -> anyhow::Result<()> {
    let m = &report.machine;
    let p = report.plan;
    let table = table(&report.rows);
    println!("{table}");
    let dirty = if m.git_dirty { " (uncommitted changes)" } else { "" };
    let md = format!(
        "# Wisp event triggers: throughput, latency, kill -9\n\n\
         `{command}` ({mode} mode, {total:.0} s), commit `{commit:.12}`{dirty}; {cores} cores, {cpu}, \
         Linux {kernel}, load average at start {load}; librdkafka {rdkafka} mock cluster (1 broker, {parts} \
         partitions per topic) in the bench process; the `events` function.\n\n{table}\n\
         - **Throughput** rows: best of {rounds} rounds (configurations alternate), each on a fresh topic \
         or queue pre-filled with `events` records. A trigger is timed from `POST /v1/triggers` until its \
         `status.delivered` (polled every 10 ms) reaches that number; a raw consumer (rdkafka \
         `StreamConsumer`, manual async commits every 250 ms and a final sync one; lapin with manual acks) \
         from its subscribe until all were consumed and committed or acked. Nothing is subtracted: \
         `first event` shows the start-up inside those seconds (a new Kafka group waits the mock \
         cluster's `group.initial.rebalance.delay.ms`, 3 s, as a real broker does), and `events/s \
         after first` the rate after it. Ratios are against the raw consumer of the same broker \
         (RabbitMQ: same prefetch).\n\
         - **Latency** rows: events produced at a fixed rate (Kafka producer with `linger.ms=0`) after \
         a warm-up; per event, the function's start time from its usage record (`start_ms`) minus the \
         time the bench handed the event to the client. The ledger keeps whole milliseconds, so each \
         sample is ±1 ms. Raw rows: receive time minus produce time (µs). The mock cluster answers \
         an empty fetch only after the consumer's `fetch.wait.max.ms` (500 ms) and is not woken by \
         a produce, so Kafka latency on it spreads over 0–500 ms for raw and trigger alike: compare \
         the trigger with the raw row, not with a real broker.\n\
         - **Kill** rows: a node with `--ledger-sync` (usage records durable before an event is \
         acknowledged), a trigger on `events` pre-produced events, SIGKILL once half were \
         delivered, a restart on the same data dir; `seconds` = from the restart until every event \
         had a usage record. Duplicates = usage records beyond the first per event id, lost = events \
         with none. A killed Kafka group member keeps its partitions until its session times out \
         (librdkafka's `session.timeout.ms`, 45 s), which is most of a Kafka restart here.\n",
        command = report.command,
        mode = report.mode,
        total = report.total_s,
        commit = m.git_commit,
        cores = m.cores,
        cpu = m.cpu_model,
        kernel = m.kernel,
        load = m.loadavg_at_start,
        rdkafka = m.librdkafka,
        parts = p.partitions,
        rounds = p.rounds,
    );
    std::fs::write(out.join("events.md"), md)?;
    std::fs::write(out.join("events.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}
