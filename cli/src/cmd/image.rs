use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use wisp_scheduler::{Artifact, ArtifactRef};

use super::Format;
use crate::client::{self, Client};
use crate::human;
use crate::output;
use crate::table::Table;

/// Import, list and remove images on the node (OCI container images, and Wasm components)
///
/// `wisp image import` takes an `oci-archive` (a tar of an OCI image layout, maybe gzip- or
/// zstd-compressed, as `skopeo copy ... oci-archive:` or `docker save` write it) or an OCI
/// layout directory. A Wasm OCI image becomes a component (kind wasm); anything else a
/// container image, run by crun. Services name images as NAME[:TAG] or by digest
/// (`sha256:<hex>`): `wisp deploy NAME --image REF`, or a manifest's `image:`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    Import(ImportArgs),
    /// List the node's images and pushed components: NAME TAG KIND DIGEST SIZE CREATED
    #[command(visible_alias = "list")]
    Ls,
    /// Remove an image tag (its content goes too when nothing else uses it)
    #[command(visible_alias = "delete")]
    Rm {
        /// The tag to remove (TAG defaults to latest)
        #[arg(value_name = "NAME[:TAG]")]
        reference: String,
    },
}

/// Import an OCI image into the node's image store
///
/// Sends an oci-archive file as it is (streamed), or an OCI layout directory as a tar of it.
/// Without --name, the image is tagged with its own ref name (`org.opencontainers.image.ref.name`),
/// if it has one.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// An oci-archive file (.tar, .tar.gz) or an OCI image layout directory
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Name and tag to store it under (TAG defaults to the image's own tag, else latest)
    #[arg(long, value_name = "NAME[:TAG]")]
    pub name: Option<String>,
}

/// Sending an image of gigabytes and importing it takes a while.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, Deserialize)]
struct ImageList {
    #[serde(default)]
    images: Vec<ArtifactRef>,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    deleted: String,
}

pub fn run(client: &Client, format: Format, args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Import(args) => import(client, format, args),
        ImageCommand::Ls => list(client, format),
        ImageCommand::Rm { reference } => remove(client, format, &reference),
    }
}

fn import(client: &Client, format: Format, args: ImportArgs) -> anyhow::Result<()> {
    let (name, tag) = match &args.name {
        Some(reference) => {
            let (name, tag) = split_reference(reference);
            (Some(name), tag)
        }
        None => (None, None),
    };
    let (body, imported) = import_path(client, &args.path, name, tag)?;
    if super::print_body(format, &body)? {
        return Ok(());
    }
    Ok(output::print(&format!("imported {}", describe(&imported)))?)
}

/// `httpd:latest (container, sha256:90d2ff1c…, 1.1 MiB)`.
pub fn describe(imported: &ArtifactRef) -> String {
    format!(
        "{}:{} ({}, {}, {})",
        imported.name,
        imported.tag,
        kind(&imported.artifact),
        human::short_hash(&imported.artifact.digest()),
        human::size(imported.artifact.bytes())
    )
}

/// `NAME[:TAG]` -> (NAME, TAG if given).
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once(':') {
        Some((name, tag)) => (name, Some(tag)),
        None => (reference, None),
    }
}

/// The kind the node reports: `wasm` (a component) or `container`.
fn kind(artifact: &Artifact) -> &'static str {
    match artifact {
        Artifact::Wasm { .. } => "wasm",
        Artifact::Image { .. } => "container",
    }
}

/// `POST /v1/images`: imports the oci-archive or OCI layout directory at `path`, tagged
/// `name:tag` (the node's defaults for what is not given); the node's answer as text and parsed.
pub fn import_path(
    client: &Client,
    path: &Path,
    name: Option<&str>,
    tag: Option<&str>,
) -> anyhow::Result<(String, ArtifactRef)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // A directory goes as a tar of it, written to a temporary file first so its length is known.
    let (mut file, _layout_tar) = if meta.is_dir() {
        if !path.join("oci-layout").is_file() {
            anyhow::bail!("{} is a directory but not an OCI image layout (it has no oci-layout file)", path.display());
        }
        let mut tar = tempfile::Builder::new()
            .prefix("wisp-image-")
            .suffix(".tar")
            .tempfile()
            .context("creating a temporary file for the image")?;
        tar_layout(path, io::BufWriter::new(tar.as_file_mut()))
            .with_context(|| format!("packing the OCI layout {} into a tar", path.display()))?;
        (tar.reopen().context("reading the packed image")?, Some(tar))
    } else {
        (File::open(path).with_context(|| format!("reading {}", path.display()))?, None)
    };
    let length = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut req = client.admin("POST", "/v1/images").timeout(IMPORT_TIMEOUT).set("Content-Type", "application/x-tar");
    if let Some(name) = name {
        req = req.query("name", name);
    }
    if let Some(tag) = tag {
        req = req.query("tag", tag);
    }
    let body = client
        .text_streamed(req, io::BufReader::with_capacity(1 << 20, &mut file), Some(length))
        .with_context(|| format!("importing {}", path.display()))?;
    let imported: ArtifactRef = client::parse(&body)?;
    Ok((body, imported))
}

