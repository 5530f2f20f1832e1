//! The store itself: import, look up, list and remove images.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};

use crate::apply::Applier;
use crate::error::{ImageError, IoContext};
use crate::fsutil::{TempDir, is_hex64, remove_tree, sync_dir, sync_filesystem, write_atomic};
use crate::layout::{self, Chosen, HashReader};
use crate::{Content, Image, Imported, RunConfig, archive};

const WASM_LAYER_TYPES: [&str; 2] = ["application/wasm", "application/vnd.wasm.content.layer.v1+wasm"];
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn layer_compression(mt: &MediaType) -> Option<Compression> {
    Some(match mt {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Compression::Gzip,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Compression::Zstd,
        MediaType::Other(m) => match m.as_str() {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            _ => return None,
        },
        _ => return None,
    })
}

fn is_wasm_layer(mt: &MediaType) -> bool {
    matches!(mt, MediaType::Other(m) if WASM_LAYER_TYPES.contains(&m.as_str()))
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

fn run_config(cfg: &ImageConfiguration) -> RunConfig {
    let Some(c) = cfg.config() else { return RunConfig::default() };
    let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
    exposed_ports.sort();
    RunConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: non_empty(c.working_dir()),
        user: non_empty(c.user()),
        exposed_ports,
        stop_signal: non_empty(c.stop_signal()),
    }
}

/// Reads through to `inner` while copying every byte to `out`: the blob is stored in the same pass
/// that verifies and unpacks it.
struct Tee<R> {
    inner: R,
    out: BufWriter<File>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A node's image store rooted at one directory. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// Serialises the commit step of imports against removals, so reference counting of shared
    /// blobs sees a consistent set of images. Unpacking runs outside it.
    commit: Mutex<()>,
}

