//! RabbitMQ queues as event sources, consumed the way Knative's RabbitmqSource does: one channel
//! with a QoS prefetch, manual acks, messages turned into CloudEvents (or forwarded when they
//! already are one). A message is acknowledged only after the function accepted it or it was
//! published, confirmed, to the dead-letter exchange; one given up with no dead-letter exchange
//! is rejected without requeue, so the queue's own `x-dead-letter-exchange` gets it. Retries
//! happen inside the dispatcher with backoff, never as an immediate requeue (the hot loop of
//! eventing-rabbitmq#537). Anything unacknowledged when a channel dies is requeued by the broker
//! and redelivered: delivery is at-least-once, with at most `prefetch` duplicates per lost
//! connection.

use crate::event::{Event, rfc3339};
use crate::spec::{RabbitmqSpec, SourceSpec, TriggerSpec};
use crate::{Consumer, Context, Delivery, Failure};
use bytes::Bytes;
use futures::StreamExt;
use lapin::message::Delivery as Message;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// `type` of events built from plain messages.
const EVENT_TYPE: &str = "dev.knative.rabbitmq.event";
/// Content type of a structured-mode CloudEvent.
const STRUCTURED: &str = "application/cloudevents+json";
/// How often the queue depth is read.
const DEPTH_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for the broker on one setup, depth poll or confirm.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for each step of leaving the broker (cancel, channel close, connection close),
/// so a stop stays well within the manager's patience.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A session that lasted this long was healthy: the next reconnect starts with the shortest delay.
const HEALTHY: Duration = Duration::from_secs(10);
/// Newest AMQP timestamp RFC 3339 can show (9999-12-31T23:59:59Z).
const MAX_TIMESTAMP: u64 = 253_402_300_799;
/// AMQP `delivery-mode` of messages written to disk.
const PERSISTENT: u8 = 2;

pub(crate) struct RabbitmqConsumer {
    trigger: String,
    spec: RabbitmqSpec,
    /// The URL with its password hidden, for errors.
    shown_url: String,
    /// `source` of the events built here.
    source: String,
}

