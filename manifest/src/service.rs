//! `serving.knative.dev/v1` `Service`: defaulted and validated as Knative's webhook does
//! (service_validation.go, revision_validation.go, route_validation.go, k8s_validation.go,
//! metadata_validation.go), then mapped onto [`ServiceSpec`].

use crate::annotations;
use crate::field::{FieldErrors, join};
use crate::k8s::{self, QUANTITY_ERROR, c_identifier, dns1035_label, go_list, parse_quantity, qualified_name};
use crate::meta::{self, Metadata};
use crate::walk::{Obj, Rules, SERVER_METADATA};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use wisp_scheduler::{CLUSTER_LOCAL, SecretKeyRef, ServiceSpec, Settings, Template, TrafficTarget, VISIBILITY_LABEL};

pub const API_VERSION: &str = "serving.knative.dev/v1";
pub const KIND: &str = "Service";

/// Knative's `config-defaults`: `revision-timeout-seconds`, `max-revision-timeout-seconds`,
/// `container-concurrency-max-limit`.
const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
const MAX_TIMEOUT_SECONDS: i64 = 600;
const MAX_CONTAINER_CONCURRENCY: i64 = 1000;
/// Wisp's smallest memory limit (the scheduler's too).
const MIN_MEMORY: u64 = 1 << 20;
/// Environment variables Knative injects itself (k8s_validation.go `reservedEnvVars`).
const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];

/// Fields of a revision's pod spec Knative accepts (some behind feature flags) and Wisp cannot honour.
const POD_UNSUPPORTED: &[&str] = &[
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
    "serviceAccountName",
    "volumes",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",
    "affinity",
    "topologySpreadConstraints",
    "hostAliases",
    "nodeSelector",
    "runtimeClassName",
    "tolerations",
    "securityContext",
    "shareProcessNamespace",
    "priorityClassName",
    "schedulerName",
    "initContainers",
    "dnsPolicy",
    "dnsConfig",
    "hostIPC",
    "hostPID",
    "hostNetwork",
];
/// Pod spec fields Kubernetes has and Knative's `PodSpecMask` refuses.
const POD_DISALLOWED: &[&str] = &[
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "nodeName",
    "hostname",
    "hostnameOverride",
    "subdomain",
    "priority",
    "readinessGates",
    "serviceAccount",
    "ephemeralContainers",
    "setHostnameAsFQDN",
    "preemptionPolicy",
    "overhead",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
    "resources",
];
/// Container fields Knative accepts and Wisp cannot honour (`readinessProbe` is looked at apart).
const CONTAINER_UNSUPPORTED: &[&str] = &[
    "imagePullPolicy",
    "livenessProbe",
    "startupProbe",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
];
/// Container fields Kubernetes has and Knative's `ContainerMask` refuses.
const CONTAINER_DISALLOWED: &[&str] =
    &["lifecycle", "stdin", "stdinOnce", "tty", "volumeDevices", "resizePolicy", "restartPolicy", "restartPolicyRules"];

/// Ports Knative's own components listen on (k8s_validation.go `reservedPorts`).
const RESERVED_PORTS: &[i64] = &[8012, 8013, 8022, 9090, 9091];

/// Service annotations whose behaviour (a gradual rollout) Wisp does not have.
const SERVICE_UNSUPPORTED_ANNOTATIONS: &[&str] = &["serving.knative.dev/rollout-duration"];
/// Template annotation prefixes and keys whose behaviour Wisp does not have.
const TEMPLATE_UNSUPPORTED_ANNOTATIONS: &[&str] =
    &["serving.knative.dev/progress-deadline", "queue.sidecar.serving.knative.dev/", "features.knative.dev/"];
/// Labels that steer Knative networking Wisp does not have (a revision template's visibility
/// label: Knative reads it on Services and Routes only).
const UNSUPPORTED_LABELS: &[&str] = &[VISIBILITY_LABEL];

