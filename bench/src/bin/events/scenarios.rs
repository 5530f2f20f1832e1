//! The measurements: throughput (trigger vs raw consumer, alternating rounds), paced latency
//! from produce to function start, and duplicates and losses across a `kill -9`.

use crate::kafka::Kafka;
use crate::node::{self, Wisp};
use crate::rabbitmq::{self, Rabbitmq};
use crate::report::{Latency, Row};
use crate::{Broker, Consumed, Part, Plan, Sent, log, unix_us};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Everything the scenarios share.
pub struct Env<'a> {
    pub plan: &'a Plan,
    pub rt: &'a tokio::runtime::Runtime,
    pub wisp_bin: PathBuf,
    pub wasm: Vec<u8>,
    pub work: PathBuf,
    pub logs: PathBuf,
    /// Makes queue names unique on a broker that outlives the run.
    pub run_id: String,
    pub rabbitmq_url: String,
}

impl Env<'_> {
    /// A node on data dir `data` (under the work dir), logging to `logs/LOG.log`.
    fn node(&self, data: &str, log: &str, extra: &[&str]) -> anyhow::Result<Wisp> {
        let log = self.logs.join(format!("{log}.log"));
        Wisp::start(&self.wisp_bin, &self.work.join(data), &log, extra, &self.wasm)
    }

    fn queue(&self, tag: &str) -> String {
        format!("wisp-bench-{}-{tag}", self.run_id)
    }
}

/// A row's status after an error.
fn failed(e: &anyhow::Error) -> String {
    format!("failed: {e:#}")
}

/// How long a run of `n` events may take before it counts as failed (well below 1,000 events/s).
fn patience(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(n as u64)
}

/// The brokers, as far as they are selected and reachable.
struct Brokers {
    kafka: Option<Kafka>,
    rabbitmq: Result<Rabbitmq, String>,
}

impl Brokers {
    fn rabbitmq(&self) -> Result<&Rabbitmq, String> {
        self.rabbitmq.as_ref().map_err(Clone::clone)
    }
}

pub fn run_all(env: &Env) -> anyhow::Result<Vec<Row>> {
    let plan = env.plan;
    let kafka = if plan.brokers.contains(&Broker::Kafka) {
        let kafka = Kafka::start(plan.partitions)?;
        log(&format!(
            "kafka: librdkafka {} mock cluster at {}",
            rdkafka::util::get_rdkafka_version().1,
            kafka.brokers()
        ));
        Some(kafka)
    } else {
        None
    };
    let rabbitmq = if plan.brokers.contains(&Broker::Rabbitmq) {
        env.rt.block_on(Rabbitmq::connect(&env.rabbitmq_url)).map_err(|e| {
            log(&format!("rabbitmq: unreachable at {} ({e:#}); its rows are skipped", env.rabbitmq_url));
            format!("skipped: RabbitMQ unreachable at {} ({e:#})", env.rabbitmq_url)
        })
    } else {
        Err("skipped: not selected".into())
    };
    let mut brokers = Brokers { kafka, rabbitmq };

    let mut rows = Vec::new();
    if plan.parts.contains(&Part::Throughput) || plan.parts.contains(&Part::Latency) {
        let node = env.node("node", "node", &[])?;
        log(&format!("node: pid {} (log: logs/node.log)", node.pid()));
        if plan.parts.contains(&Part::Throughput) {
            rows.extend(throughput(env, &node, &mut brokers));
        }
        if plan.parts.contains(&Part::Latency) {
            rows.extend(latency(env, &node, &mut brokers));
        }
    }
    if plan.parts.contains(&Part::Kill) {
        rows.extend(kills(env, &mut brokers));
    }
    if let Ok(r) = &mut brokers.rabbitmq
        && let Err(e) = env.rt.block_on(r.cleanup())
    {
        log(&format!("rabbitmq: deleting the run's queues: {e:#}"));
    }
    Ok(rows)
}

/// One throughput configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Config {
    KafkaRaw,
    KafkaTrigger { unordered: bool },
    RabbitmqRaw { prefetch: u16 },
    RabbitmqTrigger { prefetch: u16 },
}

impl Config {
    fn broker(self) -> Broker {
        match self {
            Config::KafkaRaw | Config::KafkaTrigger { .. } => Broker::Kafka,
            Config::RabbitmqRaw { .. } | Config::RabbitmqTrigger { .. } => Broker::Rabbitmq,
        }
    }