impl RabbitmqConsumer {
    pub(crate) fn new(trigger: &TriggerSpec, spec: &RabbitmqSpec) -> Self {
        let shown_url = match trigger.redacted().source {
            SourceSpec::Rabbitmq(r) => r.url,
            SourceSpec::Kafka(_) => String::new(),
        };
        Self {
            trigger: trigger.name.clone(),
            spec: spec.clone(),
            shown_url,
            source: crate::ce_source("rabbitmqsources", &trigger.name, &spec.queue),
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("RabbitMQ {}: {what}: {e}", self.shown_url)
    }

    /// Connects, declares the topology and starts consuming.
    async fn open(&self) -> Result<Session, String> {
        // The name lets operators (and tests) tell this trigger's connection apart.
        let properties = ConnectionProperties::default().with_connection_name(connection_name(&self.trigger).into());
        let connection = Connection::connect(&self.spec.url, properties).await.map_err(|e| self.error("connect", e))?;
        let connection = Arc::new(connection);
        let admin = self.declare(&connection).await.map_err(|e| self.error("declare", e))?;
        let channel = connection.create_channel().await.map_err(|e| self.error("open channel", e))?;
        channel.basic_qos(self.spec.prefetch, BasicQosOptions::default()).await.map_err(|e| self.error("qos", e))?;
        let consumer = channel
            .basic_consume(
                self.spec.queue.as_str().into(),
                consumer_tag(&self.trigger).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.error(&format!("consume queue {:?}", self.spec.queue), e))?;
        let dead_letter = self.spec.dead_letter_exchange.as_ref().map(|x| DeadLetter::new(x, connection.clone()));
        Ok(Session { connection, admin, channel, consumer, dead_letter })
    }

    /// Declares the queue (and exchange and binding), each passively first so an existing one is
    /// used as it is, whatever its arguments; missing ones are created durable. Returns the
    /// channel, which goes on reading the queue depth.
    async fn declare(&self, connection: &Connection) -> lapin::Result<Channel> {
        let mut channel = connection.create_channel().await?;
        let queue = self.spec.queue.as_str();
        declare_or_create(connection, &mut channel, Declare::Queue(queue)).await?;
        if let Some(exchange) = &self.spec.exchange {
            declare_or_create(connection, &mut channel, Declare::Exchange(exchange)).await?;
            let key = self.spec.routing_key.as_deref().unwrap_or("#");
            channel
                .queue_bind(
                    queue.into(),
                    exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(channel)
    }

    /// Consumes until `stop` (`Ok`) or until the connection, channel or consumer fails (`Err`).
    /// Either way in-flight deliveries finish (or are abandoned after the drain) before it returns.
    async fn consume(&self, session: Session, ctx: &Context, stop: &CancellationToken) -> Result<(), String> {
        let Session { connection, admin, channel, mut consumer, dead_letter } = session;
        let handler = Arc::new(Handler { ctx: ctx.clone(), source: self.source.clone(), dead_letter });
        // Cancelled when this session ends: retries and dead-letter publishes of deliveries whose
        // channel is gone would be wasted, the broker redelivers them.
        let session_stop = stop.child_token();
        let mut in_flight = JoinSet::new();
        let mut depth = tokio::time::interval(DEPTH_EVERY);
        depth.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let prefetch = usize::from(self.spec.prefetch);
        let failure = loop {
            tokio::select! {
                _ = stop.cancelled() => break None,
                next = consumer.next(), if in_flight.len() < prefetch => match next {
                    Some(Ok(message)) => {
                        in_flight.spawn(handler.clone().handle(message, session_stop.clone()));
                    }
                    Some(Err(e)) => break Some(self.error("consumer", e)),
                    None => break Some(self.error("consumer", "cancelled by the broker (queue deleted?)")),
                },
                Some(joined) = in_flight.join_next() => report_panic(joined),
                _ = depth.tick() => {
                    if let Err(e) = self.read_depth(&admin, ctx).await {
                        break Some(e);
                    }
                }
            }
        };
        match failure {
            Some(_) => session_stop.cancel(),
            None => self.cancel_consumer(&channel).await,
        }
        drain(&mut in_flight, ctx.drain, &self.trigger).await;
        // Closing the channel requeues whatever is still unacknowledged; a dead connection makes these no-ops.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "OK".into())).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await;
        failure.map_or(Ok(()), Err)
    }

    /// No new deliveries; prefetched ones not yet started are requeued when the channel closes.
    async fn cancel_consumer(&self, channel: &Channel) {
        let cancel = channel.basic_cancel(consumer_tag(&self.trigger).into(), BasicCancelOptions::default());
        if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, cancel).await {
            tracing::debug!(trigger = %self.trigger, "basic.cancel: {e}");
        }
    }

    /// Reads the number of ready messages with a passive declare.
    async fn read_depth(&self, admin: &Channel, ctx: &Context) -> Result<(), String> {
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declare = admin.queue_declare(self.spec.queue.as_str().into(), options, FieldTable::default());
        match tokio::time::timeout(BROKER_TIMEOUT, declare).await {
            Ok(Ok(queue)) => {
                ctx.status.set_queue_depth(u64::from(queue.message_count()));
                Ok(())
            }
            Ok(Err(e)) => Err(self.error("read queue depth", e)),
            Err(_) => Err(self.error("read queue depth", "no answer")),
        }
    }
}

impl Consumer for RabbitmqConsumer {
    async fn run(self, ctx: Context, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        while !stop.is_cancelled() {
            ctx.status.connecting();
            let opened = tokio::select! {
                _ = stop.cancelled() => break,
                opened = tokio::time::timeout(BROKER_TIMEOUT, self.open()) => opened,
            };
            match opened {
                Ok(Ok(session)) => {
                    tracing::info!(trigger = %self.trigger, queue = %self.spec.queue, "consuming");
                    ctx.status.running();
                    let started = Instant::now();
                    match self.consume(session, &ctx, &stop).await {
                        Ok(()) => break,
                        Err(e) => ctx.status.failing(e),
                    }
                    if started.elapsed() >= HEALTHY {
                        backoff = Backoff::default();
                    }
                }
                Ok(Err(e)) => ctx.status.failing(e),
                Err(_) => ctx.status.failing(self.error("connect", "no answer")),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
        tracing::info!(trigger = %self.trigger, "stopped consuming");
    }
}

/// One connection's worth of consuming.
struct Session {
    connection: Arc<Connection>,
    /// Declared the topology; reads the queue depth.
    admin: Channel,
    /// Carries the consumer and its acks.
    channel: Channel,
    consumer: lapin::Consumer,
    dead_letter: Option<DeadLetter>,
}

/// What each delivery task needs.
struct Handler {
    ctx: Context,
    source: String,
    dead_letter: Option<DeadLetter>,
}

impl Handler {
    /// Delivers one message, then acknowledges, dead-letters or rejects it.
    async fn handle(self: Arc<Self>, mut message: Message, stop: CancellationToken) {
        let mut event = to_event(&mut message, &self.source);
        match self.ctx.dispatcher.deliver(&event, &stop).await {
            Delivery::Delivered(_) => ack(&message, &event).await,
            // Left unacknowledged: requeued when the channel closes.
            Delivery::Cancelled => {}
            Delivery::Failed(failure) => {
                failure.annotate(&mut event, &self.ctx.dispatcher.destination());
                match &self.dead_letter {
                    Some(dead_letter) => self.send_to_dead_letter(dead_letter, &message, &event, &failure, &stop).await,
                    None => self.reject(&message, &event, &failure).await,
                }
            }
        }
    }

    async fn send_to_dead_letter(
        &self,
        dead_letter: &DeadLetter,
        message: &Message,
        event: &Event,
        failure: &Failure,
        stop: &CancellationToken,
    ) {
        if dead_letter.publish(message, event, &self.ctx, stop).await {
            self.ctx.status.error(format!(
                "event {} failed after {} attempts (status {}); sent to dead-letter exchange {:?}",
                event.id, failure.attempts, failure.status, dead_letter.exchange
            ));
            ack(message, event).await;
            self.ctx.status.dead_lettered();
        }
    }

    /// No dead-letter exchange: rejected without requeue, so the queue's own dead-lettering applies.
    async fn reject(&self, message: &Message, event: &Event, failure: &Failure) {
        let options = BasicNackOptions { multiple: false, requeue: false };
        match message.acker.nack(options).await {
            Ok(true) => {
                let text = format!(
                    "event {} failed after {} attempts (status {}); rejected (no dead-letter exchange)",
                    event.id, failure.attempts, failure.status
                );
                tracing::warn!(trigger = %self.ctx.status.name(), "{text}");
                self.ctx.status.error(text);
                self.ctx.status.dropped();
            }
            Ok(false) | Err(_) => lost_ack(event),
        }
    }
}

async fn ack(message: &Message, event: &Event) {
    if !matches!(message.acker.ack(BasicAckOptions::default()).await, Ok(true)) {
        lost_ack(event);
    }
}

fn lost_ack(event: &Event) {
    tracing::debug!(id = %event.id, "channel closed before the ack: the broker redelivers the message");
}

/// Publishes failed events to the dead-letter exchange on a channel with publisher confirms.
struct DeadLetter {
    exchange: String,
    connection: Arc<Connection>,
    /// Opened on first use and again after a failure closed it.
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl DeadLetter {
    fn new(exchange: &str, connection: Arc<Connection>) -> Self {
        Self { exchange: exchange.to_string(), connection, channel: tokio::sync::Mutex::default() }
    }

    /// Publishes until the broker confirms (true), or until `stop` or the loss of the message's
    /// channel (false: the message stays unacknowledged and comes back). An exchange that is
    /// missing or routes the event to no queue is retried with backoff, not skipped: the message
    /// must be somewhere before it is acknowledged (eventing-rabbitmq#1385 lost them).
    async fn publish(&self, message: &Message, event: &Event, ctx: &Context, stop: &CancellationToken) -> bool {
        let mut backoff = Backoff::default();
        while !message.acker.poisoned() {
            let result = tokio::select! {
                _ = stop.cancelled() => return false,
                result = tokio::time::timeout(BROKER_TIMEOUT, self.try_publish(message, event)) => result,
            };
            match result {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => ctx.status.error(format!("dead-letter exchange {:?}: {e}", self.exchange)),
                Err(_) => ctx.status.error(format!("dead-letter exchange {:?}: no confirm", self.exchange)),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
        false
    }

    async fn try_publish(&self, message: &Message, event: &Event) -> Result<(), String> {
        let channel = self.channel().await.map_err(|e| e.to_string())?;
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                message.routing_key.clone(),
                options,
                &event.data,
                binary_properties(event),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err("routed the event to no queue".into()),
            Confirmation::Nack(_) => Err("the broker refused the event (nack)".into()),
            Confirmation::NotRequested => Err("publisher confirms are off".into()),
        }
    }

    async fn channel(&self) -> lapin::Result<Channel> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }
}

/// The event in AMQP binary mode: attributes as `ce-*` headers, data as the body, its content
/// type kept, persistent.
fn binary_properties(event: &Event) -> BasicProperties {
    let mut headers = FieldTable::default();
    let mut put = |name: &str, value: &str| {
        if let Ok(name) = ShortString::try_new(format!("ce-{name}")) {
            headers.insert(name, AMQPValue::LongString(LongString::from(value)));
        }
    };
    put("specversion", "1.0");
    put("id", &event.id);
    put("source", &event.source);
    put("type", &event.ty);
    if let Some(subject) = &event.subject {
        put("subject", subject);
    }
    if let Some(time) = &event.time {
        put("time", time);
    }
    for (name, value) in &event.extensions {
        put(name, value);
    }
    let mut properties = BasicProperties::default().with_headers(headers).with_delivery_mode(PERSISTENT);
    if let Some(ct) = event.content_type.as_ref().and_then(|ct| ShortString::try_new(ct.as_str()).ok()) {
        properties = properties.with_content_type(ct);
    }
    if let Ok(id) = ShortString::try_new(event.id.as_str()) {
        properties = properties.with_message_id(id);
    }
    properties
}

/// The message as a CloudEvent: forwarded if it is one (binary `ce-` headers or structured
/// JSON), otherwise built as Knative does (so is a malformed one: delivered, not dropped). Only a `message_id` gives a plain message an id that
/// is stable across redeliveries; without one each delivery gets a new UUID, so receivers
/// cannot deduplicate it.
fn to_event(message: &mut Message, source: &str) -> Event {
    let properties = &message.properties;
    let data = Bytes::from(std::mem::take(&mut message.data));
    let content_type = properties.content_type().as_ref().map(ShortString::to_string);
    let structured = content_type.as_deref().is_some_and(|ct| ct.trim().to_ascii_lowercase().starts_with(STRUCTURED));
    if structured && let Some(event) = Event::from_structured(&data) {
        return event;
    }
    let ce_headers = ce_headers(properties.headers().as_ref());
    if !ce_headers.is_empty() {
        let pairs = ce_headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if let Some(event) = Event::from_binary("ce-", pairs, content_type.clone(), data.clone()) {
            return event;
        }
    }
    let id = properties.message_id().as_ref().map_or_else(|| uuid::Uuid::new_v4().to_string(), ShortString::to_string);
    let time = (*properties.timestamp())
        .filter(|secs| *secs <= MAX_TIMESTAMP)
        .map(|secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs)));
    Event {
        subject: Some(id.clone()),
        id,
        source: source.to_string(),
        ty: EVENT_TYPE.into(),
        time,
        content_type,
        extensions: Vec::new(),
        data,
    }
}

/// The `ce-*` headers (any case) with values as text; values that are not scalars are skipped.
fn ce_headers(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(headers) = headers else { return Vec::new() };
    headers
        .into_iter()
        .filter(|(name, _)| name.as_str().get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ce-")))
        .filter_map(|(name, value)| Some((name.to_string(), header_text(value)?)))
        .collect()
}

fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Boolean(v) => v.to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::Float(v) => v.to_string(),
        AMQPValue::Double(v) => v.to_string(),
        AMQPValue::Timestamp(secs) if *secs <= MAX_TIMESTAMP => rfc3339(UNIX_EPOCH + Duration::from_secs(*secs)),
        _ => return None,
    })
}

/// A queue or exchange this trigger needs.
#[derive(Clone, Copy)]
enum Declare<'a> {
    Queue(&'a str),
    Exchange(&'a str),
}

impl Declare<'_> {
    /// Both durable; an exchange is a `topic` one.
    async fn on(self, channel: &Channel, passive: bool) -> lapin::Result<()> {
        match self {
            Declare::Queue(name) => {
                let options = QueueDeclareOptions { passive, durable: true, ..QueueDeclareOptions::default() };
                channel.queue_declare(name.into(), options, FieldTable::default()).await.map(drop)
            }
            Declare::Exchange(name) => {
                let options = ExchangeDeclareOptions { passive, durable: true, ..ExchangeDeclareOptions::default() };
                channel.exchange_declare(name.into(), ExchangeKind::Topic, options, FieldTable::default()).await
            }
        }
    }
}

/// Declares passively and, if the broker says the thing does not exist, for real on a fresh
/// channel (a failed declare closes its channel).
async fn declare_or_create(connection: &Connection, channel: &mut Channel, what: Declare<'_>) -> lapin::Result<()> {
    match what.on(channel, true).await {
        Err(e) if not_found(&e) => {
            *channel = connection.create_channel().await?;
            what.on(channel, false).await
        }
        other => other,
    }
}

fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Waits for in-flight deliveries up to `limit`, then abandons the rest (unacknowledged, so the
/// broker redelivers them).
async fn drain(in_flight: &mut JoinSet<()>, limit: Duration, trigger: &str) {
    let finished = tokio::time::timeout(limit, async {
        while let Some(joined) = in_flight.join_next().await {
            report_panic(joined);
        }
    });
    if finished.await.is_err() {
        tracing::warn!(
            trigger,
            abandoned = in_flight.len(),
            "deliveries still running after the drain; redelivered later"
        );
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }
}

fn report_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!("delivery task panicked (its message is redelivered): {e}");
    }
}