/// Reads a Service document (`apiVersion` and `kind` already taken from `root`).
pub fn read(mut root: Obj<'_>, errs: &mut FieldErrors) -> ServiceSpec {
    let md = meta::read_object_meta(&mut root, errs);
    annotations::refuse_on_service(&md.annotations, "metadata.annotations", errs);
    refuse_keys(&md.annotations, SERVICE_UNSUPPORTED_ANNOTATIONS, "metadata.annotations", errs);
    // `cluster-local` makes the service private (callers need a token); Knative accepts no
    // other value.
    if let Some(value) = md.labels.get(VISIBILITY_LABEL).filter(|v| *v != CLUSTER_LOCAL) {
        errs.invalid(value, join("metadata.labels", VISIBILITY_LABEL));
    }
    let _status = root.get("status");

    let mut service = ServiceSpec {
        namespace: md.namespace.clone(),
        name: md.name.clone().unwrap_or_default(),
        labels: md.labels.clone(),
        annotations: md.annotations.clone(),
        ..ServiceSpec::default()
    };
    match root.object("spec", errs) {
        None => {
            // An empty spec has no template, hence no container.
            errs.missing("spec.template.spec.containers");
        }
        Some(mut spec) => {
            match spec.object("template", errs) {
                Some(t) => service.template = template(t, &md, errs),
                None => errs.missing("spec.template.spec.containers"),
            }
            service.traffic = traffic(&mut spec, errs);
            spec.finish(&Rules::default(), errs);
        }
    }
    root.finish(&Rules::default(), errs);
    service
}

/// A refusal for each key in `map` that is (or starts with, for prefixes ending in `/`) one of `refused`.
fn refuse_keys(map: &BTreeMap<String, String>, refused: &[&str], path: &str, errs: &mut FieldErrors) {
    for key in map.keys() {
        if refused.iter().any(|r| if r.ends_with('/') { key.starts_with(r) } else { key == r }) {
            errs.unsupported(join(path, key));
        }
    }
}

/// `spec.template`.
fn template(mut t: Obj<'_>, parent: &Metadata, errs: &mut FieldErrors) -> Template {
    let mut out = Template::default();
    let mut settings = Settings { timeout_ms: DEFAULT_TIMEOUT_SECONDS as u64 * 1000, ..Settings::default() };
    if let Some(mut m) = t.object("metadata", errs) {
        let path = m.path.clone();
        if let Some(name) = m.str("name", errs) {
            revision_name(name, parent, &join(&path, "name"), errs);
            out.revision_name = Some(name.to_string());
        }
        out.labels = m.string_map("labels", errs);
        out.annotations = m.string_map("annotations", errs);
        meta::check_labels(&out.labels, &join(&path, "labels"), errs);
        meta::check_annotation_keys(&out.annotations, &join(&path, "annotations"), errs);
        refuse_keys(&out.labels, UNSUPPORTED_LABELS, &join(&path, "labels"), errs);
        refuse_keys(&out.annotations, TEMPLATE_UNSUPPORTED_ANNOTATIONS, &join(&path, "annotations"), errs);
        m.finish(
            &Rules {
                ignored: SERVER_METADATA,
                unsupported: &["generateName", "namespace", "ownerReferences", "finalizers"],
                ..Rules::default()
            },
            errs,
        );
    }
    annotations::apply_template(&out.annotations, "spec.template.metadata.annotations", &mut settings, errs);

    match t.object("spec", errs) {
        None => errs.missing("spec.template.spec.containers"),
        Some(mut spec) => {
            if let Some(cc) = spec.int("containerConcurrency", errs) {
                if !(0..=MAX_CONTAINER_CONCURRENCY).contains(&cc) {
                    errs.out_of_bounds(cc, 0, MAX_CONTAINER_CONCURRENCY, spec.at("containerConcurrency"));
                } else {
                    settings.container_concurrency = cc as u32;
                }
            }
            if let Some(ts) = spec.int("timeoutSeconds", errs) {
                if ts != 0 && !(0..=MAX_TIMEOUT_SECONDS).contains(&ts) {
                    errs.out_of_bounds(ts, 0, MAX_TIMEOUT_SECONDS, spec.at("timeoutSeconds"));
                } else if ts != 0 {
                    settings.timeout_ms = ts as u64 * 1000;
                }
            }
            let containers_path = spec.at("containers");
            match spec.array("containers", errs) {
                None => errs.missing(containers_path),
                Some(list) if list.is_empty() => errs.missing(containers_path),
                Some(list) => {
                    if list.len() > 1 {
                        errs.unsupported_details(
                            &containers_path,
                            format!("Wisp runs exactly one container per revision (found {})", list.len()),
                        );
                    }
                    let (path, value) = &list[0];
                    match Obj::new(value, path, errs) {
                        Some(c) => out.image = container(c, &mut settings, errs),
                        None => errs.missing(join(path, "image")),
                    }
                }
            }
            spec.finish(&Rules { unsupported: POD_UNSUPPORTED, disallowed: POD_DISALLOWED, ..Rules::default() }, errs);
        }
    }
    t.finish(&Rules::default(), errs);
    out.settings = settings;
    out
}

