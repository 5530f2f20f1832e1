//! Knative manifests for Wisp: `wisp apply -f` reads them, `wisp get service NAME -o yaml`
//! writes them.
//!
//! [`parse`] takes YAML (one or more `---`-separated documents) or JSON (one object, an array
//! of objects, or a `kind: List` with `items`) and returns one [`Object`] per manifest:
//!
//! - `serving.knative.dev/v1` `Service` → [`ServiceSpec`], defaulted and validated the way
//!   Knative Serving's admission webhook does: the same rules, bounds, defaults (timeoutSeconds
//!   300, traffic 100% to the latest revision, percent 0, latestRevision when no revisionName) and
//!   the same messages and field paths (`expected 0 <= -1 <= 1000:
//!   spec.template.spec.containerConcurrency`). The `autoscaling.knative.dev/*` template
//!   annotations (legacy camelCase aliases included, the first key of each priority list
//!   winning) fill [`Settings`](wisp_scheduler::Settings): the stable window is `idle_timeout_ms`,
//!   the activation scale `min_warm`, the rest [`Scaling`](wisp_scheduler::Scaling). Wisp's own
//!   knobs are template annotations too: `wisp.dev/max-concurrency`,
//!   `wisp.dev/max-request-body`, `wisp.dev/max-response-body`.
//! - `sources.knative.dev/v1` `KafkaSource` and `sources.knative.dev/v1alpha1` `RabbitmqSource`
//!   → [`TriggerSpec`], delivering to the Service that `spec.sink.ref` names. Dead letters go to
//!   `spec.delivery.deadLetterSink.uri: kafka://<topic>` or `rabbitmq://<exchange>` on the
//!   source's broker; a RabbitmqSource names its broker with the annotation
//!   `wisp.dev/rabbitmq-url`.
//!
//! Strictness: a field no Kubernetes or Knative schema has is `unknown field "x": <parent>`; a
//! field Knative itself refuses is Knative's `must not set the field(s): <path>`; a field Knative
//! accepts but Wisp cannot honour (ports, probes, volumes, a second container, `valueFrom`,
//! command and args, CPU limits...) is `not supported by Wisp: <path>`, never silently dropped.
//! What the server fills in (`uid`, `resourceVersion`, `generation`, `creationTimestamp`,
//! `managedFields`, `status`) is ignored, so `kubectl get -o yaml` output applies as it is.
//!
//! A document's findings are all reported at once, merged and sorted as Knative's
//! `FieldError` prints them: `<message>: <path>[, <path>]`, details on the next line.
//! [`ManifestError`] adds which document it was. `docs/manifests.md` lists every field.
//!
//! [`to_manifest`] is the way back: the Knative-shaped Service of a [`ServiceSpec`], such that
//! `parse(to_manifest(x)) == x` for every `x` that `parse` produced.

mod annotations;
mod field;
mod k8s;
mod meta;
mod service;
mod source;
mod walk;

pub use field::{FieldError, FieldErrors, UNSUPPORTED};
pub use k8s::{format_bytes, parse_quantity};

use serde_json::Value;
use std::fmt;
use wisp_scheduler::ServiceSpec;
use wisp_triggers::TriggerSpec;

/// One manifest, validated, defaulted and mapped onto Wisp's model.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "a handful per apply; boxing would only burden every match")]
pub enum Object {
    /// A Knative `Service`.
    Service(ServiceSpec),
    /// A `KafkaSource` or `RabbitmqSource`.
    Trigger(TriggerSpec),
}

impl Object {
    /// `Service` or `Trigger`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Service(_) => "Service",
            Object::Trigger(_) => "Trigger",
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        match self {
            Object::Service(s) => &s.name,
            Object::Trigger(t) => &t.name,
        }
    }
}

/// Why one manifest document was refused, and which one it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {problem}", self.location())]
pub struct ManifestError {
    /// 1-based: the YAML document, or the element of a top-level JSON (or YAML) array.
    pub document: usize,
    /// 1-based index in the `items` of a `kind: List` document.
    pub item: Option<usize>,
    /// `kind`, when the document has one.
    pub kind: Option<String>,
    /// `metadata.name`, when the document has one.
    pub name: Option<String>,
    pub problem: Problem,
}

