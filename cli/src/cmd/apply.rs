use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;

use super::Format;
use super::push::{self, Component};
use crate::client::{self, Client};
use crate::human;
use crate::output;

/// Create or update services and event sources from Knative manifests
///
/// Reads Knative `Service` (serving.knative.dev/v1), `KafkaSource` (sources.knative.dev/v1) and
/// `RabbitmqSource` (sources.knative.dev/v1alpha1) objects: YAML documents separated by `---`,
/// or JSON (an object, an array of objects, or a `kind: List`). Each Service stamps a new
/// revision when its template changed and is otherwise left unchanged.
///
/// A Service whose `spec.template.spec.containers[0].image` is a local component (`./app.wasm`,
/// `../app.wasm`, `/abs/app.wasm` or `file://...`; relative paths start from the manifest's
/// directory, or the current one for stdin) is uploaded first, as SERVICE:<first 12 hex digits
/// of its sha256>, and applied by digest (`sha256:<hex>`). Other images name components pushed
/// with `wisp push` (NAME[:TAG]). The manifests are checked whole before anything is uploaded
/// or changed: one invalid document changes nothing.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file, directory (its .yaml, .yml and .json files) or - for stdin; repeatable
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Have the node check everything and say what would change, changing nothing (local
    /// components are read and checked, not uploaded)
    #[arg(long)]
    pub dry_run: bool,
}

/// Applying can compile new components, and uploads take a while.
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// The field a local image is read from (with the container's index).
fn image_field(container: usize) -> String {
    format!("spec.template.spec.containers[{container}].image")
}

/// One input document and where it came from.
#[derive(Debug)]
struct Doc {
    /// The file as given (`stdin` for -).
    source: String,
    /// 1-based position in its file.
    number: usize,
    /// Where the file's relative image paths start.
    base: PathBuf,
    value: Value,
}

/// A local component a Service names, to upload as `service:tag`.
#[derive(Debug)]
struct Upload {
    /// The image as written.
    image: String,
    path: PathBuf,
    service: String,
    sha256: String,
}

impl Upload {
    fn tag(&self) -> &str {
        &self.sha256[..12]
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    results: Vec<Applied>,
}

#[derive(Debug, Deserialize)]
struct Applied {
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    action: Value,
    #[serde(default)]
    revision: Option<String>,
}

pub fn run(client: &Client, format: Format, args: ApplyArgs) -> anyhow::Result<()> {
    let mut docs = read_sources(&args.files)?;
    if docs.iter().all(|d| d.value.is_null()) {
        bail!("no objects to apply in {}", sources(&args.files));
    }
    let mut components: HashMap<PathBuf, Component> = HashMap::new();
    let uploads = local_images(&mut docs, &mut components)?;
    let values: Vec<&Value> = docs.iter().map(|d| &d.value).collect();
    let manifest = serde_json::to_string(&values)?;
    if !uploads.is_empty() {
        // Before uploading anything: the same checks the node makes, so an invalid manifest
        // leaves nothing behind.
        if let Err(e) = wisp_manifest::parse(&manifest) {
            bail!("{}", locate(&e.to_string(), &docs));
        }
    }
    let text = format == Format::Table;
    if args.dry_run {
        if text {
            for u in &uploads {
                let size = human::size(components[&u.path].bytes.len() as u64);
                output::print(&format!(
                    "{}: a {size} component, sha256:{}… (not uploaded: dry run)",
                    u.image,
                    &u.sha256[..12]
                ))?;
            }
        }
    } else {
        upload_all(client, &uploads, &components, text)?;
    }

    let mut req = client.admin("POST", "/v1/apply").timeout(APPLY_TIMEOUT).set("Content-Type", "application/json");
    if args.dry_run {
        req = req.query("dry_run", "true");
    }
    let resp = client.send(req, Some(manifest.as_bytes()))?;
    if !(200..300).contains(&resp.status()) {
        let mut e = client::api_error(resp);
        e.message = locate(&e.message, &docs);
        if args.dry_run
            && let Some(u) = uploads.iter().find(|u| e.message.contains(&format!("sha256:{}", u.sha256)))
        {
            e.message = format!(
                "{} (a dry run uploads nothing, and the node has no copy of {} yet: apply without --dry-run uploads it)",
                e.message, u.image
            );
        }
        return Err(e.into());
    }
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).context("reading the node's answer")?;
    let body = String::from_utf8_lossy(&bytes);
    if super::print_body(format, &body)? {
        return Ok(());
    }
    let answer: Answer = client::parse(&body)?;
    let mut out = String::new();
    for r in &answer.results {
        out.push_str(&line(r, answer.dry_run));
        out.push('\n');
    }
    Ok(output::print(&out)?)
}

