//! Reading an OCI image layout directory: choosing the image in `index.json`, following nested
//! indexes, and reading blobs while verifying their digests.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, Descriptor, DigestAlgorithm, ImageIndex, ImageManifest, MediaType, Os};
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::fsutil::is_hex64;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// What containerd and Docker 25+ put beside (or instead of) the OCI ref name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Nested indexes cannot loop (content addressing), but a hostile layout can still nest deeply.
const MAX_NESTING: usize = 4;

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Hex digest and byte count of what was read so far.
    pub(crate) fn finish(self) -> (String, u64) {
        let (_, hex, len) = self.into_parts();
        (hex, len)
    }

    /// The inner reader, hex digest and byte count.
    pub(crate) fn into_parts(self) -> (R, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.len)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The image chosen from a layout.
pub(crate) struct Chosen {
    pub manifest_hex: String,
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub ref_name: Option<String>,
}

/// The hex digest of a descriptor, refusing anything but sha256 (the only algorithm we name files by).
pub(crate) fn sha256_hex<'a>(desc: &'a Descriptor, what: &str) -> Result<&'a str, ImageError> {
    let d = desc.digest();
    match (d.algorithm(), d.digest()) {
        (DigestAlgorithm::Sha256, hex) if is_hex64(hex) => Ok(hex),
        _ => Err(ImageError::Invalid(format!("{what}: unsupported digest {d} (only sha256 is supported)"))),
    }
}

/// Path of a blob in the layout (it may not exist).
pub(crate) fn blob_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join("blobs").join("sha256").join(hex)
}

/// Opens a blob, turning "absent" into a [`ImageError::MissingBlob`] naming who referenced it.
pub(crate) fn open_blob(dir: &Path, hex: &str, owner: &str, what: &str) -> Result<File, ImageError> {
    let path = blob_path(dir, hex);
    File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            ImageError::MissingBlob { owner: owner.into(), what: what.into(), digest: format!("sha256:{hex}") }
        }
        _ => ImageError::io_path("open blob", &path, e),
    })
}

/// Checks a blob read through a [`HashReader`] against its descriptor.
pub(crate) fn check_blob(hex: &str, what: &str, size: u64, actual: (String, u64)) -> Result<(), ImageError> {
    if actual.0 != hex {
        return Err(ImageError::DigestMismatch { digest: hex.into(), what: what.into(), actual: actual.0 });
    }
    if actual.1 != size {
        return Err(ImageError::SizeMismatch {
            digest: hex.into(),
            what: what.into(),
            expected: size,
            actual: actual.1,
        });
    }
    Ok(())
}

/// Reads a whole (small) blob, verified against its descriptor.
pub(crate) fn read_blob(dir: &Path, desc: &Descriptor, owner: &str, what: &str) -> Result<Vec<u8>, ImageError> {
    let hex = sha256_hex(desc, what)?;
    let mut r = HashReader::new(open_blob(dir, hex, owner, what)?);
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).map_err(|e| ImageError::io(format!("read blob sha256:{hex} ({what})"), e))?;
    check_blob(hex, what, desc.size(), r.finish())?;
    Ok(bytes)
}

fn annotation<'a>(desc: &'a Descriptor, key: &str) -> Option<&'a str> {
    desc.annotations().as_ref()?.get(key).map(String::as_str)
}

fn is_linux_amd64(desc: &Descriptor) -> bool {
    desc.platform().as_ref().is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
}

/// Among several candidates, the single linux/amd64 one (the first if several variants are listed).
fn prefer_platform<'a>(cands: &[&'a Descriptor]) -> Option<&'a Descriptor> {
    cands.iter().copied().find(|d| is_linux_amd64(d))
}

fn names(cands: &[&Descriptor]) -> String {
    let v: Vec<String> = cands
        .iter()
        .map(|d| match annotation(d, REF_NAME) {
            Some(n) => format!("{n:?}"),
            None => format!("(unnamed {})", d.digest()),
        })
        .collect();
    v.join(", ")
}

