//! Kafka triggers against librdkafka's mock cluster (one broker per test, in this process, over
//! real TCP) and the `events` function, which refuses data containing "poison" with a 500.

use crate::{Node, quick_retries};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList, bindings};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use wisp_scheduler::UsageQuery;
use wisp_triggers::{DeliverySpec, InitialOffset, KafkaSpec, Ordering, SourceSpec, State, TriggerSpec};

/// A mock cluster, owned by the producer to it (`test.mock.num.brokers`); both live as long as
/// the test.
struct Kafka {
    producer: FutureProducer,
}

impl Kafka {
    fn start(topics: &[(&str, i32)]) -> Kafka {
        let kafka = Kafka { producer: ClientConfig::new().set("test.mock.num.brokers", "1").create().unwrap() };
        for &(topic, partitions) in topics {
            kafka.cluster().create_topic(topic, partitions, 1).unwrap();
        }
        // SAFETY: the cluster lives as long as the producer, which `kafka` owns.
        unsafe {
            // A new group's first member is assigned at once, not after the broker's 3 s delay.
            bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(kafka.raw(), 100);
            bindings::rd_kafka_mock_start_request_tracking(kafka.raw());
        }
        kafka
    }

    fn cluster(&self) -> MockCluster<'_, impl ClientContext> {
        self.producer.client().mock_cluster().unwrap()
    }

    fn raw(&self) -> *mut bindings::rd_kafka_mock_cluster_t {
        // SAFETY: a live client handle.
        unsafe { bindings::rd_kafka_handle_mock_cluster(self.producer.client().native_ptr()) }
    }

    fn brokers(&self) -> String {
        self.cluster().bootstrap_servers()
    }

    /// How many requests of the API `api_key` the cluster received since the last call.
    fn requests(&self, api_key: i16) -> usize {
        // SAFETY: the array and its requests are the caller's to free, once, as done here.
        unsafe {
            let mut count = 0;
            let requests = bindings::rd_kafka_mock_get_requests(self.raw(), &mut count);
            let matching =
                (0..count).filter(|&i| bindings::rd_kafka_mock_request_api_key(*requests.add(i)) == api_key).count();
            bindings::rd_kafka_mock_request_destroy_array(requests, count);
            bindings::rd_kafka_mock_clear_requests(self.raw());
            matching
        }
    }

    /// Produces one record; returns the event id a converted record gets.
    async fn send(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&str>,
        value: &str,
        headers: &[(&str, &str)],
    ) -> String {
        let headers =
            headers.iter().fold(OwnedHeaders::new(), |h, &(key, value)| h.insert(Header { key, value: Some(value) }));
        let mut record = FutureRecord::<str, str>::to(topic).partition(partition).payload(value).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = self.producer.send(record, Duration::from_secs(10)).await.unwrap();
        id(delivery.partition, delivery.offset)
    }

    /// Produces `n` records round-robin over partitions `0..partitions`, all in flight at once.
    async fn send_many(&self, topic: &str, partitions: i32, n: usize) -> Vec<String> {
        let values: Vec<String> = (0..n).map(|i| format!("record {i}")).collect();
        let sends = values.iter().enumerate().map(|(i, value)| {
            let record = FutureRecord::<str, str>::to(topic).partition(i as i32 % partitions).payload(value.as_str());
            self.producer.send(record, Duration::from_secs(30))
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.map(|d| id(d.partition, d.offset)).unwrap())
            .collect()
    }

    fn client(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers()).set("group.id", group).set("enable.auto.commit", "false");
        config
    }

    /// The group's committed offset of each partition `0..partitions` (-1: none).
    fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self.client(group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let tpl = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        let offset = |p| match tpl.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        };
        (0..partitions).map(offset).collect()
    }

    /// The high watermark of each partition `0..partitions`.
    fn ends(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).collect()
    }

    /// The first `n` records of partition 0 of `topic`.
    async fn read(&self, topic: &str, n: usize) -> Vec<OwnedMessage> {
        let consumer: StreamConsumer = self.client("wisp-tests-reader").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let mut records = Vec::new();
        while records.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await;
            records.push(next.expect("timed out reading records").unwrap().detach());
        }
        records
    }
}

