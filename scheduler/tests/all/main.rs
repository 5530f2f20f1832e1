//! The scheduler in-process, on a real SQLite registry and ledger and real wasmtime: the one
//! invoke path meters every source, exactly once, even when the caller goes away.

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use std::time::Duration;
use wisp_ledger::{Ledger, LedgerConfig};
use wisp_runtime::MemoryBudget;
use wisp_runtime::wasm::{WasmConfig, WasmRuntime};
use wisp_scheduler::{ErrorKind, Scheduler, SchedulerConfig, Source, UsageQuery};

struct Node {
    scheduler: Scheduler,
    registry: Registry,
    ledger: Ledger,
    _dir: tempfile::TempDir,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let wasm = WasmRuntime::new(
        WasmConfig { pool_instances: 32, ..WasmConfig::default() },
        &dir.path().join("cache"),
        MemoryBudget::new(u64::MAX),
    )
    .unwrap();
    let mut registry = Registry::default();
    let config = SchedulerConfig::new(dir.path());
    let scheduler =
        Scheduler::new(config, wasm, Err("not in these tests".into()), ledger.clone(), &mut registry).await.unwrap();
    Node { scheduler, registry, ledger, _dir: dir }
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn metrics(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_is_metered_once_and_a_cancelled_invocation_still_counts() {
    let node = node().await;
    let s = &node.scheduler;
    s.deploy("m", &params(&[("timeout", "5s")]), wisp_testkit::wasm("misbehave").into()).await.unwrap();

    assert_eq!(s.invoke("m", get("/?mode=status&code=201"), Source::Kafka).await.unwrap().status(), 201);
    let trapped = s.invoke("m", get("/?mode=trap"), Source::Http).await.unwrap_err();
    assert_eq!(trapped.kind(), ErrorKind::FunctionFailed);
    // The caller gives up on an endless loop: still exactly one record, marked cancelled.
    let abandoned = tokio::time::timeout(Duration::from_millis(200), s.invoke("m", get("/?mode=loop"), Source::Async));
    assert!(abandoned.await.is_err());
    assert_eq!(s.invoke("nope", get("/"), Source::Http).await.unwrap_err().kind(), ErrorKind::NotFound);

    let report = s.usage(UsageQuery { function: Some("m".into()), limit: 10, ..UsageQuery::default() }).await.unwrap();
    let seen: Vec<(&str, &str, u16)> =
        report.records.iter().map(|r| (r.source.as_str(), r.outcome.as_str(), r.status)).collect();
    assert_eq!(seen, [("async", "cancelled", 0), ("http", "trap", 0), ("kafka", "ok", 201)]);
    let summary = &report.summary[0];
    assert_eq!((summary.invocations, summary.ok, summary.failed), (3, 1, 2));
    assert_eq!(summary.by_source.get("kafka"), Some(&1));

    let text = metrics(&node.registry);
    for series in [
        r#"wisp_invocations_total{function="m",outcome="ok"} 1"#,
        r#"wisp_invocations_total{function="m",outcome="trap"} 1"#,
        r#"wisp_invocations_total{function="m",outcome="cancelled"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    assert_eq!(node.ledger.stats().dropped_total, 0);

    // Deleting the function removes its series.
    s.delete("m").await.unwrap();
    assert!(!metrics(&node.registry).contains("function=\"m\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_at_its_concurrency_cap_is_throttled_alone() {
    let node = node().await;
    let s = &node.scheduler;
    s.deploy("slow", &params(&[("max_concurrency", "1")]), wisp_testkit::wasm("misbehave").into()).await.unwrap();
    s.deploy("hello", &[], wisp_testkit::wasm("hello").into()).await.unwrap();
    let sleeping = {
        let s = s.clone();
        tokio::spawn(async move { s.invoke("slow", get("/?mode=sleep&ms=500"), Source::Http).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let throttled = s.invoke("slow", get("/?mode=log"), Source::Http).await.unwrap_err();
    assert_eq!(throttled.kind(), ErrorKind::Throttled);
    assert!(throttled.to_string().contains("concurrency limit of 1"), "{throttled}");
    assert!(s.invoke("hello", get("/"), Source::Http).await.is_ok(), "other functions are unaffected");
    assert!(sleeping.await.unwrap().is_ok());
    assert!(s.invoke("slow", get("/?mode=log"), Source::Http).await.is_ok(), "the slot came back");
}