/// Writes the OCI layout directory `dir` as a tar whose entries are relative to it
/// (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), in a stable order.
pub fn tar_layout(dir: &Path, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    append_dir(&mut builder, dir, Path::new(""))?;
    builder.into_inner()?.flush()
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, dir: &Path, relative: &Path) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (path, name) = (entry.path(), relative.join(entry.file_name()));
        // Follows symlinks, as the node would read the layout.
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            builder.append_dir(&name, &path)?;
            append_dir(builder, &path, &name)?;
        } else if meta.is_file() {
            builder.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

fn list(client: &Client, format: Format) -> anyhow::Result<()> {
    let body = client.get("/v1/images")?;
    if super::print_body(format, &body)? {
        return Ok(());
    }
    let list: ImageList = client::parse(&body)?;
    if list.images.is_empty() {
        eprintln!("no images");
        return Ok(());
    }
    Ok(output::print(&image_table(&list.images, human::now_ms()))?)
}

/// NAME TAG KIND DIGEST SIZE CREATED, the digest as its first 12 hex digits.
fn image_table(images: &[ArtifactRef], now_ms: u64) -> String {
    let mut table = Table::new(&["NAME", "TAG", "KIND", "DIGEST", "SIZE", "CREATED"]);
    for image in images {
        let digest = image.artifact.digest();
        let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
        table.row(vec![
            image.name.clone(),
            image.tag.clone(),
            kind(&image.artifact).to_owned(),
            hex.chars().take(12).collect(),
            human::size(image.artifact.bytes()),
            format!("{} ago", human::age(image.created_at_ms, now_ms)),
        ]);
    }
    table.render("")
}

fn remove(client: &Client, format: Format, reference: &str) -> anyhow::Result<()> {
    let (name, tag) = split_reference(reference);
    let tag = tag.unwrap_or("latest");
    let req = client.admin("DELETE", &format!("/v1/images/{}/{}", client::segment(name), client::segment(tag)));
    let body = client.text(req, None)?;
    if super::print_body(format, &body)? {
        return Ok(());
    }
    let answer: Deleted = client::parse(&body)?;
    Ok(output::print(&format!("deleted {}", answer.deleted))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_reference("httpd"), ("httpd", None));
        assert_eq!(split_reference("httpd:2.4"), ("httpd", Some("2.4")));
    }

    #[test]
    fn layout_tar_has_relative_entries() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(dir.path().join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.path().join("index.json"), b"{}").unwrap();
        std::fs::write(blobs.join("ab12"), b"blob").unwrap();
        let mut tar = Vec::new();
        tar_layout(dir.path(), &mut tar).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                io::Read::read_to_end(&mut e, &mut data).unwrap();
                (path, data)
            })
            .collect();
        entries.sort();
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.trim_end_matches('/')).collect();
        assert_eq!(names, ["blobs", "blobs/sha256", "blobs/sha256/ab12", "index.json", "oci-layout"]);
        assert_eq!(entries[2].1, b"blob");
        assert!(entries.iter().all(|(p, _)| !p.starts_with('/') && !p.starts_with("./")));
    }

    #[test]
    fn table_shows_kind_and_short_digest() {
        let image =
            |name: &str, artifact| ArtifactRef { name: name.into(), tag: "latest".into(), artifact, created_at_ms: 0 };
        let hex = "90d2ff1c".repeat(8);
        let table = image_table(
            &[
                image("httpd", Artifact::Image { sha256: hex.clone(), bytes: 1_153_434 }),
                image("hello", Artifact::Wasm { sha256: hex, bytes: 91_234 }),
            ],
            120_000,
        );
        assert_eq!(
            table,
            "NAME   TAG     KIND       DIGEST        SIZE     CREATED\n\
             httpd  latest  container  90d2ff1c90d2  1.1 MiB  2m ago\n\
             hello  latest  wasm       90d2ff1c90d2  89 KiB   2m ago\n"
        );
    }
}