impl ManifestError {
    /// `document 2 (Service "hello")`, `document 1, item 3 (KafkaSource "orders")`.
    pub fn location(&self) -> String {
        let mut out = format!("document {}", self.document);
        if let Some(item) = self.item {
            out.push_str(&format!(", item {item}"));
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => out.push_str(&format!(" ({k} {n:?})")),
            (Some(k), None) => out.push_str(&format!(" ({k})")),
            (None, Some(n)) => out.push_str(&format!(" ({n:?})")),
            (None, None) => {}
        }
        out
    }

    /// The Knative findings, when the problem is a validation failure.
    pub fn field_errors(&self) -> Option<&FieldErrors> {
        match &self.problem {
            Problem::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// What is wrong with a document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Not YAML or JSON at all.
    #[error("{0}")]
    Syntax(String),
    /// Knative's webhook (or Wisp's own rules) refuse it: `validation failed: <FieldErrors>`.
    #[error("validation failed: {0}")]
    Invalid(FieldErrors),
    /// The same object twice in one input.
    #[error("{what} {name:?} is also defined by document {first}")]
    Duplicate {
        /// `Service` or `trigger`.
        what: &'static str,
        /// `namespace/name` for services, the name for triggers.
        name: String,
        /// The document that defined it first.
        first: usize,
    },
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind(), self.name())
    }
}

/// Parses every manifest in `text`; the first refused document is the error (nothing is
/// returned then: a manifest applies whole or not at all). Empty input gives no objects.
pub fn parse(text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    let mut seen: Vec<(&'static str, String, usize)> = Vec::new();
    for (document, item, value) in documents(text)? {
        let object = parse_value(&value).map_err(|(kind, name, problem)| ManifestError {
            document,
            item,
            kind,
            name,
            problem,
        })?;
        let key = match &object {
            Object::Service(s) => ("Service", format!("{}/{}", s.namespace, s.name)),
            Object::Trigger(t) => ("trigger", t.name.clone()),
        };
        if let Some((_, _, first)) = seen.iter().find(|(w, n, _)| *w == key.0 && *n == key.1) {
            return Err(ManifestError {
                document,
                item,
                kind: value.get("kind").and_then(Value::as_str).map(str::to_string),
                name: Some(object.name().to_string()),
                problem: Problem::Duplicate { what: key.0, name: key.1, first: *first },
            });
        }
        seen.push((key.0, key.1, document));
        out.push(object);
    }
    Ok(out)
}

/// The Knative-shaped Service for `spec`, without `status`: what `wisp get service NAME -o
/// yaml` prints. Template annotations are the ones written, plus the canonical key of every
/// setting they do not already yield (so a service made by `wisp deploy` shows its settings);
/// `timeoutSeconds`, `containerConcurrency` and the memory limit are always shown. Settings
/// beyond Knative's bounds (a timeout over 600 s, a window over 1 h) are clamped into them.
pub fn to_manifest(spec: &ServiceSpec) -> Value {
    service::to_manifest(spec)
}

/// YAML text for a manifest (for `-o yaml`).
pub fn to_yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

type DocError = (Option<String>, Option<String>, Problem);

/// One document: kind and apiVersion decide how it is read.
fn parse_value(value: &Value) -> Result<Object, DocError> {
    let kind = value.get("kind").and_then(Value::as_str).map(str::to_string);
    let name = value.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
    let fail = |errs: FieldErrors| Err((kind.clone(), name.clone(), Problem::Invalid(errs)));
    let mut errs = FieldErrors::default();
    let Some(mut root) = walk::Obj::new(value, "", &mut errs) else {
        if errs.is_empty() {
            errs.add("expected object, got null", "(root)");
        }
        return fail(errs);
    };
    let api_version = root.str("apiVersion", &mut errs).unwrap_or_default();
    let kind_value = root.str("kind", &mut errs).unwrap_or_default();
    if api_version.is_empty() {
        errs.missing("apiVersion");
    }
    if kind_value.is_empty() {
        errs.missing("kind");
    }
    let known = [
        (service::KIND, service::API_VERSION),
        (source::KAFKA_KIND, source::KAFKA_API_VERSION),
        (source::RABBITMQ_KIND, source::RABBITMQ_API_VERSION),
    ];
    match known.iter().find(|(k, _)| *k == kind_value) {
        None if !kind_value.is_empty() => errs.unsupported_details(
            "kind",
            format!(
                "kind {kind_value:?}: Wisp applies {}",
                known.iter().map(|(k, v)| format!("{k} ({v})")).collect::<Vec<_>>().join(", ")
            ),
        ),
        Some((k, v)) if !api_version.is_empty() && api_version != *v => {
            errs.invalid_details(api_version, "apiVersion", format!("Wisp reads {k} as {v}"))
        }
        _ => {}
    }
    if !errs.is_empty() {
        return fail(errs);
    }
    let object = match kind_value {
        service::KIND => Object::Service(service::read(root, &mut errs)),
        source::KAFKA_KIND => Object::Trigger(source::read(source::Kind::Kafka, root, &mut errs)),
        _ => Object::Trigger(source::read(source::Kind::Rabbitmq, root, &mut errs)),
    };
    if errs.is_empty() { Ok(object) } else { fail(errs) }
}

/// Every document of `text` with its position: YAML documents, or elements of a top-level
/// array, with the items of `kind: List` documents expanded.
fn documents(text: &str) -> Result<Vec<(usize, Option<usize>, Value)>, ManifestError> {
    let syntax = |document: usize, message: String| ManifestError {
        document,
        item: None,
        kind: None,
        name: None,
        problem: Problem::Syntax(message),
    };
    let trimmed = text.trim_start();
    let mut values: Vec<Value> = Vec::new();
    let json = if trimmed.starts_with(['{', '[']) { Some(serde_json::from_str::<Value>(trimmed)) } else { None };
    match json {
        Some(Ok(v)) => values.push(v),
        // Not JSON after all: perhaps YAML flow style; if that fails too, the JSON error says more.
        Some(Err(json_err)) => match yaml_documents(text) {
            Ok(v) => values = v,
            Err(_) => return Err(syntax(1, format!("invalid JSON: {json_err}"))),
        },
        None => values = yaml_documents(text).map_err(|(i, e)| syntax(i, e))?,
    }
    // A single top-level array holds the documents.
    if let [Value::Array(items)] = values.as_mut_slice() {
        values = std::mem::take(items);
    }
    let mut out = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let document = i + 1;
        if v.is_null() {
            continue;
        }
        if v.get("kind").and_then(Value::as_str) == Some("List") && v.get("items").is_some() {
            match v.get("items") {
                Some(Value::Array(items)) => {
                    out.extend(items.iter().enumerate().map(|(j, item)| (document, Some(j + 1), item.clone())));
                }
                Some(other) => {
                    let mut errs = FieldErrors::default();
                    errs.wrong_type("array", other, "items");
                    return Err(ManifestError {
                        document,
                        item: None,
                        kind: Some("List".into()),
                        name: None,
                        problem: Problem::Invalid(errs),
                    });
                }
                None => {}
            }
        } else {
            out.push((document, None, v));
        }
    }
    Ok(out)
}