    /// Used in topic, queue, group and trigger names.
    fn tag(self) -> String {
        match self {
            Config::KafkaRaw => "kafka-raw".into(),
            Config::KafkaTrigger { unordered: false } => "kafka-ordered".into(),
            Config::KafkaTrigger { unordered: true } => "kafka-unordered".into(),
            Config::RabbitmqRaw { prefetch } => format!("rabbitmq-raw-p{prefetch}"),
            Config::RabbitmqTrigger { prefetch } => format!("rabbitmq-trigger-p{prefetch}"),
        }
    }

    fn name(self, plan: &Plan) -> String {
        match self {
            Config::KafkaRaw => "kafka raw StreamConsumer".into(),
            Config::KafkaTrigger { unordered: false } => "kafka trigger ordered".into(),
            Config::KafkaTrigger { unordered: true } => {
                format!("kafka trigger unordered (max_in_flight {})", plan.max_in_flight)
            }
            Config::RabbitmqRaw { prefetch } => format!("rabbitmq raw lapin, prefetch {prefetch}"),
            Config::RabbitmqTrigger { prefetch } => format!("rabbitmq trigger, prefetch {prefetch}"),
        }
    }

    /// The raw configuration a trigger is compared with.
    fn baseline(self) -> Option<Config> {
        match self {
            Config::KafkaTrigger { .. } => Some(Config::KafkaRaw),
            Config::RabbitmqTrigger { prefetch } => Some(Config::RabbitmqRaw { prefetch }),
            _ => None,
        }
    }

    fn events(self, plan: &Plan) -> usize {
        match self.broker() {
            Broker::Kafka => plan.events,
            Broker::Rabbitmq => plan.rabbitmq_events,
        }
    }
}

/// One measured run of a configuration.
#[derive(Debug, Clone, Copy)]
struct Trial {
    first: Duration,
    done: Duration,
    delivered: u64,
    retried: u64,
}

impl Trial {
    fn raw(c: Consumed, n: usize) -> Trial {
        Trial { first: c.first, done: c.done, delivered: n as u64, retried: 0 }
    }
}

fn throughput(env: &Env, node: &Wisp, brokers: &mut Brokers) -> Vec<Row> {
    let plan = env.plan;
    let mut configs = Vec::new();
    if plan.runs(Part::Throughput, Broker::Kafka) {
        configs.extend([
            Config::KafkaRaw,
            Config::KafkaTrigger { unordered: false },
            Config::KafkaTrigger { unordered: true },
        ]);
    }
    if plan.runs(Part::Throughput, Broker::Rabbitmq) {
        for &prefetch in &plan.prefetch {
            configs.extend([Config::RabbitmqRaw { prefetch }, Config::RabbitmqTrigger { prefetch }]);
        }
    }
    // Rounds alternate between configurations, so drift on the machine spreads over all of them.
    let mut trials: Vec<Vec<anyhow::Result<Trial>>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 1..=plan.rounds {
        for (i, &config) in configs.iter().enumerate() {
            if config.broker() == Broker::Rabbitmq && brokers.rabbitmq.is_err() {
                continue;
            }
            let n = config.events(plan);
            let result = trial(env, node, brokers, config, round, n);
            match &result {
                Ok(t) => log(&format!(
                    "{} round {round}: {n} in {:.2} s = {:.0}/s (first after {:.2} s)",
                    config.tag(),
                    t.done.as_secs_f64(),
                    n as f64 / t.done.as_secs_f64(),
                    t.first.as_secs_f64()
                )),
                Err(e) => log(&format!("{} round {round}: failed: {e:#}", config.tag())),
            }
            trials[i].push(result);
        }
    }

    let mut rows: Vec<Row> = configs
        .iter()
        .zip(trials)
        .map(|(&config, trials)| {
            let n = config.events(plan);
            let mut row = Row::new(&config.name(plan), config.broker(), Part::Throughput, n);
            if config.broker() == Broker::Rabbitmq
                && let Err(status) = brokers.rabbitmq()
            {
                row.status = status;
                return row;
            }
            let ok: Vec<Trial> = trials.iter().filter_map(|t| t.as_ref().ok().copied()).collect();
            if let Some(e) = trials.iter().find_map(|t| t.as_ref().err()) {
                row.status = failed(e);
            }
            let Some(best) = ok.iter().min_by_key(|t| t.done).copied() else { return row };
            row.seconds = Some(best.done.as_secs_f64());
            row.events_per_s = Some(n as f64 / best.done.as_secs_f64());
            row.rounds_events_per_s = ok.iter().map(|t| n as f64 / t.done.as_secs_f64()).collect();
            let worst = ok.iter().map(|t| t.done).max().unwrap_or(best.done);
            row.spread_pct = Some(100.0 * (1.0 - best.done.as_secs_f64() / worst.as_secs_f64()));
            row.first_event_s = Some(best.first.as_secs_f64());
            row.after_first_events_per_s = Some(n as f64 / (best.done - best.first).as_secs_f64().max(1e-3));
            row.delivered = Some(best.delivered);
            if matches!(config, Config::KafkaTrigger { .. } | Config::RabbitmqTrigger { .. }) {
                row.retried = Some(ok.iter().map(|t| t.retried).sum());
            }
            row
        })
        .collect();
    for (i, &config) in configs.iter().enumerate() {
        let Some(base) = config.baseline().and_then(|b| configs.iter().position(|&c| c == b)) else { continue };
        let (base_rate, base_after) = (rows[base].events_per_s, rows[base].after_first_events_per_s);
        let row = &mut rows[i];
        row.ratio_to_raw = row.events_per_s.zip(base_rate).map(|(t, r)| t / r);
        row.after_first_ratio_to_raw = row.after_first_events_per_s.zip(base_after).map(|(t, r)| t / r);
    }
    rows
}