/// `validateRevisionName`: a DNS-1035 label that starts with `<service>-`.
fn revision_name(name: &str, parent: &Metadata, path: &str, errs: &mut FieldErrors) {
    let msgs = dns1035_label(name);
    if !msgs.is_empty() {
        errs.invalid(format!("not a DNS 1035 label: {}", go_list(&msgs)), path);
        return;
    }
    if let Some(service) = &parent.name {
        let prefix = format!("{service}-");
        if !name.starts_with(&prefix) {
            errs.invalid(format!("{name:?} must have prefix {prefix:?}"), path);
        }
    }
}

/// `containers[0]`: returns the image; fills in memory and env.
fn container(mut c: Obj<'_>, settings: &mut Settings, errs: &mut FieldErrors) -> String {
    if let Some(name) = c.str("name", errs)
        && name == "queue-proxy"
    {
        errs.add(format!("{name:?} is a reserved container name"), c.at("name"));
    }
    let image = c.str("image", errs).unwrap_or_default().to_string();
    if image.is_empty() {
        errs.missing(c.at("image"));
    } else if image.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        errs.add_details(
            "Failed to parse image reference",
            c.at("image"),
            format!("image: {image:?}, error: could not parse reference: {image}"),
        );
    }
    if let Some(entries) = c.array("env", errs) {
        (settings.env, settings.secret_env) = env(entries, errs);
    }
    if let Some(entries) = c.array("envFrom", errs) {
        settings.secrets = env_from(entries, errs);
    }
    if let Some(entries) = c.array("ports", errs) {
        settings.port = ports(entries, &c.at("ports"), errs);
    }
    if let Some(command) = c.strings("command", errs) {
        settings.command = command.into_iter().map(|(_, s)| s.to_string()).collect();
    }
    if let Some(args) = c.strings("args", errs) {
        settings.args = args.into_iter().map(|(_, s)| s.to_string()).collect();
    }
    if let Some(dir) = c.str("workingDir", errs)
        && !dir.is_empty()
    {
        if dir.starts_with('/') {
            settings.working_dir = Some(dir.to_string());
        } else {
            errs.invalid_details(dir, c.at("workingDir"), "Wisp needs an absolute path");
        }
    }
    if let Some(mut r) = c.object("resources", errs) {
        if let Some(mut limits) = r.object("limits", errs) {
            if let Some((text, path)) = quantity(&mut limits, "memory", errs) {
                match parse_quantity(&text) {
                    None => errs.invalid_details(&text, path, QUANTITY_ERROR),
                    Some(n) if n < MIN_MEMORY => {
                        errs.invalid_details(&text, path, "Wisp needs a memory limit of at least 1Mi")
                    }
                    Some(n) => settings.memory_bytes = n,
                }
            }
            // Wisp enforces memory only; a CPU or other limit would be a promise it cannot keep.
            let others: Vec<String> = limits.keys().map(str::to_string).collect();
            for key in others {
                let _ = limits.get(&key);
                errs.unsupported_details(join(&limits.path, &key), "Wisp enforces a memory limit only");
            }
            limits.finish(&Rules::default(), errs);
        }
        if let Some(mut requests) = r.object("requests", errs) {
            // Requests are scheduling hints; Wisp has nothing to schedule them against. They are
            // checked as quantities and otherwise ignored.
            for key in requests.keys().map(str::to_string).collect::<Vec<_>>() {
                if let Some((text, path)) = quantity(&mut requests, &key, errs)
                    && parse_quantity(&text).is_none()
                {
                    errs.invalid_details(&text, path, QUANTITY_ERROR);
                }
            }
            requests.finish(&Rules::default(), errs);
        }
        r.finish(&Rules { disallowed: &["claims"], ..Rules::default() }, errs);
    }
    if let Some(probe) = c.get("readinessProbe")
        && !is_default_probe(probe)
    {
        errs.unsupported_details(
            c.at("readinessProbe"),
            "Wisp decides readiness itself; only Knative's default probe (tcpSocket on the serving port) is accepted",
        );
    }
    c.finish(&Rules { unsupported: CONTAINER_UNSUPPORTED, disallowed: CONTAINER_DISALLOWED, ..Rules::default() }, errs);
    image
}

