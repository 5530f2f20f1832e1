//! Triggers through the node's front doors (CLI and admin API) against real brokers: librdkafka's
//! mock cluster (real Kafka protocol over TCP, hosted by this test process so it outlives the
//! node) and the RabbitMQ service on 127.0.0.1:5672. Kill -9 mid-stream loses nothing.

use crate::harness::*;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::time::Duration;

fn wisp(node: &Node, args: &[&str]) -> std::process::Output {
    node.cli(wisp_bin()).args(args).output().expect("running wisp")
}

fn wisp_ok(node: &Node, args: &[&str]) -> String {
    let out = wisp(node, args);
    assert!(out.status.success(), "wisp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn trigger(node: &Node, name: &str) -> serde_json::Value {
    let resp = node.get(&format!("/v1/triggers/{name}"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

/// How many usage records each event id of `function` has (ledger order kept per id).
fn deliveries(node: &Node, function: &str) -> HashMap<String, u32> {
    let usage = node.get(&format!("/v1/usage?function={function}&limit=10000")).json();
    let mut counts = HashMap::new();
    for r in usage["records"].as_array().unwrap() {
        if r["outcome"] == "ok" && r["status"] == 200 {
            *counts.entry(r["event_id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    counts
}

fn wait_delivered(node: &Node, function: &str, ids: &[String], what: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    node.wait_for(Duration::from_secs(120), what, |n| {
        counts = deliveries(n, function);
        ids.iter().all(|id| counts.contains_key(id))
    });
    counts
}

/// Produces one record per number and returns their event ids (`partition:<p>/offset:<o>`).
fn produce(rt: &tokio::runtime::Runtime, brokers: &str, topic: &str, range: std::ops::Range<u32>) -> Vec<String> {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().unwrap();
    rt.block_on(async {
        let sends = range.map(|i| {
            let (key, value) = (format!("k{}", i % 16), format!("{{\"n\":{i}}}"));
            let producer = producer.clone();
            let topic = topic.to_string();
            async move {
                let record = FutureRecord::to(&topic).key(&key).payload(&value);
                let d = producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
                format!("partition:{}/offset:{}", d.partition, d.offset)
            }
        });
        futures::future::join_all(sends).await
    })
}

#[test]
fn kafka_trigger_from_the_cli_survives_kill_9_and_a_broker_outage() {
    let rt = runtime();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("orders", 4, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempdir();
    let flags = ["--ledger-sync"];
    let mut node = Node::start(dir.path(), &flags);
    node.deploy("events", "events", "");

    // Bad settings are refused naming the field, and create nothing.
    let out = wisp(&node, &["trigger", "create", "t", "--kafka", &brokers, "--topic", "a b", "--fn", "events"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`topic`"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = wisp(&node, &["trigger", "create", "t", "--kafka", &brokers, "--topic", "orders", "--fn", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("function \"nope\" not found"));
    assert!(node.get("/v1/triggers").json()["triggers"].as_array().unwrap().is_empty());

    let mut ids = produce(&rt, &brokers, "orders", 0..1500);
    let created = wisp_ok(
        &node,
        &[
            "trigger",
            "create",
            "orders",
            "--kafka",
            &brokers,
            "--topic",
            "orders",
            "--fn",
            "events",
            "--from",
            "earliest",
            "--retries",
            "2",
            "--backoff",
            "50ms",
        ],
    );
    assert!(created.contains("created trigger orders -> events"), "{created}");
    let again =
        wisp(&node, &["trigger", "create", "orders", "--kafka", &brokers, "--topic", "orders", "--fn", "events"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "duplicate names are refused");

    // Kill -9 once some (not all) are delivered.
    node.wait_for(Duration::from_secs(60), "first deliveries", |n| {
        trigger(n, "orders")["status"]["delivered"].as_u64().unwrap_or(0) >= 200
    });
    node.kill();
    let node = Node::start(dir.path(), &flags);
    assert_eq!(trigger(&node, "orders")["source"]["kafka"]["topics"][0], "orders", "the trigger is back after restart");

    // The broker goes away mid-stream and comes back: the trigger says so, then resumes.
    ids.extend(produce(&rt, &brokers, "orders", 1500..2000));
    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.broker_up(1).unwrap();
    ids.extend(produce(&rt, &brokers, "orders", 2000..2500));

    let counts = wait_delivered(&node, "events", &ids, "all 2,500 records delivered");
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!("kafka trigger after kill -9 and a broker outage: 2500 records, 0 lost, {duplicates} delivered twice");
    assert_eq!(counts.len(), 2500, "every record delivered, none invented");
    // Replayed: what was in flight (one per partition, ordered) plus what finished in the last
    // commit window (20 ms) before the kill; far below the 2,500.
    assert!(duplicates < 500, "{duplicates} duplicates");
    node.wait_for(Duration::from_secs(90), "lag back to 0", |n| {
        trigger(n, "orders")["status"]["lag"].as_array().is_some_and(|l| l.iter().all(|p| p["lag"] == 0))
    });

    // ls / describe / metrics / rm.
    let ls = wisp_ok(&node, &["trigger", "ls"]);
    assert!(ls.contains("orders") && ls.contains("kafka:orders") && ls.contains("running"), "{ls}");
    let describe = wisp_ok(&node, &["trigger", "describe", "orders"]);
    assert!(describe.contains("group:") && describe.contains("wisp-orders"), "{describe}");
    let json: serde_json::Value =
        serde_json::from_str(&wisp_ok(&node, &["-o", "json", "trigger", "describe", "orders"])).unwrap();
    assert!(json["status"]["delivered"].as_u64().unwrap() >= 1, "{json}");
    assert!(node.metric("wisp_trigger_delivered_total{trigger=\"orders\"}") >= 1.0);
    assert!(wisp_ok(&node, &["trigger", "rm", "orders"]).contains("deleted trigger orders"));
    assert_eq!(node.get("/v1/triggers/orders").status, 404);
    assert_eq!(node.metric("wisp_trigger_delivered_total{trigger=\"orders\"}"), 0.0, "its series are gone");
}

#[test]
fn rabbitmq_trigger_survives_kill_9_without_losing_a_message() {
    use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let rt = runtime();
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let queue = format!("wisp-cli-test-{}", std::process::id());
    let dir = tempdir();
    let flags = ["--ledger-sync"];
    let mut node = Node::start(dir.path(), &flags);
    node.deploy("events", "events", "");
    let out = wisp(&node, &["trigger", "create", "q", "--rabbitmq", "http://x", "--queue", &queue, "--fn", "events"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`rabbitmq`"), "{}", String::from_utf8_lossy(&out.stderr));
    wisp_ok(
        &node,
        &["trigger", "create", "q", "--rabbitmq", url, "--queue", &queue, "--fn", "events", "--prefetch", "8"],
    );
    let describe = wisp_ok(&node, &["trigger", "describe", "q"]);
    assert!(describe.contains("guest:***@"), "the password is not shown: {describe}");
    // The consumer declares the queue once it is connected; published before that, messages to
    // a queue that does not exist yet would be dropped by the broker.
    node.wait_for(Duration::from_secs(60), "the consumer running", |n| trigger(n, "q")["status"]["state"] == "running");

    let ids: Vec<String> = (0..5000).map(|i| format!("m-{i}")).collect();
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        for id in &ids {
            let props = BasicProperties::default().with_message_id(id.as_str().into()).with_delivery_mode(2);
            channel
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), id.as_bytes(), props)
                .await
                .unwrap();
        }
        conn.close(200, "done".into()).await.unwrap();
    });
    let mut at_kill = 0;
    node.wait_for(Duration::from_secs(60), "first deliveries", |n| {
        at_kill = trigger(n, "q")["status"]["delivered"].as_u64().unwrap_or(0);
        at_kill >= 200
    });
    node.kill();
    assert!(at_kill < 5000, "killed mid-stream");
    let node = Node::start(dir.path(), &flags);
    let counts = wait_delivered(&node, "events", &ids, "all 5,000 messages delivered");
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!("rabbitmq trigger, kill -9 after {at_kill} of 5000: 0 lost, {duplicates} delivered twice (prefetch 8)");
    assert!(duplicates <= 8, "only unacked (at most prefetch) messages come back: {duplicates}");
    wisp_ok(&node, &["trigger", "rm", "q"]);
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    });
}

#[test]
fn a_rabbitmq_source_manifest_applied_with_its_service_becomes_a_delivering_trigger() {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let rt = runtime();
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let queue = format!("wisp-cli-source-{}", std::process::id());
    // `predeclared`: the source uses the queue as it is, so it exists first.
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
    });
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let pushed = node.request("PUT", "/v1/artifacts/events/v1", Some(&wisp_testkit::wasm("events")), &[]);
    assert_eq!(pushed.status, 201, "{}", pushed.body);
    // One apply: the sink Service and the source that names it (validated together).
    let manifest = format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: events}}
spec:
  template:
    spec:
      containers: [{{image: 'events:v1'}}]
---
apiVersion: sources.knative.dev/v1alpha1
kind: RabbitmqSource
metadata:
  name: src
  annotations: {{wisp.dev/rabbitmq-url: '{url}'}}
spec:
  rabbitmqResourcesConfig: {{queueName: {queue}, predeclared: true}}
  delivery: {{retry: 2, backoffDelay: PT0.05S}}
  sink:
    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: events}}
"
    );
    let applied = node.post("/v1/apply", manifest.as_bytes());
    assert_eq!(applied.status, 200, "{}", applied.body);
    let results = applied.json()["results"].clone();
    assert_eq!(results[0]["action"], "created");
    assert_eq!((results[1]["kind"].as_str(), results[1]["action"].as_str()), (Some("RabbitmqSource"), Some("created")));
    let src = trigger(&node, "src");
    assert_eq!(src["function"], "events");
    assert_eq!(src["delivery"]["retries"], 2);

    let ids: Vec<String> = (0..50).map(|i| format!("s-{i}")).collect();
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        for id in &ids {
            let props = BasicProperties::default().with_message_id(id.as_str().into());
            channel
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), id.as_bytes(), props)
                .await
                .unwrap();
        }
        conn.close(200, "done".into()).await.unwrap();
    });
    wait_delivered(&node, "events", &ids, "the 50 messages delivered through the applied source");
    // Applying the same manifest again changes nothing.
    let again = node.post("/v1/apply", manifest.as_bytes()).json();
    assert_eq!(
        (again["results"][0]["action"].as_str(), again["results"][1]["action"].as_str()),
        (Some("unchanged"), Some("unchanged"))
    );
    wisp_ok(&node, &["trigger", "rm", "src"]);
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    });
}
