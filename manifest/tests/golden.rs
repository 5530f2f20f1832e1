//! Golden manifests: every file under `golden/valid` parses (and every Service in it survives
//! `to_manifest` and back); every `golden/invalid/NAME.yaml` fails with exactly the text of
//! `golden/invalid/NAME.err`. Set `WISP_GOLDEN_PRINT=1` to print what each invalid file gives.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use wisp_manifest::{Object, parse, to_manifest, to_yaml};
use wisp_scheduler::{Metric, ServiceSpec, Settings, TrafficTarget};
use wisp_triggers::spec::{InitialOffset, KafkaSpec, Ordering, RabbitmqSpec, SourceSpec};
use wisp_triggers::{BackoffPolicy, DeliverySpec, TriggerSpec};

fn golden(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(dir)
}

fn files(dir: &str, exts: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(golden(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)))
        .collect();
    out.sort();
    out
}

fn load(name: &str) -> Vec<Object> {
    let path = golden("valid").join(name);
    parse(&fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn service(name: &str) -> ServiceSpec {
    match load(name).remove(0) {
        Object::Service(s) => s,
        other => panic!("{name}: not a service: {other:?}"),
    }
}

fn trigger(name: &str) -> TriggerSpec {
    match load(name).remove(0) {
        Object::Trigger(t) => t,
        other => panic!("{name}: not a trigger: {other:?}"),
    }
}

#[test]
fn valid_manifests_parse_and_services_round_trip() {
    let paths = files("valid", &["yaml", "json"]);
    assert!(paths.len() >= 10, "{paths:?}");
    for path in paths {
        let text = fs::read_to_string(&path).unwrap();
        let objects = parse(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        assert!(!objects.is_empty(), "{}", path.display());
        for object in objects {
            if let Object::Service(s) = object {
                let manifest = to_manifest(&s);
                let back =
                    parse(&to_yaml(&manifest)).unwrap_or_else(|e| panic!("{}: {e}\n{manifest:#}", path.display()));
                assert_eq!(back, vec![Object::Service(s.clone())], "{}", path.display());
                let back = parse(&manifest.to_string()).unwrap();
                assert_eq!(back, vec![Object::Service(s)], "{} as JSON", path.display());
            }
        }
    }
}

#[test]
fn invalid_manifests_fail_with_the_exact_message() {
    let paths = files("invalid", &["yaml", "json"]);
    assert!(paths.len() >= 25, "only {} invalid cases", paths.len());
    let print = std::env::var_os("WISP_GOLDEN_PRINT").is_some();
    let mut failures = Vec::new();
    for path in &paths {
        let text = fs::read_to_string(path).unwrap();
        let got = match parse(&text) {
            Ok(objects) => format!("parsed: {objects:?}"),
            Err(e) => e.to_string(),
        };
        if print {
            println!("== {}\n{got}", path.display());
        }
        let want_path = path.with_extension("err");
        let want = fs::read_to_string(&want_path).unwrap_or_else(|_| panic!("{} has no .err", path.display()));
        if got != want.trim_end_matches('\n') {
            failures.push(format!("{}\n  want: {want:?}\n  got:  {got:?}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), paths.len(), failures.join("\n"));
}

#[test]
fn hello_world_gets_knative_defaults() {
    let s = service("hello-world.yaml");
    assert_eq!((s.namespace.as_str(), s.name.as_str(), s.template.image.as_str()), ("default", "hello", "hello:v1"));
    assert_eq!(s.template.revision_name, None);
    assert_eq!(s.traffic, vec![TrafficTarget::latest(100)]);
    let want = Settings {
        timeout_ms: 300_000,
        env: [("TARGET".to_string(), "World".to_string())].into_iter().collect(),
        ..Settings::default()
    };
    assert_eq!(s.template.settings, want);
    assert_eq!(s.template.settings.min_warm, 1, "Knative's activation scale default");
    assert_eq!(s.id(), "hello");
}

#[test]
fn traffic_targets_are_defaulted_and_kept_in_order() {
    let s = service("traffic-split-tags.yaml");
    assert_eq!(s.template.revision_name.as_deref(), Some("example-service-v2"));
    let pinned = |r: &str, tag: &str| TrafficTarget {
        revision_name: Some(r.into()),
        latest_revision: false,
        percent: 50,
        tag: Some(tag.into()),
    };
    assert_eq!(
        s.traffic,
        vec![
            pinned("example-service-v1", "current"),
            pinned("example-service-v2", "candidate"),
            TrafficTarget { tag: Some("latest".into()), ..TrafficTarget::latest(0) },
        ]
    );
}

#[test]
fn every_autoscaling_annotation_maps() {
    let s = service("autoscaling.yaml");
    assert_eq!(s.id(), "shop/autoscaled");
    let t = &s.template;
    assert_eq!(t.annotations.len(), 15, "annotations are kept as written");
    let st = &t.settings;
    assert_eq!((st.min_warm, st.idle_timeout_ms), (3, 40_000));
    let k = &st.scaling;
    assert_eq!(k.metric, Metric::Rps);
    assert_eq!(k.target, Some(150.0));
    assert_eq!(
        (k.target_utilization_percentage, k.panic_window_percentage, k.panic_threshold_percentage),
        (80.0, 20.0, 150.0)
    );
    assert_eq!((k.min_scale, k.max_scale, k.initial_scale), (1, 10, 2));
    assert_eq!((k.scale_down_delay_ms, k.scale_to_zero_retention_ms), (900_000, 65_000));
    assert_eq!(k.target_burst_capacity, -1.0);
}

#[test]
fn legacy_aliases_map_and_the_canonical_key_wins() {
    let k = service("autoscaling-legacy-aliases.yaml").template.settings.scaling;
    assert_eq!((k.min_scale, k.max_scale, k.initial_scale), (2, 8, 3));
    assert_eq!((k.target_utilization_percentage, k.target_burst_capacity), (60.0, 0.0));
    assert_eq!((k.panic_window_percentage, k.panic_threshold_percentage), (5.0, 400.0));
    assert_eq!((k.scale_down_delay_ms, k.scale_to_zero_retention_ms), (30_000, 10_000));
}

#[test]
fn concurrency_timeout_and_memory_map() {
    let s = service("container-concurrency.yaml");
    let st = &s.template.settings;
    assert_eq!((st.container_concurrency, st.timeout_ms, st.memory_bytes), (50, 120_000, 256 << 20));
    assert_eq!(s.labels.get("app.kubernetes.io/name").map(String::as_str), Some("shop"));
    assert_eq!(s.template.labels.get("tier").map(String::as_str), Some("backend"));
}

#[test]
fn env_and_wisp_knobs_map() {
    let env = service("env.yaml").template.settings.env;
    let want: BTreeMap<String, String> = [("EMPTY", ""), ("GREETING", "Hello"), ("TARGET", "Knative")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env, want);
    let st = service("wisp-knobs.yaml").template.settings;
    assert_eq!((st.max_concurrency, st.max_request_body_bytes, st.max_response_body_bytes), (200, 16 << 20, 1 << 30));
    assert_eq!(st.memory_bytes, 512 << 20);
}

#[test]
fn secrets_are_references_and_origins_canonical() {
    let st = service("secrets.yaml").template.settings;
    assert_eq!(st.env, BTreeMap::from([("MODE".to_string(), "live".to_string())]));
    let r = &st.secret_env[0];
    assert_eq!((st.secret_env.len(), &*r.name, &*r.secret, &*r.key), (1, "PASSWORD", "db", "password"));
    assert_eq!(st.secrets, ["api-keys"]);
    assert_eq!(st.allow_outbound, ["https://api.example.com", "http://127.0.0.1:18080"]);
}

#[test]
fn kubectl_get_output_applies_as_it_is() {
    let s = service("kubectl-get-output.yaml");
    assert_eq!(s.template.image, "hello:v1");
    assert_eq!(s.template.settings.timeout_ms, 300_000);
    assert_eq!(s.traffic, vec![TrafficTarget::latest(100)]);
    assert_eq!(s.annotations.get("serving.knative.dev/creator").map(String::as_str), Some("admin"));
}

#[test]
fn kafka_source_maps_onto_a_trigger() {
    let want = TriggerSpec {
        name: "kafka-source".into(),
        function: "event-display".into(),
        source: SourceSpec::Kafka(KafkaSpec {
            brokers: "my-cluster-kafka-bootstrap.kafka:9092,127.0.0.1:9093".into(),
            topics: vec!["knative-demo-topic".into()],
            group: Some("knative-group".into()),
            from: InitialOffset::Earliest,
            ordering: Ordering::Unordered,
            max_in_flight: 20,
            dead_letter_topic: Some("knative-demo-dlq".into()),
        }),
        delivery: DeliverySpec {
            retries: 5,
            backoff_ms: 500,
            backoff_policy: BackoffPolicy::Linear,
            timeout_ms: 10_000,
        },
    };
    assert_eq!(trigger("kafka-source.yaml"), want);
}

#[test]
fn rabbitmq_source_maps_onto_a_trigger() {
    let want = TriggerSpec {
        name: "rabbitmq-source".into(),
        function: "event-display".into(),
        source: SourceSpec::Rabbitmq(RabbitmqSpec {
            url: "amqp://guest:guest@127.0.0.1:5672/shop".into(),
            queue: "eventing-rabbitmq-source".into(),
            exchange: Some("eventing-rabbitmq-source".into()),
            routing_key: Some("orders.*".into()),
            prefetch: 10,
            dead_letter_exchange: Some("eventing-dlx".into()),
        }),
        delivery: DeliverySpec {
            retries: 5,
            backoff_ms: 1000,
            backoff_policy: BackoffPolicy::Linear,
            timeout_ms: DeliverySpec::default().timeout_ms,
        },
    };
    assert_eq!(trigger("rabbitmq-source.yaml"), want);
}

#[test]
fn lists_and_multiple_documents() {
    let objects = load("multi-document.yaml");
    assert_eq!(
        objects.iter().map(|o| (o.kind(), o.name())).collect::<Vec<_>>(),
        [("Service", "event-display"), ("Trigger", "orders")]
    );
    let Object::Trigger(t) = &objects[1] else { unreachable!() };
    // Knative's defaults: no retry unless asked for; the Kafka data plane's 1 s backoff unit.
    assert_eq!((t.delivery.retries, t.delivery.backoff_ms), (0, 1000));
    let SourceSpec::Kafka(k) = &t.source else { unreachable!() };
    assert_eq!(
        (k.group.as_deref(), k.from, k.ordering, k.max_in_flight),
        (None, InitialOffset::Latest, Ordering::Ordered, 50)
    );

    let objects = load("list.json");
    assert_eq!(objects.len(), 2);
    let Object::Trigger(t) = &objects[1] else { panic!("{objects:?}") };
    let SourceSpec::Rabbitmq(r) = &t.source else { unreachable!() };
    // Predeclared: the queue is consumed as it is, nothing bound.
    assert_eq!((r.exchange.as_deref(), r.prefetch, r.url.as_str()), (None, 1, "amqp://guest:guest@127.0.0.1:5672/%2f"));
    assert_eq!((t.delivery.retries, t.delivery.backoff_ms), (0, 200));
}

#[test]
fn container_fields_map() {
    let s = service("container-command-args.yaml");
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(s.template.settings.command, strings(&["/bin/busybox"]));
    assert_eq!(s.template.settings.args, strings(&["httpd", "-f", "-p", "9000", "-h", "/www"]));
    assert_eq!(s.template.settings.working_dir.as_deref(), Some("/www"));
    assert_eq!(s.template.settings.port, 9000);
    assert_eq!(s.template.settings.container_fields(), ["ports", "command", "args", "workingDir"]);
    let s = service("container-port.yaml");
    assert_eq!((s.template.settings.port, s.template.settings.command.len()), (9000, 0));
    assert_eq!(service("hello-world.yaml").template.settings.container_fields(), Vec::<&str>::new());
}