impl ImageStore {
    /// Opens (creating) a store at `root`: `blobs/sha256`, `images`, `rootfs`, `tmp`. Clears what a
    /// crash may have left: everything in `tmp/`, rootfs dirs and blobs no recorded image owns.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        fs::create_dir_all(root).ctx("create", root)?;
        let root = fs::canonicalize(root).ctx("resolve", root)?;
        for sub in ["blobs/sha256", "images", "rootfs", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).ctx("create", &dir)?;
        }
        let store = ImageStore { root, commit: Mutex::new(()) };
        store.clean()?;
        Ok(store)
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn meta_path(&self, hex: &str) -> PathBuf {
        self.dir("images").join(format!("{hex}.json"))
    }

    fn clean(&self) -> Result<(), ImageError> {
        let tmp = self.dir("tmp");
        for e in fs::read_dir(&tmp).ctx("read", &tmp)? {
            let p = e.ctx("read", &tmp)?.path();
            remove_tree(&p).ctx("remove leftover", &p)?;
        }
        let images = self.list()?;
        let live: HashSet<&str> = images.iter().map(|i| i.manifest_hex.as_str()).collect();
        let blobs: HashSet<&str> = images.iter().flat_map(|i| i.blobs.iter().map(String::as_str)).collect();
        for (sub, keep) in [("rootfs", &live), ("blobs/sha256", &blobs), ("images", &HashSet::new())] {
            let dir = self.dir(sub);
            for e in fs::read_dir(&dir).ctx("read", &dir)? {
                let e = e.ctx("read", &dir)?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                // In images/ only our atomic-write temp files are leftovers.
                let stale = if sub == "images" { name.starts_with(".tmp-") } else { !keep.contains(&*name) };
                if stale {
                    remove_tree(&e.path()).ctx("remove leftover", &e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Imports an OCI image layout directory or an `oci-archive` tar (plain, gzip or zstd; also
    /// `docker save` output of Docker 25+). `select` picks an image of a multi-image index by its
    /// `org.opencontainers.image.ref.name` (or `io.containerd.image.name`) annotation; `None` takes
    /// the only one, or the linux/amd64 one. Importing an image already in the store returns it
    /// without unpacking again. A Wasm artifact is returned as [`Content::Wasm`] and not stored.
    pub fn import(&self, path: &Path, select: Option<&str>) -> Result<Imported, ImageError> {
        let meta = fs::metadata(path).ctx("open", path)?;
        if meta.is_dir() {
            return self.import_layout(path, select);
        }
        let tmp = TempDir::new_in(&self.dir("tmp"), "archive-")?;
        archive::extract(path, tmp.path())?;
        self.import_layout(tmp.path(), select)
    }

    fn import_layout(&self, dir: &Path, select: Option<&str>) -> Result<Imported, ImageError> {
        let Chosen { manifest_hex, manifest_bytes, manifest, ref_name } = layout::choose(dir, select)?;
        let owner = format!("manifest sha256:{manifest_hex}");
        let layers = manifest.layers();
        if layers.iter().any(|l| is_wasm_layer(l.media_type())) {
            if layers.len() != 1 {
                return Err(ImageError::Invalid(format!(
                    "{owner}: a Wasm image must have exactly one layer, this one has {}",
                    layers.len()
                )));
            }
            let bytes = layout::read_blob(dir, &layers[0], &owner, "layer 0")?;
            return Ok(Imported { manifest_hex, ref_name, content: Content::Wasm(bytes) });
        }
        if let Ok(image) = self.image(&manifest_hex)
            && image.rootfs.is_dir()
        {
            return Ok(Imported { manifest_hex, ref_name, content: Content::Container(image) });
        }
        let image = self.unpack(dir, &manifest_hex, &manifest_bytes, &manifest, &owner)?;
        Ok(Imported { manifest_hex, ref_name, content: Content::Container(image) })
    }

    fn unpack(
        &self,
        dir: &Path,
        manifest_hex: &str,
        manifest_bytes: &[u8],
        manifest: &ImageManifest,
        owner: &str,
    ) -> Result<Image, ImageError> {
        let config_desc = manifest.config();
        match config_desc.media_type() {
            MediaType::ImageConfig => {}
            MediaType::Other(m) if m == DOCKER_CONFIG => {}
            other => {
                return Err(ImageError::UnsupportedMediaType {
                    what: format!("{owner}: config"),
                    media_type: other.to_string(),
                });
            }
        }
        let config_hex = layout::sha256_hex(config_desc, "config")?.to_owned();
        let config_bytes = layout::read_blob(dir, config_desc, owner, "config")?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|source| ImageError::Json { what: format!("config sha256:{config_hex}"), source })?;
        let diff_ids = config.rootfs().diff_ids();
        let layers = manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(ImageError::Invalid(format!(
                "{owner}: {} layers but config sha256:{config_hex} lists {} rootfs.diff_ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        // Check every layer's type before unpacking anything.
        let mut plan = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let hex = layout::sha256_hex(l, &format!("layer {i}"))?.to_owned();
            let comp = layer_compression(l.media_type()).ok_or_else(|| ImageError::UnsupportedMediaType {
                what: format!("layer {i} (sha256:{hex})"),
                media_type: l.media_type().to_string(),
            })?;
            plan.push((hex, comp));
        }

        let work = TempDir::new_in(&self.dir("tmp"), "import-")?;
        let staged = work.path().join("blobs");
        let rootfs = work.path().join("rootfs");
        for d in [&staged, &rootfs] {
            fs::create_dir(d).ctx("create", d)?;
        }
        let mut blobs = vec![manifest_hex.to_owned()];
        write_blob(&staged.join(manifest_hex), manifest_bytes)?;
        if !blobs.contains(&config_hex) {
            write_blob(&staged.join(&config_hex), &config_bytes)?;
            blobs.push(config_hex.clone());
        }
        let mut size = config_bytes.len() as u64;
        let mut applier = Applier::new(rootfs.clone());
        for (i, ((hex, comp), desc)) in plan.iter().zip(layers).enumerate() {
            size += self.unpack_layer(&mut applier, dir, owner, i, hex, *comp, desc, &diff_ids[i], &staged)?;
            if !blobs.contains(hex) {
                blobs.push(hex.clone());
            }
        }
        applier.finish()?;
        // One syncfs makes the whole rootfs durable before the metadata that says it is complete.
        sync_filesystem(&rootfs)?;

        let image = Image {
            manifest_hex: manifest_hex.to_owned(),
            rootfs: self.dir("rootfs").join(manifest_hex),
            size,
            config: run_config(&config),
            blobs,
        };
        self.commit(&work, &staged, &rootfs, &image)?;
        Ok(image)
    }

    /// Streams one layer blob: verify its digest, keep a copy in `staged`, decompress, verify the
    /// diff id and apply it. Returns the blob's size.
    #[allow(clippy::too_many_arguments)]
    fn unpack_layer(
        &self,
        applier: &mut Applier,
        dir: &Path,
        owner: &str,
        index: usize,
        hex: &str,
        comp: Compression,
        desc: &Descriptor,
        diff_id: &str,
        staged: &Path,
    ) -> Result<u64, ImageError> {
        let what = format!("layer {index}");
        let src = layout::open_blob(dir, hex, owner, &what)?;
        let out_path = staged.join(hex);
        let out = File::create(&out_path).ctx("create", &out_path)?;
        let mut raw = HashReader::new(Tee { inner: src, out: BufWriter::with_capacity(256 * 1024, out) });
        let bad = |e: io::Error| ImageError::BadLayer { index, digest: hex.into(), reason: e.to_string() };
        let applied = (|| {
            let decoded: Box<dyn Read + '_> = match comp {
                Compression::None => Box::new(&mut raw),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut raw)),
                Compression::Zstd => Box::new(zstd::Decoder::new(&mut raw).map_err(bad)?),
            };
            let mut unpacked = applier.apply_layer(index, hex, HashReader::new(decoded))?;
            // Trailing data after the tar end marker is part of the diff id.
            io::copy(&mut unpacked, &mut io::sink()).map_err(bad)?;
            Ok::<_, ImageError>(unpacked.finish().0)
        })();
        // Read the blob to its end even if unpacking failed: a corrupt blob is reported as a digest
        // mismatch, not as whatever its garbage decoded to.
        let drained = io::copy(&mut raw, &mut io::sink());
        let (Tee { out, .. }, actual, len) = raw.into_parts();
        layout::check_blob(hex, &what, desc.size(), (actual, len))?;
        drained.map_err(|e| ImageError::io(format!("read blob sha256:{hex} ({what})"), e))?;
        let actual_diff = applied?;
        if diff_id != format!("sha256:{actual_diff}") {
            return Err(ImageError::DiffIdMismatch {
                index,
                digest: hex.into(),
                expected: diff_id.into(),
                actual: actual_diff,
            });
        }
        let out = out.into_inner().map_err(|e| ImageError::io_path("write", &out_path, e.into_error()))?;
        out.sync_all().ctx("fsync", &out_path)?;
        Ok(len)
    }

    /// Moves the staged blobs and the rootfs into place, then writes the metadata that makes the
    /// image visible.
    fn commit(&self, work: &TempDir, staged: &Path, rootfs: &Path, image: &Image) -> Result<(), ImageError> {
        let _guard = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let blobs_dir = self.blobs_dir();
        for b in &image.blobs {
            let dst = blobs_dir.join(b);
            if !dst.exists() {
                fs::rename(staged.join(b), &dst).ctx("store blob", &dst)?;
            }
        }
        sync_dir(&blobs_dir)?;
        let meta = self.meta_path(&image.manifest_hex);
        if fs::symlink_metadata(&image.rootfs).is_ok() {
            if meta.exists() {
                // A concurrent import of the same image finished first; its rootfs is identical.
                return Ok(());
            }
            // Left by a crash between rootfs rename and metadata write: replace it.
            let stale = work.path().join("stale");
            fs::rename(&image.rootfs, &stale).ctx("move aside", &image.rootfs)?;
        }
        fs::rename(rootfs, &image.rootfs).ctx("move rootfs to", &image.rootfs)?;
        sync_dir(&self.dir("rootfs"))?;
        let json = serde_json::to_vec_pretty(image).expect("Image serialises");
        write_atomic(&meta, &json)
    }

    /// A container image imported earlier, by manifest digest hex. [`ImageError::NotFound`] if absent.
    pub fn image(&self, manifest_hex: &str) -> Result<Image, ImageError> {
        if !is_hex64(manifest_hex) {
            return Err(ImageError::NotFound(manifest_hex.into()));
        }
        let path = self.meta_path(manifest_hex);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageError::NotFound(manifest_hex.into())),
            Err(e) => return Err(ImageError::io_path("read", &path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json { what: path.display().to_string(), source })
    }

    /// Every imported container image, ordered by manifest digest.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let dir = self.dir("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx("read", &dir)? {
            let name = e.ctx("read", &dir)?.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if !is_hex64(hex) {
                continue;
            }
            match self.image(hex) {
                Ok(img) => out.push(img),
                // Removed concurrently.
                Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.manifest_hex.cmp(&b.manifest_hex));
        Ok(out)
    }

    /// Removes an image's metadata, its rootfs, and the blobs no other imported image references.
    /// `Ok(false)` if there was no such image.
    pub fn remove(&self, manifest_hex: &str) -> Result<bool, ImageError> {
        let _guard = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let image = match self.image(manifest_hex) {
            Ok(i) => i,
            Err(ImageError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        // Metadata first: from here on the image is gone even if the rest is interrupted
        // (open() clears the orphaned rootfs and blobs).
        let meta = self.meta_path(manifest_hex);
        fs::remove_file(&meta).ctx("remove", &meta)?;
        sync_dir(&self.dir("images"))?;
        let rootfs = self.dir("rootfs").join(manifest_hex);
        if fs::symlink_metadata(&rootfs).is_ok() {
            // Rename away first so the rootfs path disappears at once, then delete at leisure.
            let trash = TempDir::new_in(&self.dir("tmp"), "removed-")?;
            let dst = trash.path().join("rootfs");
            fs::rename(&rootfs, &dst).ctx("move aside", &rootfs)?;
            remove_tree(&dst).ctx("remove", &dst)?;
        }
        let others = self.list()?;
        let shared: HashSet<&str> = others.iter().flat_map(|i| i.blobs.iter().map(String::as_str)).collect();
        for b in image.blobs.iter().filter(|b| !shared.contains(b.as_str()) && is_hex64(b)) {
            let p = self.blobs_dir().join(b);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(ImageError::io_path("remove", &p, e)),
                _ => {}
            }
        }
        Ok(true)
    }
}

/// Writes a blob into the staging dir, durably.
fn write_blob(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = File::create(path).ctx("create", path)?;
    f.write_all(bytes).ctx("write", path)?;
    f.sync_all().ctx("fsync", path)
}