/// `ports` (validateContainersPorts, validateContainerPorts): at most one, its `containerPort`
/// in range and not reserved, `name` empty, `http1` or `h2c`, `protocol` TCP. Returns the port (0:
/// the default). Paths are Knative's, which name the field without an index.
fn ports(entries: Vec<(String, &Value)>, path: &str, errs: &mut FieldErrors) -> u16 {
    let Some((first_path, first)) = entries.first() else { return 0 };
    if entries.len() > 1 {
        let star = path.replace("containers[0]", "containers[*]");
        errs.add_details(
            "more than one container port is set",
            star,
            "Only a single port is allowed across all containers",
        );
    }
    let Some(mut p) = Obj::new(first, first_path, errs) else { return 0 };
    let at = |key: &str| join(path, key);
    let mut port = 0;
    if let Some(n) = p.int("containerPort", errs) {
        if RESERVED_PORTS.contains(&n) {
            errs.invalid_details(
                format!("{n} is a reserved port"),
                at("containerPort"),
                format!("{n} is a reserved port, please use a different value"),
            );
        } else if !(0..=65535).contains(&n) {
            errs.out_of_bounds(n, 0, 65535, at("containerPort"));
        } else {
            port = n as u16;
        }
    }
    if let Some(protocol) = p.str("protocol", errs)
        && !protocol.is_empty()
        && protocol != "TCP"
    {
        errs.invalid(protocol, at("protocol"));
    }
    match p.str("name", errs).unwrap_or_default() {
        "" | "http1" => {}
        "h2c" => errs.unsupported_details(at("name"), "Wisp speaks HTTP/1.1 to containers"),
        other => errs.add_details(
            format!("Port name {other} is not allowed"),
            path,
            "Name must be empty, or one of: 'h2c', 'http1'",
        ),
    }
    // ContainerPortMask's disallowed fields keep Knative's path too.
    for key in ["hostIP", "hostPort"] {
        if p.get(key).is_some_and(|v| !crate::walk::is_empty(v)) {
            errs.disallowed(at(key));
        }
    }
    p.finish(&Rules::default(), errs);
    port
}

/// A quantity field: Kubernetes takes a string or a bare number.
fn quantity(o: &mut Obj<'_>, key: &str, errs: &mut FieldErrors) -> Option<(String, String)> {
    let path = o.at(key);
    match o.get(key)? {
        Value::String(s) => Some((s.clone(), path)),
        Value::Number(n) => Some((n.to_string(), path)),
        other => {
            errs.wrong_type("string", other, path);
            None
        }
    }
}

/// What Knative writes back as the default readiness probe (or a part of it).
fn is_default_probe(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.iter().all(|(k, v)| match k.as_str() {
        "successThreshold" => v == &json!(1),
        "tcpSocket" => v.as_object().is_some_and(|t| t.iter().all(|(k, v)| k == "port" && v == &json!(0))),
        _ => false,
    })
}

/// `env`: names are C identifiers, not reserved, not repeated; each has a `value` or a
/// `valueFrom.secretKeyRef` (the only source Wisp has). Returns the literal values and the
/// secret references.
fn env(entries: Vec<(String, &Value)>, errs: &mut FieldErrors) -> (BTreeMap<String, String>, Vec<SecretKeyRef>) {
    let mut out = BTreeMap::new();
    let mut refs = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, value) in entries {
        let Some(mut e) = Obj::new(value, &path, errs) else { continue };
        let name = e.str("name", errs).unwrap_or_default();
        let name_path = e.at("name");
        let value = e.str("value", errs).unwrap_or_default();
        let from = match e.object("valueFrom", errs) {
            Some(_) if !value.is_empty() => {
                errs.add_paths("expected exactly one, got both", vec![e.at("value"), e.at("valueFrom")]);
                None
            }
            Some(from) => secret_key_ref(from, errs),
            None => None,
        };
        if name.is_empty() {
            errs.missing(&name_path);
        } else if RESERVED_ENV.contains(&name) {
            errs.add(format!("{name:?} is a reserved environment variable"), &name_path);
        } else if let msgs @ [_, ..] = c_identifier(name).as_slice() {
            errs.invalid_details(name, &name_path, msgs.join(", "));
        } else if !seen.insert(name) {
            errs.add(format!("duplicate environment variable name {name:?}"), &name_path);
        } else if let Some((secret, key)) = from {
            refs.push(SecretKeyRef { name: name.to_string(), secret, key });
        } else {
            out.insert(name.to_string(), value.to_string());
        }
        e.finish(&Rules::default(), errs);
    }
    (out, refs)
}

