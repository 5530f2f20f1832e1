//! The Kafka side: librdkafka's mock cluster in this process (one broker, the real protocol over
//! TCP), producers into fresh topics, and the raw consumer a trigger is compared with.

use crate::{Consumed, Sent, unix_us};
use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the raw consumer commits (asynchronously), as the trigger does.
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// Records a bulk producer keeps in flight.
const IN_FLIGHT: usize = 20_000;

pub struct Kafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    /// Batches (librdkafka's default linger) for pre-producing.
    bulk: FutureProducer,
    /// Sends each record at once (`linger.ms=0`), so paced runs time the trigger, not batching.
    paced: FutureProducer,
    partitions: i32,
}

/// The id a trigger gives a record's event (`ce-id`), as Knative's KafkaSource does.
pub fn event_id(partition: i32, offset: i64) -> String {
    format!("partition:{partition}/offset:{offset}")
}

impl Kafka {
    pub fn start(partitions: i32) -> anyhow::Result<Kafka> {
        let cluster = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
        let producer = |linger: &str| {
            ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("linger.ms", linger)
                .set("queue.buffering.max.messages", "1000000")
                .create::<FutureProducer>()
        };
        let (bulk, paced) = (producer("5")?, producer("0")?);
        Ok(Kafka { cluster, bulk, paced, partitions })
    }

    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates `topic` with the configured partitions.
    pub fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        self.cluster.create_topic(topic, self.partitions, 1).with_context(|| format!("creating topic {topic}"))
    }

    fn record<'a>(&self, topic: &'a str, i: usize, payload: &'a str) -> FutureRecord<'a, (), str> {
        FutureRecord::to(topic).partition(i as i32 % self.partitions).payload(payload)
    }

    /// Produces `n` small records round-robin over the partitions; returns their event ids.
    pub async fn produce(&self, topic: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let sends = futures::stream::iter(0..n)
            .map(|i| async move {
                let payload = format!("{{\"n\":{i}}}");
                self.bulk.send(self.record(topic, i, &payload), Duration::from_secs(60)).await
            })
            .buffer_unordered(IN_FLIGHT);
        let delivered: Vec<_> = sends.collect().await;
        delivered
            .into_iter()
            .map(|d| d.map(|d| event_id(d.partition, d.offset)).map_err(|(e, _)| anyhow::anyhow!("producing: {e}")))
            .collect()
    }

    /// Produces at `rate` records/s for `duration`; each record's time is taken just before it
    /// is handed to the producer.
    pub async fn produce_paced(&self, topic: &str, rate: u32, duration: Duration) -> anyhow::Result<Vec<Sent>> {
        let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
        let mut pending = FuturesUnordered::new();
        let mut pacer = crate::Pacer::new(rate, total);
        let mut sent = Vec::with_capacity(total);
        while let Some(range) = pacer.next().await {
            for i in range {
                let payload = format!("{{\"n\":{i}}}");
                let at_us = unix_us();
                let delivery = self.paced.send_result(self.record(topic, i, &payload)).map_err(|(e, _)| e)?;
                pending.push(async move { (at_us, delivery.await) });
            }
            while let Some(Some(done)) = futures::FutureExt::now_or_never(pending.next()) {
                sent.push(done);
            }
        }
        sent.extend(pending.collect::<Vec<_>>().await);
        sent.into_iter()
            .map(|(at_us, d)| match d {
                Ok(Ok(d)) => Ok(Sent { id: event_id(d.partition, d.offset), at_us }),
                Ok(Err((e, _))) => Err(anyhow::anyhow!("producing: {e}")),
                Err(_) => Err(anyhow::anyhow!("producing: the producer went away")),
            })
            .collect()
    }

    /// The baseline: a `StreamConsumer` in group `group`, subscribed to `topic`, reading from
    /// the earliest offset with manual commits.
    pub fn raw_consumer<'a>(&self, topic: &'a str, group: &str) -> anyhow::Result<RawConsumer<'a>> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(RawConsumer { consumer, topic, next: BTreeMap::new(), last_commit: Instant::now() })
    }

    /// The throughput baseline: a raw consumer in a fresh group reads `n` records of `topic`
    /// and commits them. Timed from the subscribe until the last commit returned.
    pub async fn raw_consume(&self, topic: &str, group: &str, n: usize, timeout: Duration) -> anyhow::Result<Consumed> {
        let start = Instant::now();
        let mut consumer = self.raw_consumer(topic, group)?;
        let mut first = None;
        consumer.read(n, start + timeout, |_, _| _ = first.get_or_insert_with(|| start.elapsed())).await?;
        consumer.commit(CommitMode::Sync)?;
        Ok(Consumed { first: first.unwrap_or_default(), done: start.elapsed() })
    }
}

/// A consumer in a group of its own, as an application would write it: it reads records and
/// commits the next offsets every [`COMMIT_EVERY`] (asynchronously).
pub struct RawConsumer<'a> {
    consumer: StreamConsumer,
    topic: &'a str,
    next: BTreeMap<i32, i64>,
    last_commit: Instant,
}

impl RawConsumer<'_> {
    /// Reads `n` records, calling `seen` with each one's partition and offset; fails at `deadline`.
    pub async fn read(&mut self, n: usize, deadline: Instant, mut seen: impl FnMut(i32, i64)) -> anyhow::Result<()> {
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.consumer.recv())
                .await
                .context("raw consumer: timed out waiting for a record")??;
            std::hint::black_box(message.payload().map_or(0, <[u8]>::len));
            seen(message.partition(), message.offset());
            self.next.insert(message.partition(), message.offset() + 1);
            if self.last_commit.elapsed() >= COMMIT_EVERY {
                self.commit(CommitMode::Async)?;
                self.last_commit = Instant::now();
            }
        }
        Ok(())
    }

    /// Commits the next offset of every partition read so far.
    pub fn commit(&self, mode: CommitMode) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.next {
            tpl.add_partition_offset(self.topic, p, Offset::Offset(o))?;
        }
        Ok(self.consumer.commit(&tpl, mode)?)
    }
}