/// YAML documents as JSON values; empty documents (a stray `---`) are skipped but counted.
fn yaml_documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        // Through serde_norway's own Value first: it refuses duplicate keys and applies `<<` merges.
        let mut yaml = serde_norway::Value::deserialize(doc).map_err(|e| (i + 1, format!("invalid YAML: {e}")))?;
        yaml.apply_merge().map_err(|e| (i + 1, format!("invalid YAML: {e}")))?;
        let value = serde_json::to_value(&yaml).map_err(|e| (i + 1, format!("invalid YAML: {e}")))?;
        // An empty document stays as null (keeping positions stable); the caller skips it.
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_scheduler::{Metric, Settings, Template, TrafficTarget};

    fn one_service(text: &str) -> ServiceSpec {
        match parse(text).unwrap().remove(0) {
            Object::Service(s) => s,
            other => panic!("{other:?}"),
        }
    }

    const HEAD: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\n";

    #[test]
    fn traffic_is_defaulted_as_knative_does() {
        let containers = "spec:\n  template: {spec: {containers: [{image: hello:v1}]}}\n";
        // No traffic: 100% to the latest revision.
        assert_eq!(one_service(&format!("{HEAD}{containers}")).traffic, vec![TrafficTarget::latest(100)]);
        // An empty list is no traffic too.
        assert_eq!(
            one_service(&format!("{HEAD}{containers}  traffic: []\n")).traffic,
            vec![TrafficTarget::latest(100)]
        );
        // latestRevision follows from revisionName; percent defaults to 0.
        let s = one_service(&format!(
            "{HEAD}{containers}  traffic:\n  - {{revisionName: hello-v1, percent: 100}}\n  - {{tag: next}}\n"
        ));
        assert_eq!(
            s.traffic,
            vec![
                TrafficTarget {
                    revision_name: Some("hello-v1".into()),
                    latest_revision: false,
                    percent: 100,
                    tag: None
                },
                TrafficTarget { tag: Some("next".into()), ..TrafficTarget::latest(0) },
            ]
        );
    }

    #[test]
    fn round_trip_of_a_parsed_service() {
        let text = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: shop
  labels: {team: a}
spec:
  template:
    metadata:
      name: hello-v2
      annotations:
        autoscaling.knative.dev/minScale: "2"
        autoscaling.knative.dev/window: 90s
        wisp.dev/max-concurrency: "9"
        example.com/note: kept
    spec:
      containerConcurrency: 4
      timeoutSeconds: 42
      containers:
      - image: hello:v2
        env: [{name: B, value: "2"}, {name: A, value: "1"}]
        resources: {limits: {memory: 1G}}
  traffic:
  - {revisionName: hello-v1, percent: 30, tag: old}
  - {latestRevision: true, percent: 70}
"#;
        let s = one_service(text);
        assert_eq!(s.template.settings.memory_bytes, 1_000_000_000);
        assert_eq!(s.template.settings.scaling.min_scale, 2);
        let manifest = to_manifest(&s);
        assert_eq!(manifest["spec"]["template"]["spec"]["timeoutSeconds"], 42);
        assert_eq!(manifest["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/minScale"], "2");
        assert!(
            manifest["spec"]["template"]["metadata"]["annotations"].get("autoscaling.knative.dev/min-scale").is_none()
        );
        assert_eq!(parse(&to_yaml(&manifest)).unwrap(), vec![Object::Service(s)]);
    }

    #[test]
    fn a_deployed_service_shows_its_settings() {
        // What `wisp deploy` makes: settings without any annotation written.
        let mut settings = Settings { min_warm: 4, memory_bytes: 64 << 20, timeout_ms: 5_000, ..Settings::default() };
        settings.scaling.metric = Metric::Rps;
        settings.scaling.initial_scale = 2;
        let spec = ServiceSpec {
            name: "api".into(),
            template: Template { image: "api:v1".into(), settings: settings.clone(), ..Template::default() },
            ..ServiceSpec::default()
        };
        let manifest = to_manifest(&spec);
        let anns = &manifest["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(anns["autoscaling.knative.dev/activation-scale"], "4");
        assert_eq!(anns["autoscaling.knative.dev/metric"], "rps");
        assert_eq!(anns["autoscaling.knative.dev/initial-scale"], "2");
        assert_eq!(manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(manifest["spec"]["template"]["spec"]["timeoutSeconds"], 5);
        let back = one_service(&to_yaml(&manifest));
        assert_eq!(back.template.settings, settings);
        assert_eq!((back.name.as_str(), back.template.image.as_str(), &back.traffic), ("api", "api:v1", &spec.traffic));
    }

    #[test]
    fn json_arrays_empty_input_and_duplicates() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("---\n").unwrap(), vec![]);
        let svc = |name: &str| {
            format!(
                r#"{{"apiVersion":"serving.knative.dev/v1","kind":"Service","metadata":{{"name":"{name}"}},"spec":{{"template":{{"spec":{{"containers":[{{"image":"x:1"}}]}}}}}}}}"#
            )
        };
        let objects = parse(&format!("[{}, {}]", svc("a"), svc("b"))).unwrap();
        assert_eq!(objects.iter().map(Object::name).collect::<Vec<_>>(), ["a", "b"]);
        let err = parse(&format!("[{}, {}]", svc("a"), svc("Bad"))).unwrap_err();
        assert_eq!((err.document, err.item, err.name.as_deref()), (2, None, Some("Bad")));
        assert!(err.field_errors().is_some());
        let list = format!(r#"{{"kind":"List","apiVersion":"v1","items":[{},{}]}}"#, svc("a"), svc("a"));
        let err = parse(&list).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"document 1, item 2 (Service "a"): Service "default/a" is also defined by document 1"#
        );
        let err = parse("{not json").unwrap_err();
        assert!(err.to_string().starts_with("document 1: invalid JSON: "), "{err}");
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.to_string().contains("duplicate entry"), "{err}");
    }

    #[test]
    fn secrets_are_not_echoed() {
        let text = "apiVersion: sources.knative.dev/v1alpha1\nkind: RabbitmqSource\nmetadata:\n  name: jobs\n  annotations: {wisp.dev/rabbitmq-url: \"amqps://u:hunter2@h/\"}\nspec:\n  rabbitmqResourcesConfig: {queueName: q, exchangeName: x}\n  sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: f}}\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("amqps://u:***@h/") && !err.contains("hunter2"), "{err}");
    }
}