/// `valueFrom`: a `secretKeyRef` with a `name` and a `key`; returns them.
fn secret_key_ref(mut from: Obj<'_>, errs: &mut FieldErrors) -> Option<(String, String)> {
    let found = match from.object("secretKeyRef", errs) {
        None => {
            if !["configMapKeyRef", "fieldRef", "resourceFieldRef"].iter().any(|k| from.has(k)) {
                errs.add("expected exactly one, got neither", from.path.clone());
            }
            None
        }
        Some(mut r) => {
            let name = secret_name(&mut r, errs);
            let key = r.str("key", errs).unwrap_or_default().to_string();
            if key.is_empty() {
                errs.missing(r.at("key"));
            }
            optional_false(&mut r, errs);
            r.finish(&Rules::default(), errs);
            name.filter(|_| !key.is_empty()).map(|name| (name, key))
        }
    };
    let unsupported = &["configMapKeyRef", "fieldRef", "resourceFieldRef"];
    from.finish(&Rules { unsupported, ..Rules::default() }, errs);
    found
}

/// A secret reference's `name`: required, a DNS label.
fn secret_name(r: &mut Obj<'_>, errs: &mut FieldErrors) -> Option<String> {
    let name = r.str("name", errs).unwrap_or_default();
    if name.is_empty() {
        errs.missing(r.at("name"));
        return None;
    }
    if wisp_scheduler::validate_name(name).is_err() {
        errs.invalid_details(name, r.at("name"), "a secret name is a DNS label: lowercase letters, digits and '-'");
        return None;
    }
    Some(name.to_string())
}

/// `optional: true` would start instances without the secret; Wisp requires it to exist.
fn optional_false(r: &mut Obj<'_>, errs: &mut FieldErrors) {
    if r.bool("optional", errs) == Some(true) {
        errs.unsupported_details(r.at("optional"), "Wisp requires referenced secrets to exist");
    }
}

/// `envFrom`: each a `secretRef` whose every key becomes an environment variable.
fn env_from(entries: Vec<(String, &Value)>, errs: &mut FieldErrors) -> Vec<String> {
    let mut out = Vec::new();
    for (path, value) in entries {
        let Some(mut e) = Obj::new(value, &path, errs) else { continue };
        match e.object("secretRef", errs) {
            Some(mut r) => {
                if let Some(name) = secret_name(&mut r, errs)
                    && !out.contains(&name)
                {
                    out.push(name);
                }
                optional_false(&mut r, errs);
                r.finish(&Rules::default(), errs);
            }
            None if !e.has("configMapRef") => errs.add("expected exactly one, got neither", e.at("secretRef")),
            None => {}
        }
        e.finish(&Rules { unsupported: &["configMapRef", "prefix"], ..Rules::default() }, errs);
    }
    out
}

/// `spec.traffic`, defaulted (route_defaults.go) and validated (route_validation.go).
fn traffic(spec: &mut Obj<'_>, errs: &mut FieldErrors) -> Vec<TrafficTarget> {
    let path = spec.at("traffic");
    let entries = spec.array("traffic", errs).unwrap_or_default();
    if entries.is_empty() {
        return vec![TrafficTarget::latest(100)];
    }
    let mut out = Vec::new();
    let mut sum: i64 = 0;
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (entry_path, value)) in entries.into_iter().enumerate() {
        let Some(mut t) = Obj::new(value, &entry_path, errs) else { continue };
        let revision = t.str("revisionName", errs).unwrap_or_default();
        let configuration = t.str("configurationName", errs).unwrap_or_default();
        let latest = t.bool("latestRevision", errs).unwrap_or(revision.is_empty());
        let percent = t.int("percent", errs).unwrap_or(0);
        let tag = t.str("tag", errs).unwrap_or_default();
        let url = t.str("url", errs).unwrap_or_default();

        // validateLatestRevision: the senses of pinning and floating must match.
        if latest != revision.is_empty() {
            errs.add(
                format!("may not set revisionName {revision:?} when latestRevision is {latest}"),
                t.at("latestRevision"),
            );
        }
        // validateRevisionAndConfiguration (a Service has a default configuration name).
        if !configuration.is_empty() {
            errs.disallowed(t.at("configurationName"));
        } else if !revision.is_empty() {
            let msgs = qualified_name(revision);
            if !msgs.is_empty() {
                errs.invalid_key(revision, t.at("revisionName"), msgs.join(", "));
            }
        }
        if !(0..=100).contains(&percent) {
            errs.out_of_bounds(percent, 0, 100, t.at("percent"));
        }
        sum = sum.saturating_add(percent);
        if !url.is_empty() {
            errs.disallowed(t.at("url"));
        }
        if !tag.is_empty() {
            let msgs = dns1035_label(tag);
            if !msgs.is_empty() {
                // ErrInvalidArrayValue's path really reads `traffic.tag[i]`.
                errs.invalid(format!("not a DNS 1035 label: {}", go_list(&msgs)), format!("{path}.tag[{i}]"));
            }
            if let Some(first) = tags.get(tag) {
                errs.add_paths(
                    format!("Multiple definitions for {tag:?}"),
                    vec![format!("{path}[{i}].tag"), format!("{path}[{first}].tag")],
                );
            } else {
                tags.insert(tag.to_string(), i);
            }
        }
        t.finish(&Rules::default(), errs);
        out.push(TrafficTarget {
            revision_name: (!revision.is_empty()).then(|| revision.to_string()),
            latest_revision: latest,
            percent: percent.clamp(0, 100) as u32,
            tag: (!tag.is_empty()).then(|| tag.to_string()),
        });
    }
    if sum != 100 {
        errs.add(format!("Traffic targets sum to {sum}, want 100"), path);
    }
    out
}