fn connection_name(trigger: &str) -> String {
    format!("wisp-trigger-{trigger}")
}

fn consumer_tag(trigger: &str) -> String {
    format!("wisp-{trigger}")
}

/// Delays between reconnects (and dead-letter publishes): 100 ms doubling to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "/apis/v1/namespaces/default/rabbitmqsources/t#q";

    fn message(properties: BasicProperties, data: &[u8]) -> Message {
        let mut m = Message::mock(1, "".into(), "key".into(), false, data.to_vec());
        m.properties = properties;
        m
    }

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn rabbitmq_plain_messages_become_knative_events() {
        let properties = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_content_type("text/plain".into())
            .with_headers(table(&[("x-trace", AMQPValue::LongString("t".into()))]));
        let e = to_event(&mut message(properties, b"hi"), SOURCE);
        assert_eq!((e.id.as_str(), e.subject.as_deref()), ("m-1", Some("m-1")));
        assert_eq!((e.ty.as_str(), e.source.as_str()), (EVENT_TYPE, SOURCE));
        assert_eq!(e.time.as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
        assert_eq!((&e.data[..], e.extensions.len()), (&b"hi"[..], 0));

        let bare = to_event(&mut message(BasicProperties::default().with_timestamp(u64::MAX), b""), SOURCE);
        assert!(uuid::Uuid::parse_str(&bare.id).is_ok(), "{}", bare.id);
        assert_eq!(bare.time, None);
    }

    #[test]
    fn rabbitmq_cloudevents_are_forwarded() {
        let headers = table(&[
            ("ce-specversion", AMQPValue::LongString("1.0".into())),
            ("ce-id", AMQPValue::LongString("a".into())),
            ("CE-Source", AMQPValue::ShortString("s".into())),
            ("ce-type", AMQPValue::LongString("t".into())),
            ("ce-count", AMQPValue::LongInt(3)),
        ]);
        let properties = BasicProperties::default().with_headers(headers).with_content_type("application/json".into());
        let e = to_event(&mut message(properties, b"{}"), SOURCE);
        assert_eq!((e.id.as_str(), e.source.as_str(), e.ty.as_str()), ("a", "s", "t"));
        assert_eq!((e.extension("count"), e.content_type.as_deref()), (Some("3"), Some("application/json")));

        let json =
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":"x","datacontenttype":"text/plain"}"#;
        let properties =
            BasicProperties::default().with_content_type("application/cloudevents+json; charset=utf-8".into());
        let e = to_event(&mut message(properties, json), SOURCE);
        assert_eq!((e.id.as_str(), &e.data[..]), ("1", &b"x"[..]));

        // Incomplete CloudEvents headers: a plain message after all.
        let properties =
            BasicProperties::default().with_headers(table(&[("ce-id", AMQPValue::LongString("a".into()))]));
        assert_eq!(to_event(&mut message(properties, b""), SOURCE).ty, EVENT_TYPE);
    }

    #[test]
    fn rabbitmq_dead_letters_are_binary_mode() {
        let mut event = Event {
            id: "m-1".into(),
            source: SOURCE.into(),
            ty: EVENT_TYPE.into(),
            subject: Some("m-1".into()),
            content_type: Some("text/plain".into()),
            ..Event::default()
        };
        event.set_extension("knativeerrorcode", "500");
        let p = binary_properties(&event);
        let headers = p.headers().clone().unwrap_or_default();
        let text = |k: &str| headers.inner().get(k).and_then(header_text);
        assert_eq!(text("ce-id").as_deref(), Some("m-1"));
        assert_eq!(text("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(text("ce-knativeerrorcode").as_deref(), Some("500"));
        assert_eq!(p.content_type().as_ref().map(ShortString::as_str), Some("text/plain"));
        assert_eq!(*p.delivery_mode(), Some(PERSISTENT));
    }

    #[test]
    fn rabbitmq_backoff_doubles_to_five_seconds() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.next().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
