//! `wisp-bench-events`: how fast and how safely Wisp's event triggers deliver, in one run, next to
//! the raw client libraries on the same brokers: Kafka (librdkafka's mock cluster, started here)
//! and RabbitMQ (a running broker). Throughput against the raw consume rate, produce-to-function
//! latency, and duplicates and losses after `kill -9`. Writes `events.md` and `events.json` to
//! `--out DIR`; what each row measures: bench/README.md.

mod kafka;
mod node;
#[path = "../../progress.rs"]
mod progress;
mod rabbitmq;
mod report;
mod scenarios;

use anyhow::Context;
use clap::{Parser, ValueEnum};
pub use progress::log;
use serde::Serialize;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(version, about = "Benchmarks Wisp's Kafka and RabbitMQ triggers against the raw clients")]
struct Args {
    /// Directory for events.md, events.json and the nodes' logs
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Small numbers everywhere (seconds in all), for a smoke test
    #[arg(long)]
    quick: bool,
    /// Kafka records per throughput measurement (default 100000, quick 2000)
    #[arg(long, value_name = "N")]
    events: Option<usize>,
    /// Partitions of every Kafka topic
    #[arg(long, default_value_t = 8, value_name = "P", value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,
    /// RabbitMQ messages per throughput measurement (default 20000, quick 1000)
    #[arg(long, value_name = "N")]
    rabbitmq_events: Option<usize>,
    /// Rounds per throughput configuration, alternating between configurations (default 3, quick 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// `max_in_flight` of the unordered Kafka trigger
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_in_flight: u32,
    /// RabbitMQ prefetch values to measure, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,100", value_name = "LIST")]
    prefetch: Vec<u16>,
    /// Events per second of the latency runs
    #[arg(long, default_value_t = 2000, value_name = "N")]
    rate: u32,
    /// Seconds of each latency run (default 3, quick 1); rate × seconds must stay below 9000
    #[arg(long, value_name = "SECS")]
    latency_secs: Option<f64>,
    /// Records or messages of each kill -9 run (default 5000, quick 1000)
    #[arg(long, value_name = "N")]
    kill_events: Option<usize>,
    /// Parts to run, comma-separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    only: Vec<Part>,
    /// Brokers to run against, comma-separated [default: both]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    brokers: Vec<Broker>,
    /// The RabbitMQ broker
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", value_name = "URL")]
    rabbitmq_url: String,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
    /// The `events` component [default: functions/target/wasm32-wasip2/release/events.wasm, built if missing]
    #[arg(long, value_name = "PATH")]
    wasm: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Throughput,
    Latency,
    Kill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Broker {
    Kafka,
    Rabbitmq,
}

/// What a run does: the flags, with the full or `--quick` defaults filled in.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub events: usize,
    pub partitions: i32,
    pub rabbitmq_events: usize,
    pub rounds: u32,
    pub max_in_flight: u32,
    pub prefetch: Vec<u16>,
    pub latency_rate: u32,
    pub latency_secs: f64,
    /// Prefetch of the RabbitMQ latency and kill runs (the largest measured).
    pub rabbitmq_prefetch: u16,
    pub kill_events: usize,
    pub parts: Vec<Part>,
    pub brokers: Vec<Broker>,
}