/// The Knative-shaped Service for `spec`, without `status`.
pub fn to_manifest(spec: &ServiceSpec) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(spec.name));
    metadata.insert("namespace".into(), json!(spec.namespace));
    if !spec.labels.is_empty() {
        metadata.insert("labels".into(), json!(spec.labels));
    }
    if !spec.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(spec.annotations));
    }

    let t = &spec.template;
    let s = &t.settings;
    let mut template_meta = Map::new();
    if let Some(name) = &t.revision_name {
        template_meta.insert("name".into(), json!(name));
    }
    if !t.labels.is_empty() {
        template_meta.insert("labels".into(), json!(t.labels));
    }
    let annotations = annotations::for_settings(&t.annotations, s);
    if !annotations.is_empty() {
        template_meta.insert("annotations".into(), json!(annotations));
    }

    let mut container = Map::new();
    container.insert("image".into(), json!(t.image));
    if !s.command.is_empty() {
        container.insert("command".into(), json!(s.command));
    }
    if !s.args.is_empty() {
        container.insert("args".into(), json!(s.args));
    }
    if let Some(dir) = &s.working_dir {
        container.insert("workingDir".into(), json!(dir));
    }
    if s.port != 0 {
        container.insert("ports".into(), json!([{"containerPort": s.port}]));
    }
    if !s.env.is_empty() || !s.secret_env.is_empty() {
        let mut env: Vec<Value> = s.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
        env.extend(
            s.secret_env
                .iter()
                .map(|r| json!({"name": r.name, "valueFrom": {"secretKeyRef": {"name": r.secret, "key": r.key}}})),
        );
        container.insert("env".into(), Value::Array(env));
    }
    if !s.secrets.is_empty() {
        let from: Vec<Value> = s.secrets.iter().map(|name| json!({"secretRef": {"name": name}})).collect();
        container.insert("envFrom".into(), Value::Array(from));
    }
    container
        .insert("resources".into(), json!({"limits": {"memory": k8s::format_bytes(s.memory_bytes.max(MIN_MEMORY))}}));
    let timeout_seconds = s.timeout_ms.div_ceil(1000).clamp(1, MAX_TIMEOUT_SECONDS as u64);

    let traffic: Vec<Value> = spec
        .traffic
        .iter()
        .map(|tt| {
            let mut o = Map::new();
            if let Some(tag) = &tt.tag {
                o.insert("tag".into(), json!(tag));
            }
            if let Some(r) = &tt.revision_name {
                o.insert("revisionName".into(), json!(r));
            }
            o.insert("latestRevision".into(), json!(tt.latest_revision));
            o.insert("percent".into(), json!(tt.percent));
            Value::Object(o)
        })
        .collect();

    let mut template = Map::new();
    if !template_meta.is_empty() {
        template.insert("metadata".into(), Value::Object(template_meta));
    }
    template.insert(
        "spec".into(),
        json!({
            "containerConcurrency": s.container_concurrency.min(MAX_CONTAINER_CONCURRENCY as u32),
            "timeoutSeconds": timeout_seconds,
            "containers": [Value::Object(container)],
        }),
    );
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": Value::Object(metadata),
        "spec": {"template": Value::Object(template), "traffic": traffic},
    })
}