/// `service.serving.knative.dev/hello created (revision hello-00001)`, kubectl style.
fn line(r: &Applied, dry_run: bool) -> String {
    let resource = match r.kind.as_str() {
        "Service" => "service.serving.knative.dev".to_owned(),
        "KafkaSource" => "kafkasource.sources.knative.dev".to_owned(),
        "RabbitmqSource" => "rabbitmqsource.sources.knative.dev".to_owned(),
        other => other.to_ascii_lowercase(),
    };
    let name = match r.namespace.as_deref() {
        Some(ns) if ns != wisp_scheduler::DEFAULT_NAMESPACE => format!("{ns}/{}", r.name),
        _ => r.name.clone(),
    };
    let action = match &r.action {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut text = format!("{resource}/{name} {action}");
    if let Some(revision) = &r.revision {
        text.push_str(&format!(" (revision {revision})"));
    }
    if dry_run {
        text.push_str(" (dry run)");
    }
    text
}

fn sources(files: &[PathBuf]) -> String {
    let names: Vec<String> =
        files.iter().map(|f| if f.as_os_str() == "-" { "stdin".into() } else { f.display().to_string() }).collect();
    names.join(", ")
}

/// Every document of every file, in order (empty documents kept, as null, so positions match
/// the node's `document N`).
fn read_sources(files: &[PathBuf]) -> anyhow::Result<Vec<Doc>> {
    let mut docs = Vec::new();
    let mut stdin_read = false;
    for file in files {
        if file.as_os_str() == "-" {
            if stdin_read {
                bail!("-f - is given twice: stdin can be read once");
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the manifest from stdin")?;
            let base = std::env::current_dir().context("finding the current directory")?;
            push_docs(&mut docs, "stdin", &text, &base)?;
        } else if file.is_dir() {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(file).with_context(|| format!("reading {}", file.display()))? {
                let path = entry.with_context(|| format!("reading {}", file.display()))?.path();
                let manifest = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("json")
                });
                if manifest && path.is_file() {
                    entries.push(path);
                }
            }
            if entries.is_empty() {
                bail!("{}: no .yaml, .yml or .json files", file.display());
            }
            entries.sort();
            for path in entries {
                read_file(&mut docs, &path)?;
            }
        } else {
            read_file(&mut docs, file)?;
        }
    }
    Ok(docs)
}

fn read_file(docs: &mut Vec<Doc>, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    push_docs(docs, &path.display().to_string(), &text, &base)
}

fn push_docs(docs: &mut Vec<Doc>, source: &str, text: &str, base: &Path) -> anyhow::Result<()> {
    let values = documents(text).map_err(|(n, e)| anyhow::anyhow!("{source}: document {n}: {e}"))?;
    for (i, value) in values.into_iter().enumerate() {
        docs.push(Doc { source: source.to_owned(), number: i + 1, base: base.to_path_buf(), value });
    }
    Ok(())
}

/// The documents of one file, numbered as the node numbers them: YAML documents (empty ones as
/// null), or JSON; a lone top-level array is the list of documents.
fn documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let trimmed = text.trim_start();
    let mut values = if trimmed.starts_with(['{', '[']) {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(v) => vec![v],
            // Perhaps YAML flow style; if not, the JSON error says more.
            Err(json_err) => yaml_documents(text).map_err(|_| (1, format!("invalid JSON: {json_err}")))?,
        }
    } else {
        yaml_documents(text)?
    };
    if let [Value::Array(items)] = values.as_mut_slice() {
        values = std::mem::take(items);
    }
    Ok(values)
}