/// Pre-produces `n` events into a fresh topic or queue, then measures one configuration on it.
fn trial(env: &Env, node: &Wisp, brokers: &mut Brokers, config: Config, round: u32, n: usize) -> anyhow::Result<Trial> {
    let tag = format!("{}-{round}", config.tag());
    let timeout = patience(n);
    match config {
        Config::KafkaRaw | Config::KafkaTrigger { .. } => {
            let kafka = brokers.kafka.as_ref().expect("kafka runs");
            kafka.create_topic(&tag)?;
            env.rt.block_on(kafka.produce(&tag, n))?;
            let Config::KafkaTrigger { unordered } = config else {
                let consumed = env.rt.block_on(kafka.raw_consume(&tag, &format!("{tag}-group"), n, timeout))?;
                return Ok(Trial::raw(consumed, n));
            };
            let ordering = if unordered { "unordered" } else { "ordered" };
            let spec = node::kafka_trigger(&tag, &kafka.brokers(), &tag, ordering, env.plan.max_in_flight);
            trigger_trial(node, &tag, &spec, n, timeout)
        }
        Config::RabbitmqRaw { prefetch } | Config::RabbitmqTrigger { prefetch } => {
            let rabbitmq = brokers.rabbitmq.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
            let queue = env.queue(&tag);
            env.rt.block_on(async {
                rabbitmq.create_queue(&queue).await?;
                rabbitmq.publish(&queue, n).await
            })?;
            if matches!(config, Config::RabbitmqRaw { .. }) {
                return Ok(Trial::raw(env.rt.block_on(rabbitmq.raw_consume(&queue, prefetch, n, timeout))?, n));
            }
            let spec = node::rabbitmq_trigger(&tag, &rabbitmq.url, &queue, prefetch);
            trigger_trial(node, &tag, &spec, n, timeout)
        }
    }
}

