//! Event sources: `sources.knative.dev/v1` `KafkaSource` (eventing-kafka-broker
//! kafka_validation.go) and `sources.knative.dev/v1alpha1` `RabbitmqSource` (eventing-rabbitmq
//! rabbitmq_validation.go), with the eventing `DeliverySpec` and `Destination` checks, mapped
//! onto [`TriggerSpec`].

use crate::field::{FieldErrors, join};
use crate::k8s::dns1035_label;
use crate::meta::{self, Metadata};
use crate::walk::{Obj, Rules};
use wisp_scheduler::{DEFAULT_NAMESPACE, function_id};
use wisp_triggers::delivery::parse_duration;
use wisp_triggers::spec::{InitialOffset, KafkaSpec, Ordering, RabbitmqSpec, SourceSpec};
use wisp_triggers::{BackoffPolicy, DeliverySpec, TriggerSpec};

pub const KAFKA_API_VERSION: &str = "sources.knative.dev/v1";
pub const KAFKA_KIND: &str = "KafkaSource";
pub const RABBITMQ_API_VERSION: &str = "sources.knative.dev/v1alpha1";
pub const RABBITMQ_KIND: &str = "RabbitmqSource";

/// KafkaSource: records in flight at once in unordered mode (Knative fixes `max.poll.records` at 50).
pub const MAX_IN_FLIGHT: &str = "wisp.dev/max-in-flight";
/// RabbitmqSource: the broker, `amqp://user:pass@host:port/vhost` (Wisp cannot read the
/// RabbitmqCluster or Secret that `spec.rabbitmqClusterReference` names).
pub const RABBITMQ_URL: &str = "wisp.dev/rabbitmq-url";
/// RabbitmqSource: the routing key binding the queue to the exchange (`#` when not given).
pub const ROUTING_KEY: &str = "wisp.dev/routing-key";

/// The Kafka key-type label (kafka_defaults.go); Wisp hands keys to functions as strings.
const KEY_TYPE_LABEL: &str = "kafkasources.sources.knative.dev/key-type";
const ANNOTATIONS: &str = "metadata.annotations";
/// Wisp's retry cap (`wisp_triggers::delivery::MAX_RETRIES`).
const MAX_RETRIES: i64 = wisp_triggers::delivery::MAX_RETRIES as i64;

/// Which source a document is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kafka,
    Rabbitmq,
}

impl Kind {
    /// The scheme of a dead-letter `uri`, and what it names.
    fn dead_letter(self) -> (&'static str, &'static str) {
        match self {
            Kind::Kafka => ("kafka", "topic"),
            Kind::Rabbitmq => ("rabbitmq", "exchange"),
        }
    }
}

/// Reads a KafkaSource or RabbitmqSource document (`apiVersion` and `kind` already taken).
pub fn read(kind: Kind, mut root: Obj<'_>, errs: &mut FieldErrors) -> TriggerSpec {
    let md = meta::read_object_meta(&mut root, errs);
    if md.namespace != DEFAULT_NAMESPACE {
        errs.unsupported_details("metadata.namespace", "Wisp's triggers live in the default namespace");
    }
    let allowed: &[&str] = match kind {
        Kind::Kafka => &[MAX_IN_FLIGHT],
        Kind::Rabbitmq => &[RABBITMQ_URL, ROUTING_KEY],
    };
    for key in md.annotations.keys().filter(|k| k.starts_with(crate::annotations::WISP_PREFIX)) {
        if !allowed.contains(&key.as_str()) {
            errs.invalid_key(key, ANNOTATIONS, format!("unknown Wisp annotation (known: {})", allowed.join(", ")));
        }
    }
    let _status = root.get("status");
    let name = md.name.clone().unwrap_or_default();
    let (default_backoff_ms, source) = match root.object("spec", errs) {
        None => {
            errs.add_paths("expected at least one, got none", vec!["spec.sink.ref".into(), "spec.sink.uri".into()]);
            (0, None)
        }
        Some(spec) => match kind {
            Kind::Kafka => (1000, kafka(spec, &md, errs)),
            Kind::Rabbitmq => (200, rabbitmq(spec, &md, errs)),
        },
    };
    root.finish(&Rules::default(), errs);
    let (source, function, delivery) = source.unwrap_or_else(|| {
        let empty = SourceSpec::Kafka(KafkaSpec {
            brokers: String::new(),
            topics: Vec::new(),
            group: None,
            from: InitialOffset::Latest,
            ordering: Ordering::Ordered,
            max_in_flight: 50,
            dead_letter_topic: None,
        });
        (empty, String::new(), Delivery::default())
    });
    let spec = TriggerSpec {
        name,
        function,
        source,
        delivery: DeliverySpec {
            retries: delivery.retries,
            backoff_ms: delivery.backoff_ms.unwrap_or(default_backoff_ms),
            backoff_policy: delivery.policy,
            timeout_ms: delivery.timeout_ms.unwrap_or(DeliverySpec::default().timeout_ms),
        },
    };
    // What Wisp's trigger API checks on top (the same rules `wisp trigger create` meets), named
    // by the manifest field it came from. Only when nothing else failed: most are checked above.
    if errs.is_empty()
        && let Err(e) = spec.validate()
    {
        errs.add(e.message, field_path(e.field));
    }
    spec
}

