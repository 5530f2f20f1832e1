use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

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
/// A Service whose `spec.template.spec.containers[0].image` is a local path (`./app.wasm`,
/// `../app.tar`, `/abs/layout/` or `file://...`; relative paths start from the manifest's
/// directory, or the current one for stdin) sends it first and is applied by digest
/// (`sha256:<hex>`): a component (a .wasm file) is uploaded as SERVICE:<first 12 hex digits of
/// its sha256>; an OCI image (an oci-archive file, or an OCI layout directory) is imported as
/// SERVICE:<first 12 hex digits of the file's sha256>, or SERVICE:dir for a directory. Other
/// images name what `wisp push` and `wisp image import` stored (NAME[:TAG]). The manifests are
/// checked whole before anything is uploaded or changed: one invalid document changes nothing.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file, directory (its .yaml, .yml and .json files) or - for stdin; repeatable
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Have the node check everything and say what would change, changing nothing (local
    /// components and images are read and checked, not uploaded or imported)
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

/// A local OCI image (an oci-archive file or a layout directory) a Service names, to import as
/// `service:tag`; the images naming it are rewritten to its digest once it is imported.
#[derive(Debug)]
struct Import {
    /// The image as written.
    image: String,
    path: PathBuf,
    service: String,
    /// The first 12 hex digits of the archive's sha256, or `dir`.
    tag: String,
    /// The archive's size (none for a directory).
    size: Option<u64>,
    /// The containers naming it.
    sites: Vec<Site>,
}

impl Import {
    /// `service:tag`, what the manifest names until the import gives the digest.
    fn reference(&self) -> String {
        format!("{}:{}", self.service, self.tag)
    }
}

/// One container's image: its document, its item in a `List`, its index.
#[derive(Debug, Clone, Copy)]
struct Site {
    doc: usize,
    item: Option<usize>,
    container: usize,
}

/// The local files the manifests name.
#[derive(Debug, Default)]
struct Locals {
    uploads: Vec<Upload>,
    imports: Vec<Import>,
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
    let Locals { uploads, mut imports } = local_images(&mut docs, &mut components)?;
    if !uploads.is_empty() || !imports.is_empty() {
        // Before uploading anything: the same checks the node makes, so an invalid manifest
        // leaves nothing behind.
        let values: Vec<&Value> = docs.iter().map(|d| &d.value).collect();
        if let Err(e) = wisp_manifest::parse(&serde_json::to_string(&values)?) {
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
        // What the node already holds under the same name and tag stands for the image.
        let stored = stored_artifacts(client);
        for i in &imports {
            let what = match i.size {
                Some(size) => format!("a {} OCI archive", human::size(size)),
                None => "an OCI image layout directory".to_owned(),
            };
            let found = stored.iter().find(|a| a.name == i.service && a.tag == i.tag);
            if let Some(found) = found {
                set_image(&mut docs, &i.sites, &found.artifact.digest());
            }
            if text {
                let there = if found.is_some() { ", as stored on the node" } else { "" };
                output::print(&format!("{}: {what}, {}{there} (not imported: dry run)", i.image, i.reference()))?;
            }
        }
        // Unknown to the node: the dry run reports the reference as missing.
        imports.retain(|i| !stored.iter().any(|a| a.name == i.service && a.tag == i.tag));
    } else {
        upload_all(client, &uploads, &components, text)?;
        import_all(client, &mut docs, &imports, text)?;
    }
    let values: Vec<&Value> = docs.iter().map(|d| &d.value).collect();
    let manifest = serde_json::to_string(&values)?;

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
        } else if args.dry_run
            && let Some(i) = imports.iter().find(|i| e.message.contains(&format!("{:?}", i.reference())))
        {
            e.message = format!(
                "{} (a dry run imports nothing, and the node has no copy of {} yet: apply without --dry-run imports it)",
                e.message, i.image
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

/// Whether a local path is a component (uploaded) rather than an OCI image (imported): a
/// `.wasm` file, or a file that starts with the WebAssembly magic.
fn is_component(path: &Path) -> bool {
    if path.is_dir() {
        return false;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wasm")) {
        return true;
    }
    let mut magic = [0; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"\0asm"
}

/// The tag a local OCI image is imported under: the first 12 hex digits of the archive's
/// sha256 (read in pieces, not into memory), or `dir` for a layout directory; and the
/// archive's size.
fn image_tag(path: &Path) -> Result<(String, Option<u64>), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if meta.is_dir() {
        if !path.join("oci-layout").is_file() {
            return Err("is a directory but not an OCI image layout (it has no oci-layout file)".into());
        }
        return Ok(("dir".into(), None));
    }
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("cannot be read: {e}"))?;
    Ok((hex::encode(hasher.finalize())[..12].to_owned(), Some(meta.len())))
}

/// Reads and checks every local component and image the Services name: rewrites components'
/// images to `sha256:<hex>` and images' to `service:tag` (their digest once imported); returns
/// what to upload and import.
fn local_images(docs: &mut [Doc], components: &mut HashMap<PathBuf, Component>) -> anyhow::Result<Locals> {
    let mut locals = Locals::default();
    let mut tags: HashMap<PathBuf, (String, Option<u64>)> = HashMap::new();
    for (d, doc) in docs.iter_mut().enumerate() {
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
                let unusable = |e: &dyn std::fmt::Display| {
                    let mut location = format!("{}: document {}", doc.source, doc.number);
                    if let Some(j) = item {
                        location.push_str(&format!(", item {j}"));
                    }
                    location.push_str(&format!(" (Service {service:?})"));
                    anyhow::anyhow!("{location}: {image:?} ({}) {e}: {}", path.display(), image_field(i))
                };
                if is_component(&path) {
                    if !components.contains_key(&path) {
                        let component = push::load(&path).map_err(|e| unusable(&e))?;
                        components.insert(path.clone(), component);
                    }
                    let sha256 = components[&path].sha256.clone();
                    container["image"] = Value::String(format!("sha256:{sha256}"));
                    if !locals.uploads.iter().any(|u| u.service == service && u.sha256 == sha256) {
                        locals.uploads.push(Upload { image, path, service: service.clone(), sha256 });
                    }
                    continue;
                }
                if !tags.contains_key(&path) {
                    let tag = image_tag(&path).map_err(|e| unusable(&e))?;
                    tags.insert(path.clone(), tag);
                }
                let (tag, size) = tags[&path].clone();
                let site = Site { doc: d, item, container: i };
                let known = locals.imports.iter().position(|m| m.service == service && m.path == path);
                let index = known.unwrap_or_else(|| {
                    let sites = Vec::new();
                    locals.imports.push(Import { image, path, service: service.clone(), tag, size, sites });
                    locals.imports.len() - 1
                });
                let import = &mut locals.imports[index];
                import.sites.push(site);
                container["image"] = Value::String(import.reference());
            }
        }
    }
    Ok(locals)
}

/// Writes `image` into the containers at `sites`.
fn set_image(docs: &mut [Doc], sites: &[Site], image: &str) {
    for site in sites {
        let doc = &mut docs[site.doc].value;
        let object = match site.item {
            Some(j) => &mut doc["items"][j - 1],
            None => doc,
        };
        if let Some(container) = object.pointer_mut(&format!("/spec/template/spec/containers/{}", site.container)) {
            container["image"] = Value::String(image.to_owned());
        }
    }
}

/// Every name:tag on the node (best effort: none when it cannot be listed).
fn stored_artifacts(client: &Client) -> Vec<wisp_scheduler::ArtifactRef> {
    #[derive(Deserialize)]
    struct Artifacts {
        #[serde(default)]
        artifacts: Vec<wisp_scheduler::ArtifactRef>,
    }
    let listed = client.get("/v1/artifacts").ok().and_then(|b| client::parse::<Artifacts>(&b).ok());
    listed.map(|a| a.artifacts).unwrap_or_default()
}

/// Imports each local OCI image, unless the node already holds an archive under the same name
/// and tag (the tag is the archive's hash; a directory is always imported), and points the
/// containers naming it at its digest.
fn import_all(client: &Client, docs: &mut [Doc], imports: &[Import], text: bool) -> anyhow::Result<()> {
    if imports.is_empty() {
        return Ok(());
    }
    let stored = stored_artifacts(client);
    for i in imports {
        let there = stored.iter().find(|a| a.name == i.service && a.tag == i.tag).filter(|_| i.size.is_some());
        let digest = match there {
            Some(found) => found.artifact.digest(),
            None => {
                let (_, imported) = super::image::import_path(client, &i.path, Some(&i.service), Some(&i.tag))
                    .with_context(|| format!("importing {}", i.image))?;
                if text {
                    output::print(&format!("imported {} as {}", i.image, super::image::describe(&imported)))?;
                }
                imported.artifact.digest()
            }
        };
        set_image(docs, &i.sites, &digest);
    }
    Ok(())
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
    // Best effort: without the list, everything is uploaded.
    let pushed = stored_artifacts(client);
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

    fn service(name: &str, image: &str) -> Value {
        serde_json::json!({ "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": { "name": name },
                            "spec": { "template": { "spec": { "containers": [{ "image": image }] } } } })
    }

    #[test]
    fn local_oci_images_are_imported_and_components_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(dir.path().join("app.tar"), b"an archive").unwrap();
        std::fs::create_dir_all(dir.path().join("layout")).unwrap();
        std::fs::write(dir.path().join("layout/oci-layout"), b"{}").unwrap();
        std::fs::create_dir_all(dir.path().join("plain")).unwrap();
        let at = |value: Value| Doc { source: "s.yaml".into(), number: 1, base: dir.path().to_path_buf(), value };
        let list =
            serde_json::json!({ "kind": "List", "items": [service("b", "./app.tar"), service("c", "./layout")] });
        let mut docs = vec![at(service("a", "./hello.wasm")), at(service("b", "./app.tar")), at(list)];
        let mut components = HashMap::new();
        let locals = super::local_images(&mut docs, &mut components).unwrap();
        assert_eq!(locals.uploads.len(), 1);
        let app_tag = &hex::encode(Sha256::digest(b"an archive"))[..12];
        let imports: Vec<(String, Option<u64>, usize)> =
            locals.imports.iter().map(|i| (i.reference(), i.size, i.sites.len())).collect();
        assert_eq!(imports, [(format!("b:{app_tag}"), Some(10), 2), ("c:dir".to_owned(), None, 1)]);
        let image = |doc: &Value| doc.pointer("/spec/template/spec/containers/0/image").unwrap().clone();
        assert_eq!(image(&docs[0].value), Value::String(format!("sha256:{}", locals.uploads[0].sha256)));
        assert_eq!(image(&docs[1].value), Value::String(format!("b:{app_tag}")));
        assert_eq!(image(&docs[2].value["items"][1]), "c:dir");

        set_image(&mut docs, &locals.imports[0].sites, "sha256:abc");
        assert_eq!(image(&docs[1].value), "sha256:abc");
        assert_eq!(image(&docs[2].value["items"][0]), "sha256:abc");
        assert_eq!(image(&docs[2].value["items"][1]), "c:dir");

        let mut docs = vec![at(service("d", "./plain"))];
        let e = super::local_images(&mut docs, &mut components).unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout") && e.contains("containers[0].image"), "{e}");
        let mut docs = vec![at(service("d", "./missing.tar"))];
        let e = super::local_images(&mut docs, &mut components).unwrap_err().to_string();
        assert!(e.contains("cannot be read") && e.contains("Service \"d\""), "{e}");
    }

    #[test]
    fn components_are_wasm_files() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, bare, tar) = (dir.path().join("a.wasm"), dir.path().join("a"), dir.path().join("a.tar"));
        std::fs::write(&wasm, b"anything").unwrap();
        std::fs::write(&bare, b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(&tar, b"oci-layout").unwrap();
        assert!(is_component(&wasm) && is_component(&bare));
        assert!(!is_component(&tar) && !is_component(dir.path()));
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
