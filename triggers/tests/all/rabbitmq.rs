//! RabbitMQ triggers against the broker on 127.0.0.1:5672. Every test uses its own queues and
//! exchanges (uuid-suffixed) and deletes them at the end, so tests can run in parallel; messages
//! carry a `message_id`, which becomes the event id the ledger records.

use crate::{Node, quick_retries};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeMap;
use std::time::Duration;
use wisp_triggers::{RabbitmqSpec, SourceSpec, State, TriggerSpec, TriggerView};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const LONG: Duration = Duration::from_secs(120);

/// The test's side of the broker: declares, publishes (with confirms), inspects, cleans up.
struct Broker {
    _connection: Connection,
    channel: Channel,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Broker {
    async fn connect() -> Broker {
        let connection = Connection::connect(URL, ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        Broker { _connection: connection, channel, queues: Vec::new(), exchanges: Vec::new() }
    }

    /// A fresh queue (or exchange) name, remembered for deletion at the end.
    fn name(&mut self, what: &str, exchange: bool) -> String {
        let name = format!("wisp-test-{what}-{}", uuid::Uuid::new_v4().simple());
        if exchange { &mut self.exchanges } else { &mut self.queues }.push(name.clone());
        name
    }

    async fn declare_queue(&self, queue: &str, arguments: FieldTable) {
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        self.channel.queue_declare(queue.into(), options, arguments).await.unwrap();
    }

    /// A fanout exchange with `queue` bound to it.
    async fn declare_fanout(&self, exchange: &str, queue: &str) {
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        self.channel
            .exchange_declare(exchange.into(), ExchangeKind::Fanout, options, FieldTable::default())
            .await
            .unwrap();
        self.declare_queue(queue, FieldTable::default()).await;
        self.channel
            .queue_bind(queue.into(), exchange.into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
    }

    /// Publishes `(message_id, body)` pairs in order, then waits for every confirm.
    async fn publish(&self, exchange: &str, key: &str, messages: impl IntoIterator<Item = (String, String)>) {
        for (id, body) in messages {
            let properties = BasicProperties::default()
                .with_message_id(id.into())
                .with_content_type("text/plain".into())
                .with_delivery_mode(2);
            let options = BasicPublishOptions::default();
            self.channel
                .basic_publish(exchange.into(), key.into(), options, body.as_bytes(), properties)
                .await
                .unwrap();
        }
        assert!(self.channel.wait_for_confirms().await.unwrap().is_empty());
    }

    /// `n` messages `m-00000`... straight to `queue`.
    async fn publish_numbered(&self, queue: &str, range: std::ops::Range<usize>) {
        self.publish("", queue, range.map(|i| (message_id(i), format!("{{\"n\":{i}}}")))).await;
    }

    /// (ready messages, consumers)
    async fn queue_state(&self, queue: &str) -> (u32, u32) {
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let q = self.channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
        (q.message_count(), q.consumer_count())
    }

    /// Waits until `queue` holds `ready` messages and `consumers` consumers.
    async fn wait_queue(&self, queue: &str, ready: u32, consumers: u32) {
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let state = self.queue_state(queue).await;
            if state == (ready, consumers) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{queue}: (ready, consumers) = {state:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn cleanup(self) {
        for q in &self.queues {
            self.channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        }
        for x in &self.exchanges {
            self.channel.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()).await.unwrap();
        }
    }
}

/// Publishes `m-<backlog>`.. `m-<n-1>` to `queue` from its own connection, 20 at a time with
/// pauses, so the stream is still going when a test interrupts the trigger.
fn spawn_publisher(queue: &str, backlog: usize, n: usize) -> tokio::task::JoinHandle<()> {
    let queue = queue.to_string();
    tokio::spawn(async move {
        let broker = Broker::connect().await;
        for start in (backlog..n).step_by(20) {
            broker.publish_numbered(&queue, start..(start + 20).min(n)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

fn message_id(i: usize) -> String {
    format!("m-{i:05}")
}

fn trigger(name: &str, queue: &str, prefetch: u16) -> TriggerSpec {
    TriggerSpec {
        name: name.into(),
        function: "events".into(),
        source: SourceSpec::Rabbitmq(RabbitmqSpec {
            url: URL.into(),
            queue: queue.into(),
            exchange: None,
            routing_key: None,
            prefetch,
            dead_letter_exchange: None,
        }),
        delivery: quick_retries(2),
    }
}

fn rabbitmq(spec: &mut TriggerSpec) -> &mut RabbitmqSpec {
    match &mut spec.source {
        SourceSpec::Rabbitmq(r) => r,
        SourceSpec::Kafka(_) => unreachable!(),
    }
}

fn trigger_name(what: &str) -> String {
    format!("rmq-{what}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Event ids of the trigger's successful invocations, in ledger order.
async fn delivered_ids(node: &Node, trigger: &str) -> Vec<String> {
    node.usage("events")
        .await
        .into_iter()
        .filter(|r| r.trigger.as_deref() == Some(trigger) && r.status == 200)
        .filter_map(|r| r.event_id)
        .collect()
}

/// Successful invocations per event id.
fn counts(ids: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    counts
}

/// Waits until the ledger holds a successful invocation of each of `n` events.
async fn wait_delivered(node: &Node, trigger: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let ids = delivered_ids(node, trigger).await;
        if counts(&ids).len() >= n {
            return ids;
        }
        assert!(tokio::time::Instant::now() < deadline, "{trigger}: {} of {n} events delivered", counts(&ids).len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks every one of `n` numbered messages was delivered; returns the duplicates.
fn assert_all_delivered(ids: &[String], n: usize) -> usize {
    let counts = counts(ids);
    let expected: Vec<String> = (0..n).map(message_id).collect();
    let seen: Vec<&str> = counts.keys().copied().collect();
    assert_eq!(seen, expected.iter().map(String::as_str).collect::<Vec<_>>(), "lost or unexpected events");
    ids.len() - n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delivers_ten_thousand_exactly_once() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("bulk", false);
    let name = trigger_name("bulk");
    // The trigger declares the queue (durable) itself.
    node.triggers.create(trigger(&name, &queue, 50)).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    broker.publish_numbered(&queue, 0..10_000).await;

    node.wait_for(&name, LONG, "10,000 delivered", |v| v.status.delivered >= 10_000).await;
    let ids = wait_delivered(&node, &name, 10_000).await;
    assert_eq!(ids.len(), 10_000);
    assert!(counts(&ids).values().all(|&c| c == 1));
    assert_eq!(assert_all_delivered(&ids, 10_000), 0);
    node.wait_for(&name, LONG, "queue depth 0", |v| v.status.queue_depth == Some(0)).await;
    assert!(node.metrics().contains(&format!("wisp_trigger_queue_depth{{trigger=\"{name}\"}} 0")));

    assert_eq!(node.describe(&name).status.delivered, 10_000);
    node.triggers.delete(&name).await.unwrap();
    // Nothing left ready or unacknowledged (an unacked one is requeued when the channel closes).
    assert_eq!(broker.queue_state(&queue).await, (0, 0));
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_prefetch_one_keeps_publish_order() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("order", false);
    broker.declare_queue(&queue, FieldTable::default()).await;
    broker.publish_numbered(&queue, 0..300).await;
    let name = trigger_name("order");
    node.triggers.create(trigger(&name, &queue, 1)).await.unwrap();

    let ids = wait_delivered(&node, &name, 300).await;
    let expected: Vec<String> = (0..300).map(message_id).collect();
    assert_eq!(ids, expected);
    node.triggers.delete(&name).await.unwrap();
    broker.cleanup().await;
}

/// The poison message's id, among `m-00000`.. `m-00019`.
const POISON: &str = "poison-1";

async fn publish_with_poison(broker: &Broker, queue: &str) {
    let mut messages: Vec<(String, String)> = (0..20).map(|i| (message_id(i), format!("ok {i}"))).collect();
    messages.insert(7, (POISON.into(), "this is poison".into()));
    broker.publish("", queue, messages).await;
}

fn text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The one message in `queue` (fetched and acked).
async fn only_message(broker: &Broker, queue: &str) -> lapin::message::Delivery {
    broker.wait_queue(queue, 1, 0).await;
    let options = BasicGetOptions { no_ack: true };
    let message = broker.channel.basic_get(queue.into(), options).await.unwrap().expect("a dead-lettered message");
    message.delivery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_poison_goes_to_the_dead_letter_exchange() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("in", false);
    let (dlx, dlq) = (broker.name("dlx", true), broker.name("dlq", false));
    broker.declare_fanout(&dlx, &dlq).await;
    let name = trigger_name("dlx");
    let mut spec = trigger(&name, &queue, 5);
    rabbitmq(&mut spec).dead_letter_exchange = Some(dlx.clone());
    node.triggers.create(spec).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    publish_with_poison(&broker, &queue).await;

    node.wait_for(&name, LONG, "20 delivered, 1 dead-lettered", |v| {
        v.status.delivered == 20 && v.status.dead_lettered == 1
    })
    .await;
    let attempts = node.usage("events").await.iter().filter(|r| r.event_id.as_deref() == Some(POISON)).count();
    assert_eq!(attempts, 3, "1 attempt + 2 retries");
    let status = node.describe(&name).status;
    assert_eq!((status.retried, status.dead_lettered, status.dropped), (2, 1, 0));
    assert!(status.last_error.unwrap_or_default().contains(POISON));

    let dead = only_message(&broker, &dlq).await;
    let headers = dead.properties.headers().clone().unwrap_or_default();
    assert_eq!(text(&headers, "ce-id").as_deref(), Some(POISON));
    assert_eq!(text(&headers, "ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(text(&headers, "ce-type").as_deref(), Some("dev.knative.rabbitmq.event"));
    assert_eq!(
        text(&headers, "ce-source"),
        Some(format!("/apis/v1/namespaces/default/rabbitmqsources/{name}#{queue}"))
    );
    assert_eq!(text(&headers, "ce-knativeerrorcode").as_deref(), Some("500"));
    assert_eq!(text(&headers, "ce-knativeerrordest").as_deref(), Some("/fn/events"));
    assert!(text(&headers, "ce-knativeerrordata").unwrap_or_default().contains("refusing poison"));
    assert_eq!(dead.data, b"this is poison");
    assert_eq!(dead.routing_key.as_str(), queue, "the original routing key");
    assert_eq!(dead.properties.content_type().as_ref().map(ShortString::as_str), Some("text/plain"));
    assert_eq!(*dead.properties.delivery_mode(), Some(2));

    node.triggers.delete(&name).await.unwrap();
    assert_eq!(broker.queue_state(&queue).await, (0, 0), "the poison message was acked");
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_poison_without_dlx_is_rejected_to_the_queues_own_dlx() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let (dlx, dlq) = (broker.name("qdlx", true), broker.name("qdlq", false));
    broker.declare_fanout(&dlx, &dlq).await;
    let queue = broker.name("in", false);
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
    broker.declare_queue(&queue, arguments).await;
    publish_with_poison(&broker, &queue).await;
    let name = trigger_name("nodlx");
    node.triggers.create(trigger(&name, &queue, 5)).await.unwrap();

    node.wait_for(&name, LONG, "20 delivered, 1 dropped", |v| v.status.delivered == 20 && v.status.dropped == 1).await;
    let status = node.describe(&name).status;
    assert_eq!((status.retried, status.dead_lettered), (2, 0));
    let attempts = node.usage("events").await.iter().filter(|r| r.event_id.as_deref() == Some(POISON)).count();
    assert_eq!(attempts, 3);
    // RabbitMQ dead-lettered the rejected message itself: the original, with its x-death record.
    let dead = only_message(&broker, &dlq).await;
    assert_eq!(dead.data, b"this is poison");
    assert_eq!(dead.properties.message_id().as_ref().map(ShortString::as_str), Some(POISON));
    let headers = dead.properties.headers().clone().unwrap_or_default();
    assert!(headers.contains_key("x-death"), "{headers:?}");

    node.triggers.delete(&name).await.unwrap();
    assert_eq!(broker.queue_state(&queue).await, (0, 0));
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_binds_the_queue_to_an_exchange_with_the_routing_key() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("bound", false);
    let exchange = broker.name("orders", true);
    let name = trigger_name("bind");
    let mut spec = trigger(&name, &queue, 10);
    rabbitmq(&mut spec).exchange = Some(exchange.clone());
    rabbitmq(&mut spec).routing_key = Some("orders.*".into());
    // The trigger declares both the queue and the (topic) exchange, and binds them.
    node.triggers.create(spec).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;

    let one = |id: &str| [(id.to_string(), format!("body of {id}"))];
    // Non-matching first: on one channel they are routed (nowhere) before the matching ones.
    broker.publish(&exchange, "invoices.created", one("no-1")).await;
    broker.publish(&exchange, "orders.eu.created", one("no-2")).await;
    broker.publish(&exchange, "orders.created", one("yes-1")).await;
    broker.publish(&exchange, "orders.paid", one("yes-2")).await;

    let ids = wait_delivered(&node, &name, 2).await;
    assert_eq!(ids, ["yes-1", "yes-2"]);
    node.triggers.delete(&name).await.unwrap();
    assert_eq!(broker.queue_state(&queue).await, (0, 0));
    broker.cleanup().await;
}

/// `rabbitmqctl` as root, for what AMQP cannot do (closing another client's connection).
async fn rabbitmqctl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("rabbitmqctl").args(args).output().await.expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pids of connections named `name` (the trigger's `connection_name` client property). The
/// plain format, because `close_connection` does not take the pids the JSON one prints.
async fn connection_pids(name: &str) -> Vec<String> {
    let lines = rabbitmqctl(&["list_connections", "pid", "client_properties", "-s"]).await;
    let quoted = format!("\"{name}\"");
    lines.lines().filter(|l| l.contains(&quoted)).filter_map(|l| l.split('\t').next()).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_reconnects_after_the_broker_closes_the_connection() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("reconnect", false);
    let name = trigger_name("reconnect");
    let prefetch = 50;
    node.triggers.create(trigger(&name, &queue, prefetch)).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    let connection_name = format!("wisp-trigger-{name}");
    let pids = connection_pids(&connection_name).await;
    assert_eq!(pids.len(), 1, "{pids:?}");

    // A backlog keeps all `prefetch` deliveries in flight when the connection goes.
    let (backlog, n) = (4_000, 8_000);
    broker.publish_numbered(&queue, 0..backlog).await;
    let publisher = spawn_publisher(&queue, backlog, n);
    node.wait_for(&name, LONG, "some delivered", |v| v.status.delivered >= 200).await;
    rabbitmqctl(&["close_connection", &pids[0], "wisp test: connection closed mid-stream"]).await;
    let at_close = node.describe(&name).status.delivered;
    assert!(!publisher.is_finished(), "closed mid-stream");

    node.wait_for(&name, LONG, "the loss noticed", |v| v.status.last_error.is_some()).await;
    let ids = wait_delivered(&node, &name, n).await;
    let duplicates = assert_all_delivered(&ids, n);
    println!(
        "closed after {at_close} of {n} delivered; duplicates after reconnect: {duplicates} (prefetch {prefetch})"
    );
    assert!(duplicates <= usize::from(prefetch));
    let status = node.describe(&name).status;
    assert_eq!(status.state, State::Running);
    assert!(status.last_error.unwrap_or_default().contains("RabbitMQ amqp://guest:***@"), "redacted");
    let new_pids = connection_pids(&connection_name).await;
    assert!(new_pids.len() == 1 && new_pids != pids, "{new_pids:?}");

    node.triggers.delete(&name).await.unwrap();
    // Only the trigger's connection was closed: the test's own still works.
    assert_eq!(broker.queue_state(&queue).await, (0, 0));
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_resumes_after_a_node_restart() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("restart", false);
    let name = trigger_name("restart");
    let prefetch = 20;
    node.triggers.create(trigger(&name, &queue, prefetch)).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    let n = 2_000;
    let publisher = spawn_publisher(&queue, 0, n);
    node.wait_for(&name, LONG, "some delivered", |v| v.status.delivered >= 100).await;
    assert!(!publisher.is_finished(), "stopped mid-stream");
    let dir = node.stop().await;
    assert_eq!(broker.queue_state(&queue).await.1, 0, "no consumer while stopped");

    let node = Node::start_in(dir).await;
    publisher.await.unwrap();
    let ids = wait_delivered(&node, &name, n).await;
    let duplicates = assert_all_delivered(&ids, n);
    println!("resumed after a restart: {n} delivered, duplicates: {duplicates} (prefetch {prefetch})");
    assert!(duplicates <= usize::from(prefetch));
    node.triggers.delete(&name).await.unwrap();
    assert_eq!(broker.queue_state(&queue).await, (0, 0));
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delete_stops_consuming() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("delete", false);
    let name = trigger_name("delete");
    node.triggers.create(trigger(&name, &queue, 10)).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    broker.wait_queue(&queue, 0, 1).await;
    broker.publish_numbered(&queue, 0..10).await;
    wait_delivered(&node, &name, 10).await;

    node.triggers.delete(&name).await.unwrap();
    assert_eq!(broker.queue_state(&queue).await, (0, 0), "no consumer once delete returned");
    broker.publish_numbered(&queue, 10..15).await;
    broker.wait_queue(&queue, 5, 0).await;
    assert_eq!(delivered_ids(&node, &name).await.len(), 10);
    assert!(node.triggers.describe(&name).is_err());
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unreachable_broker_is_failing_and_deletable() {
    let node = Node::start().await;
    let name = trigger_name("down");
    let mut spec = trigger(&name, "wisp-test-never", 1);
    rabbitmq(&mut spec).url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    node.triggers.create(spec).await.unwrap();

    node.wait_for(&name, LONG, "failing", |v| v.status.state == State::Failing && v.status.last_error.is_some()).await;
    let error = node.describe(&name).status.last_error.unwrap();
    assert!(error.contains("amqp://guest:***@127.0.0.1:1"), "{error}");
    // A while later it is still retrying (the consumer task has not ended or panicked).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(node.describe(&name).status.state, State::Stopped);

    tokio::time::timeout(Duration::from_secs(5), node.triggers.delete(&name))
        .await
        .expect("delete does not wait for the backoff")
        .unwrap();
    assert!(node.triggers.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dead_letter_publish_is_retried_until_confirmed() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("in", false);
    let (dlx, dlq) = (broker.name("later-dlx", true), broker.name("later-dlq", false));
    let name = trigger_name("dlxretry");
    let mut spec = trigger(&name, &queue, 5);
    spec.delivery = quick_retries(0);
    rabbitmq(&mut spec).dead_letter_exchange = Some(dlx.clone());
    node.triggers.create(spec).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    broker.publish("", &queue, [(POISON.to_string(), "poison".to_string())]).await;

    let error_has = |text: &'static str| {
        let dlx = dlx.clone();
        move |v: &TriggerView| v.status.last_error.as_deref().is_some_and(|e| e.contains(&dlx) && e.contains(text))
    };
    // The exchange does not exist yet: retried (on a fresh channel each time), not acked.
    node.wait_for(&name, LONG, "NOT_FOUND", error_has("NOT_FOUND")).await;
    assert_eq!(broker.queue_state(&queue).await.0, 0, "unacked, not requeued");
    // It exists but routes nowhere: still not done.
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    broker
        .channel
        .exchange_declare(dlx.as_str().into(), ExchangeKind::Fanout, options, FieldTable::default())
        .await
        .unwrap();
    node.wait_for(&name, LONG, "unroutable", error_has("no queue")).await;
    assert_eq!(node.describe(&name).status.dead_lettered, 0);
    // Bound to a queue: confirmed, then the original is acked.
    broker.declare_fanout(&dlx, &dlq).await;
    node.wait_for(&name, LONG, "dead-lettered", |v| v.status.dead_lettered == 1).await;
    let dead = only_message(&broker, &dlq).await;
    assert_eq!(dead.data, b"poison");
    node.triggers.delete(&name).await.unwrap();
    assert_eq!(broker.queue_state(&queue).await, (0, 0));
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delete_during_a_retry_backoff_leaves_the_event_queued() {
    let node = Node::start().await;
    let mut broker = Broker::connect().await;
    let queue = broker.name("backoff", false);
    let name = trigger_name("backoff");
    let mut spec = trigger(&name, &queue, 1);
    // A long pause after the first failed attempt.
    spec.delivery.retries = 3;
    spec.delivery.backoff_ms = 60_000;
    node.triggers.create(spec).await.unwrap();
    node.wait_for(&name, LONG, "running", |v| v.status.state == State::Running).await;
    broker.publish("", &queue, [(POISON.to_string(), "poison".to_string())]).await;
    node.wait_for(&name, LONG, "a retry pending", |v| v.status.retried == 1).await;

    // Prompt: the backoff is interrupted; the event is neither acked nor dropped, so it is requeued.
    tokio::time::timeout(Duration::from_secs(10), node.triggers.delete(&name)).await.expect("prompt delete").unwrap();
    assert_eq!(broker.queue_state(&queue).await, (1, 0));
    broker.cleanup().await;
}