/// The manifest field behind a `TriggerSpec::validate` field name.
fn field_path(field: &str) -> String {
    match field {
        "name" => "metadata.name".into(),
        "fn" => "spec.sink.ref.name".into(),
        "retries" => "spec.delivery.retry".into(),
        "timeout" => "spec.delivery.timeout".into(),
        "dead-letter-topic" | "dead-letter-exchange" => "spec.delivery.deadLetterSink.uri".into(),
        "kafka" => "spec.bootstrapServers".into(),
        "topic" => "spec.topics".into(),
        "group" => "spec.consumerGroup".into(),
        "max-in-flight" => join(ANNOTATIONS, MAX_IN_FLIGHT),
        "rabbitmq" => join(ANNOTATIONS, RABBITMQ_URL),
        "queue" => "spec.rabbitmqResourcesConfig.queueName".into(),
        "exchange" => "spec.rabbitmqResourcesConfig.exchangeName".into(),
        "prefetch" => "spec.rabbitmqResourcesConfig.parallelism".into(),
        "routing-key" => join(ANNOTATIONS, ROUTING_KEY),
        other => format!("spec ({other})"),
    }
}

type Read = Option<(SourceSpec, String, Delivery)>;

fn kafka(mut spec: Obj<'_>, md: &Metadata, errs: &mut FieldErrors) -> Read {
    let mut brokers = Vec::new();
    match spec.strings("bootstrapServers", errs) {
        Some(list) if !list.is_empty() => {
            for (path, b) in list {
                let ok = !b.contains(',')
                    && b.rsplit_once(':').is_some_and(|(h, p)| !h.trim().is_empty() && p.parse::<u16>().is_ok());
                if ok {
                    brokers.push(b.trim().to_string());
                } else {
                    errs.invalid_details(b, path, "expected host:port");
                }
            }
        }
        _ => errs.missing("spec.bootstrapServers"),
    }
    let mut topics = Vec::new();
    match spec.strings("topics", errs) {
        Some(list) if !list.is_empty() => {
            for (path, t) in list {
                if is_topic(t) {
                    topics.push(t.to_string());
                } else {
                    errs.invalid_details(t, path, "a Kafka topic name is 1-249 of [a-zA-Z0-9._-], not \".\" or \"..\"");
                }
            }
        }
        _ => errs.missing("spec.topics"),
    }
    let group = spec.str("consumerGroup", errs).filter(|g| !g.is_empty()).map(str::to_string);
    if let Some(g) = &group
        && g.len() > 255
    {
        errs.invalid_details(g, "spec.consumerGroup", "must be 1-255 characters");
    }
    let from = match spec.str("initialOffset", errs).unwrap_or("") {
        "" | "latest" => InitialOffset::Latest,
        "earliest" => InitialOffset::Earliest,
        other => {
            errs.invalid(other, "spec.initialOffset");
            InitialOffset::Latest
        }
    };
    let ordering = match spec.str("ordering", errs) {
        None | Some("ordered") => Ordering::Ordered,
        Some("unordered") => Ordering::Unordered,
        Some(other) => {
            errs.invalid(other, "spec.ordering");
            Ordering::Ordered
        }
    };
    if let Some(n) = spec.int("consumers", errs)
        && n != 1
    {
        errs.unsupported_details("spec.consumers", "Wisp runs one consumer per trigger (consumers: 1)");
    }
    let max_in_flight = match md.annotations.get(MAX_IN_FLIGHT) {
        None => 50,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n as u32,
            Ok(_) => {
                errs.out_of_bounds(v, 1, 10_000, join(ANNOTATIONS, MAX_IN_FLIGHT));
                50
            }
            Err(_) => {
                errs.invalid(v, join(ANNOTATIONS, MAX_IN_FLIGHT));
                50
            }
        },
    };
    match md.labels.get(KEY_TYPE_LABEL).map(String::as_str) {
        None | Some("string") => {}
        Some("int" | "float" | "byte-array") => errs.unsupported_details(
            join("metadata.labels", KEY_TYPE_LABEL),
            "Wisp hands record keys to functions as strings",
        ),
        Some(other) => errs.invalid(other, join("metadata.labels", KEY_TYPE_LABEL)),
    }
    let delivery = delivery(&mut spec, Kind::Kafka, errs);
    let function = sink(&mut spec, md, errs);
    spec.finish(&Rules { unsupported: &["net", "ceOverrides"], ..Rules::default() }, errs);
    let source = SourceSpec::Kafka(KafkaSpec {
        brokers: brokers.join(","),
        topics,
        group,
        from,
        ordering,
        max_in_flight,
        dead_letter_topic: delivery.dead_letter.clone(),
    });
    Some((source, function?, delivery))
}