fn id(partition: i32, offset: i64) -> String {
    format!("partition:{partition}/offset:{offset}")
}

fn parse_id(id: &str) -> (i32, i64) {
    let (p, o) = id.strip_prefix("partition:").and_then(|rest| rest.split_once("/offset:")).unwrap();
    (p.parse().unwrap(), o.parse().unwrap())
}

fn trigger(
    name: &str,
    brokers: String,
    topic: &str,
    delivery: DeliverySpec,
    f: impl FnOnce(&mut KafkaSpec),
) -> TriggerSpec {
    let mut spec = KafkaSpec {
        brokers,
        topics: vec![topic.into()],
        group: None,
        from: InitialOffset::Earliest,
        ordering: Ordering::Ordered,
        max_in_flight: 50,
        dead_letter_topic: None,
    };
    f(&mut spec);
    TriggerSpec { name: name.into(), function: "events".into(), source: SourceSpec::Kafka(spec), delivery }
}

/// The trigger's attempts in the ledger, oldest first: (event id, status).
async fn attempts(node: &Node, trigger: &str) -> Vec<(String, u16)> {
    // `Node::usage` stops at 10,000 records; the rebalance test goes past that.
    let query = UsageQuery { function: Some("events".into()), limit: 100_000, ..UsageQuery::default() };
    let records = node.scheduler.usage(query).await.unwrap().records.into_iter().rev();
    records.filter(|r| r.trigger.as_deref() == Some(trigger)).filter_map(|r| Some((r.event_id?, r.status))).collect()
}

/// How many attempts of each event id ended with `status`.
fn count(attempts: &[(String, u16)], status: u16) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (id, _) in attempts.iter().filter(|(_, s)| *s == status) {
        *counts.entry(id.clone()).or_default() += 1;
    }
    counts
}

fn headers(m: &OwnedMessage) -> HashMap<String, String> {
    let Some(headers) = m.headers() else { return HashMap::new() };
    headers.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into())).collect()
}