impl Plan {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let q = a.quick;
        let plan = Plan {
            quick: q,
            events: a.events.unwrap_or(if q { 2_000 } else { 100_000 }),
            partitions: a.partitions,
            rabbitmq_events: a.rabbitmq_events.unwrap_or(if q { 1_000 } else { 20_000 }),
            rounds: a.rounds.unwrap_or(if q { 1 } else { 3 }),
            max_in_flight: a.max_in_flight,
            prefetch: a.prefetch.clone(),
            latency_rate: a.rate,
            latency_secs: a.latency_secs.unwrap_or(if q { 1.0 } else { 3.0 }),
            rabbitmq_prefetch: a.prefetch.iter().copied().max().unwrap_or(100),
            kill_events: a.kill_events.unwrap_or(if q { 1_000 } else { 5_000 }),
            parts: if a.only.is_empty() { vec![Part::Throughput, Part::Latency, Part::Kill] } else { a.only.clone() },
            brokers: if a.brokers.is_empty() { vec![Broker::Kafka, Broker::Rabbitmq] } else { a.brokers.clone() },
        };
        // The usage API answers with the newest 10,000 records: a latency or kill run must fit.
        anyhow::ensure!(plan.latency_events() + 1000 <= 10_000, "--rate × --latency-secs must stay below 9000");
        anyhow::ensure!(plan.kill_events > 0 && plan.kill_events <= 8_000, "--kill-events must be 1 to 8000");
        anyhow::ensure!(plan.events > 0 && plan.rabbitmq_events > 0, "--events and --rabbitmq-events must be > 0");
        anyhow::ensure!(!plan.prefetch.contains(&0), "--prefetch values must be at least 1");
        Ok(plan)
    }

    pub fn runs(&self, part: Part, broker: Broker) -> bool {
        self.parts.contains(&part) && self.brokers.contains(&broker)
    }

    pub fn latency_events(&self) -> usize {
        (f64::from(self.latency_rate) * self.latency_secs) as usize
    }
}

/// How a raw consumer's run went, timed from its subscribe (or `basic.consume`).
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    pub first: Duration,
    pub done: Duration,
}

/// A produced event: the id the trigger gives it, and when it was handed to the client (Unix µs).
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub at_us: u64,
}

pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Releases indices `0..total` at `rate` per second, checked every millisecond: each call
/// returns the ones now due (catching up in a burst after a late wake-up).
pub struct Pacer {
    start: tokio::time::Instant,
    tick: tokio::time::Interval,
    rate: f64,
    total: usize,
    released: usize,
}

impl Pacer {
    pub fn new(rate: u32, total: usize) -> Pacer {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Pacer { start: tokio::time::Instant::now(), tick, rate: f64::from(rate), total, released: 0 }
    }

    pub async fn next(&mut self) -> Option<Range<usize>> {
        if self.released >= self.total {
            return None;
        }
        self.tick.tick().await;
        let due = ((self.start.elapsed().as_secs_f64() * self.rate) as usize + 1).min(self.total);
        let range = self.released..due;
        self.released = due;
        Some(range)
    }
}

fn main() {
    progress::elapsed_s();
    if let Err(e) = run(Args::parse()) {
        eprintln!("wisp-bench-events: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let repo = wisp_testkit::repo_root();
    let wisp_bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    let wasm_path = args.wasm.clone().unwrap_or_else(|| wisp_testkit::wasm_path("events"));
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    std::fs::create_dir_all(args.out.join("logs")).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = tempfile::Builder::new().prefix("wisp-bench-events-").tempdir()?;
    let machine = report::machine(&repo);
    log(&format!("{} mode; commit {:.12}", if plan.quick { "quick" } else { "full" }, machine.git_commit));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let env = scenarios::Env {
        plan: &plan,
        rt: &rt,
        wisp_bin,
        wasm,
        work: work.path().to_owned(),
        logs: out.join("logs"),
        run_id: format!("{:x}", unix_us() / 1000),
        rabbitmq_url: args.rabbitmq_url.clone(),
    };
    let rows = scenarios::run_all(&env)?;

    let command = std::env::args().map(|a| if a.contains(' ') { format!("{a:?}") } else { a }).collect::<Vec<_>>();
    let report = report::Report {
        mode: if plan.quick { "quick" } else { "full" },
        command: command.join(" "),
        total_s: progress::elapsed_s(),
        machine,
        plan: &plan,
        rows,
    };
    report::write(&out, &report)?;
    log(&format!("report: {}/events.md, events.json ({:.0} s)", out.display(), report.total_s));
    Ok(())
}