/// Creates the trigger and times it until it has delivered `n` events; then deletes it.
fn trigger_trial(
    node: &Wisp,
    name: &str,
    spec: &serde_json::Value,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Trial> {
    let start = Instant::now();
    node.create_trigger(spec)?;
    let result = node.wait_delivered(name, n as u64, start, timeout);
    node.delete_trigger(name)?;
    let d = result?;
    Ok(Trial { first: d.first, done: d.done, delivered: d.stats.delivered, retried: d.stats.retried })
}

fn latency(env: &Env, node: &Wisp, brokers: &mut Brokers) -> Vec<Row> {
    let plan = env.plan;
    let mut rows = Vec::new();
    let n = plan.latency_events();
    let paced = format!("{} events/s for {} s", plan.latency_rate, plan.latency_secs);
    let mut push = |name: String, broker, run: Result<(Latency, usize), String>| {
        let mut row = Row::new(&name, broker, Part::Latency, n);
        match run {
            Ok((latency, delivered)) => {
                log(&format!("{name}: {latency}"));
                row.delivered = Some(delivered as u64);
                row.latency_ms = Some(latency);
                row.note = format!("paced at {paced}");
            }
            Err(status) => {
                log(&format!("{name}: {status}"));
                row.status = status;
            }
        }
        rows.push(row);
    };
    if let Some(kafka) = brokers.kafka.as_ref().filter(|_| plan.runs(Part::Latency, Broker::Kafka)) {
        push(
            "kafka latency raw StreamConsumer".into(),
            Broker::Kafka,
            kafka_raw_latency(env, kafka).map_err(|e| failed(&e)),
        );
        for (ordering, name) in [
            ("ordered", "kafka latency trigger ordered".to_string()),
            ("unordered", format!("kafka latency trigger unordered (max_in_flight {})", plan.max_in_flight)),
        ] {
            push(name, Broker::Kafka, kafka_latency(env, node, kafka, ordering).map_err(|e| failed(&e)));
        }
    }
    if plan.runs(Part::Latency, Broker::Rabbitmq) {
        let prefetch = plan.rabbitmq_prefetch;
        let (raw, trigger) = match brokers.rabbitmq.as_mut() {
            Ok(rabbitmq) => (
                rabbitmq_raw_latency(env, rabbitmq, prefetch).map_err(|e| failed(&e)),
                rabbitmq_latency(env, node, rabbitmq, prefetch).map_err(|e| failed(&e)),
            ),
            Err(status) => (Err(status.clone()), Err(status.clone())),
        };
        push(format!("rabbitmq latency raw lapin, prefetch {prefetch}"), Broker::Rabbitmq, raw);
        push(format!("rabbitmq latency trigger, prefetch {prefetch}"), Broker::Rabbitmq, trigger);
    }
    rows
}

/// Latency of every sent event that `arrived` (ms after it was sent, or `None`), and how many did.
fn latencies(sent: &[Sent], arrived: impl Fn(&Sent) -> Option<f64>) -> anyhow::Result<(Latency, usize)> {
    let ms: Vec<f64> = sent.iter().filter_map(arrived).collect();
    anyhow::ensure!(!ms.is_empty(), "none of the {} events arrived", sent.len());
    let arrived = ms.len();
    Ok((Latency::of(ms), arrived))
}

/// Creates the trigger, warms it up with the events `warm_up` produces, produces at the planned
/// rate, waits for all of them, and matches the usage records' start times (whole ms) with the
/// produce times.
fn paced_run(
    node: &Wisp,
    name: &str,
    spec: &serde_json::Value,
    warm_up: impl FnOnce() -> anyhow::Result<usize>,
    paced: impl FnOnce() -> anyhow::Result<Vec<Sent>>,
) -> anyhow::Result<(Latency, usize)> {
    let start = Instant::now();
    node.create_trigger(spec)?;
    let result = (|| {
        let warm = warm_up()?;
        node.wait_delivered(name, warm as u64, start, patience(warm))?;
        let sent = paced()?;
        node.wait_delivered(name, (warm + sent.len()) as u64, Instant::now(), patience(sent.len()))?;
        let (records, _) = node.usage()?;
        let mut started: HashMap<&str, u64> = HashMap::new();
        for r in records.iter().filter(|r| r.trigger.as_deref() == Some(name)) {
            if let Some(id) = r.event_id.as_deref() {
                let t = started.entry(id).or_insert(r.start_ms);
                *t = (*t).min(r.start_ms);
            }
        }
        latencies(&sent, |s| Some(*started.get(s.id.as_str())? as f64 - (s.at_us / 1000) as f64))
    })();
    node.delete_trigger(name)?;
    result
}

fn kafka_latency(env: &Env, node: &Wisp, kafka: &Kafka, ordering: &str) -> anyhow::Result<(Latency, usize)> {
    let topic = format!("kafka-latency-{ordering}");
    kafka.create_topic(&topic)?;
    let spec = node::kafka_trigger(&topic, &kafka.brokers(), &topic, ordering, env.plan.max_in_flight);
    let duration = Duration::from_secs_f64(env.plan.latency_secs);
    // One record per partition first: every partition is assigned and fetching before timing.
    let warm_up = || Ok(env.rt.block_on(kafka.produce(&topic, env.plan.partitions as usize))?.len());
    let paced = || env.rt.block_on(kafka.produce_paced(&topic, env.plan.latency_rate, duration));
    paced_run(node, &topic, &spec, warm_up, paced)
}

/// The same paced run read by a raw consumer: receive time minus produce time, µs precision.
fn kafka_raw_latency(env: &Env, kafka: &Kafka) -> anyhow::Result<(Latency, usize)> {
    let topic = "kafka-latency-raw";
    kafka.create_topic(topic)?;
    let (n, partitions) = (env.plan.latency_events(), env.plan.partitions as usize);
    let duration = Duration::from_secs_f64(env.plan.latency_secs);
    env.rt.block_on(async {
        let deadline = Instant::now() + patience(partitions + n);
        let mut consumer = kafka.raw_consumer(topic, "kafka-latency-raw-group")?;
        kafka.produce(topic, partitions).await?;
        consumer.read(partitions, deadline, |_, _| {}).await?;
        let mut received = HashMap::new();
        let read = consumer.read(n, deadline, |p, o| _ = received.insert(crate::kafka::event_id(p, o), unix_us()));
        let (sent, read) = tokio::join!(kafka.produce_paced(topic, env.plan.latency_rate, duration), read);
        read?;
        latencies(&sent?, |s| Some(received.get(&s.id)?.checked_sub(s.at_us)? as f64 / 1000.0))
    })
}

fn rabbitmq_latency(
    env: &Env,
    node: &Wisp,
    rabbitmq: &mut Rabbitmq,
    prefetch: u16,
) -> anyhow::Result<(Latency, usize)> {
    let queue = env.queue("latency");
    env.rt.block_on(rabbitmq.create_queue(&queue))?;
    let name = format!("rabbitmq-latency-p{prefetch}");
    let spec = node::rabbitmq_trigger(&name, &rabbitmq.url, &queue, prefetch);
    let duration = Duration::from_secs_f64(env.plan.latency_secs);
    let warm_up = || env.rt.block_on(rabbitmq.publish_warm_up(&queue, 10)).map(|()| 10);
    let paced = || env.rt.block_on(rabbitmq.publish_paced(&queue, env.plan.latency_rate, duration));
    paced_run(node, &name, &spec, warm_up, paced)
}

/// The same paced run read by a raw consumer: receive time minus publish time, µs precision.
fn rabbitmq_raw_latency(env: &Env, rabbitmq: &mut Rabbitmq, prefetch: u16) -> anyhow::Result<(Latency, usize)> {
    let queue = env.queue("latency-raw");
    let n = env.plan.latency_events();
    let duration = Duration::from_secs_f64(env.plan.latency_secs);
    env.rt.block_on(async {
        rabbitmq.create_queue(&queue).await?;
        let deadline = Instant::now() + patience(n);
        let mut consumer = rabbitmq.raw_consumer(&queue, prefetch).await?;
        rabbitmq.publish_warm_up(&queue, 10).await?;
        consumer.read(10, deadline, |_| {}).await?;
        let mut received = HashMap::new();
        let read = consumer.read(n, deadline, |d| {
            let id = d.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default();
            received.insert(id, unix_us());
        });
        let (sent, read) = tokio::join!(rabbitmq.publish_paced(&queue, env.plan.latency_rate, duration), read);
        read?;
        consumer.close().await?;
        latencies(&sent?, |s| Some(received.get(&s.id)?.checked_sub(s.at_us)? as f64 / 1000.0))
    })
}

fn kills(env: &Env, brokers: &mut Brokers) -> Vec<Row> {
    let plan = env.plan;
    let mut rows = Vec::new();
    let n = plan.kill_events;
    if let Some(kafka) = brokers.kafka.as_ref().filter(|_| plan.runs(Part::Kill, Broker::Kafka)) {
        for ordering in ["ordered", "unordered"] {
            let mut row = Row::new(&format!("kafka kill -9, {ordering}"), Broker::Kafka, Part::Kill, n);
            if plan.quick {
                // The restarted consumer waits for the group to give up on the killed one.
                row.status = "skipped: quick mode (a restart after kill -9 waits out the dead member's \
                              session timeout, 45 s, twice on the mock cluster)"
                    .into();
            } else {
                let target = Target::Kafka { kafka, ordering };
                finish_kill(&mut row, kill_run(env, target, &format!("kill-kafka-{ordering}")));
            }
            rows.push(row);
        }
    }
    if plan.runs(Part::Kill, Broker::Rabbitmq) {
        let prefetch = plan.rabbitmq_prefetch;
        let mut row = Row::new(&format!("rabbitmq kill -9, prefetch {prefetch}"), Broker::Rabbitmq, Part::Kill, n);
        match brokers.rabbitmq.as_mut() {
            Ok(rabbitmq) => {
                let target = Target::Rabbitmq { rabbitmq, prefetch };
                finish_kill(&mut row, kill_run(env, target, &format!("kill-rabbitmq-p{prefetch}")));
            }
            Err(status) => row.status = status.clone(),
        }
        rows.push(row);
    }
    rows
}

enum Target<'a> {
    Kafka { kafka: &'a Kafka, ordering: &'static str },
    Rabbitmq { rabbitmq: &'a mut Rabbitmq, prefetch: u16 },
}

/// What a kill run found.
struct Killed {
    /// Events delivered when the node was killed, by the trigger's count.
    at_kill: u64,
    killed_after: Duration,
    /// From the restart until every event had a usage record.
    recovered: Duration,
    delivered: usize,
    duplicates: u64,
    lost: usize,
}

fn finish_kill(row: &mut Row, run: anyhow::Result<Killed>) {
    match run {
        Ok(k) => {
            let note = format!(
                "killed at {} delivered ({:.2} s after creation); after restart all delivered in {:.1} s",
                k.at_kill,
                k.killed_after.as_secs_f64(),
                k.recovered.as_secs_f64()
            );
            log(&format!("{}: {} duplicates, {} lost; {note}", row.scenario, k.duplicates, k.lost));
            row.seconds = Some(k.recovered.as_secs_f64());
            row.delivered = Some(k.delivered as u64);
            row.duplicates = Some(k.duplicates);
            row.lost = Some(k.lost as u64);
            row.note = note;
        }
        Err(e) => {
            row.status = failed(&e);
            log(&format!("{}: {}", row.scenario, row.status));
        }
    }
}

/// Node with `--ledger-sync` (usage records durable before the event is acknowledged), a
/// trigger on `n` pre-produced events, SIGKILL once half are delivered, restart on the same
/// data dir, wait until every event has a usage record, then count records per event id.
fn kill_run(env: &Env, target: Target, tag: &str) -> anyhow::Result<Killed> {
    let n = env.plan.kill_events;
    let sync = ["--ledger-sync"];
    let node = env.node(tag, tag, &sync)?;
    let (ids, spec) = match target {
        Target::Kafka { kafka, ordering } => {
            kafka.create_topic(tag)?;
            let ids = env.rt.block_on(kafka.produce(tag, n))?;
            (ids, node::kafka_trigger(tag, &kafka.brokers(), tag, ordering, env.plan.max_in_flight))
        }
        Target::Rabbitmq { rabbitmq, prefetch } => {
            let queue = env.queue(tag);
            env.rt.block_on(async {
                rabbitmq.create_queue(&queue).await?;
                rabbitmq.publish(&queue, n).await
            })?;
            let ids = (0..n).map(|i| rabbitmq::message_id(&queue, i)).collect();
            (ids, node::rabbitmq_trigger(tag, &rabbitmq.url, &queue, prefetch))
        }
    };
    let start = Instant::now();
    node.create_trigger(&spec)?;
    let at_kill = loop {
        let delivered = node.stats(tag)?.delivered;
        if delivered as usize >= n / 2 {
            break delivered;
        }
        anyhow::ensure!(start.elapsed() < patience(n), "only {delivered} of {n} delivered before the kill");
        std::thread::sleep(Duration::from_millis(2));
    };
    let killed_after = start.elapsed();
    node.kill();
    log(&format!("{tag}: killed (SIGKILL) at {at_kill} of {n} delivered; restarting"));

    let node = env.node(tag, &format!("{tag}-restarted"), &sync)?;
    let restarted = Instant::now();
    let count = |node: &Wisp| -> anyhow::Result<HashMap<String, u64>> {
        let (records, total) = node.usage()?;
        anyhow::ensure!(
            total <= 10_000 && total == records.len() as u64,
            "{total} usage records, more than one answer holds (10,000)"
        );
        let mut seen: HashMap<String, u64> = HashMap::new();
        for id in records.into_iter().filter_map(|r| r.event_id) {
            *seen.entry(id).or_default() += 1;
        }
        Ok(seen)
    };
    let recovered = loop {
        let seen = count(&node)?;
        let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 || restarted.elapsed() > patience(n) + Duration::from_secs(120) {
            break restarted.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Anything still in flight (a replay racing the last new event) lands within a second.
    std::thread::sleep(Duration::from_secs(1));
    let seen = count(&node)?;
    node.delete_trigger(tag)?;
    let delivered = ids.iter().filter(|id| seen.contains_key(*id)).count();
    let duplicates = ids.iter().filter_map(|id| seen.get(id)).map(|c| c - 1).sum();
    Ok(Killed { at_kill, killed_after, recovered, delivered, duplicates, lost: n - delivered })
}