fn caught_up(view: &wisp_triggers::TriggerView, partitions: usize) -> bool {
    view.status.lag.len() == partitions && view.status.lag.iter().all(|l| l.lag == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_ordered_delivers_each_record_once_in_partition_order() {
    let kafka = Kafka::start(&[("orders", 4)]);
    let ids = kafka.send_many("orders", 4, 10_000).await;
    let node = Node::start().await;
    node.triggers.create(trigger("orders", kafka.brokers(), "orders", quick_retries(0), |_| {})).await.unwrap();
    node.wait_for("orders", Duration::from_secs(120), "10,000 deliveries, all committed", |v| {
        v.status.delivered >= 10_000 && caught_up(v, 4)
    })
    .await;

    let attempts = attempts(&node, "orders").await;
    assert_eq!(attempts.len(), 10_000);
    let delivered = count(&attempts, 200);
    assert!(ids.iter().all(|id| delivered.get(id) == Some(&1)), "every record exactly once");
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (id, _) in &attempts {
        let (partition, offset) = parse_id(id);
        let previous = last.insert(partition, offset);
        assert!(previous < Some(offset), "partition {partition}: offset {offset} after {previous:?}");
    }
    assert_eq!(kafka.committed("wisp-orders", "orders", 4), kafka.ends("orders", 4));
    assert_eq!(kafka.ends("orders", 4), [2500; 4]);
    let stats = node.describe("orders").status;
    assert_eq!((stats.delivered, stats.retried, stats.dropped, stats.state), (10_000, 0, 0, State::Running));
    assert!(node.metrics().contains(r#"wisp_trigger_consumer_lag{trigger="orders",topic="orders",partition="3"} 0"#));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unordered_delivers_each_record_once() {
    let kafka = Kafka::start(&[("clicks", 4)]);
    let ids = kafka.send_many("clicks", 4, 2_000).await;
    let node = Node::start().await;
    let spec = trigger("clicks", kafka.brokers(), "clicks", quick_retries(0), |k| {
        k.ordering = Ordering::Unordered;
        k.max_in_flight = 8;
    });
    node.triggers.create(spec).await.unwrap();
    node.wait_for("clicks", Duration::from_secs(60), "2,000 deliveries, all committed", |v| {
        v.status.delivered >= 2_000 && caught_up(v, 4)
    })
    .await;
    let attempts = attempts(&node, "clicks").await;
    let delivered = count(&attempts, 200);
    assert_eq!(attempts.len(), 2_000);
    assert!(ids.iter().all(|id| delivered.get(id) == Some(&1)), "every record exactly once");
    assert_eq!(kafka.committed("wisp-clicks", "clicks", 4), [500; 4]);
    node.stop().await;
}

/// Partition 0 holds a poison record among good ones; partition 1 only good ones.
async fn poison_and_others(kafka: &Kafka, topic: &str) -> (String, Vec<String>) {
    let mut good = Vec::new();
    for i in 0..5 {
        good.push(kafka.send(topic, 0, None, &format!("ok {i}"), &[]).await);
    }
    let poison = kafka.send(topic, 0, Some("k-poison"), "poison pill", &[]).await;
    for i in 5..10 {
        good.push(kafka.send(topic, 0, None, &format!("ok {i}"), &[]).await);
    }
    for i in 0..10 {
        good.push(kafka.send(topic, 1, None, &format!("fine {i}"), &[]).await);
    }
    (poison, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_record_is_retried_then_dead_lettered() {
    let kafka = Kafka::start(&[("payments", 2), ("payments-dlq", 1)]);
    let (poison, good) = poison_and_others(&kafka, "payments").await;
    let node = Node::start().await;
    let spec = trigger("payments", kafka.brokers(), "payments", quick_retries(2), |k| {
        k.dead_letter_topic = Some("payments-dlq".into());
    });
    node.triggers.create(spec).await.unwrap();
    node.wait_for("payments", Duration::from_secs(60), "20 deliveries and 1 dead letter, all committed", |v| {
        v.status.delivered >= 20 && v.status.dead_lettered >= 1 && caught_up(v, 2)
    })
    .await;

    let attempts = attempts(&node, "payments").await;
    assert_eq!(count(&attempts, 500).get(&poison), Some(&3), "1 attempt + 2 retries");
    let delivered = count(&attempts, 200);
    assert!(good.iter().all(|id| delivered.get(id) == Some(&1)));
    let stats = node.describe("payments").status;
    assert_eq!((stats.delivered, stats.retried, stats.dead_lettered, stats.dropped), (20, 2, 1, 0));
    assert_eq!(kafka.committed("wisp-payments", "payments", 2), [11, 10]);

    let dead = kafka.read("payments-dlq", 1).await;
    let h = headers(&dead[0]);
    assert_eq!(h["ce_id"], poison);
    assert_eq!(h["ce_type"], "dev.knative.kafka.event");
    assert_eq!(h["ce_specversion"], "1.0");
    assert_eq!(h["ce_knativeerrorcode"], "500");
    assert!(h["ce_knativeerrordata"].contains("poison"), "{h:?}");
    assert_eq!(h["ce_knativeerrordest"], "/fn/events");
    assert_eq!((h["ce_knativekafkapartition"].as_str(), h["ce_knativekafkaoffset"].as_str()), ("0", "5"));
    assert_eq!(dead[0].key(), Some(&b"k-poison"[..]));
    assert_eq!(dead[0].payload(), Some(&b"poison pill"[..]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_record_without_dead_letter_topic_is_dropped_and_committed() {
    let kafka = Kafka::start(&[("refunds", 2)]);
    let (poison, good) = poison_and_others(&kafka, "refunds").await;
    let node = Node::start().await;
    node.triggers.create(trigger("refunds", kafka.brokers(), "refunds", quick_retries(1), |_| {})).await.unwrap();
    node.wait_for("refunds", Duration::from_secs(60), "20 deliveries and 1 drop, all committed", |v| {
        v.status.delivered >= 20 && v.status.dropped >= 1 && caught_up(v, 2)
    })
    .await;
    let attempts = attempts(&node, "refunds").await;
    assert_eq!(count(&attempts, 500).get(&poison), Some(&2));
    let delivered = count(&attempts, 200);
    assert!(good.iter().all(|id| delivered.get(id) == Some(&1)));
    let stats = node.describe("refunds").status;
    assert_eq!((stats.delivered, stats.retried, stats.dead_lettered, stats.dropped), (20, 1, 0, 1));
    assert_eq!(kafka.committed("wisp-refunds", "refunds", 2), [11, 10]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partition_in_retries_does_not_hold_up_the_others() {
    let kafka = Kafka::start(&[("stuck", 2)]);
    let poison = kafka.send("stuck", 0, None, "poison", &[]).await;
    let behind = kafka.send("stuck", 0, None, "behind the poison", &[]).await;
    for i in 0..20 {
        kafka.send("stuck", 1, None, &format!("fine {i}"), &[]).await;
    }
    let node = Node::start().await;
    let mut delivery = quick_retries(100);
    delivery.backoff_ms = 200;
    node.triggers.create(trigger("stuck", kafka.brokers(), "stuck", delivery, |_| {})).await.unwrap();
    node.wait_for("stuck", Duration::from_secs(60), "partition 1 delivered", |v| v.status.delivered >= 20).await;

    let attempts = attempts(&node, "stuck").await;
    assert!(attempts.iter().any(|(id, _)| *id == poison));
    assert!(attempts.iter().all(|(id, _)| *id != behind), "ordered: nothing passes the record in retries");
    let stats = node.describe("stuck").status;
    assert_eq!((stats.delivered, stats.dead_lettered, stats.dropped), (20, 0, 0));
    // Deleting cancels the backoff at once; the poison record is not committed.
    tokio::time::timeout(Duration::from_secs(15), node.triggers.delete("stuck")).await.unwrap().unwrap();
    assert_eq!(kafka.committed("wisp-stuck", "stuck", 2), [0, 20]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cloudevents_are_forwarded_and_records_converted() {
    let kafka = Kafka::start(&[("ce", 1), ("ce-dlq", 1)]);
    let ce = |id, ty| [("ce_specversion", "1.0"), ("ce_id", id), ("ce_source", "/shop"), ("ce_type", ty)];
    kafka.send("ce", 0, None, "fine", &ce("order-41", "com.example.order.created")).await;
    let structured = r#"{"specversion":"1.0","id":"order-42","source":"/shop","type":"com.example.order.paid","data":{"fine":true}}"#;
    kafka.send("ce", 0, None, structured, &[("content-type", "application/cloudevents+json")]).await;
    kafka.send("ce", 0, None, "poison", &ce("order-43", "com.example.order.poisoned")).await;
    let plain = [("Content-Type", "Text/Plain"), ("X-Trace_Id", "t-44")];
    let converted = kafka.send("ce", 0, Some("k-44"), "poison plain", &plain).await;

    let node = Node::start().await;
    let spec =
        trigger("shop", kafka.brokers(), "ce", quick_retries(0), |k| k.dead_letter_topic = Some("ce-dlq".into()));
    node.triggers.create(spec).await.unwrap();
    node.wait_for("shop", Duration::from_secs(60), "2 deliveries, 2 dead letters", |v| {
        v.status.delivered >= 2 && v.status.dead_lettered >= 2
    })
    .await;
    let attempts = attempts(&node, "shop").await;
    let expected: Vec<(String, u16)> =
        [("order-41", 200), ("order-42", 200), ("order-43", 500), (converted.as_str(), 500)]
            .iter()
            .map(|&(id, status)| (id.to_string(), status))
            .collect();
    assert_eq!(attempts, expected, "forwarded CloudEvents keep their own ids");

    let dead = kafka.read("ce-dlq", 2).await;
    let forwarded = headers(&dead[0]);
    assert_eq!(forwarded["ce_id"], "order-43");
    assert_eq!(forwarded["ce_type"], "com.example.order.poisoned");
    assert_eq!(forwarded["ce_source"], "/shop");
    assert_eq!(
        (forwarded["ce_knativekafkapartition"].as_str(), forwarded["ce_knativekafkaoffset"].as_str()),
        ("0", "2")
    );
    let h = headers(&dead[1]);
    assert_eq!(h["ce_id"], converted);
    assert_eq!(h["ce_type"], "dev.knative.kafka.event");
    assert_eq!(h["ce_source"], "/apis/v1/namespaces/default/kafkasources/shop#ce");
    assert_eq!(h["ce_subject"], "partition:0#3");
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!((h["ce_key"].as_str(), h["ce_partitionkey"].as_str()), ("k-44", "k-44"));
    assert_eq!(h["ce_kafkaheaderxtraceid"], "t-44");
    assert!(h["ce_time"].ends_with('Z'), "{h:?}");
    assert_eq!(dead[1].key(), Some(&b"k-44"[..]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stop_and_restart_loses_nothing() {
    let kafka = Kafka::start(&[("audit", 2)]);
    let ids = kafka.send_many("audit", 2, 2_000).await;
    let node = Node::start().await;
    node.triggers.create(trigger("audit", kafka.brokers(), "audit", quick_retries(0), |_| {})).await.unwrap();
    node.wait_for("audit", Duration::from_secs(60), "some deliveries", |v| v.status.delivered >= 100).await;
    let before = node.describe("audit").status.delivered as usize;
    kafka.requests(LEAVE_GROUP);
    let dir = node.stop().await;
    assert_eq!(kafka.requests(LEAVE_GROUP), 1, "the consumer left its group");

    let node = Node::start_in(dir).await;
    // The mock cluster holds the new member's join for the old member's session timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let attempts = loop {
        let attempts = attempts(&node, "audit").await;
        if count(&attempts, 200).len() >= ids.len() || tokio::time::Instant::now() > deadline {
            break attempts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivered = count(&attempts, 200);
    let lost: Vec<&String> = ids.iter().filter(|id| !delivered.contains_key(*id)).collect();
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    println!("delivered before the stop: {before} of 2000; duplicates after the restart: {duplicates}");
    assert!(lost.is_empty(), "lost {} records, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    // Ordered: at most one record in flight per partition at the stop, and in-flight deliveries
    // finish within the drain and are committed before the consumer leaves its group.
    assert!(duplicates <= 2, "{duplicates} duplicates");
    assert!(before < ids.len(), "the stop should have come mid-stream ({before} delivered)");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_rebalance_hands_partitions_over_without_loss() {
    let kafka = Kafka::start(&[("moves", 4)]);
    let mut ids = kafka.send_many("moves", 4, 8_000).await;
    let node = Node::start().await;
    let shared_group = |k: &mut KafkaSpec| k.group = Some("movers".into());
    node.triggers.create(trigger("mover-a", kafka.brokers(), "moves", quick_retries(0), shared_group)).await.unwrap();
    // Mid-stream, with some offsets committed on every partition.
    while kafka.committed("movers", "moves", 4).iter().any(|c| *c <= 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A second member joins mid-stream: the first revokes its partitions (finishing what it has
    // in flight and committing), rejoins, and the group splits the partitions.
    kafka.requests(JOIN_GROUP);
    node.triggers.create(trigger("mover-b", kafka.brokers(), "moves", quick_retries(0), shared_group)).await.unwrap();
    while kafka.requests(JOIN_GROUP) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Unlike a broker, which takes commits of the current generation until the rebalance
    // completes, the mock cluster refuses them from this join on (and holds the rebalance for a
    // session timeout, or two when a member's session lapses meanwhile under load): what the
    // first member finishes meanwhile is replayed. Offsets committed before now must not be.
    let committed = kafka.committed("movers", "moves", 4);
    node.wait_for("mover-b", Duration::from_secs(90), "the second member assigned", |v| {
        v.status.state == State::Running
    })
    .await;
    ids.extend(kafka.send_many("moves", 4, 1_000).await);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let (a, b) = loop {
        let (a, b) = (attempts(&node, "mover-a").await, attempts(&node, "mover-b").await);
        let done = count(&[a.as_slice(), b.as_slice()].concat(), 200).len() >= ids.len();
        if done || tokio::time::Instant::now() > deadline {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivered = count(&[a.as_slice(), b.as_slice()].concat(), 200);
    let lost = ids.iter().filter(|id| !delivered.contains_key(*id)).count();
    let twice: Vec<(i32, i64)> = delivered.iter().filter(|(_, n)| **n > 1).map(|(id, _)| parse_id(id)).collect();
    println!("committed at the move {committed:?}; redelivered: {}", twice.len());
    assert_eq!(lost, 0, "records lost in the hand-over");
    assert!(committed.iter().all(|c| *c > 0), "{committed:?}");
    assert!(!count(&a, 200).is_empty() && !count(&b, 200).is_empty(), "both members consumed");
    let committed_twice: Vec<_> = twice.iter().filter(|(p, o)| *o < committed[*p as usize]).collect();
    assert!(committed_twice.is_empty(), "committed records redelivered: {committed_twice:?}");
    node.stop().await;
}

/// Kafka's JoinGroup request.
const JOIN_GROUP: i16 = 11;

/// Kafka's LeaveGroup request.
const LEAVE_GROUP: i16 = 13;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_deleted_trigger_stops_and_leaves_its_group() {
    let kafka = Kafka::start(&[("events", 2)]);
    kafka.send_many("events", 2, 100).await;
    let node = Node::start().await;
    node.triggers.create(trigger("feed", kafka.brokers(), "events", quick_retries(0), |_| {})).await.unwrap();
    node.wait_for("feed", Duration::from_secs(60), "100 deliveries, all committed", |v| {
        v.status.delivered >= 100 && caught_up(v, 2)
    })
    .await;
    kafka.requests(LEAVE_GROUP);
    node.triggers.delete("feed").await.unwrap();
    assert!(node.triggers.describe("feed").is_err());
    // The member said it leaves (a real broker rebalances at once; the mock cluster, which holds
    // any rebalance for a session timeout, cannot show that by timing).
    assert_eq!(kafka.requests(LEAVE_GROUP), 1, "the consumer left its group");

    let later: HashSet<String> = kafka.send_many("events", 2, 50).await.into_iter().collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attempts(&node, "feed").await.len(), 100, "nothing delivered after the delete");

    // The group's committed offsets are where the deleted trigger stopped: a reader starting
    // from them sees exactly the records produced after the delete.
    let consumer: StreamConsumer = kafka.client("wisp-feed").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("events", p, Offset::Stored).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = HashSet::new();
    while seen.len() < later.len() {
        let next = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await;
        let m = next.expect("timed out reading the group's records").unwrap();
        seen.insert(id(m.partition(), m.offset()));
    }
    assert_eq!(seen, later);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_broker_is_a_state_not_a_crash() {
    let node = Node::start().await;
    let spec = trigger("nowhere", "127.0.0.1:1".into(), "t", quick_retries(0), |_| {});
    node.triggers.create(spec).await.unwrap();
    node.wait_for("nowhere", Duration::from_secs(30), "state failing", |v| {
        v.status.state == State::Failing && v.status.last_error.is_some()
    })
    .await;
    println!("last error: {:?}", node.describe("nowhere").status.last_error);
    tokio::time::timeout(Duration::from_secs(15), node.triggers.delete("nowhere")).await.unwrap().unwrap();
    node.stop().await;
}