fn yaml_documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let invalid = |e: &dyn std::fmt::Display| (i + 1, format!("invalid YAML: {e}"));
        let mut yaml = serde_norway::Value::deserialize(doc).map_err(|e| invalid(&e))?;
        yaml.apply_merge().map_err(|e| invalid(&e))?;
        out.push(serde_json::to_value(&yaml).map_err(|e| invalid(&e))?);
    }
    Ok(out)
}

/// Whether an image names a file on this machine.
fn is_local(image: &str) -> bool {
    image.starts_with("./") || image.starts_with("../") || image.starts_with('/') || image.starts_with("file://")
}

/// The file a local image names: relative paths start from `base`.
fn local_path(base: &Path, image: &str) -> PathBuf {
    let path = Path::new(image.strip_prefix("file://").unwrap_or(image));
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// Reads and checks every local component the Services name, and rewrites their images to
/// `sha256:<hex>`; returns what to upload.
fn local_images(docs: &mut [Doc], components: &mut HashMap<PathBuf, Component>) -> anyhow::Result<Vec<Upload>> {
    let mut uploads: Vec<Upload> = Vec::new();
    for doc in docs.iter_mut() {
        let is_list = doc.value.get("kind").and_then(Value::as_str) == Some("List");
        let objects: Vec<(Option<usize>, &mut Value)> = match doc.value.get_mut("items") {
            Some(Value::Array(items)) if is_list => {
                items.iter_mut().enumerate().map(|(j, v)| (Some(j + 1), v)).collect()
            }
            _ => vec![(None, &mut doc.value)],
        };
        for (item, object) in objects {
            if object.get("kind").and_then(Value::as_str) != Some("Service") {
                continue;
            }
            let service = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let Some(Value::Array(containers)) = object.pointer_mut("/spec/template/spec/containers") else {
                continue;
            };
            for (i, container) in containers.iter_mut().enumerate() {
                let Some(image) = container.get("image").and_then(Value::as_str).filter(|i| is_local(i)) else {
                    continue;
                };
                let image = image.to_owned();
                let path = local_path(&doc.base, &image);
                if !components.contains_key(&path) {
                    let component = push::load(&path).map_err(|e| {
                        let mut location = format!("{}: document {}", doc.source, doc.number);
                        if let Some(j) = item {
                            location.push_str(&format!(", item {j}"));
                        }
                        location.push_str(&format!(" (Service {service:?})"));
                        anyhow::anyhow!("{location}: {image:?} ({}) {e}: {}", path.display(), image_field(i))
                    })?;
                    components.insert(path.clone(), component);
                }
                let sha256 = components[&path].sha256.clone();
                container["image"] = Value::String(format!("sha256:{sha256}"));
                if !uploads.iter().any(|u| u.service == service && u.sha256 == sha256) {
                    uploads.push(Upload { image, path, service: service.clone(), sha256 });
                }
            }
        }
    }
    Ok(uploads)
}

/// Uploads each local component unless the node already holds it under the same name and tag.
fn upload_all(
    client: &Client,
    uploads: &[Upload],
    components: &HashMap<PathBuf, Component>,
    text: bool,
) -> anyhow::Result<()> {
    if uploads.is_empty() {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Artifacts {
        #[serde(default)]
        artifacts: Vec<wisp_scheduler::ArtifactRef>,
    }
    // Best effort: without the list, everything is uploaded.
    let pushed = client.get("/v1/artifacts").ok().and_then(|b| client::parse::<Artifacts>(&b).ok());
    let pushed = pushed.map(|a| a.artifacts).unwrap_or_default();
    for u in uploads {
        let there =
            pushed.iter().any(|a| a.name == u.service && a.tag == u.tag() && push::sha256_of(&a.artifact) == u.sha256);
        if there {
            continue;
        }
        let component = &components[&u.path];
        let (_, stored) = push::upload(client, &u.service, u.tag(), &component.bytes)
            .with_context(|| format!("uploading {}", u.image))?;
        if push::sha256_of(&stored.artifact) != u.sha256 {
            bail!("uploading {}: the node stored {}, not sha256:{}", u.image, stored.artifact.digest(), u.sha256);
        }
        if text {
            output::print(&format!(
                "uploaded {} as {}:{} ({})",
                u.image,
                stored.name,
                stored.tag,
                human::size(stored.artifact.bytes())
            ))?;
        }
    }
    Ok(())
}

/// `document N` of the combined input, in a node or manifest message, as `FILE: document M`.
fn locate(message: &str, docs: &[Doc]) -> String {
    let Some(rest) = message.strip_prefix("document ") else {
        return message.to_owned();
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Some(doc) = rest[..digits].parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| docs.get(i))
    else {
        return message.to_owned();
    };
    format!("{}: document {}{}", doc.source, doc.number, &rest[digits..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(source: &str, number: usize) -> Doc {
        Doc { source: source.into(), number, base: PathBuf::from("."), value: Value::Null }
    }

    #[test]
    fn documents_are_numbered_like_the_node() {
        let docs = documents("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs[1].is_null());
        assert_eq!(documents(r#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert_eq!(documents(r#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(documents("- a: 1\n- b: 2\n").unwrap().len(), 2);
        assert_eq!(documents("a: 1\n---\nb: [\n").unwrap_err().0, 2);
        assert!(documents("{\"a\": ").unwrap_err().1.starts_with("invalid JSON"));
    }

    #[test]
    fn local_images() {
        assert!(is_local("./hello.wasm") && is_local("../x.wasm") && is_local("/abs/x.wasm"));
        assert!(is_local("file:///abs/x.wasm"));
        assert!(!is_local("hello:v1") && !is_local("sha256:abc") && !is_local("ghcr.io/x/y:1"));
        let base = Path::new("/manifests");
        assert_eq!(local_path(base, "./hello.wasm"), Path::new("/manifests/./hello.wasm"));
        assert_eq!(local_path(base, "/abs/x.wasm"), Path::new("/abs/x.wasm"));
        assert_eq!(local_path(base, "file:///abs/x.wasm"), Path::new("/abs/x.wasm"));
        assert_eq!(local_path(base, "file://x.wasm"), Path::new("/manifests/x.wasm"));
    }

    #[test]
    fn messages_name_the_file() {
        let docs = [doc("a.yaml", 1), doc("b.yaml", 1), doc("b.yaml", 2)];
        assert_eq!(
            locate("document 3 (Service \"x\"): validation failed: bad", &docs),
            "b.yaml: document 2 (Service \"x\"): validation failed: bad"
        );
        assert_eq!(locate("document 1, item 2 (List): x", &docs), "a.yaml: document 1, item 2 (List): x");
        assert_eq!(locate("document 9: x", &docs), "document 9: x");
        assert_eq!(locate("image not found", &docs), "image not found");
    }

    #[test]
    fn kubectl_lines() {
        let r = |kind: &str, ns: Option<&str>, action: &str, revision: Option<&str>| Applied {
            kind: kind.into(),
            namespace: ns.map(str::to_owned),
            name: "hello".into(),
            action: Value::String(action.into()),
            revision: revision.map(str::to_owned),
        };
        assert_eq!(
            line(&r("Service", Some("default"), "created", Some("hello-00001")), false),
            "service.serving.knative.dev/hello created (revision hello-00001)"
        );
        assert_eq!(
            line(&r("Service", Some("team"), "unchanged", None), true),
            "service.serving.knative.dev/team/hello unchanged (dry run)"
        );
        assert_eq!(
            line(&r("KafkaSource", None, "configured", None), false),
            "kafkasource.sources.knative.dev/hello configured"
        );
    }
}
