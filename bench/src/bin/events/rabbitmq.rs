//! The RabbitMQ side: queues of our own (unique names, deleted at the end), publishing with
//! confirms, and the raw consumer a trigger is compared with.

use crate::{Consumed, Sent, unix_us};
use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

/// Publishes between two waits for confirms.
const CONFIRM_BATCH: usize = 5_000;

pub struct Rabbitmq {
    pub url: String,
    connection: Connection,
    channel: Channel,
    queues: Vec<String>,
}

/// The id of message `i` in a queue: its AMQP `message_id`, which the trigger uses as event id.
pub fn message_id(queue: &str, i: usize) -> String {
    format!("{queue}/{i}")
}

impl Rabbitmq {
    pub async fn connect(url: &str) -> anyhow::Result<Rabbitmq> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Rabbitmq { url: url.into(), connection, channel, queues: Vec::new() })
    }

    /// Declares a durable queue, deleted again by [`Self::cleanup`].
    pub async fn create_queue(&mut self, queue: &str) -> anyhow::Result<()> {
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        self.channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
        self.queues.push(queue.into());
        Ok(())
    }

    async fn send(&self, queue: &str, id: String, i: usize) -> anyhow::Result<()> {
        // Transient messages: the broker keeps them in memory (the queue outlives a node's crash
        // all the same), so its disk is not what is measured.
        let properties =
            BasicProperties::default().with_message_id(id.into()).with_content_type("application/json".into());
        let payload = format!("{{\"n\":{i}}}");
        let options = BasicPublishOptions::default();
        self.channel.basic_publish("".into(), queue.into(), options, payload.as_bytes(), properties).await?;
        Ok(())
    }

    async fn confirmed(&self) -> anyhow::Result<()> {
        let returned = self.channel.wait_for_confirms().await?;
        anyhow::ensure!(returned.is_empty(), "{} messages came back unroutable", returned.len());
        Ok(())
    }

    /// Publishes messages `0..n` to `queue` and waits until the broker confirmed them all.
    pub async fn publish(&self, queue: &str, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            self.send(queue, message_id(queue, i), i).await?;
            if (i + 1) % CONFIRM_BATCH == 0 {
                self.confirmed().await?;
            }
        }
        self.confirmed().await
    }

    /// Publishes `n` messages whose ids are not those of [`message_id`] (untimed warm-up).
    pub async fn publish_warm_up(&self, queue: &str, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            self.send(queue, format!("{queue}/warm-up-{i}"), i).await?;
        }
        self.confirmed().await
    }

    /// Publishes messages `0..` at `rate` per second for `duration`; each one's time is
    /// taken just before it is handed to the client.
    pub async fn publish_paced(&self, queue: &str, rate: u32, duration: Duration) -> anyhow::Result<Vec<Sent>> {
        let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
        let mut pacer = crate::Pacer::new(rate, total);
        let mut sent = Vec::with_capacity(total);
        while let Some(range) = pacer.next().await {
            for i in range {
                let at_us = unix_us();
                self.send(queue, message_id(queue, i), i).await?;
                sent.push(Sent { id: message_id(queue, i), at_us });
            }
        }
        self.confirmed().await?;
        Ok(sent)
    }

    /// The baseline: a consumer on a channel of its own with QoS `prefetch`.
    pub async fn raw_consumer(&self, queue: &str, prefetch: u16) -> anyhow::Result<RawConsumer> {
        let channel = self.connection.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let options = BasicConsumeOptions::default();
        let consumer = channel.basic_consume(queue.into(), "".into(), options, FieldTable::default()).await?;
        Ok(RawConsumer { channel, consumer })
    }

    /// The throughput baseline: a raw consumer reads and acknowledges `n` messages. Timed from
    /// `basic.qos` until the last ack was sent.
    pub async fn raw_consume(
        &self,
        queue: &str,
        prefetch: u16,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Consumed> {
        let start = Instant::now();
        let mut consumer = self.raw_consumer(queue, prefetch).await?;
        let mut first = None;
        consumer.read(n, start + timeout, |_| _ = first.get_or_insert_with(|| start.elapsed())).await?;
        let done = start.elapsed();
        consumer.close().await?;
        Ok(Consumed { first: first.unwrap_or_default(), done })
    }

    /// Deletes the queues this run created.
    pub async fn cleanup(&mut self) -> anyhow::Result<()> {
        for queue in std::mem::take(&mut self.queues) {
            self.channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        Ok(())
    }
}

/// A consumer as an application would write it: each message acknowledged once read.
pub struct RawConsumer {
    channel: Channel,
    consumer: lapin::Consumer,
}

impl RawConsumer {
    /// Reads and acks `n` messages, calling `seen` with each one; fails at `deadline`.
    pub async fn read(&mut self, n: usize, deadline: Instant, mut seen: impl FnMut(&Delivery)) -> anyhow::Result<()> {
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let delivery = tokio::time::timeout(left, self.consumer.next())
                .await
                .context("raw consumer: timed out waiting for a message")?
                .context("raw consumer: the broker cancelled it")??;
            std::hint::black_box(delivery.data.len());
            seen(&delivery);
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }

    pub async fn close(self) -> anyhow::Result<()> {
        Ok(self.channel.close(200, "done".into()).await?)
    }
}