/// Reads `index.json`, picks the image (by ref name, or the only / the linux/amd64 one) and follows
/// nested indexes down to a manifest.
pub(crate) fn choose(dir: &Path, select: Option<&str>) -> Result<Chosen, ImageError> {
    let index_path = dir.join("index.json");
    let bytes = match std::fs::read(&index_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageError::NotALayout),
        Err(e) => return Err(ImageError::io_path("read", &index_path, e)),
    };
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json { what: "index.json".into(), source })?;
    let all: Vec<&Descriptor> = index.manifests().iter().collect();
    if all.is_empty() {
        return Err(ImageError::Invalid("index.json lists no images".into()));
    }
    let desc = match select {
        Some(sel) => {
            let hits: Vec<&Descriptor> = all
                .iter()
                .copied()
                .filter(|d| annotation(d, REF_NAME) == Some(sel) || annotation(d, CONTAINERD_NAME) == Some(sel))
                .collect();
            match hits.len() {
                0 => {
                    return Err(ImageError::Select(format!(
                        "no image with ref name {sel:?} in index.json (ref names: {})",
                        names(&all)
                    )));
                }
                1 => hits[0],
                _ => prefer_platform(&hits).ok_or_else(|| {
                    ImageError::Select(format!("{} images have ref name {sel:?} in index.json", hits.len()))
                })?,
            }
        }
        None if all.len() == 1 => all[0],
        None => prefer_platform(&all).ok_or_else(|| {
            ImageError::Select(format!(
                "index.json lists {} images; select one by ref name: {}",
                all.len(),
                names(&all)
            ))
        })?,
    };
    let ref_name = annotation(desc, REF_NAME).map(str::to_owned);
    resolve(dir, desc, "index.json".into(), 0, ref_name)
}

fn resolve(
    dir: &Path,
    desc: &Descriptor,
    owner: String,
    depth: usize,
    ref_name: Option<String>,
) -> Result<Chosen, ImageError> {
    let hex = sha256_hex(desc, &owner)?.to_owned();
    match desc.media_type() {
        MediaType::ImageManifest => {}
        MediaType::Other(m) if m == DOCKER_MANIFEST => {}
        MediaType::ImageIndex => return resolve_index(dir, desc, &hex, &owner, depth, ref_name),
        MediaType::Other(m) if m == DOCKER_LIST => return resolve_index(dir, desc, &hex, &owner, depth, ref_name),
        other => {
            return Err(ImageError::UnsupportedMediaType {
                what: format!("manifest sha256:{hex} (listed in {owner})"),
                media_type: other.to_string(),
            });
        }
    }
    let bytes = read_blob(dir, desc, &owner, "manifest")?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|source| ImageError::Json { what: format!("manifest sha256:{hex}"), source })?;
    Ok(Chosen { manifest_hex: hex, manifest_bytes: bytes, manifest, ref_name })
}

fn resolve_index(
    dir: &Path,
    desc: &Descriptor,
    hex: &str,
    owner: &str,
    depth: usize,
    ref_name: Option<String>,
) -> Result<Chosen, ImageError> {
    if depth >= MAX_NESTING {
        return Err(ImageError::Invalid(format!("index sha256:{hex}: indexes nested more than {MAX_NESTING} deep")));
    }
    let bytes = read_blob(dir, desc, owner, "index")?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|source| ImageError::Json { what: format!("index sha256:{hex}"), source })?;
    let all: Vec<&Descriptor> = index.manifests().iter().collect();
    let pick = match all.len() {
        0 => None,
        1 => Some(all[0]),
        // Several platforms (and perhaps attestations): we run linux/amd64.
        _ => prefer_platform(&all),
    };
    let Some(next) = pick else {
        let platforms: Vec<String> = all
            .iter()
            .map(|d| d.platform().as_ref().map_or("(none)".into(), |p| format!("{}/{}", p.os(), p.architecture())))
            .collect();
        return Err(ImageError::Select(format!(
            "index sha256:{hex} has no linux/amd64 image (platforms: {})",
            platforms.join(", ")
        )));
    };
    resolve(dir, next, format!("index sha256:{hex}"), depth + 1, ref_name)
}