/// Kafka topic names: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn is_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn rabbitmq(mut spec: Obj<'_>, md: &Metadata, errs: &mut FieldErrors) -> Read {
    // The cluster reference names Kubernetes objects Wisp cannot read; its shape is still checked
    // (ValidateRabbitMQClusterReference) so that one manifest serves Knative and Wisp.
    if let Some(mut r) = spec.object("rabbitmqClusterReference", errs) {
        let name = r.str("name", errs).unwrap_or_default();
        let _namespace = r.str("namespace", errs);
        let secret = r.object("connectionSecret", errs).map(|mut s| {
            let _ = s.str("name", errs);
            s.finish(&Rules::default(), errs);
        });
        if name.is_empty() && secret.is_none() {
            errs.missing("spec.rabbitmqClusterReference.name");
        } else if !name.is_empty() && secret.is_some() {
            errs.add(
                "rabbitmqClusterReference.name and rabbitmqClusterReference.connectionSecret must not be set simultaneously",
                "spec.rabbitmqClusterReference.connectionSecret",
            );
        }
        r.finish(&Rules::default(), errs);
    }
    let url_path = join(ANNOTATIONS, RABBITMQ_URL);
    let mut url = match md.annotations.get(RABBITMQ_URL) {
        Some(u) if !u.is_empty() => Some(u.clone()),
        _ => {
            errs.add_details(
                "missing field(s)",
                &url_path,
                "Wisp cannot read the RabbitmqCluster or Secret of spec.rabbitmqClusterReference: give the broker as amqp://user:pass@host:port/vhost",
            );
            None
        }
    };
    if let Some(u) = &url
        && !u.starts_with("amqp://")
    {
        errs.invalid_details(
            wisp_triggers::redact_url(u),
            &url_path,
            "must be an amqp://user:pass@host:port/vhost URL (amqps is not supported)",
        );
        url = None;
    }

    let mut queue = String::new();
    let mut exchange = None;
    let mut prefetch = 1u16;
    match spec.object("rabbitmqResourcesConfig", errs) {
        None => errs.missing("spec.rabbitmqResourcesConfig"),
        Some(mut r) => {
            queue = r.str("queueName", errs).unwrap_or_default().to_string();
            if queue.is_empty() {
                errs.missing(r.at("queueName"));
            } else if queue.len() > 255 {
                errs.invalid_details(&queue, r.at("queueName"), "must be 1-255 bytes");
            }
            let exchange_name = r.str("exchangeName", errs).unwrap_or_default();
            let predeclared = r.bool("predeclared", errs).unwrap_or(false);
            if !predeclared && exchange_name.is_empty() {
                errs.add("Name of exchange must be provided when spec.predeclared is false", r.at("exchangeName"));
            } else if exchange_name.len() > 255 {
                errs.invalid_details(exchange_name, r.at("exchangeName"), "must be 1-255 bytes");
            }
            // Predeclared: consume the queue as it is, bind nothing (Knative ignores the
            // exchange then too).
            if !predeclared && !exchange_name.is_empty() {
                exchange = Some(exchange_name.to_string());
            }
            if let Some(p) = r.int("parallelism", errs) {
                if (1..=1000).contains(&p) {
                    prefetch = p as u16;
                } else {
                    errs.out_of_bounds(p, 1, 1000, r.at("parallelism"));
                }
            }
            if let Some(vhost) = r.str("vhost", errs).filter(|v| !v.is_empty())
                && let Some(u) = &url
            {
                match with_vhost(u, vhost) {
                    Ok(u) => url = Some(u),
                    Err(written) => errs.invalid_details(
                        vhost,
                        r.at("vhost"),
                        format!("the {RABBITMQ_URL} annotation names vhost {written:?}"),
                    ),
                }
            }
            r.finish(&Rules::default(), errs);
        }
    }
    let routing_key = md.annotations.get(ROUTING_KEY).cloned();
    if routing_key.is_some() && exchange.is_none() {
        errs.add(
            "a routing key needs an exchange to bind to (spec.rabbitmqResourcesConfig.exchangeName, not predeclared)",
            join(ANNOTATIONS, ROUTING_KEY),
        );
    }
    let delivery = delivery(&mut spec, Kind::Rabbitmq, errs);
    let function = sink(&mut spec, md, errs);
    spec.finish(&Rules { unsupported: &["serviceAccountName", "adapterContainerName"], ..Rules::default() }, errs);
    let source = SourceSpec::Rabbitmq(RabbitmqSpec {
        url: url.unwrap_or_default(),
        queue,
        exchange,
        routing_key,
        prefetch,
        dead_letter_exchange: delivery.dead_letter.clone(),
    });
    Some((source, function?, delivery))
}

