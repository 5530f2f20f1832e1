use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wisp_scheduler::{Artifact, ArtifactRef};

use super::Format;
use crate::client::{self, Client};
use crate::output;

/// Upload a component for manifests to name as their image (`image: NAME:TAG`)
///
/// Stores the component on the node under NAME:TAG (TAG defaults to `latest`; pushing again
/// moves the tag). A Service's `spec.template.spec.containers[0].image` then names it as
/// `NAME:TAG`, `NAME` (for `latest`) or by digest, `sha256:<hex>`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The component (a .wasm file)
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// Name and tag to store it under
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: String,
}

/// Uploading a big component takes a while.
const PUSH_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(client: &Client, format: Format, args: PushArgs) -> anyhow::Result<()> {
    let (name, tag) = args.reference.split_once(':').unwrap_or((&args.reference, "latest"));
    let component = read_component(&args.file)?;
    let (body, pushed) = upload(client, name, tag, &component.bytes)?;
    if super::print_body(format, &body)? {
        return Ok(());
    }
    output::print(&format!(
        "pushed {}:{} {} ({} bytes)",
        pushed.name,
        pushed.tag,
        pushed.artifact.digest(),
        pushed.artifact.bytes()
    ))?;
    Ok(())
}

/// A component read from disk, checked to be WebAssembly.
pub struct Component {
    pub bytes: Vec<u8>,
    /// Hex sha256 of `bytes`.
    pub sha256: String,
}

/// Why a local image cannot be used.
#[derive(Debug)]
pub enum NotAComponent {
    Unreadable(std::io::Error),
    Directory,
    NotWasm,
}

impl std::fmt::Display for NotAComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAComponent::Unreadable(e) => write!(f, "cannot be read: {e}"),
            NotAComponent::Directory => write!(
                f,
                "is a directory, not a WebAssembly component (.wasm): import an OCI image layout with `wisp image import`"
            ),
            NotAComponent::NotWasm => {
                write!(f, "is not a WebAssembly component (.wasm): import an OCI archive with `wisp image import`")
            }
        }
    }
}

/// Reads `path` and checks it is WebAssembly (the `\0asm` magic); the node checks the rest.
pub fn load(path: &Path) -> Result<Component, NotAComponent> {
    if path.is_dir() {
        return Err(NotAComponent::Directory);
    }
    let bytes = std::fs::read(path).map_err(NotAComponent::Unreadable)?;
    if !bytes.starts_with(b"\0asm") {
        return Err(NotAComponent::NotWasm);
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Component { bytes, sha256 })
}

fn read_component(path: &Path) -> anyhow::Result<Component> {
    load(path).map_err(|e| anyhow::anyhow!("{} {e}", path.display()))
}

/// `PUT /v1/artifacts/{name}/{tag}`: the node's answer as text and parsed.
pub fn upload(client: &Client, name: &str, tag: &str, bytes: &[u8]) -> anyhow::Result<(String, ArtifactRef)> {
    let req = client
        .admin("PUT", &format!("/v1/artifacts/{}/{}", client::segment(name), client::segment(tag)))
        .timeout(PUSH_TIMEOUT)
        .set("Content-Type", "application/wasm");
    let body = client.text(req, Some(bytes)).with_context(|| format!("pushing {name}:{tag}"))?;
    let pushed: ArtifactRef = client::parse(&body)?;
    Ok((body, pushed))
}

/// The hex sha256 of an artifact.
pub fn sha256_of(artifact: &Artifact) -> &str {
    match artifact {
        Artifact::Wasm { sha256, .. } | Artifact::Image { sha256, .. } => sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasm_loads() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("a.wasm");
        std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
        let c = load(&wasm).unwrap();
        assert_eq!(c.sha256.len(), 64);
        let tar = dir.path().join("image.tar");
        std::fs::write(&tar, b"oci-layout").unwrap();
        assert!(matches!(load(&tar), Err(NotAComponent::NotWasm)));
        assert!(matches!(load(dir.path()), Err(NotAComponent::Directory)));
        assert!(matches!(load(&dir.path().join("missing.wasm")), Err(NotAComponent::Unreadable(_))));
        assert!(NotAComponent::NotWasm.to_string().contains("wisp image import"));
    }
}