/// `url` with its vhost set to `vhost` (percent-encoded); `Err(written)` when the URL already
/// names a different one.
fn with_vhost(url: &str, vhost: &str) -> Result<String, String> {
    let rest = &url["amqp://".len()..];
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let encoded: String = vhost
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    if !path.is_empty() {
        let written = percent_decode(path);
        return if written == vhost { Ok(url.to_string()) } else { Err(written) };
    }
    Ok(format!("amqp://{authority}/{encoded}"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `spec.delivery`, read.
#[derive(Default)]
struct Delivery {
    retries: u32,
    backoff_ms: Option<u64>,
    policy: BackoffPolicy,
    timeout_ms: Option<u64>,
    dead_letter: Option<String>,
}

/// An ISO-8601 duration (`period.Parse`), in milliseconds.
fn iso_duration_ms(s: &str) -> Option<u64> {
    if !s.starts_with(['P', 'p']) {
        return None;
    }
    parse_duration(s).ok().map(|d| d.as_millis() as u64)
}

/// The eventing `DeliverySpec` (delivery_types.go `Validate`). RabbitmqSource's own schema has
/// only `retry`, `backoffPolicy` and `backoffDelay`; Wisp reads `timeout` and `deadLetterSink`
/// there too.
fn delivery(spec: &mut Obj<'_>, kind: Kind, errs: &mut FieldErrors) -> Delivery {
    let mut out = Delivery::default();
    let Some(mut d) = spec.object("delivery", errs) else { return out };
    if let Some(r) = d.int("retry", errs) {
        if r < 0 {
            errs.invalid(r, d.at("retry"));
        } else if r > MAX_RETRIES {
            errs.out_of_bounds(r, 0, MAX_RETRIES, d.at("retry"));
        } else {
            out.retries = r as u32;
        }
    }
    if let Some(p) = d.str("backoffPolicy", errs) {
        match BackoffPolicy::parse(p) {
            Ok(p) => out.policy = p,
            Err(_) => errs.invalid(p, d.at("backoffPolicy")),
        }
    }
    if let Some(v) = d.str("backoffDelay", errs) {
        match iso_duration_ms(v) {
            Some(ms) => out.backoff_ms = Some(ms),
            None => errs.invalid(v, d.at("backoffDelay")),
        }
    }
    if let Some(v) = d.str("timeout", errs) {
        match iso_duration_ms(v) {
            Some(ms) if ms > 0 => out.timeout_ms = Some(ms),
            _ => errs.invalid(v, d.at("timeout")),
        }
    }
    match d.str("format", errs) {
        None | Some("binary") => {}
        Some("json") => errs.unsupported_details(d.at("format"), "Wisp delivers CloudEvents in binary mode"),
        Some(other) => errs.invalid(other, d.at("format")),
    }
    if let Some(mut sink) = d.object("deadLetterSink", errs) {
        out.dead_letter = dead_letter(&mut sink, kind, errs);
        sink.finish(&Rules { unsupported: &["CACerts", "audience"], ..Rules::default() }, errs);
    }
    d.finish(&Rules { unsupported: &["retryAfterMax"], ..Rules::default() }, errs);
    out
}

/// `deadLetterSink`: Wisp dead-letters to a topic (Kafka) or an exchange (RabbitMQ) of the
/// source's own broker, named as `uri: kafka://<topic>` or `uri: rabbitmq://<exchange>`.
fn dead_letter(sink: &mut Obj<'_>, kind: Kind, errs: &mut FieldErrors) -> Option<String> {
    let (scheme, what) = kind.dead_letter();
    let hint = format!("Wisp dead-letters to a {what} of the source's broker: uri: {scheme}://<{what}>");
    let has_ref = sink.has("ref");
    let uri = sink.str("uri", errs);
    if has_ref {
        let _ = sink.get("ref");
        errs.unsupported_details(sink.at("ref"), &hint);
        return None;
    }
    let Some(uri) = uri else {
        errs.add_paths("expected at least one, got none", vec![sink.at("ref"), sink.at("uri")]);
        return None;
    };
    let name = uri.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")).map(|n| n.trim_end_matches('/'));
    match name {
        Some(n) if !n.is_empty() && !n.contains('/') => {
            if kind == Kind::Kafka && !is_topic(n) {
                errs.invalid_details(
                    uri,
                    sink.at("uri"),
                    "a Kafka topic name is 1-249 of [a-zA-Z0-9._-], not \".\" or \"..\"",
                );
            }
            Some(n.to_string())
        }
        _ => {
            errs.unsupported_details(sink.at("uri"), &hint);
            None
        }
    }
}

/// `spec.sink`: a reference to a Service; returns the function id.
fn sink(spec: &mut Obj<'_>, md: &Metadata, errs: &mut FieldErrors) -> Option<String> {
    let Some(mut sink) = spec.object("sink", errs) else {
        errs.add_paths("expected at least one, got none", vec!["spec.sink.ref".into(), "spec.sink.uri".into()]);
        return None;
    };
    let function = if sink.has("uri") {
        let _ = sink.get("uri");
        errs.unsupported_details(
            sink.at("uri"),
            "Wisp delivers to its own functions: give ref to a serving.knative.dev/v1 Service",
        );
        let _ = sink.get("ref");
        None
    } else {
        match sink.object("ref", errs) {
            None => {
                errs.add_paths("expected at least one, got none", vec![sink.at("ref"), sink.at("uri")]);
                None
            }
            Some(mut r) => {
                let function = reference(&mut r, md, errs);
                r.finish(&Rules { unsupported: &["group", "address"], ..Rules::default() }, errs);
                function
            }
        }
    };
    sink.finish(&Rules { unsupported: &["CACerts", "audience"], ..Rules::default() }, errs);
    function
}

/// `KReference.Validate`, then Wisp's "a Service of this namespace" rule.
fn reference(r: &mut Obj<'_>, md: &Metadata, errs: &mut FieldErrors) -> Option<String> {
    let name = r.str("name", errs).unwrap_or_default();
    let api_version = r.str("apiVersion", errs).unwrap_or_default();
    let kind = r.str("kind", errs).unwrap_or_default();
    let namespace = r.str("namespace", errs).unwrap_or_default();
    let mut ok = true;
    for (field, value) in [("name", name), ("apiVersion", api_version), ("kind", kind)] {
        if value.is_empty() {
            errs.missing(r.at(field));
            ok = false;
        }
    }
    if !namespace.is_empty() && namespace != md.namespace {
        errs.add_details(
            "mismatched namespaces",
            r.at("namespace"),
            format!("parent namespace: {:?} does not match ref: {namespace:?}", md.namespace),
        );
        ok = false;
    }
    let only = "Wisp delivers to its own functions: serving.knative.dev/v1 Service";
    if !api_version.is_empty() && api_version != crate::service::API_VERSION {
        errs.unsupported_details(r.at("apiVersion"), only);
        ok = false;
    }
    if !kind.is_empty() && kind != crate::service::KIND {
        errs.unsupported_details(r.at("kind"), only);
        ok = false;
    }
    if !name.is_empty() {
        let msgs = dns1035_label(name);
        if !msgs.is_empty() {
            errs.invalid_details(name, r.at("name"), msgs.join(", "));
            ok = false;
        }
    }
    ok.then(|| function_id(&md.namespace, name))
}
